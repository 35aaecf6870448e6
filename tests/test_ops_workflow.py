"""pvapy-hpc-workflow: validation with line numbers, and each shipped example run small."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import pytest

from conftest import REPO, read, unique_prefix, wait_for
from test_ops_monitor import MONITOR, run_tool, tool_env

WORKFLOW = "pvaflow.cli.workflow"
EXAMPLES = os.path.join(REPO, "examples", "workflows")


def example(name):
    return os.path.join(EXAMPLES, name)


def start_runner(tmp_path, path, *args, name="runner"):
    """Start ``pvapy-hpc-workflow run`` with its output in TMP/<name>.out."""
    out = open(tmp_path / f"{name}.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", WORKFLOW, "run", path, *map(str, args),
                             "--progress-period", "2"], stdout=out, stderr=subprocess.STDOUT,
                            cwd=str(tmp_path), env=tool_env())
    proc.out_path = out.name
    proc.out_file = out
    return proc


def finish(proc, timeout=60):
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        raise AssertionError("workflow did not end:\n" + read(proc.out_path)[-3000:]) from None
    finally:
        proc.out_file.close()
    return rc, read(proc.out_path)


@pytest.fixture
def runners():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the runner stops its stages in order
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


# --- examples ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(os.path.basename(p) for p in
                                        glob.glob(os.path.join(EXAMPLES, "*.yaml"))))
def test_every_example_passes_check(name):
    result = run_tool(WORKFLOW, "check", example(name), "--commands")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "channel graph:" in result.stdout and result.stdout.rstrip().endswith(": OK")


def test_simple_example_runs_and_stops_in_order(tmp_path, runners):
    run_dir = tmp_path / "run"
    proc = start_runner(tmp_path, example("simple.yaml"), "--set", f"prefix={unique_prefix('wfs')}",
                        "--set", "detector.args.runtime=2", "--run-dir", run_dir)
    runners.append(proc)
    rc, out = finish(proc)
    assert rc == 0, out
    assert "detector --[" in out and "--> rotate" in out  # the channel graph
    result = summary(run_dir)
    assert result["exitCode"] == 0 and result["endedBecause"] == "sources finished"
    detector, rotate = result["stages"]["detector"], result["stages"]["rotate"]
    published = detector["totals"]["published"]
    assert published >= 150
    assert rotate["totals"]["processed"] == published and rotate["totals"]["missed"] == 0
    assert rotate["stoppedBecause"] == "upstream ended" and rotate["exitCode"] == 0
    assert out.index("detector ended") < out.index("stopping rotate")
    assert "Traceback" not in out + read(rotate["log"])


def test_stages_stop_when_the_runner_is_killed(tmp_path, runners):
    """A runner killed with SIGKILL cannot stop its stages: they notice and stop themselves."""
    import psutil
    proc = start_runner(tmp_path, example("simple.yaml"), "--set", f"prefix={unique_prefix('wfk')}",
                        "--set", "detector.args.runtime=60", "--run-dir", tmp_path / "run")
    runners.append(proc)
    wait_for(lambda: read(proc.out_path).count("started ") >= 2, 30, 0.2, "both stages started")
    stages = psutil.Process(proc.pid).children()
    assert len(stages) == 2
    proc.kill()
    proc.wait(10)
    proc.out_file.close()
    gone, alive = psutil.wait_procs(stages, timeout=30)
    for stage in alive:  # leave nothing behind even when the test fails
        stage.kill()
    assert not alive, f"stages still running after the runner was killed: {alive}"


def test_distributed_example_writes_every_frame_in_order(tmp_path, runners):
    run_dir = tmp_path / "run"
    proc = start_runner(tmp_path, example("distributed.yaml"), "--set",
                        f"prefix={unique_prefix('wfd')}", "--set", "detector.args.runtime=2",
                        "--set", "detector.args.frame_rate=100", "--set", "work.count=2",
                        "--run-dir", run_dir)
    runners.append(proc)
    rc, out = finish(proc, 90)
    assert rc == 0, out
    stages = summary(run_dir)["stages"]
    published = stages["detector"]["totals"]["published"]
    assert stages["work"]["totals"]["processed"] == published
    assert stages["ordered"]["totals"]["processed"] == published
    assert stages["writer"]["totals"]["processed"] == published
    assert stages["writer"]["totals"]["missed"] == 0
    files = sorted(glob.glob(str(run_dir / "frames" / "*.h5")))
    with h5py.File(files[0], "r") as f:
        ids = list(f["/entry/data/uniqueId"][:])
    assert ids == list(range(1, published + 1))  # all frames, in order


def test_multihost_example_on_two_hosts(tmp_path, runners):
    """Two runners with --host, as on two machines; the processing side stops on its own."""
    prefix = unique_prefix("wfm")
    common = ["--set", f"prefix={prefix}", "--set", "detector.args.runtime=2",
              "--set", "detector.args.start_delay=4", "--set", "work-a.ids=1",
              "--set", "work-b.ids=2"]
    processing = start_runner(tmp_path, example("multihost.yaml"), "--host", "processing",
                              *common, "--run-dir", tmp_path / "proc", name="processing")
    runners.append(processing)
    wait_for(lambda: "started work-a" in read(processing.out_path), 40, 0.2,
             "the processing side to start")
    time.sleep(1.0)
    detector = start_runner(tmp_path, example("multihost.yaml"), "--host", "detector",
                            *common, "--run-dir", tmp_path / "det", name="detector")
    runners.append(detector)
    rc, out = finish(detector)
    assert rc == 0, out
    assert "work-a" not in out.split("run directory")[1]  # only its own stages ran there
    rc, out = finish(processing)
    assert rc == 0, out
    published = summary(tmp_path / "det")["stages"]["detector"]["totals"]["published"]
    stages = summary(tmp_path / "proc")["stages"]
    assert set(stages) == {"work-a", "work-b", "ordered"}
    assert stages["ordered"]["totals"]["processed"] == published
    assert stages["work-a"]["totals"]["processed"] + stages["work-b"]["totals"]["processed"] \
        == published
    assert stages["work-a"]["stoppedBecause"] == "upstream ended"


def test_external_example_with_ctrl_c_monitor_and_control(tmp_path, procs, runners):
    """A source outside the workflow; watch and steer it, then Ctrl-C stops it in order."""
    prefix = unique_prefix("wfe")
    channel = f"{prefix}:det"
    procs.sim("-cn", channel, "-nx", 32, "-ny", 24, "-fps", 50, "-rt", 60, "-std", 0,
              "-shd", 0.5, "-rp", 0)
    overrides = ["--set", f"prefix={prefix}", "--set", f"external=[{channel}]",
                 "--set", f"analysis.input={channel}", "--set", "analysis.count=1"]
    run_dir = tmp_path / "run"
    proc = start_runner(tmp_path, example("external.yaml"), *overrides, "--run-dir", run_dir)
    runners.append(proc)
    wait_for(lambda: "started analysis" in read(proc.out_path), 30, 0.2, "the stage to start")
    path = example("external.yaml")
    sample = wait_for(lambda: (lambda r: r.returncode == 0 and json.loads(r.stdout))(
        run_tool(MONITOR, "--workflow", path, *overrides, "--once", "--json", "-rp", 2)),
        20, 0.5, "the monitor to see the stage")
    assert [r["label"] for r in sample["processes"]] == ["analysis/1"]
    result = run_tool("pvaflow.cli.control", "get_stats", "--workflow", path, *overrides,
                      "--stage", "analysis")
    assert result.returncode == 0 and result.stdout.startswith("OK      analysis/1 processed")
    proc.send_signal(signal.SIGINT)
    rc, out = finish(proc)
    assert rc == 0, out
    result = summary(run_dir)
    assert result["endedBecause"] == "interrupted"
    assert result["stages"]["analysis"]["stoppedBecause"] == "interrupted"
    assert result["stages"]["analysis"]["totals"]["processed"] > 0


def test_a_failing_stage_stops_the_workflow(tmp_path, runners):
    run_dir = tmp_path / "run"
    proc = start_runner(tmp_path, example("simple.yaml"), "--set", f"prefix={unique_prefix('wff')}",
                        "--set", "rotate.processor.class=NoSuchProcessor", "--run-dir", run_dir)
    runners.append(proc)
    rc, out = finish(proc)
    assert rc == 1
    assert "rotate ended with exit code 2" in out and "NoSuchProcessor" in out
    result = summary(run_dir)
    assert result["failedStages"] == ["rotate"]
    assert result["stages"]["detector"]["stoppedBecause"] == "not started"


# --- validation ----------------------------------------------------------------

GOOD = """\
name: t
stages:
  - name: src
    kind: simulator
    args: {frame_rate: 10, runtime: 1}
  - name: work
    kind: consumer
    input: src
