"""Benchmark: pvaflow's simulated area detector against pvapy's.

Both simulators publish 128x128 uint8 frames for about 5 s at several
target rates and at the maximum rate (``-fps 0``). One counting client per
run (a ``pvaccess.Channel`` monitor with ``record[queueSize=1000]
field(uniqueId)`` in its own process) measures the rate it receives:
``(frames - 1) / (last arrival - first arrival)``. The table shows the
median of 3 trials. Run with::

    python -m pytest -m bench benchmarks/bench_sim.py -s

The same file is the counting client: ``python bench_sim.py count CHANNEL LIMIT_S``.
"""

import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")

TARGETS = (1000, 5000, 10000, 20000, 0)   # 0 = as fast as possible
TRIALS = 3
RUNTIME_S = 5.0
START_DELAY_S = 1.5
SIZE = 128

SERVERS = {
    "ours": ("pvaflow.cli.sim_server", ["--summary-file"]),
    "pvapy": ("pvapy.cli.adSimServer", []),
}


def count_frames(channel, limit_s):
    """Client mode: count frames with uniqueId > 0 until 1 s without any; print JSON."""
    import pvaccess as pva  # pylint: disable=import-outside-toplevel

    state = {"n": 0, "first_id": None, "last_id": None, "t_first": None, "t_last": None}

    def on_frame(pv):
        unique_id = pv.getInt("uniqueId")
        if unique_id <= 0:
            return
        now = time.monotonic()
        if state["first_id"] is None:
            state["first_id"], state["t_first"] = unique_id, now
        state["last_id"], state["t_last"] = unique_id, now
        state["n"] += 1

    chan = pva.Channel(channel)
    chan.monitor(on_frame, "record[queueSize=1000]field(uniqueId)")
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        time.sleep(0.1)
        if state["t_last"] is not None and time.monotonic() - state["t_last"] > 1.0:
            break
    chan.stopMonitor()
    n = state["n"]
    span = (state["t_last"] - state["t_first"]) if n > 1 else 0.0
    state["rate"] = (n - 1) / span if span > 0 else 0.0
    state["lost"] = (state["last_id"] - state["first_id"] + 1 - n) if n else 0
    print(json.dumps(state), flush=True)


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_once(kind, fps, workdir):
    """One trial: start a simulator and a counting client; return the client's result."""
    module, extra = SERVERS[kind]
    channel = f"pvaflowbench:{kind}:{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", module, "-cn", channel, "-nx", str(SIZE), "-ny", str(SIZE),
            "-dt", "uint8", "-fps", str(fps), "-rt", str(RUNTIME_S), "-std", str(START_DELAY_S),
            "-shd", "0.5", "-rp", "0", "-dc"]
    if extra:
        args += [extra[0], os.path.join(workdir, f"{channel.replace(':', '_')}.json")]
    log = open(os.path.join(workdir, f"{kind}-{fps}.log"), "a")
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        client = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "count", channel,
             str(START_DELAY_S + RUNTIME_S + 15)],
            capture_output=True, text=True, errors="replace", env=_env(), timeout=START_DELAY_S + RUNTIME_S + 30)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    lines = [line for line in client.stdout.splitlines() if line.startswith("{")]
    assert lines, f"client printed no result: {client.stdout} {client.stderr}"
    return json.loads(lines[-1])


def _fmt_target(fps):
    return "max" if fps == 0 else str(fps)


@pytest.mark.bench
@pytest.mark.timeout(1800)
def test_sim_rates(tmp_path):
    """Run both simulators at every target; print the table of median achieved rates."""
    rows = []
    for fps in TARGETS:
        medians = {}
        lost = {}
        for kind in SERVERS:
            trials = [run_once(kind, fps, str(tmp_path)) for _ in range(TRIALS)]
            for trial in trials:
                assert trial["n"] > 0, f"{kind} at fps {fps}: the client received nothing"
            medians[kind] = statistics.median(t["rate"] for t in trials)
            lost[kind] = max(t["lost"] for t in trials)
        error = (medians["ours"] - fps) / fps * 100 if fps else None
        rows.append({"target": fps, "ours": medians["ours"], "pvapy": medians["pvapy"],
                     "ratio": medians["ours"] / medians["pvapy"] if medians["pvapy"] else None,
                     "error_pct": error, "lost_ours": lost["ours"], "lost_pvapy": lost["pvapy"]})

    header = (f"{'target fps':>10} {'ours fps':>10} {'pvapy fps':>10} {'ratio':>6}"
              f" {'our error':>10} {'lost ours':>10} {'lost pvapy':>10}")
    lines = [f"128x128 uint8, {RUNTIME_S:g} s per run, median of {TRIALS} trials,"
             f" {os.cpu_count()} CPUs", header]
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] else "-"
        error = f"{row['error_pct']:+.2f}%" if row["error_pct"] is not None else "-"
        lines.append(f"{_fmt_target(row['target']):>10} {row['ours']:>10.1f} {row['pvapy']:>10.1f}"
                     f" {ratio:>6} {error:>10} {row['lost_ours']:>10} {row['lost_pvapy']:>10}")
    goal = next(r for r in rows if r["target"] == 20000)
    met = abs(goal["error_pct"]) <= 1.0 and goal["ours"] >= goal["pvapy"]
    lines.append(f"goal (20000 fps within 1%, >= pvapy): {'met' if met else 'missed'}")
    print("\n" + "\n".join(lines))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_sim.json"), "w") as handle:
        json.dump({"rows": rows, "table": lines}, handle, indent=1)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "count":
        count_frames(sys.argv[2], float(sys.argv[3]))
    else:
        sys.exit(f"usage: {sys.argv[0]} count CHANNEL LIMIT_S")
