"""A 10-minute soak (``make soak``): no loss and bounded memory at a steady rate.

The rate defaults to 2000 frames/s of 128x128 (about half of what one
pass-through consumer sustains on a 2-core machine); set PVAFLOW_SOAK_FPS,
PVAFLOW_SOAK_SECONDS to change it.
"""

import json
import os
import signal
import time

import psutil
import pytest

from conftest import read, read_stats_lines, wait_for

FPS = float(os.environ.get("PVAFLOW_SOAK_FPS", 2000))
SECONDS = float(os.environ.get("PVAFLOW_SOAK_SECONDS", 600))
WARM_UP = min(60.0, SECONDS / 5)


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 300)
def test_soak_zero_loss_and_flat_memory(procs, prefix, tmp_path):
    summary, stats = tmp_path / "sim.json", tmp_path / "stats.jsonl"
    source = procs.sim("-cn", f"{prefix}:img", "-nx", 128, "-ny", 128, "-fps", FPS, "-rt", SECONDS,
                       "-std", 3, "-shd", 1, "-rp", 30, "--summary-file", summary)
    consumer = procs.consumer("-ic", f"{prefix}:img", "-oc", f"{prefix}:out", "-sqs", 5000, "-rp", 10,
                              "--stats-file", stats)
    wait_for(lambda: read_stats_lines(stats), 20, message="consumer reporting")
    time.sleep(3 + WARM_UP)
    process = psutil.Process(consumer.pid)
    rss_start = process.memory_info().rss
    samples = []
    while source.poll() is None:
        samples.append(process.memory_info().rss)
        time.sleep(5)
    rss_end = process.memory_info().rss
    published = json.loads(read(summary))["published"]
    time.sleep(2)
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 60)
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    print(f"soak: {published} frames at {FPS} fps, rss {rss_start / 1e6:.1f} -> {rss_end / 1e6:.1f} MB"
          f" (max {max(samples) / 1e6:.1f} MB)")
    assert final["processorStats"]["nProcessed"] == published
    assert final["receiverStats"]["nMissed"] == 0
    assert rss_end < rss_start * 1.05, (rss_start, rss_end)
