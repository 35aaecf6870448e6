"""pvapy-hpc-control: one command to many control channels, each reply awaited."""

import json

import pytest

from conftest import Procs, read, unique_prefix, wait_for
from test_ops_monitor import MONITOR, run_tool, status_up

CONTROL = "pvaflow.cli.control"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A simulator and two consumers with status PREFIX:N:status and control PREFIX:N:control."""
    tmp = tmp_path_factory.mktemp("ops_control")
    procs = Procs(tmp)
    prefix = unique_prefix("opsctl")
    procs.sim("-cn", f"{prefix}:image", "-nx", 32, "-ny", 24, "-fps", 50, "-rt", 120,
              "-std", 0.5, "-shd", 0.5, "-rp", 0)
    parent = procs.consumer("-ic", f"{prefix}:image", "-cid", "1-2", "-sc", f"{prefix}:*:status",
                            "-cc", f"{prefix}:*:control", "-rqs", 10, "-rp", 0.5)
    try:
        for i in (1, 2):
            wait_for(lambda i=i: status_up(f"{prefix}:{i}:status"), 40, 0.2,
                     f"status channel of consumer {i}")
        yield prefix, parent, procs
    finally:
        procs.cleanup()


def test_get_stats_and_configure_reach_every_process(fleet):
    prefix, _, _ = fleet
    result = run_tool(CONTROL, "get_stats", f"{prefix}:*:control", "--ids", "1-2")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("OK      1 processed ") and lines[1].startswith("OK      2 ")
    assert lines[-1] == "get_stats: 2 of 2 processes replied ok"

    result = run_tool(CONTROL, "configure", f"{prefix}:*:control", "--ids", "1-2",
                      "--args", '{"receiverQueueSize": 30}', "--json")
    assert result.returncode == 0, result.stderr
    replies = json.loads(result.stdout)
    assert replies["ok"] == 2 and replies["failed"] == 0
    assert {r["message"] for r in replies["replies"]} == {"configuration applied"}
    # The change is visible in the status records.
    sample = wait_for(lambda: (lambda s: s if all(r.get("queueMax") == 30 for r in s["processes"])
                               else None)(json.loads(run_tool(
                                   MONITOR, f"{prefix}:*:status", "--ids", "1-2", "--once",
                                   "--json").stdout)), 10, 0.2, "queue size 30 in the status")
    assert sample["totals"]["alive"] == 2


def test_errors_and_timeouts_exit_non_zero(fleet):
    prefix, _, _ = fleet
    result = run_tool(CONTROL, "get_stats", f"{prefix}:*:control", "--ids", "1-3", "-t", 4)
    assert result.returncode == 1
    by_label = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[:-1]}
    assert by_label == {"1": "OK", "2": "OK", "3": "TIMEOUT"}
    assert "no connection to" in result.stdout
    assert result.stdout.splitlines()[-1] == "get_stats: 2 of 3 processes replied ok"

    result = run_tool(CONTROL, "configure", f"{prefix}:*:control", "--ids", "1-2",
                      "--args", '{"objectIdOffset": 0}')
    assert result.returncode == 1
    assert result.stdout.count("ERROR") == 2 and "objectIdOffset must be >= 1" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["explode", "p:*:control", "--ids", "1"], "invalid choice: 'explode'"),
    (["configure", "p:*:control", "--ids", "1"], "configure needs --args"),
    (["configure", "p:*:control", "--ids", "1", "--args", "{bad"], "--args is not valid JSON"),
    (["configure", "p:*:control", "--ids", "1", "--args", "[1]"], "must be a JSON object"),
    (["stop", "p:*:control", "--ids", "1", "--args", "{}"], "--args is only for configure"),
    (["stop"], "name the control channels"),
    (["stop", "p:*:control"], "has '*' but no ids"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_tool(CONTROL, *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pvapy-hpc-control: error: "), result.stderr
    assert message in lines[0]


def test_reset_stats_then_stop_every_process(fleet):
    prefix, parent, procs = fleet
    result = run_tool(CONTROL, "reset_stats", f"{prefix}:*:control", "--ids", "1-2")
    assert result.returncode == 0 and result.stdout.count("statistics reset") == 2
    result = run_tool(CONTROL, "stop", f"{prefix}:*:control", "--ids", "1-2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("stopping") == 2
    rc, out, err = procs.wait(parent, 20)  # both children stopped: the fleet ends
    assert rc == 0, err
    assert "FINAL" in out and read(parent.err_path).count("Traceback") == 0
