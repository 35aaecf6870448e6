"""The example processors of examples/, by themselves and run as their docstrings say."""

import os

import numpy as np
import pytest

from conftest import REPO
from test_codecs import Collector, finish, start_sim, wait_connected

from pvaflow.hpc import codecs, loader, ntndarray

EXAMPLES = os.path.join(REPO, "examples")


def example(file_name, class_name, args=None):
    cls = loader.load_processor_class(os.path.join(EXAMPLES, file_name), class_name)
    return cls(dict(args or {}))


def start_example(procs, channel, output, file_name, class_name, args, tmp_path):
    """The command line of the example's docstring, with test channel names."""
    stats = tmp_path / f"stats-{class_name}.jsonl"
    proc = procs.consumer("-ic", channel, "-oc", output, "-pf", os.path.join(EXAMPLES, file_name),
                          "-pc", class_name, "-pa", args, "-sqs", 100, "-rp", 0.3,
                          "--stats-file", stats)
    return proc, stats


def test_docstrings_show_the_command_lines():
    for file_name, class_name in (("roi_stats_processor.py", "RoiStatsProcessor"),
                                  ("hot_pixel_processor.py", "HotPixelProcessor"),
                                  ("rotation_processor.py", "RotationProcessor")):
        text = open(os.path.join(EXAMPLES, file_name)).read()
        assert f"-pf examples/{file_name} -pc {class_name}" in text


# ------------------------------------------------------------------- ROI stats
def test_roi_statistics_match_numpy():
    image = np.random.default_rng(0).integers(0, 1000, (50, 80), dtype=np.uint16)
    processor = example("roi_stats_processor.py", "RoiStatsProcessor",
                        {"x": 10, "y": 5, "width": 20, "height": 15})
    out = processor.process(ntndarray.new_ntndarray(image, unique_id=3, timestamp=50.5))
    roi = image[5:20, 10:30].astype(np.float64)
    ys, xs = np.mgrid[5:20, 10:30]
    assert (out["uniqueId"], out["x"], out["y"], out["width"], out["height"]) == (3, 10, 5, 20, 15)
    assert out["total"] == roi.sum() and out["mean"] == pytest.approx(roi.mean())
    assert out["sigma"] == pytest.approx(roi.std()) and out["minimum"] == roi.min()
    assert out["maximum"] == roi.max() and out["timeStamp"]["secondsPastEpoch"] == 50
    assert out["centroidX"] == pytest.approx((roi * xs).sum() / roi.sum())
    assert out["centroidY"] == pytest.approx((roi * ys).sum() / roi.sum())


def test_roi_is_clipped_moved_and_checked():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    processor = example("roi_stats_processor.py", "RoiStatsProcessor", {"x": 8, "y": 7})
    out = processor.process(ntndarray.new_ntndarray(image))
    assert (out["width"], out["height"], out["total"]) == (2, 3, image[7:, 8:].sum())
    processor.configure({"x": 0, "y": 0, "width": 1, "height": 1})
    assert processor.process(ntndarray.new_ntndarray(image))["total"] == 0.0
    for bad in ({"width": 0}, {"x": -1}, {"y": 1.5}):
        with pytest.raises(ValueError):
            processor.configure(bad)
    processor.configure({"x": 50})
    with pytest.raises(ValueError, match="outside"):
        processor.process(ntndarray.new_ntndarray(image))
    packed = codecs.Encoder("lz4").fill(ntndarray.new_ntndarray(np.zeros((1, 1), np.uint8)), image)
    processor.configure({"x": 0, "width": 10, "height": 10})
    assert processor.process(packed)["maximum"] == 99.0  # compressed frames are decoded
    assert processor.getStats()["nFrames"] == 3


