"""Consumer fleets: distributor accounting, supervision, restarts."""

import json
import os
import signal

import psutil
import pytest

from conftest import REPO, read, read_stats_lines, wait_for
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.id_list import parse_id_list

PROCESSORS = os.path.join(REPO, "tests", "processors")


def sim(procs, channel, tmp_path, fps, runtime, start_delay):
    summary = tmp_path / f"sim-{channel.rsplit(':', 1)[-1]}.json"
    proc = procs.sim("-cn", channel, "-nx", 16, "-ny", 16, "-fps", fps, "-rt", runtime,
                     "-std", start_delay, "-shd", 1, "-rp", 0, "--summary-file", summary)
    return proc, summary


def published_count(procs, proc, summary):
    rc, out, err = procs.wait(proc, 60)
    assert rc == 0, err
    return json.loads(read(summary))["published"]


def final_fleet(procs, fleet, stats_file, timeout=60):
    rc, out, err = procs.wait(fleet, timeout)
    lines = read_stats_lines(stats_file)
    assert lines and lines[-1]["final"], out + err
    return rc, lines[-1], out, err


@pytest.mark.parametrize("n_consumers,updates", [(2, 1), (4, 8)])
def test_distributed_fleet_processes_each_frame_once(procs, prefix, tmp_path, n_consumers, updates):
    stats_file = tmp_path / "fleet.jsonl"
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=600, runtime=3, start_delay=4)
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", n_consumers, "-dg", "g", "-dt", "uniqueId",
                           "-du", updates, "-sqs", 200, "-rt", 11, "-rp", 2,
                           "-sc", f"{prefix}:status:*", "--stats-file", stats_file)
    published = published_count(procs, source, summary)
    rc, final, out, err = final_fleet(procs, fleet, stats_file)
    assert rc == 0, err
    total = final["total"]
    assert total["processed"] == published, out
    assert total["missed"] == 0 and total["rejected"] == 0 and total["errors"] == 0
    per = final["consumers"]
    assert len(per) == n_consumers and all(c["processed"] > 0 for c in per.values())
    for child in final["children"].values():
        assert child["receiverStats"]["nMissed"] == 0


def test_two_distributor_sets(procs, prefix, tmp_path):
    """Two sets of two consumers: the sets share the frames; members of a set see the same ones."""
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=400, runtime=3, start_delay=4)
    fleets = []
    for name in ("A", "B"):
        stats = tmp_path / f"fleet-{name}.jsonl"
        first = 1 if name == "A" else 3
        fleets.append((procs.consumer("-ic", f"{prefix}:img", "-cid", f"{first}-{first + 1}",
                                      "-dg", "g", "-ds", name, "-nds", 2, "-du", 1, "-dt", "uniqueId",
                                      "-sqs", 200, "-rt", 11, "-rp", 2, "--stats-file", stats), stats))
    published = published_count(procs, source, summary)
    per_set = []
    for fleet, stats in fleets:
        rc, final, out, err = final_fleet(procs, fleet, stats)
        assert rc == 0, err
        counts = [c["processed"] for c in final["consumers"].values()]
        assert counts[0] == counts[1], out  # members of a set process the same frames
        assert final["total"]["missed"] == 0
        per_set.append(counts[0])
    assert sum(per_set) == published


def test_restarted_child_keeps_counting(procs, prefix, tmp_path):
    """SIGKILL one child mid-run: it is restarted, and what it lost is counted."""
    stats_file = tmp_path / "fleet.jsonl"
    source, summary = sim(procs, f"{prefix}:img", tmp_path, fps=300, runtime=8, start_delay=3)
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-sqs", 100, "-rt", 16, "-rp", 1,
                           "--restart-backoff", 0.2, "-sc", f"{prefix}:status:*",
                           "--stats-file", stats_file)
    parent = psutil.Process(fleet.pid)
    wait_for(lambda: any(line["total"]["processed"] > 300 for line in read_stats_lines(stats_file)),
             20, message="fleet processing")
    consumers = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]
    assert len(consumers) == 2
    victim = sorted(consumers, key=lambda p: p.create_time())[0]
    os.kill(victim.pid, signal.SIGKILL)
    published = published_count(procs, source, summary)
    rc, final, out, err = final_fleet(procs, fleet, stats_file)
    assert rc == 0, err
    restarted = [c for c in final["consumers"].values() if c["restarts"] == 1]
    assert len(restarted) == 1 and restarted[0]["downSeconds"] > 0, out
    for c in final["consumers"].values():
        # Every id is processed, failed, rejected, missed (gap or while down) or lost in flight.
        accounted = c["processed"] + c["errors"] + c["rejected"] + c["missed"] + c["lostInFlight"]
        assert accounted == published, (c, published, out)
    assert "died (signal 9)" in out


