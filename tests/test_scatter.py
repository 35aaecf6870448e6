"""Load-aware scatter: frames go to whichever downstream consumer has room."""

import json
import os
import signal
import time

from conftest import REPO, read, read_stats_lines, wait_for

FAULTY = os.path.join(REPO, "tests", "processors", "faulty.py")


def downstream(procs, prefix, tmp_path, cid, delay):
    stats = tmp_path / f"down{cid}.jsonl"
    proc = procs.consumer("-ic", f"{prefix}:in:{cid}", "-id", cid, "-im", "rpc", "-rqs", 20, "-pf", FAULTY,
                          "-pc", "Slow", "-pa", json.dumps({"delay": delay}), "-rp", 0.5,
                          "--stats-file", stats)
    return proc, stats


def run_sim(procs, prefix, tmp_path, fps, runtime, name):
    summary = tmp_path / f"{name}.json"
    proc = procs.sim("-cn", f"{prefix}:{name}", "-nx", 8, "-ny", 8, "-fps", fps, "-rt", runtime,
                     "-std", 4, "-shd", 1, "-rp", 0, "--summary-file", summary)
    return proc, summary


def test_scatter_beats_round_robin_with_a_slow_consumer(procs, prefix, tmp_path):
    """Three consumers, one five times slower. At 180 frames/s (they sustain about 220
    together, the slow one only 40) scatter loses nothing; round robin (-du 1) loses frames."""
    delays = {1: 0.01, 2: 0.01, 3: 0.05}
    downs = {cid: downstream(procs, prefix, tmp_path, cid, d) for cid, d in delays.items()}
    source, summary = run_sim(procs, prefix, tmp_path, fps=180, runtime=3, name="src")
    up_stats = tmp_path / "up.jsonl"
    up = procs.consumer("-ic", f"{prefix}:src", "-om", "scatter", "-oc", f"{prefix}:in:*",
                        "-oa", '{"targets": "1-3", "retry": 2}', "-sqs", 2000, "-rp", 0.5,
                        "--stats-file", up_stats)
    rc, _, err = procs.wait(source, 60)
    assert rc == 0, err
    n = json.loads(read(summary))["published"]

    def processed():
        return sum(read_stats_lines(s)[-1]["processorStats"]["nProcessed"] if read_stats_lines(s) else 0
                   for _, s in downs.values())
    wait_for(lambda: processed() == n, 30, message="all frames processed downstream")
    up.send_signal(signal.SIGINT)
    assert procs.wait(up, 20)[0] == 0
    pub = read_stats_lines(up_stats)[-1]["publisherStats"]
    assert pub["nDropped"] == 0 and pub["nPublished"] == n
    per = {int(k): v["nSent"] for k, v in pub["targets"].items()}
    assert per[3] < per[1] and per[3] < per[2]  # the slow one got less work
    assert pub["nRejected"] > 0  # busy targets were skipped

    # The same load dealt round robin by the distributor: the slow consumer drops frames.
    rr = {}
    for cid, d in delays.items():
        stats = tmp_path / f"rr{cid}.jsonl"
        rr[cid] = (procs.consumer("-ic", f"{prefix}:rr", "-id", cid, "-dg", "g", "-dt", "uniqueId", "-du", 1,
                                  "-rqs", 20, "-pf", FAULTY, "-pc", "Slow", "-pa", json.dumps({"delay": d}),
                                  "-rp", 0.5, "--stats-file", stats), stats)
    source, summary = run_sim(procs, prefix, tmp_path, fps=180, runtime=3, name="rr")
    rc, _, err = procs.wait(source, 60)
    n_rr = json.loads(read(summary))["published"]
    time.sleep(2.0)
    lost = 0
    for proc, stats in rr.values():
        proc.send_signal(signal.SIGINT)
        procs.wait(proc, 20)
        r = read_stats_lines(stats)[-1]["receiverStats"]
        lost += r["nRejected"] + r["nMissed"]
    print(f"scatter: {n} frames, 0 lost, per target {per}; round robin: {n_rr} frames, {lost} lost")
    assert lost > 0
    for proc, _ in downs.values():
        proc.send_signal(signal.SIGINT)
        procs.wait(proc, 20)
