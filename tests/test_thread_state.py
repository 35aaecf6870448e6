"""Keeping the thread state of pvaccess's delivering threads (pvaflow.hpc.thread_state).

pvaccess builds and destroys a Python thread state around every callback
from its own threads unless the state is kept. A ``threading.local`` tells
the two apart: its attributes live in the thread state."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pvaccess as pva

from conftest import REPO, read_stats_lines, wait_for
from test_consumer import finish, start_sim
from pvaflow.hpc import thread_state

PROCESSORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "processors")


def _post(server, name, first, count):
    for value in range(first, first + count):
        server.update(name, pva.PvObject({"value": pva.INT}, {"value": value}))
        time.sleep(0.002)


def test_kept_state_survives_between_callbacks(prefix):
    name = f"{prefix}:counter"
    server = pva.PvaServer(name, pva.PvObject({"value": pva.INT}, {"value": 0}))
    local = threading.local()
    calls = {"n": 0, "fresh": 0, "keep_at": None}
    lock = threading.Lock()

    def callback(pv):
        with lock:
            calls["n"] += 1
            if not getattr(local, "seen", False):
                local.seen = True
                calls["fresh"] += 1
            if calls["keep_at"] is not None and calls["n"] >= calls["keep_at"] and not getattr(local, "kept", False):
                local.kept = thread_state.keep_thread_state()

    channel = pva.Channel(name)
    try:
        channel.monitor(callback, "field(value)")
        wait_for(lambda: calls["n"] >= 1, 10, message="the initial value")
        _post(server, name, 1, 30)
        wait_for(lambda: calls["n"] >= 31, 10, message="30 updates")
        # Not kept: every callback ran in a new thread state.
        assert calls["fresh"] == calls["n"] == 31
        before = thread_state.kept
        with lock:
            calls["keep_at"] = calls["n"] + 1
        _post(server, name, 31, 30)
        wait_for(lambda: calls["n"] >= 61, 10, message="30 more updates")
        # Kept from the first callback of the second batch: that one was fresh, no later one.
        assert calls["fresh"] == 32
        assert thread_state.kept == before + 1
    finally:
        channel.stopMonitor()
        server.stop()


def test_turned_off_keeps_nothing(monkeypatch):
    monkeypatch.setattr(thread_state, "ENABLED", False)
    before = thread_state.kept
    assert thread_state.keep_thread_state() is False
    assert thread_state.kept == before


def _consume(procs, prefix, tmp_path, env, restart):
    stats_file = tmp_path / "stats.jsonl"
    channel = f"{prefix}:image"
    sim, summary = start_sim(procs, channel, tmp_path, fps=300, runtime=1.5)
    consumer = procs.consumer("-ic", channel, "-sqs", 100, "-pf",
                              os.path.join(PROCESSORS, "thread_states.py"), "-pc", "ThreadStateCounter",
                              "-rp", 0.5, "--stats-file", stats_file, env=env)
    published = 0
    if restart:  # a second server on the same channel: a new connection, a new delivering thread
        rc, out, err = procs.wait(sim, 30)
        assert rc == 0, f"simulator failed: {out}\n{err}"
        wait_for(lambda: any(s["userStats"].get("nCalls") for s in read_stats_lines(stats_file)), 10,
                 message="the consumer to process the first stream")
        published = json.loads(summary.read_text())["published"]
        sim, summary = start_sim(procs, channel, tmp_path, fps=300, runtime=1.5, start_delay=2.5)
    more, final, out, err = finish(procs, sim, summary, consumer, stats_file, settle=1.5)
    return published + more, final


def test_consumer_keeps_the_delivering_thread_state(procs, prefix, tmp_path):
    published, final = _consume(procs, prefix, tmp_path, None, restart=False)
    user, p = final["userStats"], final["processorStats"]
    assert published > 300 and p["nProcessed"] == user["nCalls"] == published
    assert user["nFreshStates"] == 1


def test_consumer_keeps_the_new_thread_after_a_reconnect(procs, prefix, tmp_path):
    published, final = _consume(procs, prefix, tmp_path, None, restart=True)
    user, r = final["userStats"], final["receiverStats"]
    assert r["nReconnects"] == 1
    assert user["nCalls"] > 600
    assert user["nFreshStates"] == 2  # one per connection


def test_consumer_with_keeping_turned_off(procs, prefix, tmp_path):
    published, final = _consume(procs, prefix, tmp_path, {"PVAFLOW_KEEP_THREAD_STATE": "0"},
                                restart=False)
    user = final["userStats"]
    assert user["nCalls"] == published > 300
    assert user["nFreshStates"] == user["nCalls"]


def test_keep_once_is_one_keep_per_thread():
    before = thread_state.kept
    results = []

    def twice():
        results.append((thread_state.keep_thread_state_once(), thread_state.keep_thread_state_once()))
    worker = threading.Thread(target=twice)
    worker.start()
    worker.join()
    assert results == [(True, True)] and thread_state.kept == before + 1


SEND = """
import sys
import numpy as np
import pvaccess as pva
from pvaflow.hpc.ntndarray import new_ntndarray
client = pva.RpcClient(sys.argv[1])
first, count = int(sys.argv[2]), int(sys.argv[3])
for uid in range(first, first + count):
    reply = client.invoke(new_ntndarray(np.zeros((4, 4), np.uint8), unique_id=uid))
    assert reply["status"] == 0, reply