def test_children_stop_when_the_parent_is_killed(procs, prefix, tmp_path):
    """A parent killed with SIGKILL cannot forward a stop: its consumers notice and stop."""
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-rp", 0, "-sc", f"{prefix}:status:*")
    parent = psutil.Process(fleet.pid)
    wait_for(lambda: len([p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]) == 2,
             30, 0.2, "two consumer processes")
    consumers = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())]
    os.kill(fleet.pid, signal.SIGKILL)
    fleet.wait(10)
    gone, alive = psutil.wait_procs(consumers, timeout=15)
    for p in alive:  # leave nothing behind even when the test fails
        p.kill()
    assert not alive, f"orphaned consumers still running: {[p.pid for p in alive]}"


def test_child_startup_error_is_shown_once(procs, prefix, tmp_path):
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 3, "-pf", os.path.join(PROCESSORS, "faulty.py"),
                           "-pc", "ConstructorRaises", "-rt", 20)
    rc, out, err = procs.wait(fleet, 60)
    assert rc == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "could not be created" in errors[0], err


def test_restart_limit_gives_up_with_exit_1(procs, prefix, tmp_path):
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-pf", os.path.join(PROCESSORS, "faulty.py"),
                           "-pc", "DiesInStart", "--restart-limit", 2, "--restart-backoff", 0.1,
                           "-rt", 30)
    rc, out, err = procs.wait(fleet, 90)
    assert rc == 1
    assert out.count("restart 1/2") == 2 and out.count("restart 2/2") == 2
    assert err.count("reached the restart limit (2)") == 2


@pytest.mark.parametrize("spec,ids", [
    ("1,3,5", [1, 3, 5]), ("1-4,7", [1, 2, 3, 4, 7]), ("range(2,8,3)", [2, 5]), ("range(3)", [0, 1, 2]),
    ("[4, 6]", [4, 6]), (" 9 ", [9]),
])
def test_id_lists(spec, ids):
    assert parse_id_list(spec) == ids


@pytest.mark.parametrize("spec", ["", "1,,2", "5-2", "range(1,4,0)", "__import__('os')", "1,1", "a-b",
                                  "range(1,2,3,4)", "-1"])
def test_bad_id_lists(spec):
    with pytest.raises(ConfigurationError):
        parse_id_list(spec)


def test_cuda_devices_are_assigned_one_per_consumer(procs, prefix, tmp_path):
    stats_file = tmp_path / "fleet.jsonl"
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 3, "--cuda-devices", "0,1",
                           "-pf", os.path.join(PROCESSORS, "env_reporter.py"), "-pc", "EnvReporter",
                           "-rt", 4, "-rp", 1, "--stats-file", stats_file)
    rc, final, out, err = final_fleet(procs, fleet, stats_file)
    assert rc == 0, err
    seen = {cid: child["userStats"]["cudaVisibleDevices"] for cid, child in final["children"].items()}
    assert seen == {"1": "0", "2": "1", "3": "0"}


def test_fleet_parent_live_line_only_on_a_terminal(prefix):
    import subprocess
    import sys
    from conftest import run_on_terminal
    args = [sys.executable, "-m", "pvaflow.cli.consumer", "-ic", f"{prefix}:none", "-nc", 2,
            "-rt", 3.5, "-rp", 0]
    args = [str(a) for a in args]
    env = dict(os.environ, PYTHONPATH=REPO)
    rc, on_tty = run_on_terminal(args, env, timeout=60)
    assert rc == 0, on_tty
    assert on_tty.count("\r[fleet]") >= 2 and "2/2 running" in on_tty and "FINAL" in on_tty
    piped = subprocess.run(args, capture_output=True, text=True, errors="replace", cwd=REPO, env=env, timeout=60)
    assert piped.returncode == 0 and "\r" not in piped.stdout and "FINAL" in piped.stdout
