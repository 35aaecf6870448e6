"""SSNet: LArTPC generator, U-ResNet zoo and shipped weights, processor, feeder, workflow."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import REPO, read, read_stats_lines, wait_for  # noqa: E402

from pvaflow.hpc import ntndarray  # noqa: E402
from pvaflow.hpc.errors import ConfigurationError  # noqa: E402
from pvaflow.processors.ssnet import SSNetProcessor, devices  # noqa: E402
from pvaflow.processors.ssnet import model as zoo  # noqa: E402
from pvaflow.sim.lartpc import LArTPCGenerator, split_sections  # noqa: E402

SIZE = 128
SSNET = "pvaflow.processors.ssnet.SSNetProcessor"


@pytest.fixture(scope="module")
def shipped():
    """The shipped model on CPU, eval mode."""
    torch.set_num_threads(2)
    return zoo.uresnet_small(weights=zoo.UResNetSmall_Weights.DEFAULT).eval()


def direct_labels(model, images):
    """Labels of raw images [N, 3, H, W] by a direct call of the model."""
    with torch.inference_mode():
        x = zoo.normalise(torch.from_numpy(np.array(images, np.float32)), model.weights_meta)
        return model(x).argmax(2).numpy().astype(np.uint8)


# ------------------------------------------------------------------ generator
def test_generator_is_deterministic_and_labels_visible_charge():
    a, b = LArTPCGenerator(64, 96, seed=3), LArTPCGenerator(64, 96, seed=3)
    e5, e2 = a.event(5), a.event(2)
    assert np.array_equal(e5.image, b.event(5).image) and np.array_equal(e5.label, b.event(5).label)
    assert np.array_equal(e2.label, b.event(2).label)  # independent of what came before
    assert not np.array_equal(e5.image, LArTPCGenerator(64, 96, seed=4).event(5).image)
    assert e5.image.shape == (3, 64, 96) and e5.image.dtype == np.float32
    images, labels = a.batch(20)
    counts = np.bincount(labels.ravel(), minlength=3)
    assert counts[1] > 0 and counts[2] > 0 and counts[0] > 0.8 * labels.size
    # labelled pixels carry charge well above the noise, background mostly does not
    assert np.median(images[labels > 0]) > 10 * np.median(np.abs(images[labels == 0]))


def test_split_sections_and_errors():
    data = np.arange(3 * 8 * 4).reshape(3, 8, 4)
    parts = split_sections(data, "image,labels")
    assert parts["image"].shape == (3, 4, 4) and np.array_equal(parts["labels"], data[:, 4:])
    assert split_sections(data, None)["image"] is not None
    with pytest.raises(Exception, match="equal sections"):
        split_sections(data, "a,b,c")


# ---------------------------------------------------------------------- model
def test_model_zoo_builders_and_plane_networks():
    assert {"uresnet", "uresnet_small"} <= set(zoo.list_models())
    with pytest.raises(TypeError):
        zoo.uresnet_small(None)  # keyword-only
    with pytest.raises(ValueError, match="unknown SSNet model"):
        zoo.get_model("nope")
    torch.manual_seed(0)
    model = zoo.get_model("uresnet", base_filters=4, depth=2).eval()
    x = torch.randn(2, 3, 40, 52)  # not a multiple of 2**depth: padded and cropped
    with torch.inference_mode():
        y = model(x)
        x2 = x.clone()
        x2[:, 1] += 5.0
        y2 = model(x2)
    assert y.shape == (2, 3, 3, 40, 52)
    # each plane has its own network: changing plane 1 leaves planes 0 and 2 alone
    assert torch.equal(y[:, 0], y2[:, 0]) and torch.equal(y[:, 2], y2[:, 2])
    assert not torch.equal(y[:, 1], y2[:, 1])
    shared = zoo.uresnet(base_filters=4, depth=2, shared=True).eval()
    with torch.inference_mode():
        assert shared(torch.randn(1, 5, 32, 32)).shape == (1, 5, 3, 32, 32)
    per_plane = sum(p.numel() for p in model.parameters())
    assert per_plane == 3 * sum(p.numel() for p in shared.parameters())


def test_shipped_weights_metadata_and_safe_loading(monkeypatch):
    weights = zoo.UResNetSmall_Weights.DEFAULT
    meta = weights.meta
    assert meta["classes"] == ["background", "track", "shower"]
    assert meta["input_size"] == [SIZE, SIZE] and meta["architecture"]["planes"] == 3
    assert {"mean", "std", "clip"} <= set(meta["normalisation"])
    assert os.path.getsize(weights.value.path) < 3e6
    calls = []
    real_load = torch.load

    def checked_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    def no_network(*args, **kwargs):
        raise AssertionError("loading weights touched the network")

    monkeypatch.setattr(torch, "load", checked_load)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    model = zoo.get_model("uresnet_small", weights="DEFAULT")
    assert calls == [True] and model.weights_meta["sha256"] == meta["sha256"]


def test_tampered_weights_file_is_refused(tmp_path):
    source = zoo.UResNetSmall_Weights.DEFAULT.value
    path = tmp_path / "w.pt"
    data = bytearray(open(source.path, "rb").read())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    (tmp_path / "w.json").write_text(json.dumps(source.meta))
    with pytest.raises(ValueError, match="sha256"):
        zoo.uresnet_small(weights=str(path))


def test_shipped_weights_reach_90_percent_on_track_and_shower_pixels(shipped):
    images, labels = LArTPCGenerator(SIZE, SIZE, seed=2024).batch(24)  # not a training seed
    predicted = np.concatenate([direct_labels(shipped, images[k:k + 8]) for k in range(0, 24, 8)])
    for cls, name in ((1, "track"), (2, "shower")):
        mask = labels == cls
        accuracy = (predicted[mask] == cls).mean()
        assert accuracy >= 0.90, f"{name} pixel accuracy {accuracy:.3f}"


# ------------------------------------------------------------------ processor
class _Publisher:
    def __init__(self):
        self.frames = []

    def updateOutputChannel(self, pv):
        self.frames.append((pv.getInt("uniqueId"), ntndarray.image_view(pv).copy(),
                            ntndarray.attributes_of(pv), ntndarray.timestamp_of(pv)))


def _processor(**args):
    processor = SSNetProcessor(dict({"device": "cpu", "outputChannel": "out"}, **args))
    processor.dataPublisher = _Publisher()
    processor.start()
    return processor


def test_processor_stacked_events_batches_and_sections(shipped):
    images, _ = LArTPCGenerator(SIZE, SIZE, seed=11).batch(5)
    processor = _processor(batchSize=2, maxLatencyMs=20, output="image,labels,scores")
    for k in range(5):
        processor.process(ntndarray.new_ntndarray(images[k], unique_id=k + 1, timestamp=100.0 + k,
                                                  color_mode=ntndarray.ColorMode.RGB3))
    processor.stop()
    stats = processor.getStats()
    assert stats["nEvents"] == 5 and stats["nBatches"] == 3 and stats["nErrors"] == 0
    assert stats["meanBatchSize"] == pytest.approx(5 / 3) and stats["eventsPerSecond"] > 0
    expected = direct_labels(shipped, images)
    frames = processor.dataPublisher.frames
    assert [f[0] for f in frames] == [1, 2, 3, 4, 5]
    for k, (_, data, attributes, stamp) in enumerate(frames):
        assert stamp == pytest.approx(100.0 + k)
        assert attributes["Classes"] == "background,track,shower"
        assert attributes["Model"] == "uresnet_small_lartpc_v1"
        parts = split_sections(data, attributes["Sections"])
        assert list(parts) == ["image", "labels", "score_background", "score_track", "score_shower"]
        assert np.array_equal(parts["image"], images[k])
        assert np.array_equal(parts["labels"], expected[k])
        scores = np.stack([parts[f"score_{c}"] for c in ("background", "track", "shower")])
        assert np.allclose(scores.sum(0), 1.0, atol=3e-3)
        # float16 values, carried as float32
        assert np.array_equal(scores.astype(np.float16).astype(np.float32), scores)
        assert (scores.argmax(0) == parts["labels"]).mean() > 0.999


def test_processor_one_plane_frames_and_latency_flush(shipped):
    images, _ = LArTPCGenerator(SIZE, SIZE, seed=12).batch(2)
    expected = direct_labels(shipped, images)
    processor = _processor(batchSize=8, maxLatencyMs=100)
    uid = 0
    for event in range(2):
        for plane in (2, 0, 1):
            uid += 1
            processor.process(ntndarray.new_ntndarray(images[event, plane], unique_id=uid,
                                                      attributes={"Plane": plane}))
    # the batch is not full: the latency limit sends it without a stop
    wait_for(lambda: len(processor.dataPublisher.frames) == 6, 20, message="latency flush")
    processor.stop()
    frames = processor.dataPublisher.frames
    assert [f[0] for f in frames] == [1, 2, 3, 4, 5, 6]  # arrival order
    for uid, data, attributes, _ in frames:
        event, plane = (uid - 1) // 3, attributes["Plane"]
        assert data.dtype == np.uint8 and attributes["Sections"] == "labels"
        assert np.array_equal(data, expected[event, plane])
    assert processor.getStats()["nPlaneFrames"] == 6


def test_processor_reads_only_the_image_section_of_frames_with_truth(shipped):
    event = LArTPCGenerator(SIZE, SIZE, seed=14).event(0)
    frame = np.concatenate([event.image, event.label.astype(np.float32)], axis=1)
    processor = _processor(batchSize=1)
    processor.process(ntndarray.new_ntndarray(frame, unique_id=9, attributes={
        "Sections": "image,labels"}, color_mode=ntndarray.ColorMode.RGB3))
    processor.stop()
    (uid, data, attributes, _), = processor.dataPublisher.frames
    assert uid == 9 and data.shape == (3, SIZE, SIZE)
    assert np.array_equal(data, direct_labels(shipped, event.image[None])[0])


def test_processor_refuses_bad_frames_and_arguments():
    processor = _processor()
    with pytest.raises(Exception, match="plane 5"):
        processor.process(ntndarray.new_ntndarray(np.zeros((16, 16), np.float32),
                                                  attributes={"Plane": 5}))
    processor.stop()
    with pytest.raises(ValueError, match="output must name"):
        SSNetProcessor({"device": "cpu", "output": "labels,bogus"})
    with pytest.raises(ValueError, match="batchSize"):
        SSNetProcessor({"device": "cpu", "batchSize": 0})


@pytest.mark.gpu
def test_processor_on_gpu_fp16_agrees_with_cpu(shipped):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    images, _ = LArTPCGenerator(SIZE, SIZE, seed=13).batch(4)
    processor = _processor(device="cuda", batchSize=4, precision="fp16")
    for k in range(4):
        processor.process(ntndarray.new_ntndarray(images[k], unique_id=k + 1,
                                                  color_mode=ntndarray.ColorMode.RGB3))
    processor.stop()
    got = np.stack([f[1] for f in processor.dataPublisher.frames])
    assert (got == direct_labels(shipped, images)).mean() > 0.995
    assert processor.getStats()["h2dMsPerBatch"] > 0


# -------------------------------------------------------------------- devices
def test_cuda_device_assignment_per_consumer():
    assert devices.parse_device_list("0,1") == ["0", "1"]
    assert devices.parse_device_list("0-2, 5") == ["0", "1", "2", "5"]
    assert [devices.device_for("0,1", k) for k in range(4)] == ["0", "1", "0", "1"]
    assert devices.child_environments("2,3", 3) == [{"CUDA_VISIBLE_DEVICES": v} for v in "232"]
    assert devices.child_environments(None, 2) == [{}, {}]
    target = devices.apply({"CUDA_VISIBLE_DEVICES": "1"}, {})
    assert target == {"CUDA_VISIBLE_DEVICES": "1"}
    for bad in ("", "0,,1", "3-1", "gpu0"):
        with pytest.raises(ConfigurationError):
            devices.parse_device_list(bad)


# -------------------------------------------------------------------- streams
def _start_lartpc_sim(procs, channel, mode, n_events, fps, runtime, start_delay, tmp_path):
    summary = tmp_path / "sim.json"
    proc = procs.sim("-cn", channel, "-nx", SIZE, "-ny", SIZE, "--lartpc", mode, "--lartpc-seed", 7,
                     "-nf", n_events, "-fps", fps, "-rt", runtime, "-std", start_delay, "-shd", 1,
                     "-rp", 0, "--summary-file", summary)
    return proc, summary


def _raw_image(value):
    """Numpy image of a raw p4p NTNDArray value (independent of pvaflow)."""
    dims = [d["size"] for d in value["dimension"]]
    return np.asarray(value["value"]).reshape(dims[::-1])


def test_stream_sim_to_ssnet_consumer_matches_direct_model(procs, prefix, tmp_path, shipped):
    from p4p.client.thread import Context
    n_events, stats_file = 6, tmp_path / "stats.jsonl"
    sim, summary = _start_lartpc_sim(procs, f"{prefix}:img", "events", n_events, 10, 2.5, 4,
                                     tmp_path)
    args = json.dumps({"device": "cpu", "threads": 1, "batchSize": 4, "maxLatencyMs": 50})
    consumer = procs.consumer("-ic", f"{prefix}:img", "-oc", f"{prefix}:labels", "-pc", SSNET,
                              "-pa", args, "-sqs", 50, "-rp", 0.5, "--stats-file", stats_file)
    received = {}
    ctx = Context("pva", nt=False)
    try:
        wait_for(lambda: any(s["userStats"].get("nBatches") for s in read_stats_lines(stats_file)),
                 30, message="the first SSNet batch (output record exists)")
        sub = ctx.monitor(f"{prefix}:labels",
                          lambda v: received.__setitem__(int(v["uniqueId"]), _raw_image(v)),
                          request="record[queueSize=100]field()", notify_disconnect=False)
        rc, _, err = procs.wait(sim, 40)
        assert rc == 0, err
        time.sleep(1.5)
        sub.close()
    finally:
        ctx.close()
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 40)
    assert rc == 0, out + err
    final = read_stats_lines(stats_file)[-1]["userStats"]
    assert final["nErrors"] == 0 and final["nEvents"] > 0 and final["device"] == "cpu"
    published = json.loads(read(summary))["published"]
    assert 5 <= len(received) <= published
    images, _ = LArTPCGenerator(SIZE, SIZE, seed=7).batch(n_events)
    expected = direct_labels(shipped, images)
    for uid, labels in received.items():
        assert labels.dtype == np.uint8 and labels.shape == (3, SIZE, SIZE)
        assert np.array_equal(labels, expected[(uid - 1) % n_events]), f"uniqueId {uid}"


def test_workflow_sim_fleet_collector_hdf5(procs, prefix, tmp_path, shipped):
    """simulator -> 2 SSNet consumers (distributor) -> ordered collector writing HDF5."""
    h5py = pytest.importorskip("h5py")
    n_events, out_dir, stats = 5, tmp_path / "h5", tmp_path / "collector.jsonl"
    sim, _ = _start_lartpc_sim(procs, f"{prefix}:img", "events", n_events, 8, 2.5, 6, tmp_path)
    args = json.dumps({"device": "cpu", "threads": 1, "batchSize": 2, "maxLatencyMs": 100,
                       "output": "image,labels"})
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-dg", "g", "-dt", "uniqueId",
                           "-du", 1,
                           "-oc", f"{prefix}:ssnet:*", "-pc", SSNET, "-pa", args, "-sqs", 50,
                           "-rt", 14)
    writer = json.dumps({"outputDirectory": str(out_dir), "framesPerFile": 1000})
    collector = procs.start("pvaflow.cli.collector", "-ic", f"{prefix}:ssnet:*", "-pid", "1,2",
                            "-pc", "pvaflow.processors.hdf5_writer.Hdf5Writer", "-pa", writer,
                            "-sqs", 50, "--collector-timeout", 3, "-rt", 13, "-rp", 1,
                            "--stats-file", stats)
    assert procs.wait(sim, 40)[0] == 0
    rc, out, err = procs.wait(collector, 40)
    assert rc == 0, out + err
    assert procs.wait(fleet, 40)[0] == 0
    files = sorted(out_dir.glob("*.h5"))
    assert len(files) == 1
    with h5py.File(files[0], "r") as handle:
        data = handle["/entry/data/data"][...]
        ids = handle["/entry/data/uniqueId"][...]
        sections = handle["/entry/attributes/Sections"][0]
    assert len(ids) >= 6 and np.all(np.diff(ids) > 0), ids  # ordered by the collector
    assert data.shape[1:] == (3, 2 * SIZE, SIZE)
    images, _ = LArTPCGenerator(SIZE, SIZE, seed=7).batch(n_events)
    expected = direct_labels(shipped, images)
    for uid, frame in zip(ids, data):
        if isinstance(sections, bytes):
            sections = sections.decode()
        parts = split_sections(frame, sections)
        k = (int(uid) - 1) % n_events
        assert np.array_equal(parts["image"], images[k])
        assert np.array_equal(parts["labels"].astype(np.uint8), expected[k])


@pytest.mark.parametrize("mode", ["events+truth", "planes+truth"])
def test_feeder_reads_images_and_labels_from_the_simulator(procs, prefix, tmp_path, mode):
    from pvaflow.processors.ssnet.feeder import StreamFeeder
    n_events = 4
    sim, _ = _start_lartpc_sim(procs, f"{prefix}:img", mode, 3 * n_events, 60, 2.0, 0.5, tmp_path)
    feeder = StreamFeeder(f"{prefix}:img", batch_size=4, require_labels=True, max_batches=3,
                          normalisation={"mean": 0.0, "std": 20.0, "clip": [-1.0, 10.0]})
    batches = list(torch.utils.data.DataLoader(feeder, batch_size=None))
    procs.wait(sim, 30)
    assert len(batches) == 3
    generator = LArTPCGenerator(SIZE, SIZE, seed=7)
    for images, labels, ids in batches:
        assert images.shape == (4, 3, SIZE, SIZE) and labels.dtype == torch.int64
        for k, uid in enumerate(ids.tolist()):
            frame = (uid - 1) % (3 * n_events)
            event = generator.event(frame if mode.startswith("events") else frame // 3)
            assert torch.equal(labels[k], torch.from_numpy(event.label).long())
            expected = zoo.normalise(torch.from_numpy(event.image.copy()), feeder_meta())
            assert torch.allclose(images[k], expected)


def feeder_meta():
    return {"normalisation": {"mean": 0.0, "std": 20.0, "clip": [-1.0, 10.0]}}


@pytest.mark.slow
def test_processor_with_torch_compile_agrees_with_eager(shipped):
    """torch.compile builds a C++ kernel on CPU (about 30 s): run by 'make soak'."""
    images, _ = LArTPCGenerator(64, 64, seed=15).batch(2)
    processor = _processor(batchSize=2, compile=True)
    for k in range(2):
        processor.process(ntndarray.new_ntndarray(images[k], unique_id=k + 1,
                                                  color_mode=ntndarray.ColorMode.RGB3))
    processor.stop()
    assert processor.getStats()["nErrors"] == 0
    got = np.stack([f[1] for f in processor.dataPublisher.frames])
    assert np.array_equal(got, direct_labels(shipped, images))


def test_simulator_refuses_lartpc_with_file_input(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
    result = subprocess.run([sys.executable, "-m", "pvaflow.cli.sim_server", "--lartpc", "events",
                             "-if", str(tmp_path / "x.npy")], capture_output=True, text=True, errors="replace",
                            cwd=REPO, timeout=30, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 2 and "--lartpc generates its own events" in result.stderr