"""


def _rpc_senders(procs, prefix, tmp_path, env):
    """Two senders, one after the other: two client connections, so two server threads."""
    stats_file = tmp_path / "stats.jsonl"
    channel = f"{prefix}:in"
    consumer = procs.consumer("-ic", channel, "-im", "rpc", "-pf",
                              os.path.join(PROCESSORS, "thread_states.py"), "-pc", "ThreadStateCounter",
                              "-rp", 0.5, "--stats-file", stats_file, env=env)
    wait_for(lambda: read_stats_lines(stats_file), 10, message="the consumer to start")
    for first in (1, 41):
        sender = subprocess.run([sys.executable, "-c", SEND, channel, str(first), "40"],
                                capture_output=True, text=True, errors="replace", cwd=REPO,
                                env=dict(os.environ, PYTHONPATH=REPO), timeout=30)
        assert sender.returncode == 0, sender.stderr
    wait_for(lambda: read_stats_lines(stats_file)[-1]["userStats"].get("nCalls") == 80, 10,
             message="80 objects processed")
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 20)
    assert rc == 0, err
    return read_stats_lines(stats_file)[-1]


def test_rpc_input_keeps_the_state_of_each_client_thread(procs, prefix, tmp_path):
    final = _rpc_senders(procs, prefix, tmp_path, None)
    assert final["processorStats"]["nProcessed"] == 80
    assert final["userStats"]["nFreshStates"] == 2  # one per client connection


def test_rpc_input_with_keeping_turned_off(procs, prefix, tmp_path):
    final = _rpc_senders(procs, prefix, tmp_path, {"PVAFLOW_KEEP_THREAD_STATE": "0"})
    assert final["userStats"]["nFreshStates"] == 80


def test_consumer_releases_the_gil_after_a_clobbered_shared_state(procs, prefix, tmp_path):
    """pvaccess hands every Release the last value any thread's Ensure returned.
    A "locked" left there by another thread would make a kept thread keep the
    GIL; the consumer's callback ends by writing "unlocked" (RELEASE_GUARD)."""
    stats_file = tmp_path / "stats.jsonl"
    channel = f"{prefix}:image"
    sim, summary = start_sim(procs, channel, tmp_path, fps=300, runtime=1.0)
    consumer = procs.consumer("-ic", channel, "-sqs", 100, "-pf",
                              os.path.join(PROCESSORS, "gil_clobber.py"), "-pc", "GilStateClobber",
                              "-rp", 0.5, "--stats-file", stats_file)
    # the main thread must keep running: it writes the stats file and stops on SIGINT
    published, final, out, err = finish(procs, sim, summary, consumer, stats_file, settle=1.0,
                                      timeout=15)
    assert thread_state.ENABLED
    assert published >= 250
    assert final["userStats"]["nClobbered"] == final["processorStats"]["nProcessed"] == published
