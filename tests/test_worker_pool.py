"""The worker pool: frames through shared memory to worker processes, back in order."""

import json
import os
import signal
import sys
import time

import numpy as np
import psutil
from p4p.client.thread import Context

from conftest import REPO, read, read_stats_lines, wait_for

sys.path.insert(0, os.path.join(REPO, "examples"))
from smoothing_worker import smooth  # noqa: E402

WORKER = os.path.join(REPO, "examples", "smoothing_worker.py")


def pool_args(workers, passes=3):
    return json.dumps({"workerClass": "SmoothingWorker", "workerFile": WORKER, "workers": workers,
                       "workerArgs": {"passes": passes}})


def _pixels(value):
    return np.asarray(value.value).reshape([d.size for d in value.dimension][::-1])


def test_results_come_back_in_order_and_exact(procs, prefix, tmp_path):
    stats, summary = tmp_path / "stats.jsonl", tmp_path / "sim.json"
    source = procs.sim("-cn", f"{prefix}:img", "-nx", 24, "-ny", 16, "-fps", 100, "-rt", 2, "-std", 4,
                       "-shd", 1, "-rp", 0, "--summary-file", summary)
    consumer = procs.consumer("-ic", f"{prefix}:img", "-oc", f"{prefix}:out", "-sqs", 500,
                              "-pc", "pvaflow.hpc.worker_pool.WorkerPoolProcessor", "-pa", pool_args(2),
                              "-rp", 0.5, "--stats-file", stats)
    inputs, outputs = {}, []
    wait_for(lambda: read_stats_lines(stats), 15, message="consumer up")
    ctx = Context("pva", unwrap=False)
    try:
        # keep the subscriptions referenced: p4p stops a garbage-collected one
        subscriptions = [
            ctx.monitor(f"{prefix}:img", lambda v: inputs.__setitem__(int(v.uniqueId), _pixels(v)),
                        request="record[queueSize=1000]", notify_disconnect=False),
            ctx.monitor(f"{prefix}:out", lambda v: outputs.append((int(v.uniqueId), _pixels(v))),
                        request="record[queueSize=1000]", notify_disconnect=False)]
        rc, _, err = procs.wait(source, 30)
        n = json.loads(read(summary))["published"]
        wait_for(lambda: read_stats_lines(stats)[-1]["userStats"]["nDone"] == n, 20, message="pool done")
        time.sleep(0.5)
        for subscription in subscriptions:
            subscription.close()
    finally:
        ctx.close()
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 30)
    assert rc == 0, err
    user = read_stats_lines(stats)[-1]["userStats"]
    assert user["nDone"] == n and user["nLost"] == 0 and user["nFailed"] == 0
    assert user["worker1Done"] > 0 and user["worker2Done"] > 0
    ids = [uid for uid, _ in outputs if uid > 0]
    assert ids == sorted(ids)  # frame order kept across workers
    checked = 0
    for uid, pixels in outputs:
        if uid in inputs and uid > 0:
            assert np.allclose(pixels, smooth(inputs[uid], 3), atol=1e-4)
            checked += 1
    assert checked > n // 2


def test_a_killed_worker_is_restarted_and_its_frames_counted(procs, prefix, tmp_path):
    stats, summary = tmp_path / "stats.jsonl", tmp_path / "sim.json"
    source = procs.sim("-cn", f"{prefix}:img", "-nx", 64, "-ny", 64, "-fps", 60, "-rt", 4, "-std", 4,
                       "-shd", 1, "-rp", 0, "--summary-file", summary)
    consumer = procs.consumer("-ic", f"{prefix}:img", "-sqs", 500,
                              "-pc", "pvaflow.hpc.worker_pool.WorkerPoolProcessor", "-pa", pool_args(2, 30),
                              "-rp", 0.3, "--stats-file", stats)
    wait_for(lambda: any(s["userStats"].get("nDone", 0) > 20 for s in read_stats_lines(stats)), 30,
             message="pool working")
    workers = [p for p in psutil.Process(consumer.pid).children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(workers) == 2
    workers[0].kill()
    rc, _, err = procs.wait(source, 30)
    n = json.loads(read(summary))["published"]
    wait_for(lambda: (lambda u: u["nDone"] + u["nLost"] + u["nFailed"] == n)(read_stats_lines(stats)[-1]["userStats"]),
             30, message="every frame accounted")
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 30)
    assert rc == 0, err
    user = read_stats_lines(stats)[-1]["userStats"]
    assert user["worker1Restarts"] + user["worker2Restarts"] == 1
    assert user["nDone"] + user["nLost"] == n and user["nFailed"] == 0
