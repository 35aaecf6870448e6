"""pvapy-hpc-report: plots and a summary table from --stats-file output of a short real run."""

import json
import signal

import pytest

from conftest import Procs, read_stats_lines, unique_prefix, wait_for
from test_ops_monitor import run_tool, status_up

REPORT = "pvaflow.cli.report"


@pytest.fixture(scope="module")
def stats_files(tmp_path_factory):
    """A 3 s run: one consumer and a fleet of two on one simulator, each with --stats-file."""
    tmp = tmp_path_factory.mktemp("ops_report")
    procs = Procs(tmp)
    prefix = unique_prefix("opsrep")
    single, fleet = tmp / "single.jsonl", tmp / "fleet.jsonl"
    try:
        one = procs.consumer("-ic", f"{prefix}:image", "-sqs", 100, "-rp", 0.5,
                             "--stats-file", single, "-sc", f"{prefix}:s:status")
        two = procs.consumer("-ic", f"{prefix}:image", "-cid", "1-2", "-sqs", 100, "-rp", 0.5,
                             "--stats-file", fleet, "-sc", f"{prefix}:f:*:status")
        for name in (f"{prefix}:s:status", f"{prefix}:f:1:status", f"{prefix}:f:2:status"):
            wait_for(lambda name=name: status_up(name), 40, 0.2, f"{name} to be served")
        # every consumer listens before the simulator starts: none misses the run
        sim = procs.sim("-cn", f"{prefix}:image", "-nx", 32, "-ny", 24, "-fps", 100, "-rt", 3,
                        "-std", 3, "-shd", 1, "-rp", 0)
        assert procs.wait(sim, 40)[0] == 0
        for proc in (one, two):
            proc.send_signal(signal.SIGINT)  # drain and write the final line
            assert procs.wait(proc, 30)[0] == 0
        yield tmp, single, fleet
    finally:
        procs.cleanup()


def test_png_and_summary_table(stats_files):
    tmp, single, fleet = stats_files
    png = tmp / "report.png"
    result = run_tool(REPORT, single, fleet, "-o", png, "--title", "test run")
    assert result.returncode == 0, result.stderr
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10000
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["process", "runtime", "s"]
    labels = [line.split("  ")[0].strip() for line in lines[1:] if line and "plots" not in line]
    assert labels == ["single/consumer 1", "fleet/consumer 1", "fleet/consumer 2", "TOTAL"]
    assert f"plots written to {png}" in result.stdout


def test_summary_numbers_match_the_stats_files(stats_files):
    _, single, fleet = stats_files
    result = run_tool(REPORT, single, fleet, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rows = {r["label"]: r for r in report["processes"]}
    final_single = read_stats_lines(single)[-1]
    assert rows["single/consumer 1"]["processed"] == final_single["processorStats"]["nProcessed"]
    final_fleet = read_stats_lines(fleet)[-1]
    for cid in ("1", "2"):
        assert rows[f"fleet/consumer {cid}"]["processed"] == \
            final_fleet["consumers"][cid]["processed"]
    total = report["total"]
    assert total["processed"] == sum(r["processed"] for r in report["processes"]) > 0
    assert total["lossPercent"] == 0.0
    assert all(r["peakRate"] > 0 and r["p99MaxMs"] > 0 for r in report["processes"]), rows


def test_appended_runs_are_shown_separately(tmp_path, stats_files):
    _, single, _ = stats_files
    twice = tmp_path / "twice.jsonl"
    twice.write_text(single.read_text() * 2 + "not json\n")
    result = run_tool(REPORT, twice)
    assert result.returncode == 0, result.stderr
    assert "consumer 1 run 2" in result.stdout
    assert "1 line(s) that are not statistics were skipped" in result.stdout


@pytest.mark.parametrize("content, message", [
    (None, "cannot read stats file"),
    ("", "no statistics lines"),
    ('{"hello": 1}\n', "no statistics lines"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "stats.jsonl"
    if content is not None:
        path.write_text(content)
    result = run_tool(REPORT, path, "-o", tmp_path / "x.png")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pvapy-hpc-report: error: ")
    assert message in lines[0]
