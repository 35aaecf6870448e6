"""Tests of the simulated area detector ``pvapy-ad-sim-server`` (pvaflow.cli.sim_server).

Every test runs real servers on loopback under unique channel names and
receives their frames with a ``pvaccess.Channel`` monitor in this process.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import pvaccess as pva

from conftest import REPO, wait_for
import pvaflow.cli.sim_server as sim_cli
from pvaflow.cli.sim_server import main
from pvaflow.hpc.ntndarray import color_mode_of, image_view, timestamp_of
from pvaflow.sim.frames import FrameSet, FrameSource, image_shape

ERROR_PREFIX = "pvapy-ad-sim-server: error: "
START_DELAY = "1.5"     # long enough for the monitor to connect before frame 1


class Collector:
    """Monitor a channel; keep (uniqueId, pixels, colour mode, time stamp) of published frames."""

    def __init__(self, channel, request="record[queueSize=100]field()"):
        self.frames = []
        self.initial = []
        self._lock = threading.Lock()
        self._channel = pva.Channel(channel)
        self._channel.monitor(self._on_frame, request)

    def _on_frame(self, pv):
        unique_id = pv.getInt("uniqueId")
        record = (unique_id, np.array(image_view(pv)), color_mode_of(pv),
                  timestamp_of(pv), timestamp_of(pv, "dataTimeStamp"))
        with self._lock:
            (self.frames if unique_id > 0 else self.initial).append(record)

    @property
    def ids(self):
        with self._lock:
            return [f[0] for f in self.frames]

    def stop(self):
        self._channel.stopMonitor()


def start_sim(procs, channel, *args, fps=50, runtime=1.0, summary=None, shutdown=0.3):
    """Start the simulator with test-friendly defaults (extra ``args`` win)."""
    base = ["-cn", channel, "-fps", fps, "-rt", runtime, "-std", START_DELAY,
            "-shd", shutdown, "-rp", "0"]
    if summary:
        base += ["--summary-file", summary]
    return procs.sim(*base, *args)


def finish(procs, proc, collector=None, timeout=15):
    """Wait for the simulator to exit 0; stop the collector; return stdout."""
    rc, out, err = procs.wait(proc, timeout)
    if collector:
        collector.stop()
    assert rc == 0, f"exit {rc}\n{out}\n{err}"
    return out


def load(path):
    with open(path) as handle:
        return json.load(handle)


def assert_consecutive(ids):
    assert ids, "no frame received"
    assert ids == list(range(1, len(ids) + 1)), f"ids not consecutive from 1: {ids[:10]}..."


# --------------------------------------------------------------- random frames
def test_random_mono_frames(procs, prefix, tmp_path):
    summary = tmp_path / "summary.json"
    proc = start_sim(procs, prefix, "-nx", 24, "-ny", 16, "-dt", "uint16", "-mn", 100,
                     "-mx", 200, fps=50, runtime=1.0, summary=summary)
    col = Collector(prefix)
    finish(procs, proc, col)
    result = load(summary)
    assert_consecutive(col.ids)
    assert len(col.ids) == result["published"] == result["last_id"] == 50
    assert result["first_id"] == 1 and result["stopped_by"] == "runtime"
    now = time.time()
    for _, image, mode, stamp, data_stamp in col.frames:
        assert image.shape == (16, 24) and image.dtype == np.uint16 and mode == 0
        assert 100 <= image.min() and image.max() <= 200
        assert stamp == data_stamp and now - 10 < stamp <= now
    stamps = [f[3] for f in col.frames]
    assert stamps == sorted(stamps)
    # The record existed before publishing: its initial value is the first frame, id 0.
    assert col.initial and col.initial[0][1].shape == (16, 24)


def test_color_modes(procs, prefix):
    runs = {}
    for mode in (2, 3, 4):
        channel = f"{prefix}:cm{mode}"
        proc = start_sim(procs, channel, "-nx", 8, "-ny", 6, "-dt", "int16", "-cm", mode,
                         fps=20, runtime=0.5)
        runs[mode] = (proc, Collector(channel))
    for mode, (proc, col) in runs.items():
        finish(procs, proc, col)
        assert_consecutive(col.ids)
        for _, image, received_mode, _, _ in col.frames:
            assert received_mode == mode
            assert image.shape == image_shape(8, 6, mode) and image.dtype == np.int16


def test_datatypes(procs, prefix):
    runs = {}
    for dtype in ("int8", "uint32", "int64", "uint64", "float32", "float64"):
        channel = f"{prefix}:{dtype}"
        proc = start_sim(procs, channel, "-nx", 5, "-ny", 4, "-dt", dtype, "-mn", 1, "-mx", 9,
                         "-cs", 10, fps=20, runtime=0.3)
        runs[dtype] = (proc, Collector(channel))
    for dtype, (proc, col) in runs.items():
        finish(procs, proc, col)
        assert_consecutive(col.ids)
        for _, image, _, _, _ in col.frames:
            assert image.dtype == np.dtype(dtype) and image.shape == (4, 5)
            assert 1 <= image.min() and image.max() <= 9


def test_paced_rate_and_lossless_summary(procs, prefix, tmp_path):
    summary = tmp_path / "summary.json"
    proc = start_sim(procs, prefix, "-nx", 16, "-ny", 16, "-rp", "0.5",
                     fps=200, runtime=2.0, summary=summary)
    col = Collector(prefix)
    out = finish(procs, proc, col)
    result = load(summary)
    assert_consecutive(col.ids)
    assert 360 <= len(col.ids) <= 440
    assert len(col.ids) == result["published"] == result["last_id"]
    assert result["rate"] == pytest.approx(200, rel=0.02)
    reports = [line for line in out.splitlines() if line.startswith("published ")]
    assert len(reports) >= 2 and all("fps (last period" in line for line in reports)
    assert any(line.startswith("summary: published") for line in out.splitlines())
    assert "\x1b" not in out


def test_max_rate(procs, prefix, tmp_path):
    summary = tmp_path / "summary.json"
    proc = start_sim(procs, prefix, "-nx", 16, "-ny", 16, "-std", 0, fps=0, runtime=1.0,
                     summary=summary)
    finish(procs, proc)
    result = load(summary)
    assert result["published"] > 2000 and result["stopped_by"] == "runtime"


def test_n_frames_cycle(procs, prefix):
    proc = start_sim(procs, prefix, "-nx", 6, "-ny", 5, "-nf", 3, fps=40, runtime=0.5)
    col = Collector(prefix)
    finish(procs, proc, col)
    assert_consecutive(col.ids)
    images = [f[1] for f in col.frames]
    assert len(images) == 20
    for index, image in enumerate(images):
        np.testing.assert_array_equal(image, images[index % 3])


def test_n_frames_over_cache_publishes_each_once(procs, prefix, tmp_path):
    stack = np.arange(10 * 4 * 3, dtype=np.int32).reshape(10, 4, 3)
    np.save(tmp_path / "stack.npy", stack)
    summary = tmp_path / "summary.json"
    proc = start_sim(procs, prefix, "-if", tmp_path / "stack.npy", "-nf", 6, "-cs", 2,
                     fps=50, runtime=30, summary=summary)
    col = Collector(prefix)
    started = time.monotonic()
    finish(procs, proc, col)
    assert time.monotonic() - started < 10       # stopped after the frames, not the runtime
    result = load(summary)
    assert result["published"] == 6 and result["stopped_by"] == "frames"
    assert_consecutive(col.ids)
    assert len(col.ids) == 6
    for index, frame in enumerate(col.frames):
        np.testing.assert_array_equal(frame[1], stack[index])


# ----------------------------------------------------------------- file input
@pytest.mark.parametrize("mmap", [False, True], ids=["load", "mmap"])
def test_npy_stack_exact_pixels(procs, prefix, tmp_path, mmap):
    stack = np.random.default_rng(1).integers(0, 60000, size=(5, 7, 9), dtype=np.uint16)
    np.save(tmp_path / "stack.npy", stack)
    proc = start_sim(procs, prefix, "-if", tmp_path / "stack.npy", *(["-mm"] if mmap else []),
                     fps=40, runtime=0.5)
    col = Collector(prefix)
    finish(procs, proc, col)
    assert_consecutive(col.ids)
    assert len(col.frames) == 20
    for unique_id, image, mode, _, _ in col.frames:
        assert mode == 0
        np.testing.assert_array_equal(image, stack[(unique_id - 1) % 5])


def test_npz_all_arrays_in_order(procs, prefix, tmp_path):
    single = np.full((3, 4), 7, dtype=np.float32)
    stack = np.arange(3 * 3 * 4, dtype=np.float32).reshape(3, 3, 4)
    np.savez(tmp_path / "frames.npz", single=single, stack=stack)
    expected = [single, *stack]
    proc = start_sim(procs, prefix, "-if", tmp_path / "frames.npz", fps=40, runtime=0.3)
    col = Collector(prefix)
    finish(procs, proc, col)
    assert_consecutive(col.ids)
    for unique_id, image, _, _, _ in col.frames:
        np.testing.assert_array_equal(image, expected[(unique_id - 1) % 4])


def test_hdf5_dataset(procs, prefix, tmp_path):
    h5py = pytest.importorskip("h5py")
    stack = np.random.default_rng(2).random((4, 6, 5)).astype(np.float64)
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle.create_dataset("entry/data/data", data=stack)
    proc = start_sim(procs, prefix, "-if", tmp_path / "data.h5", "-hds", "/entry/data/data",
                     fps=40, runtime=0.3)
    col = Collector(prefix)
    finish(procs, proc, col)
    assert_consecutive(col.ids)
    for unique_id, image, _, _, _ in col.frames:
        np.testing.assert_array_equal(image, stack[(unique_id - 1) % 4])


def test_input_directory_in_name_order(procs, prefix, tmp_path):
    directory = tmp_path / "frames"
    directory.mkdir()
    second = np.full((2, 3), 2, dtype=np.int8)
    first = np.stack([np.full((2, 3), 1, dtype=np.int8), np.full((2, 3), -1, dtype=np.int8)])
    np.save(directory / "b.npy", second)
    np.save(directory / "a.npy", first)
    (directory / "notes.txt").write_text("not a frame")
    expected = [first[0], first[1], second]
    proc = start_sim(procs, prefix, "-id", directory, fps=30, runtime=0.3)
    col = Collector(prefix)
    finish(procs, proc, col)
    assert_consecutive(col.ids)
    for unique_id, image, _, _, _ in col.frames:
        np.testing.assert_array_equal(image, expected[(unique_id - 1) % 3])


# -------------------------------------------------------------------- signals
def test_sigint_and_sigterm_stop_cleanly(procs, prefix, tmp_path):
    runs = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        channel = f"{prefix}:{signum}"
        summary = tmp_path / f"summary{signum}.json"
        proc = start_sim(procs, channel, "-nx", 8, "-ny", 8, fps=50, runtime=60, summary=summary)
        runs[signum] = (proc, Collector(channel), summary)
    for signum, (proc, col, summary) in runs.items():
        wait_for(lambda c=col: len(c.ids) >= 5, 10, message="frames before the signal")
        proc.send_signal(signum)
        finish(procs, proc, col, timeout=5)
        result = load(summary)
        assert result["stopped_by"] == "signal"
        assert len(col.ids) == result["published"] >= 5
        assert_consecutive(col.ids)


# ------------------------------------------------------------ runtime failure
class FailingFrames(FrameSource):
    """Three good frames, then a read error (like a file that goes away)."""

    name = "failing"
    frame_shape = (4, 4)

    def __len__(self):
        return 10

    def __iter__(self):
        for index in range(3):
            yield np.full(self.frame_shape, index, dtype=np.uint8)
        raise OSError("disk went away")


def test_runtime_failure_exits_1(prefix, tmp_path, monkeypatch, capsys):
    summary = tmp_path / "summary.json"
    monkeypatch.setattr(sim_cli, "make_frame_set", lambda args: FrameSet([FailingFrames()]))
    rc = main(["-cn", prefix, "-cs", "2", "-fps", "100", "-rt", "5", "-std", "0", "-shd", "0",
               "-rp", "0", "--summary-file", str(summary)])
    assert rc == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if " WARNING " not in line]  # the start-up log's unprotected-records warning
    assert len(err) == 1 and err[0].startswith(ERROR_PREFIX) and "disk went away" in err[0]
    result = load(summary)
    assert result["stopped_by"] == "error" and result["published"] == 3


# ----------------------------------------------------------------- bad inputs
def _bad_inputs(tmp_path):
    np.save(tmp_path / "four_d.npy", np.zeros((2, 2, 2, 2), dtype=np.uint8))
    np.save(tmp_path / "complex.npy", np.zeros((2, 2), dtype=np.complex64))
    (tmp_path / "garbage.npy").write_bytes(b"this is not numpy")
    (tmp_path / "frames.txt").write_text("1 2 3")
    (tmp_path / "data.h5").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    return {
        "missing file": ["-if", tmp_path / "missing.npy"],
        "missing dir": ["-id", tmp_path / "nowhere"],
        "empty dir": ["-id", tmp_path / "empty"],
        "4-D array": ["-if", tmp_path / "four_d.npy"],
        "complex dtype": ["-if", tmp_path / "complex.npy"],
        "not numpy": ["-if", tmp_path / "garbage.npy"],
        "unknown extension": ["-if", tmp_path / "frames.txt"],
        "hdf5 without dataset": ["-if", tmp_path / "data.h5"],
        "bad datatype": ["-dt", "float16"],
        "nx zero": ["-nx", "0"],
        "ny negative": ["-ny", "-3"],
        "bayer colour mode": ["-cm", "1"],
        "unknown colour mode": ["-cm", "5"],
        "min above max": ["-mn", "10", "-mx", "5"],
        "range outside dtype": ["-mn", "300", "-dt", "uint8"],
        "negative fps": ["-fps", "-1"],
        "zero runtime": ["-rt", "0"],
        "zero cache": ["-cs", "0"],
        "empty channel": ["-cn", ""],
        "unknown flag": ["--no-such-flag"],
    }


BAD_CASES = ["missing file", "missing dir", "empty dir", "4-D array", "complex dtype",
             "not numpy", "unknown extension", "hdf5 without dataset", "bad datatype",
             "nx zero", "ny negative", "bayer colour mode", "unknown colour mode",
             "min above max", "range outside dtype", "negative fps", "zero runtime",
             "zero cache", "empty channel", "unknown flag"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    argv = [str(a) for a in _bad_inputs(tmp_path)[case]]
    assert main(["-std", "0", "-shd", "0", "-rt", "0.1", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR_PREFIX), err


def test_bad_hdf5_dataset(tmp_path, capsys):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "data.h5", "w") as handle:
        handle.create_dataset("entry/data", data=np.zeros((2, 3, 3), dtype=np.uint8))
    assert main(["-if", str(tmp_path / "data.h5"), "-hds", "/entry/missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR_PREFIX) and "/entry/missing" in err[0]


def test_cli_process_exit_code_and_version(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO)
    bad = subprocess.run([sys.executable, "-m", "pvaflow.cli.sim_server", "-if",
                          str(tmp_path / "missing.npy"), "-dc"],
                         capture_output=True, text=True, errors="replace", env=env, timeout=30)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"{ERROR_PREFIX}input file {tmp_path / 'missing.npy'} does not exist or is not a file"]
    version = subprocess.run([sys.executable, "-m", "pvaflow.cli.sim_server", "--version"],
                             capture_output=True, text=True, errors="replace", env=env, timeout=30)
    assert version.returncode == 0 and "pvaflow" in version.stdout


def test_live_progress_line_only_on_a_terminal(prefix):
    from conftest import run_on_terminal
    args = [sys.executable, "-m", "pvaflow.cli.sim_server", "-cn", prefix, "-nx", "8", "-ny", "8",
            "-fps", "50", "-rt", "2.5", "-std", "0", "-shd", "0"]
    env = dict(os.environ, PYTHONPATH=REPO)
    rc, text = run_on_terminal(args, env)
    assert rc == 0
    assert "\r[sim] 1 s / 2 s" in text and "left)" in text and "summary:" in text
    piped = subprocess.run(args, capture_output=True, text=True, errors="replace", cwd=REPO, env=env, timeout=30)
    assert "\r" not in piped.stdout and "summary:" in piped.stdout
