"""Running a resolved workflow: start stages, supervise them, stop them in order, summarise.

* Stages are subprocesses of the existing tools (``python -m
  pvaflow.cli.<tool>``), each in its own process group, so a Ctrl-C at the
  terminal reaches only the runner, which then stops the stages in order.
  Each stage writes its output to ``RUN_DIR/<stage>.log``.
* Start: downstream stages first; a consumer or collector counts as up once
  its status channel answers, so the sources start only when everything
  downstream listens. Then the runner confirms (without holding anything
  up) that every stage has received from its inputs (the initial value of
  a channel counts), and warns if that takes longer than ``start_timeout``.
* Stop: the run ends when the sources end (a simulator's runtime), at the
  workflow's ``runtime``, on Ctrl-C/SIGTERM, or when a stage fails. Sources
  get SIGTERM first; every other stage gets SIGTERM ``settle`` seconds after
  all its upstream stages have ended (consumers drain on SIGTERM), and
  SIGKILL if it has not ended ``stop_timeout`` seconds later. An upstream
  stage on another host (``--host``) has ended when its status (or output)
  channel, once seen, has been unreachable for a few seconds
  (:mod:`pvaflow.ops.workflow_watch`).
* Summary: ``RUN_DIR/summary.json`` with each stage's command, exit code and
  final statistics (from its ``--stats-file`` or simulator summary).
"""

import json
import os
import signal
import subprocess
import time

from . import stats_lines
from .progress import ProgressLine
from .workflow_graph import PROCESSING, command
from .workflow_watch import ConnectionCheck, Probe, RemoteWatch, liveness_channels

POLL = 0.2


