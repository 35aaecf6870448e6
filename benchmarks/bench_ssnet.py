"""Benchmark: SSNet events/s by batch size, time split into transfer and compute.

Events are 3 planes of 512x512 float32 from the LArTPC generator; the model
is the shipped ``uresnet_small`` (its weights; the network is fully
convolutional). Each batch goes through the processor's own engine
(:class:`pvaflow.processors.ssnet.engine.Engine`): host batch buffer ->
device (pinned memory and an asynchronous copy on a GPU) -> normalise,
forward, argmax (autocast fp16 on a GPU) -> labels back to host. The table
gives, per device and batch size, events/s and the mean milliseconds per
batch of the host-to-device copy, the compute and the device-to-host copy,
and the seconds per event against the 0.44 s/event of the old
client/broker/worker system (3 planes, Caffe, see the user guide)::

    python -m pytest -m bench benchmarks/bench_ssnet.py -s

Settings: ``PVAFLOW_BENCH_SSNET_BATCHES`` (default ``1,2,4,8``),
``PVAFLOW_BENCH_SSNET_SIZE`` (512), ``PVAFLOW_BENCH_SSNET_REPEATS`` (3 timed
batches after one warm-up), ``PVAFLOW_BENCH_SSNET_THREADS`` (CPU threads,
default 2). A CUDA device, when visible, is measured too. Results are
merged into ``benchmarks/results/ssnet.json``.
"""

import json
import os
import time

import pytest

torch = pytest.importorskip("torch")

from pvaflow.processors.ssnet import model as zoo  # noqa: E402
from pvaflow.processors.ssnet.engine import Engine, summarise_times  # noqa: E402
from pvaflow.sim.lartpc import LArTPCGenerator  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
OLD_SECONDS_PER_EVENT = 0.44

BATCHES = [int(b) for b in os.environ.get("PVAFLOW_BENCH_SSNET_BATCHES", "1,2,4,8").split(",")]
SIZE = int(os.environ.get("PVAFLOW_BENCH_SSNET_SIZE", "512"))
REPEATS = int(os.environ.get("PVAFLOW_BENCH_SSNET_REPEATS", "3"))
THREADS = int(os.environ.get("PVAFLOW_BENCH_SSNET_THREADS", "2"))


def measure(engine, images, batch_size):
    """Warm up once, then time REPEATS batches; return the figures of one row."""
    batch = engine.allocate((batch_size,) + images.shape[1:])
    batch.array[:] = images[:batch_size]
    batch.counts[:] = batch_size
    engine.run(batch)  # warm-up (allocations, kernels, autotuning)
    timings = []
    started = time.perf_counter()
    for _ in range(REPEATS):
        timings.append(engine.run(batch)[2])
    wall = time.perf_counter() - started
    h2d, compute, d2h = summarise_times(timings)
    events_per_second = batch_size * REPEATS / wall
    return {"device": str(engine.device), "precision": engine.precision, "batch": batch_size,
            "events_per_s": round(events_per_second, 3),
            "s_per_event": round(1.0 / events_per_second, 4),
            "h2d_ms": round(h2d, 3), "compute_ms": round(compute, 3), "d2h_ms": round(d2h, 3),
            "speedup_vs_0.44s": round(OLD_SECONDS_PER_EVENT * events_per_second, 2)}


@pytest.mark.bench
def test_ssnet_events_per_second_by_batch_size():
    torch.set_num_threads(THREADS)
    model = zoo.uresnet_small(weights="DEFAULT")
    images = LArTPCGenerator(SIZE, SIZE, seed=77).batch(max(BATCHES))[0]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        engine = Engine(model, model.weights_meta, device=device)
        for batch_size in BATCHES:
            rows.append(measure(engine, images, batch_size))
            print(json.dumps(rows[-1]), flush=True)
    header = (f"SSNet {model.weights_meta.get('name')} on 3x{SIZE}x{SIZE} events"
              f" ({THREADS} CPU threads; old system: {OLD_SECONDS_PER_EVENT} s/event)")
    print("\n" + header)
    print(f"{'device':8} {'prec':5} {'batch':>5} {'events/s':>9} {'s/event':>8} {'h2d ms':>8}"
          f" {'compute ms':>11} {'d2h ms':>7} {'x old':>6}")
    for r in rows:
        print(f"{r['device']:8} {r['precision']:5} {r['batch']:>5} {r['events_per_s']:>9.2f}"
              f" {r['s_per_event']:>8.3f} {r['h2d_ms']:>8.2f} {r['compute_ms']:>11.1f}"
              f" {r['d2h_ms']:>7.2f} {r['speedup_vs_0.44s']:>6.2f}")
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "ssnet.json")
    saved = {}
    if os.path.exists(path):
        with open(path) as handle:
            saved = json.load(handle)
    saved[f"{SIZE}"] = {"rows": rows, "threads": THREADS, "torch": torch.__version__,
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with open(path, "w") as handle:
        json.dump(saved, handle, indent=2)
    assert all(r["events_per_s"] > 0 for r in rows)
