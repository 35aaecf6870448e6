"""Input edge cases: a restarted source, empty records, the CA protocol flag."""

import json
import signal
import time

import numpy as np
import pvaccess as pva

from conftest import read, read_stats_lines, wait_for
from pvaflow.hpc.ntndarray import new_ntndarray


def run_sim(procs, channel, tmp_path, name, runtime=1.5, start_delay=1.0):
    summary = tmp_path / f"{name}.json"
    proc = procs.sim("-cn", channel, "-nx", 8, "-ny", 8, "-fps", 200, "-rt", runtime,
                     "-std", start_delay, "-shd", 0.3, "-rp", 0, "--summary-file", summary)
    rc, out, err = procs.wait(proc, 30)
    assert rc == 0, err
    return json.loads(read(summary))["published"]


def test_restarted_source_is_an_id_reset_not_loss_nor_phantom(procs, prefix, tmp_path):
    stats = tmp_path / "stats.jsonl"
    consumer = procs.consumer("-ic", f"{prefix}:img", "-sqs", 100, "-rp", 0.5, "--stats-file", stats)
    first = run_sim(procs, f"{prefix}:img", tmp_path, "first")
    time.sleep(1.0)  # the consumer sees the source go away
    second = run_sim(procs, f"{prefix}:img", tmp_path, "second", start_delay=2.0)
    time.sleep(1.0)
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 20)
    assert rc == 0, err
    r = read_stats_lines(stats)[-1]["receiverStats"]
    p = read_stats_lines(stats)[-1]["processorStats"]
    assert p["nProcessed"] == first + second  # nothing processed twice, nothing lost
    assert r["nMissed"] == 0 and r["nDuplicates"] == 0
    assert r["nIdResets"] == 1 and r["nReconnects"] == 1
    assert r["nSkipped"] == 2  # the initial value at each connection


def test_empty_records_are_counted_not_processed(procs, prefix, tmp_path):
    stats = tmp_path / "stats.jsonl"
    channel = f"{prefix}:img"
    server = pva.PvaServer()
    frame = new_ntndarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    server.addRecord(channel, frame.copy())
    consumer = procs.consumer("-ic", channel, "-sqs", 100, "-rp", 0.3, "--stats-file", stats)
    try:
        wait_for(lambda: any(s["receiverStats"]["nReceived"] for s in read_stats_lines(stats)), 10,
                 message="consumer connected")
        empty = pva.NtNdArray()  # no value selected: an empty record
        for uid in range(1, 11):
            if uid % 2:
                frame.setInt("uniqueId", uid)
                server.update(channel, frame)
            else:
                empty.setInt("uniqueId", uid)
                server.update(channel, empty)
            time.sleep(0.02)
        time.sleep(0.5)
    finally:
        consumer.send_signal(signal.SIGINT)
        rc, out, err = procs.wait(consumer, 20)
        server.stop()
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    assert final["receiverStats"]["nEmpty"] == 5
    assert final["processorStats"]["nProcessed"] == 5
    assert final["processorStats"]["nErrors"] == 0
    assert final["receiverStats"]["nMissed"] == 0  # the empty records' ids are not gaps


def test_live_progress_line_on_a_terminal_only(prefix, tmp_path):
    import os
    import subprocess
    import sys

    from conftest import REPO, run_on_terminal

    args = [sys.executable, "-m", "pvaflow.cli.consumer", "-ic", f"{prefix}:none", "-rt", "2.5"]
    env = dict(os.environ, PYTHONPATH=REPO)
    rc, on_tty = run_on_terminal(args, env)
    assert rc == 0
    assert on_tty.count("\r[consumer 1]") >= 2 and "/ 2 s" in on_tty and "FINAL" in on_tty
    piped = subprocess.run(args, capture_output=True, text=True, errors="replace", cwd=REPO, env=env, timeout=20)
    assert "\r" not in piped.stdout and "FINAL" in piped.stdout