# ----------------------------------------------------------------- hot pixels
def test_hot_pixels_counted_and_persistent_ones_found():
    rng = np.random.default_rng(1)
    processor = example("hot_pixel_processor.py", "HotPixelProcessor", {"threshold": 1000})
    stuck = [(3, 4), (10, 20), (31, 1)]
    for uid in range(1, 11):
        image = rng.integers(0, 500, (40, 30), dtype=np.uint16)
        for row, column in stuck:
            image[row, column] = 4000 + uid
        image[rng.integers(0, 40), rng.integers(0, 30)] = 2000  # a one-frame flash
        out = processor.process(ntndarray.new_ntndarray(image, unique_id=uid))
        assert out["nHotPixels"] == 4 and out["threshold"] == 1000
        assert out["hottestValue"] == 4000 + uid and (out["hottestY"], out["hottestX"]) == (3, 4)
    rows, columns = processor.persistent_hot_pixels()
    assert sorted(zip(rows.tolist(), columns.tolist())) == stuck
    stats = processor.getStats()
    assert stats["nPersistentHotPixels"] == 3 and stats["hotPixelsMean"] == 4.0
    processor.configure({"threshold": None, "nSigma": 6, "resetMap": True})
    image = np.full((40, 30), 100, np.uint16)
    image[5, 5] = 60000
    out = processor.process(ntndarray.new_ntndarray(image, unique_id=11))
    assert out["nHotPixels"] == 1 and (out["hottestY"], out["hottestX"]) == (5, 5)
    assert processor.getStats()["nPersistentHotPixels"] == 1
    with pytest.raises(ValueError):
        processor.configure({"nSigma": 0})


def test_rotation_example_configure():
    processor = example("rotation_processor.py", "RotationProcessor", {"quarterTurns": 1})
    image = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(ntndarray.image_view(processor.process(ntndarray.new_ntndarray(image))),
                          np.rot90(image))
    processor.configure({"quarterTurns": 2})
    assert np.array_equal(ntndarray.image_view(processor.process(ntndarray.new_ntndarray(image))),
                          np.rot90(image, 2))


# ------------------------------------------------------------------- system
def test_roi_example_system(procs, prefix, tmp_path):
    frames = np.random.default_rng(2).integers(0, 5000, (3, 30, 40), dtype=np.uint16)
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, frames, fps=100, runtime=2.0,
                             extra=("--codec", "bslz4"))
    consumer = start_example(procs, f"{prefix}:image", f"{prefix}:roi", "roi_stats_processor.py",
                             "RoiStatsProcessor", '{"x": 10, "y": 20, "width": 64, "height": 32}',
                             tmp_path)
    wait_connected(consumer[1])
    results = Collector(f"{prefix}:roi", lambda v: (int(v.uniqueId), float(v.total), int(v.width),
                                                    int(v.height)))
    try:
        published, (final,) = finish(procs, sim, summary, [consumer])
    finally:
        results.close()
    assert final["userStats"]["nFrames"] == published and final["processorStats"]["nErrors"] == 0
    assert len(results.items) >= published // 2
    for uid, total, width, height in results.items:
        assert (width, height) == (30, 10)  # clipped to the 40 x 30 frame
        assert total == frames[(uid - 1) % 3][20:30, 10:40].sum()


def test_hot_pixel_example_system(procs, prefix, tmp_path):
    frames = np.random.default_rng(3).integers(0, 1000, (4, 24, 24), dtype=np.uint16)
    frames[:, 2, 3] = 65000
    frames[1, 7, 7] = 62000
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, frames, fps=100, runtime=2.0)
    consumer = start_example(procs, f"{prefix}:image", f"{prefix}:hot", "hot_pixel_processor.py",
                             "HotPixelProcessor", '{"threshold": 60000}', tmp_path)
    wait_connected(consumer[1])
    results = Collector(f"{prefix}:hot", lambda v: (int(v.uniqueId), int(v.nHotPixels)))
    try:
        published, (final,) = finish(procs, sim, summary, [consumer])
    finally:
        results.close()
    assert final["userStats"]["nFrames"] == published
    assert final["userStats"]["nPersistentHotPixels"] == 1
    assert len(results.items) >= published // 2
    assert all(count == (2 if (uid - 1) % 4 == 1 else 1) for uid, count in results.items)


def test_make_demo_pipeline_accounts_for_every_frame(tmp_path):
    """`make demo` runs examples/demo.py: a short run must publish, process and account."""
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "demo.py"),
                             "--runtime", "2", "--fps", "200"], capture_output=True, text=True, errors="replace",
                            cwd=str(tmp_path), env=env, timeout=90)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    published = int(out.split("frames published")[1].split()[0])
    processed = int(out.split("frames processed")[1].split()[0])
    assert published >= 300 and processed == published, out
    assert "every published frame accounted for" in out