class StageRun:
    """One started stage process."""

    def __init__(self, stage, run_dir):
        self.stage = stage
        self.log_path = os.path.join(run_dir, f"{stage.name}.log")
        self.proc = None
        self.started_at = self.ended_at = self.signalled_at = None
        self.exit_code = None
        self.killed = False
        self.why_stopped = ""

    def start(self):
        """Start the stage with its output in its log file, in a process group of its own."""
        # PVAFLOW_PARENT_PID: the stage stops itself if this runner is killed (see cli.common).
        env = dict(os.environ, PYTHONUNBUFFERED="1", PVAFLOW_PARENT_PID=str(os.getpid()))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(command(self.stage), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def running(self):
        """Started and not yet ended."""
        return self.proc is not None and self.exit_code is None

    def poll(self):
        """True when the process has just been seen to end."""
        if self.running and self.proc.poll() is not None:
            self.exit_code = self.proc.returncode
            self.ended_at = time.monotonic()
            return True
        return False

    def signal(self, signum, why=""):
        """Send ``signum``, remembering the first stop request and why."""
        if not self.running:
            return
        if signum == signal.SIGKILL:
            self.killed = True
        elif self.signalled_at is None:
            self.signalled_at = time.monotonic()
            self.why_stopped = why
        try:
            self.proc.send_signal(signum)
        except ProcessLookupError:
            pass

    def log_tail(self, lines=5):
        """The last lines of the stage's log."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read().splitlines()[-lines:]
        except OSError:
            return []


class Runner:
    """Starts the stages of ``flow`` that belong to ``host`` (all when None) and supervises them."""

    def __init__(self, flow, run_dir, host=None, runtime=None, out=None, progress_period=10.0):
        self.flow = flow
        self.run_dir = run_dir
        self.host = host
        self.runtime = flow.runtime if runtime is None else runtime
        self.local = [s for s in flow.stages if host is None or s.host == host]
        names = {s.name for s in self.local}
        self.remote = [s for s in flow.stages if s.name not in names]
        self.runs = {s.name: StageRun(s, run_dir) for s in self.local}
        self.progress = ProgressLine(out, progress_period)
        self.stop_reason = None
        self.interrupts = 0
        self.failed = []
        self.probe = None
        self.watch = None
        self.connections = None
        self.t0 = None

    # --- control ------------------------------------------------------------
    def interrupt(self, *_):
        """Ctrl-C/SIGTERM: first an orderly stop, then SIGTERM to all, then SIGKILL."""
        self.interrupts += 1
        self.request_stop("interrupted")

    def request_stop(self, reason):
        """Begin the orderly stop (the first reason is kept)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def say(self, text):
        """Print a line of the runner's own."""
        self.progress.message(f"[workflow] {text}")

    # --- run ----------------------------------------------------------------
    def run(self):
        """Run to the end; return the exit code (0 all stages ended cleanly, 1 otherwise)."""
        os.makedirs(self.run_dir, exist_ok=True)
        self.t0 = time.monotonic()
        self.probe = Probe()
        needed = {u for s in self.local for u in s.upstream} - set(self.runs)
        if needed:
            self.watch = RemoteWatch([self.flow.stage(n) for n in needed], Probe())
            self.watch.start()
        self._write_plan()
        try:
            if self._start_all():  # when it gives up, supervision stops what started, in order
                self.connections = ConnectionCheck(
                    [s for s in self.local if s.kind in PROCESSING], self.flow.start_timeout)
            self._supervise()
        finally:
            if self.watch is not None:
                self.watch.halt()
        return self._finish()

    def _levels(self):
        depth = {}
        for stage in self.local:  # flow.stages is in topological order
            ups = [depth[u] for u in stage.upstream if u in depth]
            depth[stage.name] = 1 + max(ups) if ups else 0
        return [[s for s in self.local if depth[s.name] == d]
                for d in sorted(set(depth.values()), reverse=True)]

    def _start_all(self):
        for level in self._levels():
            for stage in level:
                run = self.runs[stage.name]
                run.start()
                self.say(f"started {stage.name} ({stage.kind}, pid {run.proc.pid}), log"
                         f" {run.log_path}")
            if not self._wait_ready(level):
                return False
        return True

    def _wait_ready(self, level):
        deadline = time.monotonic() + self.flow.start_timeout
        waiting = [s for s in level if s.kind in PROCESSING]
        while waiting:
            for stage in level:
                run = self.runs[stage.name]
                if run.poll():
                    self._ended(run)
                    self.request_stop(f"stage {stage.name} ended while starting")
            if self.stop_reason:
                return False
            waiting = [s for s in waiting
                       if not all(self.probe.up(n) for n in liveness_channels(s))]
            if waiting and time.monotonic() > deadline:
                self.failed.append(waiting[0].name)
                self.request_stop(f"stage {waiting[0].name} did not come up within"
                                  f" {self.flow.start_timeout:g} s")
                return False
            if waiting:
                time.sleep(POLL)
        return True

    def _upstream_ended(self, stage):
        """When the last upstream stage ended (monotonic), or None while one still runs."""
        times = []
        for name in stage.upstream:
            run = self.runs.get(name)
            if run is None:  # on another host
                ended = self.watch.ended_at(name) if self.watch else None
            elif run.proc is None:  # never started (the start was given up)
                ended = self.t0
            else:
                ended = run.ended_at
            if ended is None:
                return None
            times.append(ended)
        return max(times) if times else None

    def _is_source(self, stage):
        return not any(u in self.runs for u in stage.upstream)

    def _supervise(self):
        signalled_sources, escalated = False, 1
        while True:
            now = time.monotonic()
            for run in self.runs.values():
                if run.poll():
                    self._ended(run)
            running = [r for r in self.runs.values() if r.running]
            if not running:
                break
            if self.runtime and now - self.t0 >= self.runtime:
                self.request_stop(f"workflow runtime {self.runtime:g} s reached")
            if self.stop_reason and not signalled_sources:
                signalled_sources = True
                self.say(f"stopping ({self.stop_reason}): sources first")
                for run in running:
                    if self._is_source(run.stage):
                        run.signal(signal.SIGTERM, self.stop_reason)
            if self.interrupts >= 2 and self.interrupts != escalated:
                escalated = self.interrupts
                how = signal.SIGTERM if escalated == 2 else signal.SIGKILL
                self.say(f"interrupted again: {how.name} to every stage")
                for run in running:
                    run.signal(how, "interrupted again")
            for run in running:
                stage = run.stage
                if run.signalled_at is None and stage.upstream and (
                        not self._is_source(stage) or self.watch is not None):
                    ended = self._upstream_ended(stage)
                    if ended is not None and now - ended >= self.flow.settle:
                        self.say(f"stopping {stage.name}: upstream ended, draining")
                        run.signal(signal.SIGTERM, "upstream ended")
                if run.signalled_at is not None and not run.killed and \
                        now - run.signalled_at > self.flow.stop_timeout:
                    self.say(f"{stage.name} did not stop within {self.flow.stop_timeout:g} s;"
                             " killing it")
                    run.signal(signal.SIGKILL)
            if self.connections is not None and not self.stop_reason:
                self.connections.poll(self.say, self.t0)
            self._show_progress(now, running)
            time.sleep(POLL)
        self.progress.end()

    def _ended(self, run):
        stage, code = run.stage, run.exit_code
        took = run.ended_at - run.started_at
        self.say(f"{stage.name} ended with exit code {code} after {took:.1f} s")
        if code != 0 or run.killed:
            self.failed.append(stage.name)
            for line in run.log_tail():
                self.say(f"  {stage.name}| {line}")
            self.request_stop(f"stage {stage.name} failed")

    def _show_progress(self, now, running):
        ended = [n for n, r in self.runs.items() if r.exit_code is not None]
        text = (f"[workflow] {now - self.t0:.0f} s"
                + (f" / {self.runtime:g} s" if self.runtime else "")
                + f": running {', '.join(r.stage.name for r in running)}"
                + (f"; ended {', '.join(ended)}" if ended else ""))
        self.progress.update(text)

    # --- summary ------------------------------------------------------------
    def _write_plan(self):
        plan = {"workflow": self.flow.name, "file": os.path.abspath(self.flow.source),
                "host": self.host, "stages": {s.name: command(s) for s in self.local}}
        with open(os.path.join(self.run_dir, "plan.json"), "w", encoding="utf-8") as f:
            json.dump(plan, f, indent=1)

    def _natural_end(self):
        if any(not s.upstream for s in self.local):
            return "sources finished"
        return "upstream stages on other hosts ended"

    def stage_summary(self, run):
        """The summary entry of one stage: command, exit, final counters."""
        stage = run.stage
        stats_path = os.path.join(self.run_dir, f"{stage.name}.stats.jsonl")
        summary_path = os.path.join(self.run_dir, f"{stage.name}.summary.json")
        entry = {"kind": stage.kind, "host": stage.host, "ids": stage.ids,
                 "exitCode": run.exit_code, "killed": run.killed,
                 "stoppedBecause": run.why_stopped or ("ended by itself" if run.proc else
                                                       "not started"),
                 "seconds": round((run.ended_at or time.monotonic()) - run.started_at, 3)
                 if run.started_at else 0.0,
                 "command": command(stage), "log": run.log_path}
        if stage.kind == "simulator" and os.path.exists(summary_path):
            with open(summary_path, encoding="utf-8") as f:
                entry["final"] = json.load(f)
            entry["totals"] = {"published": entry["final"].get("published", 0)}
        elif os.path.exists(stats_path):
            entry["statsFile"] = stats_path
            entry["totals"] = stats_lines.final_totals(stats_path)
        return entry

    def _finish(self):
        code = 1 if self.failed else 0
        summary = {"workflow": self.flow.name, "file": os.path.abspath(self.flow.source),
                   "host": self.host, "runDir": os.path.abspath(self.run_dir),
                   "seconds": round(time.monotonic() - self.t0, 3),
                   "endedBecause": self.stop_reason or self._natural_end(), "exitCode": code,
                   "failedStages": self.failed,
                   "stages": {n: self.stage_summary(r) for n, r in self.runs.items()}}
        path = os.path.join(self.run_dir, "summary.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, default=str)
        self.say(f"summary ({summary['endedBecause']}, {summary['seconds']:.1f} s), written to"
                 f" {path}:")
        for line in summary_table(summary).splitlines():
            self.progress.message("  " + line)
        return code


def summary_table(summary):
    """The stages of a summary dict as a plain-text table."""
    head = f"{'stage':<16} {'kind':<10} {'exit':>4} {'seconds':>8} {'published':>9}" \
           f" {'processed':>9} {'missed':>7} {'rejected':>8} {'errors':>6}"
    lines = [head]
    for name, entry in summary["stages"].items():
        totals = entry.get("totals") or {}
        exit_code = "-" if entry["exitCode"] is None else str(entry["exitCode"])
        cells = [str(totals.get(k, "-")) for k in ("published", "processed", "missed",
                                                    "rejected", "errors")]
        lines.append(f"{name:<16} {entry['kind']:<10} {exit_code:>4} {entry['seconds']:>8.1f}"
                     f" {cells[0]:>9} {cells[1]:>9} {cells[2]:>7} {cells[3]:>8} {cells[4]:>6}")
    return "\n".join(lines)
