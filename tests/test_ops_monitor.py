"""pvapy-hpc-monitor: --once --json and the live dashboard against real consumers."""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import REPO, Procs, unique_prefix, wait_for
from pvaflow.ops.fleet_view import FleetView, Target, targets_from_patterns

MONITOR = "pvaflow.cli.monitor"


def tool_env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_tool(module, *args, timeout=30):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, errors="replace", timeout=timeout, env=tool_env(), check=False)


def status_up(name):
    """True once ``name`` answers a get (pvaccess retries promptly)."""
    import pvaccess as pva
    channel = pva.Channel(name)
    channel.setTimeout(0.5)
    try:
        return channel.get("field(statusTime)").getDouble("statusTime") > 0
    except pva.PvaException:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A simulator and a fleet of two consumers (status channels PREFIX:1:status, :2:status)."""
    tmp = tmp_path_factory.mktemp("ops_monitor")
    procs = Procs(tmp)
    prefix = unique_prefix("opsmon")
    procs.sim("-cn", f"{prefix}:image", "-nx", 32, "-ny", 24, "-fps", 50, "-rt", 150,
              "-std", 0.5, "-shd", 0.5, "-rp", 0)
    parent = procs.consumer("-ic", f"{prefix}:image", "-cid", "1-2", "-sc", f"{prefix}:*:status",
                            "-rqs", 20, "-rp", 0.5, "--restart-backoff", 0.5)
    try:
        for i in (1, 2):
            wait_for(lambda i=i: status_up(f"{prefix}:{i}:status"), 40, 0.2,
                     f"status channel of consumer {i}")
        yield prefix, parent
    finally:
        procs.cleanup()


def test_once_json_reports_every_consumer(fleet):
    prefix, _ = fleet
    time.sleep(1.0)  # a few reports with frames
    # A loaded machine can leave a record unanswered once: ask again, within bounds.
    result = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(run_tool(
        MONITOR, f"{prefix}:*:status", "--ids", "1-2", "--once", "--json", "-rp", 0.5)),
        40, 0.5, "every consumer reachable")
    assert result.returncode == 0, result.stdout + result.stderr
    sample = json.loads(result.stdout)
    rows, total = sample["processes"], sample["totals"]
    assert [r["label"] for r in rows] == ["1", "2"]
    assert [r["id"] for r in rows] == [1, 2]
    for row in rows:
        assert row["status"] == "ok" and row["state"] == "running" and row["kind"] == "consumer"
        assert row["processed"] > 0 and row["processedRate"] > 0
        assert row["missed"] == 0 and row["errors"] == 0 and row["restarts"] == 0
        assert row["queueMax"] == 20 and 0 <= row["queueFill"] <= 1
        assert row["channel"] == f"{prefix}:{row['id']}:status"
    assert total["alive"] == 2 and total["down"] == 0 and total["stale"] == 0
    assert total["processed"] == sum(r["processed"] for r in rows)


def test_once_marks_an_unreachable_process_down(fleet):
    prefix, _ = fleet
    # A loaded machine can leave a live record unanswered once: ask again, within bounds,
    # until both live consumers answer (process 3 never exists).
    def both_alive():
        attempt = run_tool(MONITOR, f"{prefix}:*:status", "--ids", "1-3", "--once",
                           "--timeout", 4)
        return attempt if "TOTAL 2/3 alive" in attempt.stdout else None

    result = wait_for(both_alive, 40, 0.5, "consumers 1 and 2 reachable")
    assert result.returncode == 1, result.stderr  # a process is down
    lines = result.stdout.splitlines()
    row3 = next(line for line in lines if line.startswith("3 "))
    assert "down" in row3
    assert any(line.startswith("TOTAL 2/3 alive") for line in lines)
    assert "Traceback" not in result.stderr


def _read_available(fd, buf, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            buf.extend(chunk)
    return buf


def test_live_dashboard_in_a_pseudo_terminal(fleet):
    prefix, _ = fleet
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", MONITOR, f"{prefix}:*:status", "--ids", "1-2",
                             "--period", "0.5", "-rp", "0.5"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                            env=tool_env(COLUMNS="160", LINES="30", TERM="xterm-256color"))
    os.close(slave)
    buf = bytearray()
    try:
        _read_available(master, buf, 4.0)
        proc.send_signal(signal.SIGINT)
        _read_available(master, buf, 3.0)
        rc = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = buf.decode(errors="replace")
    assert rc == 0, text[-2000:]
    assert "Traceback" not in text
    assert "\x1b[" in text  # drawn with control codes (colour, cursor moves)
    for header in ("process", "rate/s", "processed", "missed", "rejected", "errors", "queue",
                   "p99 ms", "restarts"):
        assert header in text
    assert "TOTAL 2/2 alive" in text
    assert "│ 1 " in text and "│ 2 " in text  # one row per id


def test_plain_tables_when_not_on_a_terminal(fleet):
    prefix, _ = fleet
    proc = subprocess.Popen([sys.executable, "-m", MONITOR, f"{prefix}:*:status", "--ids", "1-2",
                             "--period", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors="replace", env=tool_env())
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "\x1b" not in out and "Traceback" not in err
    assert out.count("TOTAL 2/2 alive") >= 2  # one table per period


def test_restart_of_a_consumer_is_counted(fleet):
    """Kill consumer 1 of the fleet: the parent restarts it and the monitor counts it."""
    prefix, parent = fleet
    view = FleetView(targets_from_patterns([f"{prefix}:*:status"], "1-2", 0.5), timeout=0.5)
    try:
        view.refresh()
        pid1 = _child_pid(parent.pid, 1)
        assert pid1 is not None, "no fleet child found"
        os.kill(pid1, signal.SIGKILL)

        def restarted():
            rows, _ = view.refresh()
            time.sleep(0.3)
            return rows[0]["restarts"] == 1 and rows[0]["status"] == "ok" and rows
        rows = wait_for(restarted, 35, 0.1, "the restart to be seen")
        assert rows[1]["restarts"] == 0
    finally:
        view.close()


def _child_pid(parent_pid, consumer_id):
    """The pid of the fleet child serving ``consumer_id`` (spawned children are in id order)."""
    children = sorted(psutil.Process(parent_pid).children(), key=lambda c: c.create_time())
    workers = [c for c in children if "multiprocessing" in " ".join(c.cmdline())
               and "resource_tracker" not in " ".join(c.cmdline())]
    return workers[consumer_id - 1].pid if len(workers) >= consumer_id else None


class FakeGetter:
    """Serves records from a script: a dict per call, or an exception."""

    def __init__(self, script):
        self.script = list(script)

    def get(self, name):
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


def record(status_time, runtime, processed=10, state="running"):
    return {"consumerId": 1, "state": state, "runtime": runtime, "statusTime": status_time,
            "receiverStats": {"nReceived": processed, "nMissed": 0, "nRejected": 0},
            "queueStats": {"maxLength": 10, "nQueued": processed + 4, "peak": 5, "nRejected": 0},
            "processorStats": {"nProcessed": processed, "nErrors": 0, "periodProcessedRate": 5.0,
                               "latencyP99Ms": 1.5}}


def test_a_record_that_stops_changing_becomes_stale():
    target = Target(label="1", channel="x:1:status", report_period=0.1)
    view = FleetView([target], getter=FakeGetter([record(100.0, 1.0)]))
    try:
        rows, total = view.refresh()
        assert rows[0]["status"] == "ok" and rows[0]["queueDepth"] == 4
        assert rows[0]["queueFill"] == pytest.approx(0.4)
        time.sleep(0.4)  # more than 3 report periods without a new statusTime
        rows, total = view.refresh()
        assert rows[0]["status"] == "stale" and total["stale"] == 1
    finally:
        view.close()


def test_runtime_going_back_after_an_outage_is_a_restart():
    target = Target(label="1", channel="x:1:status", report_period=10)
    script = [record(100.0, 50.0), RuntimeError("Channel timed out"), record(103.0, 1.0),
              record(104.0, 2.0), record(105.0, 0.5)]  # the last: reset_stats, no outage
    view = FleetView([target], getter=FakeGetter(script))
    try:
        seen = [view.refresh()[0][0] for _ in range(5)]
    finally:
        view.close()
    assert [r["status"] for r in seen] == ["ok", "down", "ok", "ok", "ok"]
    assert [r["restarts"] for r in seen] == [0, 0, 1, 1, 1]


@pytest.mark.parametrize("args, message", [
    (["p:*:status"], "has '*' but no ids"),
    (["p:1:status", "--ids", "1-2"], "no channel pattern has a '*'"),
    ([], "name the status channels"),
    (["p:*:status", "--ids", "3-1"], "runs backwards"),
    (["p:*:status", "--ids", "1", "--stage", "x"], "--stage needs --workflow"),
    (["--workflow", "/nonexistent.yaml"], "cannot read workflow file"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_tool(MONITOR, *args, "--once")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pvapy-hpc-monitor: error: ")
    assert message in lines[0]
