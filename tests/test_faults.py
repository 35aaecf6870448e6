"""Faults a running pipeline survives, with counters that say what happened."""

import json
import os
import signal
import time

import psutil
import pytest
from p4p.client.thread import Context

from conftest import REPO, read, read_stats_lines, wait_for

FAULTY = os.path.join(REPO, "tests", "processors", "faulty.py")


def sim(procs, channel, tmp_path, fps=300, runtime=6, start_delay=3, name="sim"):
    summary = tmp_path / f"{name}.json"
    proc = procs.sim("-cn", channel, "-nx", 8, "-ny", 8, "-fps", fps, "-rt", runtime, "-std", start_delay,
                     "-shd", 1, "-rp", 0, "--summary-file", summary)
    return proc, summary


def published(procs, proc, summary):
    rc, _, err = procs.wait(proc, 60)
    assert rc == 0, err
    return json.loads(read(summary))["published"]


def spawned_children(pid):
    return [p for p in psutil.Process(pid).children() if "spawn_main" in " ".join(p.cmdline())]


# The unresponsive timeout is well above the 1 s status period, so that a child slowed by a
# loaded machine (the suite runs in parallel) is not taken for a frozen one.
@pytest.mark.parametrize("timeout,restarts", [(30, 0), (4, 1)], ids=["resumed", "killed-and-restarted"])
def test_frozen_child_is_resumed_or_restarted_and_accounted(procs, prefix, tmp_path, timeout, restarts):
    stats = tmp_path / "fleet.jsonl"
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=300, runtime=11, start_delay=3)
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-sqs", 50, "-rt", 20, "-rp", 0.5,
                           "--restart-backoff", 0.2, "--unresponsive-timeout", timeout,
                           "--stats-file", stats)
    wait_for(lambda: any(s["total"]["processed"] > 300 for s in read_stats_lines(stats)), 20,
             message="processing")
    victim = spawned_children(fleet.pid)[0]
    victim.suspend()                      # SIGSTOP
    time.sleep(6.0)
    if victim.is_running():
        victim.resume()                   # SIGCONT
    total = published(procs, source, summary)
    rc, out, err = procs.wait(fleet, 60)
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    assert final["total"]["restarts"] == restarts, out
    for c in final["consumers"].values():
        accounted = c["processed"] + c["errors"] + c["rejected"] + c["missed"] + c["lostInFlight"]
        assert accounted == total, (c, total, out)
    if restarts:  # ids published while the child was dead are counted, not lost silently
        assert sum(c["missed"] + c["lostInFlight"] for c in final["consumers"].values()) > 0


def test_lifecycle_errors_are_survived_and_counted(procs, prefix, tmp_path):
    stats = tmp_path / "stats.jsonl"
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=100, runtime=2, start_delay=2)
    consumer = procs.consumer("-ic", f"{prefix}:img", "-sqs", 100, "-pf", FAULTY, "-pc", "LifecycleRaises",
                              "-cc", f"{prefix}:ctl", "-rp", 0.5, "--stats-file", stats)
    wait_for(lambda: read_stats_lines(stats), 10, message="consumer up")
    time.sleep(0.5)
    ctx = Context("pva")
    try:
        ctx.put(f"{prefix}:ctl", {"command": "configure", "args": '{"x": 1}', "sequence": 3})
        reply = wait_for(lambda: (lambda v: v if v.replySequence == 3 else None)(ctx.get(f"{prefix}:ctl")),
                         5, message="configure reply")
        assert reply.status == "error" and "configure failed on purpose" in reply.statusMessage
    finally:
        ctx.close()
    n = published(procs, source, summary)
    time.sleep(0.5)
    consumer.send_signal(signal.SIGTERM)
    rc, out, err = procs.wait(consumer, 20)
    assert rc == 0, err
    p = read_stats_lines(stats)[-1]["processorStats"]
    assert p["nProcessed"] == n and p["nErrors"] == 0
    assert p["nHookErrors"] == 3  # start, configure, stop
    assert "stop() failed" in p["lastError"]


def test_wrong_return_and_publish_types_are_counted(procs, prefix, tmp_path):
    stats = tmp_path / "stats.jsonl"
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=100, runtime=2, start_delay=2)
    consumer = procs.consumer("-ic", f"{prefix}:img", "-oc", f"{prefix}:out", "-sqs", 100, "-pf", FAULTY,
                              "-pc", "ReturnsWrongTypes", "-rp", 0.5, "--stats-file", stats)
    n = published(procs, source, summary)
    time.sleep(0.5)
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 20)
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    assert final["processorStats"]["nProcessed"] == n
    assert final["publisherStats"]["nErrors"] == n // 3
    assert final["publisherStats"]["nPublished"] == 0


def test_downstream_client_leaving_mid_stream_changes_nothing(procs, prefix, tmp_path):
    stats = tmp_path / "stats.jsonl"
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=300, runtime=3, start_delay=2)
    consumer = procs.consumer("-ic", f"{prefix}:img", "-oc", f"{prefix}:out", "-sqs", 100, "-rp", 0.5,
                              "--stats-file", stats)
    wait_for(lambda: any(s["receiverStats"]["nReceived"] for s in read_stats_lines(stats)), 10,
             message="connected")
    seen = []
    ctx = Context("pva")
    subscription = ctx.monitor(f"{prefix}:out", lambda v: seen.append(1), request="field(uniqueId)")
    wait_for(lambda: len(seen) > 100, 15, message="client receiving")
    subscription.close()
    ctx.close()                                  # the downstream client goes away mid-stream
    n = published(procs, source, summary)
    time.sleep(0.5)
    consumer.send_signal(signal.SIGINT)
    rc, _, err = procs.wait(consumer, 20)
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    assert final["processorStats"]["nProcessed"] == n
    assert final["publisherStats"]["nPublished"] == n and final["publisherStats"]["nErrors"] == 0


def test_collector_survives_a_dead_producer(procs, prefix, tmp_path):
    stats = tmp_path / "collector.jsonl"
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=200, runtime=6, start_delay=4)
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-dg", "g", "-dt", "uniqueId", "-du", 1,
                           "-sqs", 100, "-oc", f"{prefix}:out:*", "-rt", 14, "--restart-limit", 0)
    collector = procs.start("pvaflow.cli.collector", "-ic", f"{prefix}:out:*", "-pid", "1,2", "-sqs", 100,
                            "--collector-timeout", 0.3, "-rt", 13, "-rp", 0.5, "--stats-file", stats)
    wait_for(lambda: any(s["processorStats"]["nProcessed"] > 200 for s in read_stats_lines(stats)), 20,
             message="collector working")
    spawned_children(fleet.pid)[1].kill()        # producer 2 dies for good
    n = published(procs, source, summary)
    rc, out, err = procs.wait(collector, 40)
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    processed, missed = final["processorStats"]["nProcessed"], final["receiverStats"]["nMissed"]
    assert processed + missed == final["receiverStats"]["lastId"] - final["receiverStats"]["firstId"] + 1
    # The distributor hands the dead producer's share to the live one; ids that were in
    # flight to the dead one are given up after the timeout and counted as missed.
    assert processed > n / 2 and final["state"] == "stopped"
    procs.wait(fleet, 30)
