"""pvapy-hpc-collector: producers merged back into strict id order."""

import json
import os
import subprocess
import sys

import pytest
from p4p.client.thread import Context

from conftest import REPO, read, read_stats_lines, wait_for


def test_fleet_to_collector_output_is_ordered_and_complete(procs, prefix, tmp_path):
    summary, stats = tmp_path / "sim.json", tmp_path / "collector.jsonl"
    source = procs.sim("-cn", f"{prefix}:img", "-nx", 16, "-ny", 16, "-fps", 500, "-rt", 3, "-std", 5,
                       "-shd", 1, "-rp", 0, "--summary-file", summary)
    procs.consumer("-ic", f"{prefix}:img", "-nc", 4, "-dg", "g", "-dt", "uniqueId", "-du", 1,
                   "-sqs", 200, "-oc", f"{prefix}:out:*", "-rt", 14)
    collector = procs.start("pvaflow.cli.collector", "-ic", f"{prefix}:out:*", "-pid", "1-4",
                            "-oc", f"{prefix}:merged", "-sc", f"{prefix}:cstatus", "-sqs", 200,
                            "-rt", 13, "-rp", 1, "--stats-file", stats)
    merged = []
    # the merged record exists once the collector got its first update (p4p backs off otherwise)
    wait_for(lambda: any(s["receiverStats"]["nReceived"] for s in read_stats_lines(stats)), 20,
             message="collector connected")
    ctx = Context("pva")
    try:
        subscription = ctx.monitor(f"{prefix}:merged", lambda v: merged.append(int(v.uniqueId)),
                    request="record[queueSize=2000]field(uniqueId)", notify_disconnect=False)
        rc, _, err = procs.wait(source, 40)
        assert rc == 0, err
        published = json.loads(read(summary))["published"]
        rc, out, err = procs.wait(collector, 40)
        assert rc == 0, err
        subscription.close()  # (keeping the reference: p4p stops a collected subscription)
    finally:
        ctx.close()
    final = read_stats_lines(stats)[-1]
    p, c = final["processorStats"], final["collectorStats"]
    assert p["nProcessed"] == published and c["nReleased"] == published, out
    assert final["receiverStats"]["nMissed"] == 0 and c["nLate"] == 0
    assert sum(v["nReceived"] - v["nSkipped"] for v in final["producerStats"].values()) == published
    frames = [i for i in merged if i > 0]
    bad = [(i, frames[i - 3:i + 3]) for i in range(1, len(frames)) if frames[i] <= frames[i - 1]]
    assert not bad, f"collector output not strictly increasing: {bad[:5]}"
    assert frames[-1] == published and len(frames) >= 0.5 * published  # p4p may squash under load


def test_missing_producer_ids_are_given_up_after_the_timeout(procs, prefix, tmp_path):
    """Producer 2 of 2 never exists: the collector releases producer 1's ids anyway,
    after --collector-timeout, counting the ids it gave up."""
    summary, stats = tmp_path / "sim.json", tmp_path / "collector.jsonl"
    source = procs.sim("-cn", f"{prefix}:img", "-nx", 8, "-ny", 8, "-fps", 100, "-rt", 2, "-std", 4,
                       "-shd", 1, "-rp", 0, "--summary-file", summary)
    procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-dg", "g", "-dt", "uniqueId", "-du", 1,
                   "-sqs", 100, "-oc", f"{prefix}:out:*", "-rt", 10)
    collector = procs.start("pvaflow.cli.collector", "-ic", f"{prefix}:out:*", "-pid", "1",
                            "-sqs", 100, "--collector-timeout", 0.2, "-rt", 9, "-rp", 1,
                            "--stats-file", stats)
    rc, _, _ = procs.wait(source, 30)
    published = json.loads(read(summary))["published"]
    rc, out, err = procs.wait(collector, 30)
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    processed, missed = final["processorStats"]["nProcessed"], final["receiverStats"]["nMissed"]
    assert 0.4 * published <= processed <= 0.6 * published
    # Every id between the first and the last released one is processed or given up.
    assert processed + missed == final["receiverStats"]["lastId"] - final["receiverStats"]["firstId"] + 1


BAD = [
    (["-ic", "x:*:out", "-pid", "1,,2"], "not an id or a span"),
    (["-ic", "x:out", "-pid", "1,2"], "has no '*' for the producer id"),
    (["-ic", "x:*", "--collector-timeout", "0"], "must be > 0"),
    (["-ic", "x:*", "--objects-per-id", "0"], "must be > 0"),
    (["-ic", "x:*", "-pf", "/nope.py", "-pc", "X"], "does not exist"),
    (["-ic", "x:*", "--bogus"], "unrecognized arguments"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[m for _, m in BAD])
def test_collector_bad_input(argv, message):
    result = subprocess.run([sys.executable, "-m", "pvaflow.cli.collector", *argv], capture_output=True,
                            text=True, errors="replace", cwd=REPO, timeout=30, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pvapy-hpc-collector: error:") and message in lines[0], \
        result.stderr