"""

BAD = [
    # (text, line, words in the message)
    ("name: t\nstages:\n  - name: a\n   kind: x\n", 4, "not valid YAML"),
    ("name: t\nstage: []\nstages:\n  - {name: s, kind: simulator}\n", 2, "unknown key 'stage'"),
    (GOOD.replace("kind: consumer", "kind: procesor"), 7, "'kind' must be one of"),
    (GOOD.replace("    input: src\n", ""), 6, "'input' is required"),
    (GOOD.replace("input: src", "input: nowhere:image"), 8,
     "neither a stage name, the output of a stage, nor listed under 'external'"),
    (GOOD.replace("frame_rate: 10", "frame_rate: -5"), 5, "'frame_rate': '-5' must be >= 0"),
    (GOOD.replace("frame_rate: 10", "framerate: 5"), 5, "'framerate' is not an option"),
    (GOOD + "    args:\n      input_channel: x\n", 10, "use the stage key input"),
    (GOOD + "  - name: work\n    kind: consumer\n    input: src\n", 9, "name is used twice"),
    (GOOD.replace("    input: src\n", "    input: src\n    input: src\n"), 9, "appears twice"),
    (GOOD + "    count: 0\n", 9, "'count' must be >= 1"),
    (GOOD + "    processor: {file: missing.py, class: X}\n", 9, "does not exist"),
    (GOOD + "    count: 2\n  - name: one\n    kind: consumer\n    input: work\n", 12,
     "read it with a collector or give this stage the same ids"),
    (GOOD + "  - name: w\n    kind: writer\n    input: work\n", 9, "a writer needs a 'processor'"),
    (GOOD.replace("input: src", "input: back") + "  - name: back\n    kind: consumer\n"
     "    input: work\n", 6, "read each other in a circle"),
]


@pytest.mark.parametrize("text, line, words", BAD)
def test_problems_are_reported_with_line_numbers(tmp_path, text, line, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_tool(WORKFLOW, "run", path, "--run-dir", tmp_path / "run")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"pvapy-hpc-workflow: error: {path}:{line}: "), lines[0]
    assert words in lines[0]
    assert not (tmp_path / "run").exists()  # nothing was started


def test_check_lists_every_problem_and_unknown_host(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("frame_rate: 10", "frame_rate: x") + "    colour: red\n")
    result = run_tool(WORKFLOW, "check", path)
    assert result.returncode == 2
    assert f"{path}:5: stage 'src': args 'frame_rate'" in result.stdout
    assert f"{path}:9: stage 'work' (consumer): unknown key 'colour'" in result.stdout
    assert "and 1 more problem" in result.stderr
    path.write_text(GOOD)
    result = run_tool(WORKFLOW, "check", path, "--host", "nohost")
    assert result.returncode == 2 and "--host 'nohost': no stage has this host" in result.stderr
    result = run_tool(WORKFLOW, "check", path, "--set", "nostage.args.x=1")
    assert result.returncode == 2 and "neither a top-level key nor a stage name" in result.stderr
