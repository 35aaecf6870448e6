"""Worker pool speed-up: a CPU-bound job on 1..N worker processes (``make bench``).

Frames go straight into the WorkerPoolProcessor (no network), so the figure
is the pool's own scaling: frames/s with N workers over frames/s with one
(median of 3). The figures are printed and written to
``benchmarks/results/worker_pool.json``.
"""

import json
import os
import sys
import time

import numpy as np
import pytest

from pvaflow.hpc.ntndarray import new_ntndarray
from pvaflow.hpc.worker_pool import WorkerPoolProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "..", "examples", "smoothing_worker.py")


def rate(workers, frames=120, passes=40, size=128):
    pool = WorkerPoolProcessor({"workerClass": "SmoothingWorker", "workerFile": WORKER, "workers": workers,
                                "workerArgs": {"passes": passes}, "waitTimeout": 60})
    frame = new_ntndarray(np.random.randint(0, 255, (size, size), dtype=np.uint8))
    frame.setInt("uniqueId", 1)
    pool.process(frame)  # starts the pool
    while pool.n_done < 1:
        time.sleep(0.01)
    start = time.perf_counter()
    for uid in range(2, frames + 2):
        frame.setInt("uniqueId", uid)
        pool.process(frame)
    while pool.n_done < frames + 1:
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    pool.stop()
    return frames / elapsed


@pytest.mark.bench
def test_worker_pool_scaling():
    cores = os.cpu_count() or 1
    counts = sorted({1, 2, min(4, cores), cores})
    rates = {n: sorted(rate(n) for _ in range(3))[1] for n in counts}
    print(f"\nworker pool, 128x128 frames, 40 smoothing passes each ({cores} cores):", file=sys.stderr)
    for n, r in rates.items():
        print(f"  {n} workers: {r:7.1f} frames/s  speed-up {r / rates[1]:.2f}x", file=sys.stderr)
    assert rates[1] > 0
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "worker_pool.json"), "w") as handle:
        json.dump({"cores": cores, "frame": "128x128 uint8", "passes": 40,
                   "rows": [{"workers": n, "frames_per_s": round(r, 2),
                             "speedup": round(r / rates[1], 3)} for n, r in rates.items()]},
                  handle, indent=1)
