"""Benchmark harness: pvaflow against pvapy's streaming framework.

What it does (used by ``bench_frameworks.py``):

* runs the tools as separate processes (``python -m pvaflow.cli.*`` and
  ``python -m pvapy.cli.*``) with equal flags, every run on a fresh channel,
  and reaps them with ``os.wait4`` (whole-life CPU of a process and the
  children it reaped); CPU time of a process tree at given moments comes
  from psutil;
* decides whether a run was lossless from the files the counting processor
  (``counting_processor.py``) writes in ``stop()`` and from what the
  publisher says it published (``--summary-file``);
* searches the highest lossless rate (exponential ramp, then geometric
  bisection, capped by a number of probes and by a time budget);
* keeps results in ``benchmarks/results/results.json`` and draws
  ``benchmarks/results/results.png`` (matplotlib, Agg backend).

The same file has two helper processes, started by the harness::

    python harness.py monitor --channel C --sqs N --out-dir D [--idle-exit S] [--timing]
        a bare pvaccess monitor (no framework) that counts frames and ids with
        the counting processor's process(); stops on SIGINT (or S seconds
        after the last frame) and writes the same JSON file;
    python harness.py produce --prefix P --n 4 --size S --fps R --runtime T ...
        one process serving P:1 .. P:n and publishing frames round robin
        (id k on P:((k-1) % n) + 1), the producers of the collector case.

Settings come from environment variables (see ``Settings.from_env`` and
``benchmarks/README.md``).
"""

import argparse
import dataclasses
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
RESULTS_JSON = os.path.join(RESULTS_DIR, "results.json")
RESULTS_PNG = os.path.join(RESULTS_DIR, "results.png")
PROCESSOR_FILE = os.path.join(HERE, "counting_processor.py")
PROCESSOR_CLASS = "CountingProcessor"
PY = sys.executable

FRAMEWORKS = ("pvaflow", "pvapy")
CONSUMER_MODULES = {"pvaflow": "pvaflow.cli.consumer", "pvapy": "pvapy.cli.hpcConsumer"}
COLLECTOR_MODULES = {"pvaflow": "pvaflow.cli.collector", "pvapy": "pvapy.cli.hpcCollector"}
SIM_MODULES = {"pvaflow": "pvaflow.cli.sim_server", "pvapy": "pvapy.cli.adSimServer"}

# A publisher "holds" a target when it reaches this share of it; below, the
# run is limited by the publisher (sim-bound), not by the consumer.
SIM_BOUND_SHARE = 0.97


# --------------------------------------------------------------------------- settings
def _env(name, default, kind=float):
    text = os.environ.get(name, "").strip()
    return kind(text) if text else default


def _env_ints(name, default):
    text = os.environ.get(name, "").strip()
    if not text:
        return tuple(default)
    return tuple(int(part) for part in text.replace(" ", "").split(",") if part)


@dataclasses.dataclass
class Settings:
    """Benchmark parameters; every one can be set by an environment variable."""

    quick: bool = False
    trials: int = 3                  # PVAFLOW_BENCH_TRIALS: figures are medians of this many
    window_s: float = 2.5            # PVAFLOW_BENCH_WINDOW_S: publishing time of one run
    sizes: tuple = (128, 512, 1024, 2048)        # PVAFLOW_BENCH_SIZES (cases 1, 2)
    fleet_sizes: tuple = (128, 1024)             # PVAFLOW_BENCH_FLEET_SIZES (case 3)
    fleets: tuple = (2, 4)                       # PVAFLOW_BENCH_FLEETS (case 3)
    start_delay_s: float = 1.2       # PVAFLOW_BENCH_START_DELAY_S: simulator -std, one consumer
    fleet_start_delay_s: float = 3.0  # PVAFLOW_BENCH_FLEET_START_DELAY_S: -std for -nc > 1
    grace_s: float = 0.8             # PVAFLOW_BENCH_GRACE_S: wait after the last frame
    max_probes: int = 7              # PVAFLOW_BENCH_MAX_PROBES: runs of a first search
    later_probes: int = 3            # PVAFLOW_BENCH_LATER_PROBES: runs of trials 2..n
    tolerance: float = 0.2           # PVAFLOW_BENCH_TOLERANCE: bisection stops at bad/good <= 1+tol
    sim_tolerance: float = 0.1       # PVAFLOW_BENCH_SIM_TOLERANCE: same, case 5
    fixed_rate: float = 2000.0       # PVAFLOW_BENCH_FIXED_RATE: case 6 rate (fps)
    fixed_size: int = 128            # PVAFLOW_BENCH_FIXED_SIZE: case 6 frame size
    collector_size: int = 128        # PVAFLOW_BENCH_COLLECTOR_SIZE: case 4 frame size
    latency_rate: float = 1000.0     # PVAFLOW_BENCH_LATENCY_RATE: case 4 fixed-rate latency
    n_producers: int = 4             # PVAFLOW_BENCH_PRODUCERS: case 4
    sqs: int = 0                     # PVAFLOW_BENCH_SQS: -sqs (0: by frame size, see sqs_for)
    budget_scale: float = 1.0        # PVAFLOW_BENCH_BUDGET_SCALE: multiplies the case budgets
    budgets: dict = dataclasses.field(default_factory=lambda: {
        "case1": 210.0, "case2": 360.0, "case3": 360.0, "case4": 170.0, "case5": 120.0})

    @classmethod
    def from_env(cls):
        quick = os.environ.get("PVAFLOW_BENCH_QUICK", "").strip() not in ("", "0", "false", "no")
        base = cls.quick_defaults() if quick else cls()
        return cls(
            quick=quick,
            trials=_env("PVAFLOW_BENCH_TRIALS", base.trials, int),
            window_s=_env("PVAFLOW_BENCH_WINDOW_S", base.window_s),
            sizes=_env_ints("PVAFLOW_BENCH_SIZES", base.sizes),
            fleet_sizes=_env_ints("PVAFLOW_BENCH_FLEET_SIZES", base.fleet_sizes),
            fleets=_env_ints("PVAFLOW_BENCH_FLEETS", base.fleets),
            start_delay_s=_env("PVAFLOW_BENCH_START_DELAY_S", base.start_delay_s),
            fleet_start_delay_s=_env("PVAFLOW_BENCH_FLEET_START_DELAY_S", base.fleet_start_delay_s),
            grace_s=_env("PVAFLOW_BENCH_GRACE_S", base.grace_s),
            max_probes=_env("PVAFLOW_BENCH_MAX_PROBES", base.max_probes, int),
            later_probes=_env("PVAFLOW_BENCH_LATER_PROBES", base.later_probes, int),
            tolerance=_env("PVAFLOW_BENCH_TOLERANCE", base.tolerance),
            sim_tolerance=_env("PVAFLOW_BENCH_SIM_TOLERANCE", base.sim_tolerance),
            fixed_rate=_env("PVAFLOW_BENCH_FIXED_RATE", base.fixed_rate),
            fixed_size=_env("PVAFLOW_BENCH_FIXED_SIZE", base.fixed_size, int),
            collector_size=_env("PVAFLOW_BENCH_COLLECTOR_SIZE", base.collector_size, int),
            latency_rate=_env("PVAFLOW_BENCH_LATENCY_RATE", base.latency_rate),
            n_producers=_env("PVAFLOW_BENCH_PRODUCERS", base.n_producers, int),
            sqs=_env("PVAFLOW_BENCH_SQS", base.sqs, int),
            budget_scale=_env("PVAFLOW_BENCH_BUDGET_SCALE", base.budget_scale),
            budgets=dict(base.budgets),
        )

    @classmethod
    def quick_defaults(cls):
        """The smoke mode (PVAFLOW_BENCH_QUICK=1): about 3 minutes for all cases."""
        return cls(quick=True, trials=1, window_s=1.5, sizes=(128, 1024), fleet_sizes=(128,),
                   fleets=(2, 4), start_delay_s=1.2, fleet_start_delay_s=3.0, grace_s=0.8,
                   max_probes=3, later_probes=2, tolerance=0.35, sim_tolerance=0.2,
                   budgets={"case1": 25.0, "case2": 40.0, "case3": 45.0, "case4": 30.0,
                            "case5": 25.0})

    def budget(self, case):
        return Budget(self.budgets.get(case, 300.0) * self.budget_scale)

    def describe(self):
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}


class Budget:
    """A time budget; searches stop probing (after their first probe) once it is spent."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self):
        return self.seconds - (time.monotonic() - self.start)

    def spent(self):
        return self.left() <= 0

    def used(self):
        return time.monotonic() - self.start


# ------------------------------------------------------------------------ frame sizes
def frame_bytes(size):
    """Payload bytes of one size x size uint8 frame."""
    return size * size


def sqs_for(size, settings):
    """Server queue size (-sqs) for a frame size, equal for every client.

    Up to 1000 frames, at most about 128 MB of queued frames per client."""
    if settings.sqs > 0:
        return settings.sqs
    return int(max(16, min(1000, (128 << 20) // frame_bytes(size))))


def cache_frames(size):
    """Distinct frames the simulator cycles through (-nf and -cs): <= 128 MB."""
    return int(max(4, min(64, (128 << 20) // frame_bytes(size))))


def rate_guess(size):
    """A first rate to try for a frame size (the ramp corrects it)."""
    return float(min(8000, max(50, int(2e9 / frame_bytes(size)))))


# -------------------------------------------------------------------------- processes
def child_env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Proc:
    """One tool process started by the harness; always reaped (and killed if needed)."""

    def __init__(self, args, log_path):
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._log.write((" ".join(self.args) + "\n").encode())
        self._log.flush()
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=child_env(), cwd=REPO)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.returncode = None
        self.rusage = None

    def _reap(self, block=False):
        if self.returncode is not None:
            return True
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.returncode = self.popen.returncode if self.popen.returncode is not None else -1
            return True
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode
        self.rusage = usage
        return True

    def alive(self):
        return not self._reap()

    def wait(self, timeout):
        """Wait for the exit; True when it exited within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while not self._reap():
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    def send(self, signum):
        if self.alive():
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def tree_cpu(self):
        """CPU seconds (user + system) of the process and its descendants now, or None.

        Each live process counts its own time plus that of the children it
        has reaped, so a child exiting between two samples is not lost."""
        import psutil  # pylint: disable=import-outside-toplevel
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def tree_cpu_precise(self):
        """On-CPU seconds of the live threads of the tree, in nanoseconds resolution
        (/proc/PID/task/TID/schedstat), or None where that is not available.

        Threads that end between two samples take their time with them, so
        this is for windows in which the tree's threads live throughout."""
        import psutil  # pylint: disable=import-outside-toplevel
        try:
            root = psutil.Process(self.pid)
            pids = [root.pid] + [p.pid for p in root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None
        total = 0
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                        total += int(handle.read().split()[0])
                except (OSError, ValueError, IndexError):
                    if pid == root.pid:
                        return None
        return total / 1e9 if total else None

    def life_cpu(self):
        """CPU seconds of the whole life (with reaped descendants), after the exit."""
        if self.rusage is None:
            return None
        return self.rusage.ru_utime + self.rusage.ru_stime

    def kill_tree(self):
        """SIGKILL this process and its descendants (only what this harness started)."""
        import psutil  # pylint: disable=import-outside-toplevel
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in descendants:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self._reap(block=True)

    def close(self):
        if self.alive():
            self.kill_tree()
        try:
            self._log.close()
        except OSError:
            pass

    def log_tail(self, chars=1500):
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - chars))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""


def _sleep_until(deadline, procs=()):
    """Sleep until ``deadline`` (monotonic); False if one of ``procs`` exits first."""
    while True:
        now = time.monotonic()
        if now >= deadline:
            return True
        for proc in procs:
            if not proc.alive():
                return False
        time.sleep(min(0.05, deadline - now))


def _wait_for_file(path, deadline, procs=()):
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        if any(not proc.alive() for proc in procs) and not os.path.exists(path):
            return False
        time.sleep(0.05)
    return True


def _load_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def read_counts(out_dir):
    """The JSON files written by the counting processor (one per instance)."""
    records = []
    if not os.path.isdir(out_dir):
        return records
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("count-") and name.endswith(".json"):
            data = _load_json(os.path.join(out_dir, name))
            if data is not None:
                records.append(data)
    return records


def _new_run_dir(workdir, tag):
    run_id = uuid.uuid4().hex[:10]
    run_dir = os.path.join(workdir, f"{tag}-{run_id}")
    os.makedirs(os.path.join(run_dir, "counts"), exist_ok=True)
    return run_id, run_dir


# ------------------------------------------------------------------------ commands
def _num(value):
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def sim_cmd(kind, channel, size, fps, runtime, start_delay, shutdown_delay, summary=None):
    """The simulator command: pvaflow's or pvapy's, same flags."""
    frames = cache_frames(size)
    args = [PY, "-m", SIM_MODULES[kind], "-cn", channel, "-nx", size, "-ny", size, "-dt", "uint8",
            "-fps", _num(float(fps)), "-rt", _num(float(runtime)), "-std", _num(float(start_delay)),
            "-shd", _num(float(shutdown_delay)), "-rp", "0", "-nf", frames, "-cs", frames, "-dc"]
    if summary:
        args += ["--summary-file", summary]
    return args


def stage_args(sqs, out_dir, stride=1, latency=False):
    """Flags shared by consumers and collectors of both frameworks (equal for both)."""
    processor_args = json.dumps({"out_dir": out_dir, "stride": stride, "latency": latency})
    return ["-sqs", sqs, "-siu", "0", "-pf", PROCESSOR_FILE, "-pc", PROCESSOR_CLASS,
            "-pa", processor_args, "-rp", "0", "-dc"]


def consumer_cmd(kind, channel, sqs, n_consumers, out_dir):
    """A consumer (or, with n_consumers > 1, a fleet with the distributor, -du 1)."""
    if kind == "bare":
        return [PY, os.path.abspath(__file__), "monitor", "--channel", channel, "--sqs", sqs,
                "--out-dir", out_dir]
    args = [PY, "-m", CONSUMER_MODULES[kind], "-ic", channel] + stage_args(sqs, out_dir,
                                                                           stride=n_consumers)
    if n_consumers > 1:
        args += ["-nc", n_consumers, "-du", "1"]
    return args


def collector_cmd(kind, pattern, n_producers, sqs, out_dir):
    ids = ",".join(str(i) for i in range(1, n_producers + 1))
    return ([PY, "-m", COLLECTOR_MODULES[kind], "-ic", pattern, "-pid", ids]
            + stage_args(sqs, out_dir, stride=1, latency=True))


# ---------------------------------------------------------------------- evaluation
def evaluate(records, published, last_id, expected_instances):
    """Lossless check of one run.

    Lossless: every expected instance reported, the last published id was
    seen, and the frames counted over all instances equal the ids from the
    smallest first id to the last published id (with the distributor each
    id reaches one consumer, so the union covers the span exactly when the
    counts add up); no id went backwards."""
    result = {"instances": len(records), "expected_instances": expected_instances,
              "published": published, "published_last_id": last_id}
    firsts = [r["first"] for r in records if r.get("first") is not None]
    received = sum(r.get("n", 0) for r in records)
    result["received"] = received
    result["per_instance"] = [r.get("n", 0) for r in records]
    result["irregular_steps"] = sum(r.get("irregular", 0) for r in records)
    result["backwards"] = sum(r.get("backwards", 0) for r in records)
    result["gaps_sample"] = [g for r in records for g in r.get("gaps", [])][:10]
    if not published or not last_id:
        result.update(lossless=False, reason="nothing was published")
        return result
    if len(records) < expected_instances:
        result.update(lossless=False,
                      reason=f"{len(records)} of {expected_instances} instances wrote counts")
        return result
    if not firsts:
        result.update(lossless=False, reason="nothing was received", missed=published)
        return result
    first = min(firsts)
    last = max(r["last"] for r in records if r.get("last") is not None)
    span = last_id - first + 1
    result.update(first_id=first, last_id=last, late_ids=first - 1, missed=span - received,
                  tail_missing=max(0, last_id - last))
    reason = None
    if first > 1 + published // 2:
        reason = f"clients connected late (first id {first} of {last_id})"
    elif last != last_id:
        reason = f"last id seen {last}, published {last_id}"
    elif received != span:
        reason = f"{span - received} of {span} ids missing"
    elif result["backwards"]:
        reason = f"{result['backwards']} ids out of order"
    result["lossless"] = reason is None
    if reason:
        result["reason"] = reason
    return result


# ---------------------------------------------------------------------- one run each
def consumer_run(kind, size, fps, n_consumers, settings, workdir, measure_cpu=False):
    """One run: our simulator at ``fps`` for the window, ``kind`` consuming it.

    ``kind``: "bare" (pvaccess monitor), "pvaflow" or "pvapy". Returns a dict
    with lossless, the published rate (rate), the target and, with
    ``measure_cpu``, the consumer tree's CPU seconds between just before the
    first frame and the grace period after the last (cpu_s, cpu_us_per_frame)."""
    run_id, run_dir = _new_run_dir(workdir, f"{kind}-{size}-{n_consumers}c-{int(fps)}")
    channel = f"pvaflowbench:{run_id}:image"
    out_dir = os.path.join(run_dir, "counts")
    summary_path = os.path.join(run_dir, "summary.json")
    start_delay = settings.start_delay_s if n_consumers == 1 else settings.fleet_start_delay_s
    sqs = sqs_for(size, settings)
    sim = Proc(sim_cmd("pvaflow", channel, size, fps, settings.window_s, start_delay,
                       settings.grace_s + 5.0, summary_path), os.path.join(run_dir, "sim.log"))
    consumer = Proc(consumer_cmd(kind, channel, sqs, n_consumers, out_dir),
                    os.path.join(run_dir, "consumer.log"))
    result = {"kind": kind, "size": size, "target": fps, "n_consumers": n_consumers,
              "sqs": sqs, "run_dir": run_dir}
    cpu0 = cpu1 = None
    try:
        if measure_cpu:
            # Publishing starts start_delay after the simulator created its record,
            # which takes it a few tenths of a second after launch.
            _sleep_until(sim.started + start_delay - 0.2, (consumer,))
            cpu0 = (consumer.tree_cpu_precise(), consumer.tree_cpu())
        deadline = time.monotonic() + start_delay + settings.window_s + 60.0
        _wait_for_file(summary_path, deadline, (sim,))
        summary = _load_json(summary_path) or {}
        _sleep_until(time.monotonic() + settings.grace_s, (consumer,))
        if measure_cpu:
            cpu1 = (consumer.tree_cpu_precise(), consumer.tree_cpu())
        consumer.send(signal.SIGINT)
        exited = consumer.wait(40.0 if n_consumers > 1 else 20.0)
        result["consumer_exit"] = consumer.returncode if exited else "killed"
        sim.send(signal.SIGINT)
        sim.wait(10.0)
    finally:
        consumer.close()
        sim.close()
    published = summary.get("published") or 0
    result.update(rate=summary.get("rate") or 0.0, published=published,
                  consumer_life_cpu_s=consumer.life_cpu())
    result.update(evaluate(read_counts(out_dir), published, summary.get("last_id"), n_consumers))
    result["sim_bound"] = bool(published) and result["rate"] < SIM_BOUND_SHARE * fps
    if not published:
        result["reason"] = "simulator published nothing: " + sim.log_tail(400)
    if cpu0 is not None and cpu1 is not None:
        precise = None if None in (cpu0[0], cpu1[0]) else cpu1[0] - cpu0[0]
        ticks = None if None in (cpu0[1], cpu1[1]) else cpu1[1] - cpu0[1]
        # schedstat (ns) unless a thread ended in between and took its time
        # along (then the tick-based figure, 10 ms resolution, is larger).
        cpu = precise if precise is not None and (ticks is None or precise >= ticks - 0.03) else ticks
        result.update(cpu_s=cpu, cpu_schedstat_s=precise, cpu_ticks_s=ticks)
        if result["received"] and cpu is not None:
            result["cpu_us_per_frame"] = 1e6 * cpu / result["received"]
    if not result["lossless"] and not result.get("reason", "").startswith("simulator"):
        result["consumer_log_tail"] = consumer.log_tail(600)
    return result


def collector_run(kind, size, fps, settings, workdir):
    """One run: the 4-channel producer at ``fps`` (aggregate), ``kind``'s collector merging.

    Latency: (processor call time - frame timeStamp) per frame; the steady
    figures leave out the last 10 % of ids (the end-of-stream flush)."""
    n = settings.n_producers
    run_id, run_dir = _new_run_dir(workdir, f"collector-{kind}-{size}-{int(fps)}")
    prefix = f"pvaflowbench:{run_id}:producer"
    out_dir = os.path.join(run_dir, "counts")
    summary_path = os.path.join(run_dir, "summary.json")
    sqs = sqs_for(size, settings)
    producer = Proc([PY, os.path.abspath(__file__), "produce", "--prefix", prefix, "--n", n,
                     "--size", size, "--fps", _num(float(fps)), "--runtime", settings.window_s,
                     "--start-delay", settings.start_delay_s + 0.5,
                     "--shutdown-delay", settings.grace_s + 8.0, "--summary-file", summary_path],
                    os.path.join(run_dir, "producer.log"))
    command = collector_cmd(kind, prefix + ":*", n, sqs, out_dir)
    stats_path = os.path.join(run_dir, "stats.jsonl")
    if kind == "pvaflow":
        command += ["--stats-file", stats_path]  # a report option only: final line, -rp 0
    collector = Proc(command, os.path.join(run_dir, "collector.log"))
    result = {"kind": kind, "size": size, "target": fps, "n_producers": n, "sqs": sqs,
              "run_dir": run_dir}
    try:
        deadline = time.monotonic() + settings.start_delay_s + settings.window_s + 60.0
        _wait_for_file(summary_path, deadline, (producer,))
        summary = _load_json(summary_path) or {}
        _sleep_until(time.monotonic() + settings.grace_s, (collector,))
        collector.send(signal.SIGINT)
        exited = collector.wait(30.0)
        result["collector_exit"] = collector.returncode if exited else "killed"
        producer.send(signal.SIGINT)
        producer.send(signal.SIGINT)
        producer.wait(10.0)
    finally:
        collector.close()
        producer.close()
    published = summary.get("published") or 0
    records = read_counts(out_dir)
    result.update(rate=summary.get("rate") or 0.0, published=published)
    result.update(evaluate(records, published, summary.get("last_id"), 1))
    result["sim_bound"] = bool(published) and result["rate"] < SIM_BOUND_SHARE * fps
    if records and records[0].get("latency"):
        pairs = records[0]["latency"]
        last_id = summary.get("last_id") or 0
        cut = last_id - int(0.1 * published)
        steady = sorted(v for i, v in pairs if i <= cut) or sorted(v for _, v in pairs)
        result["latency_p50_ms"] = 1e3 * _quantile(steady, 0.50)
        result["latency_p99_ms"] = 1e3 * _quantile(steady, 0.99)
        result["latency_all_p50_ms"] = records[0].get("latency_p50_ms")
        result["latency_all_p99_ms"] = records[0].get("latency_p99_ms")
        result["latency_frames"] = len(steady)
    final = _final_stats(stats_path)
    if final:
        processor = final.get("processorStats", {})
        result["self_reported_p50_ms"] = processor.get("latencyP50Ms")
        result["self_reported_p99_ms"] = processor.get("latencyP99Ms")
    if not result["lossless"]:
        result["collector_log_tail"] = collector.log_tail(600)
    return result


def _final_stats(path):
    """The line marked final of a pvaflow --stats-file, or None."""
    try:
        with open(path) as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError):
        return None
    finals = [line for line in lines if line.get("final")]
    return finals[-1] if finals else None


def sim_run(kind, size, fps, settings, workdir):
    """One run of ``kind``'s simulator at ``fps`` with a bare counting client.

    The rate is the client's: (frames - 1) / (last arrival - first arrival);
    the target is held when that is within 1 % and no id was missed."""
    run_id, run_dir = _new_run_dir(workdir, f"sim-{kind}-{size}-{int(fps)}")
    channel = f"pvaflowbench:{run_id}:image"
    out_dir = os.path.join(run_dir, "counts")
    sqs = sqs_for(size, settings)
    start_delay = settings.start_delay_s
    sim = Proc(sim_cmd(kind, channel, size, fps, settings.window_s, start_delay, 1.0),
               os.path.join(run_dir, "sim.log"))
    client = Proc([PY, os.path.abspath(__file__), "monitor", "--channel", channel, "--sqs", sqs,
                   "--out-dir", out_dir, "--idle-exit", "1.0", "--timing",
                   "--limit", start_delay + settings.window_s + 30.0],
                  os.path.join(run_dir, "client.log"))
    result = {"kind": kind, "size": size, "target": fps, "sqs": sqs, "run_dir": run_dir}
    try:
        client.wait(start_delay + settings.window_s + 40.0)
        sim.wait(15.0)
    finally:
        client.close()
        sim.close()
    records = read_counts(out_dir)
    record = records[0] if records else {}
    n = record.get("n", 0)
    extra = record.get("extra", {})
    span = (extra.get("t_last") or 0) - (extra.get("t_first") or 0)
    rate = (n - 1) / span if n > 1 and span > 0 else 0.0
    missed = record.get("missing", 0) + record.get("irregular", 0) + record.get("backwards", 0)
    error = (rate - fps) / fps
    result.update(rate=rate, received=n, missed=missed, error_pct=100 * error,
                  first_id=record.get("first"), last_id=record.get("last"))
    result["lossless"] = n > 1 and missed == 0 and abs(error) <= 0.01
    if not result["lossless"]:
        result["reason"] = ("nothing received" if n <= 1 else
                            f"{missed} ids missed" if missed else f"rate off by {100 * error:+.2f}%")
    result["sim_bound"] = False
    return result


def _quantile(sorted_values, fraction):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(math.ceil(fraction * len(sorted_values))) - 1))
    return sorted_values[index]


# -------------------------------------------------------------------------- search
def search_max_rate(probe, start, budget, max_probes, tolerance, step=2.0, floor=5.0, log=None,
                    min_probes=2):
    """Highest lossless rate of ``probe(rate) -> run dict`` (keys lossless, rate, sim_bound).

    Exponential ramp by ``step`` (up from ``start`` while lossless, down while
    not), then geometric bisection between the highest lossless and the
    lowest lossy rate until their ratio is <= 1 + tolerance. A lossless run
    whose publisher fell short of the target (sim_bound) counts as lossless
    at the rate achieved and as too high at the target (and ends the search
    when it achieved no more than an earlier lossless run, within the
    tolerance: the pipeline is saturated); a lossy sim-bound run as lossy at
    the rate achieved. Stops after ``max_probes`` runs, or when
    the budget is spent (after at least ``min_probes`` runs); while no run
    was lossless it goes on down to 6 runs. Returns {rate (achieved rate of the best
    lossless run; 0 if none), target, bound, probes, best}; bound is "sim"
    (publisher-limited), "probes" (no run was lossy: the limit is higher) or
    None (bracketed between a lossless and a lossy rate)."""
    good = bad = None
    bad_kind = None
    best = None
    probes = []
    rate = float(start)
    bound = None
    # Without any lossless run the search goes on (down) up to ``hard_max`` runs,
    # whatever the budget: a trial of 0 would wreck the median.
    hard_max = max(max_probes, 6)
    while True:
        if best is None:
            if len(probes) >= hard_max:
                break
        elif len(probes) >= max_probes or (len(probes) >= min_probes and budget.spent()):
            break
        run = probe(rate)
        probes.append({k: run.get(k) for k in ("target", "rate", "lossless", "sim_bound",
                                                "reason", "received", "published", "missed",
                                                "late_ids", "first_id")})
        if log:
            log(f"    {run.get('kind')} {run.get('size')} target {rate:9.1f} -> "
                f"{'lossless' if run['lossless'] else 'LOSSY   '} rate {run.get('rate', 0):9.1f}"
                f"{' (sim-bound)' if run.get('sim_bound') else ''}"
                f"{' (connected late: ids before ' + str(run['first_id']) + ' not seen)' if run.get('late_ids') else ''}"
                f"{'' if run['lossless'] else '  ' + str(run.get('reason', ''))[:90]}")
        achieved = run.get("rate") or 0.0
        if run["lossless"]:
            if best is None or achieved > best["rate"]:
                best = run
            if run.get("sim_bound"):
                # Lossless at what the publisher reached, which is short of the
                # target: good at the achieved rate, the target is too high.
                saturated = good is not None and achieved <= good * (1.0 + tolerance)
                good = max(good or 0.0, achieved)
                if bad is None or rate <= bad:
                    bad, bad_kind = rate, "sim"
                if saturated:
                    break  # the publisher cannot exceed what is already lossless
            else:
                good = rate if good is None else max(good, rate)
                if bad is not None and bad <= rate:
                    bad = None  # noise: a lossless run above an earlier lossy one
        else:
            failing = min(rate, achieved) if run.get("sim_bound") and achieved > 0 else rate
            bad, bad_kind = failing, "loss"
            if good is not None and good >= failing:
                good = None  # noise: re-establish the lower end
        if bad is None:
            rate = rate * step
        elif good is None:
            rate = bad / step
            if rate < floor:
                break
        else:
            if bad / good <= 1.0 + tolerance:
                break
            rate = math.sqrt(good * bad)
    if best is not None:
        if bad is None:
            bound = "probes"  # never lossy: the limit is above what was tried
        elif bad_kind == "sim":
            bound = "sim"  # the publisher, not a loss, set the upper end
    return {"rate": best["rate"] if best else 0.0, "target": best["target"] if best else None,
            "bound": bound, "probes": probes, "best": best}


def alternating_searches(kinds, probe_for, start_for, settings, budget, tolerance=None, log=None):
    """Median of ``settings.trials`` searches per kind, the kinds alternating.

    Trial t runs one search per kind, the order of the kinds reversed every
    other trial. The first search of a kind ramps by 2 from start_for(kind);
    later ones start at the first one's result and step by 1.25 with fewer
    probes. Every trial is run; the time budget only limits the number of
    probes of each search (a share of what is left, by its probe cap). Returns {kind: {"median": rate, "trials": [search, ...],
    "bound": "sim" if the median trial was limited by the publisher}}."""
    tolerance = settings.tolerance if tolerance is None else tolerance
    out = {kind: {"trials": []} for kind in kinds}
    # Each search gets a share of what is left, weighted by its probe cap, so
    # the kind that runs first cannot spend the others' time.
    plan = [(trial, kind) for trial in range(settings.trials)
            for kind in (list(kinds) if trial % 2 == 0 else list(reversed(kinds)))]
    weights = [settings.max_probes if trial == 0 else settings.later_probes for trial, _ in plan]
    for index, (trial, kind) in enumerate(plan):
        done = out[kind]["trials"]
        if not done:
            start, step, probes = start_for(kind), 2.0, settings.max_probes
        else:
            first = done[0]
            start = first["rate"] or (first["probes"][-1]["target"] if first["probes"]
                                      else start_for(kind))
            step, probes = 1.25, settings.later_probes
        share = Budget(max(0.0, budget.left()) * weights[index] / sum(weights[index:]))
        if log:
            log(f"  trial {trial + 1}/{settings.trials} {kind}: start {start:.1f} fps")
        done.append(search_max_rate(probe_for(kind), start, share, probes, tolerance,
                                    step=step, log=log))
    for kind in kinds:
        trials = out[kind]["trials"]
        rates = [t["rate"] for t in trials]
        out[kind]["median"] = statistics.median(rates) if rates else 0.0
        ordered = sorted(trials, key=lambda t: t["rate"])
        middle = ordered[(len(ordered) - 1) // 2] if ordered else None
        out[kind]["bound"] = middle["bound"] if middle else None
        out[kind]["rates"] = rates
    return out


def median_runs(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None and not _is_nan(r[key])]
    return statistics.median(values) if values else None


def _is_nan(value):
    return isinstance(value, float) and math.isnan(value)


# ------------------------------------------------------------------------- results
def load_results():
    data = _load_json(RESULTS_JSON)
    if not isinstance(data, dict):
        data = {}
    data.setdefault("cases", {})
    return data


def save_case(case_key, payload, meta):
    """Merge one case's results into results.json and redraw results.png."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    data = load_results()
    data["meta"] = meta
    data["cases"][case_key] = payload
    data["table"] = [line for key in sorted(data["cases"])
                     for line in data["cases"][key].get("table", [])]
    temporary = RESULTS_JSON + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(data, handle, indent=1, default=_json_default)
    os.replace(temporary, RESULTS_JSON)
    try:
        draw_png(data)
    except Exception as exc:  # the chart is a convenience; never lose the JSON for it
        print(f"(results.png not drawn: {type(exc).__name__}: {exc})", flush=True)
    return data


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def meta():
    versions = {}
    for name in ("pvaflow", "pvaccess"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:  # pylint: disable=broad-except
            versions[name] = None
    try:
        from importlib.metadata import version  # pylint: disable=import-outside-toplevel
        versions["pvapy"] = version("pvapy")
    except Exception:  # pylint: disable=broad-except
        versions["pvapy"] = None
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "versions": versions,
            "settings": Settings.from_env().describe()}


COLORS = {"bare": "#888888", "pvaflow": "#1f77b4", "pvapy": "#ff7f0e"}


def _short(value):
    if value is None or _is_nan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}"


def draw_png(data):
    """One figure, one panel per case present in ``data``."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    cases = data.get("cases", {})
    panels = [key for key in ("case1", "case2", "case3", "case4", "case5", "case6") if key in cases]
    if not panels:
        return
    cols = min(3, len(panels))
    rows = int(math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.3 * rows), squeeze=False)
    for ax, key in zip([a for row in axes for a in row], panels):
        chart = cases[key].get("chart", {})
        groups = chart.get("groups", [])
        series = chart.get("series", {})
        width = 0.8 / max(1, len(series))
        for index, (name, values) in enumerate(series.items()):
            xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
            ys = [v if v is not None else 0 for v in values]
            bars = ax.bar(xs, ys, width, label=name, color=COLORS.get(name.split()[0]))
            ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=6, padding=1)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_title(cases[key].get("title", key), fontsize=9)
        ax.set_ylabel(chart.get("ylabel", ""), fontsize=8)
        if chart.get("log"):
            ax.set_yscale("log")
            positive = [v for values in series.values() for v in values
                        if v is not None and not _is_nan(v) and v > 0]
            if positive:
                ax.set_ylim(bottom=min(positive) / 4, top=max(positive) * 2)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in [a for row in axes for a in row][len(panels):]:
        ax.axis("off")
    meta_ = data.get("meta", {})
    fig.suptitle(f"pvaflow vs pvapy  ({meta_.get('time', '')}, {meta_.get('cpus', '?')} CPUs,"
                 f" median of {meta_.get('settings', {}).get('trials', '?')} trials)", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS_PNG, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------- helper processes
def _install_stop(flag):
    def handler(signum, frame):  # pylint: disable=unused-argument
        flag.append(signum)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def monitor_main(argv):
    """The transport ceiling: a bare pvaccess monitor counting ids (no framework)."""
    parser = argparse.ArgumentParser(prog="harness.py monitor")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--sqs", type=int, default=0)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--idle-exit", type=float, default=0.0,
                        help="exit this many seconds after the last frame (0: only on SIGINT)")
    parser.add_argument("--timing", action="store_true", help="record first/last arrival times")
    parser.add_argument("--limit", type=float, default=0.0, help="exit after this many seconds")
    args = parser.parse_args(argv)

    import pvaccess as pva  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, HERE)
    from counting_processor import CountingProcessor  # pylint: disable=import-outside-toplevel

    processor = CountingProcessor({"out_dir": args.out_dir, "processorId": "bare"})
    processor.start()
    count = processor.process
    clock = time.monotonic
    times = {"t_first": None, "t_last": None}
    if args.timing or args.idle_exit > 0:
        def callback(pv):
            before = processor.n
            count(pv)
            if processor.n != before:  # a counted frame (not the initial record)
                now = clock()
                if times["t_first"] is None:
                    times["t_first"] = now
                times["t_last"] = now
    else:
        callback = count
    stop = []
    _install_stop(stop)
    channel = pva.Channel(args.channel)
    request = f"record[queueSize={args.sqs}]field()" if args.sqs > 0 else "field()"
    channel.monitor(callback, request)
    started = clock()
    while not stop:
        time.sleep(0.05)
        now = clock()
        if args.limit > 0 and now - started > args.limit:
            break
        if args.idle_exit > 0 and times["t_last"] is not None and now - times["t_last"] > args.idle_exit:
            break
    channel.stopMonitor()
    processor.extra = {"t_first": times["t_first"], "t_last": times["t_last"]}
    processor.stop()
    return 0


def produce_main(argv):
    """n producer channels in one process; frame k goes to channel ((k-1) % n) + 1."""
    parser = argparse.ArgumentParser(prog="harness.py produce")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--fps", type=float, default=1000.0)
    parser.add_argument("--runtime", type=float, default=3.0)
    parser.add_argument("--start-delay", type=float, default=2.0)
    parser.add_argument("--shutdown-delay", type=float, default=5.0)
    parser.add_argument("--summary-file", default=None)
    args = parser.parse_args(argv)

    import numpy as np  # pylint: disable=import-outside-toplevel
    import pvaccess as pva  # pylint: disable=import-outside-toplevel
    from pvaflow.sim.frames import build_frame  # pylint: disable=import-outside-toplevel

    stop = []
    _install_stop(stop)
    rng = np.random.default_rng(12345)
    n_frames = cache_frames(args.size)
    frames = [build_frame(rng.integers(0, 256, (args.size, args.size), dtype=np.uint8), 0)
              for _ in range(n_frames)]
    channels = [f"{args.prefix}:{i}" for i in range(1, args.n + 1)]
    server = pva.PvaServer()
    for name in channels:
        server.addRecord(name, frames[0].copy())
    created = time.monotonic()
    while not stop and time.monotonic() < created + args.start_delay:
        time.sleep(0.02)
    period = 1.0 / args.fps if args.fps > 0 else 0.0
    clock, wall = time.monotonic, time.time
    count = 0
    start = clock()
    deadline = start + args.runtime
    first_time = last_time = None
    update = server.update
    n = args.n
    while not stop:
        now = clock()
        if period:
            due = start + count * period
            if due >= deadline:
                break
            if due > now:
                time.sleep(due - now)
                now = clock()
        elif now >= deadline:
            break
        count += 1
        nt = frames[count % n_frames]
        nt.setInt("uniqueId", count)
        stamp = wall()
        seconds = int(stamp)
        nanoseconds = int((stamp - seconds) * 1e9)
        nt.setLong("timeStamp.secondsPastEpoch", seconds)
        nt.setInt("timeStamp.nanoseconds", nanoseconds)
        nt.setLong("dataTimeStamp.secondsPastEpoch", seconds)
        nt.setInt("dataTimeStamp.nanoseconds", nanoseconds)
        update(channels[(count - 1) % n], nt)
        if count == n:
            update = server.updateUnchecked
        if first_time is None:
            first_time = now
        last_time = now
    elapsed = (last_time - first_time) if count > 1 else 0.0
    summary = {"published": count, "first_id": 1 if count else None,
               "last_id": count if count else None, "elapsed_s": elapsed,
               "rate": (count - 1) / elapsed if elapsed > 0 else 0.0, "target_fps": args.fps,
               "channels": channels}
    if args.summary_file:
        temporary = args.summary_file + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(summary, handle)
        os.replace(temporary, args.summary_file)
    print(json.dumps(summary), flush=True)
    stops = len(stop)
    end = time.monotonic() + args.shutdown_delay
    while time.monotonic() < end and len(stop) <= stops:
        time.sleep(0.05)
    server.stop()
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "monitor":
        return monitor_main(argv[1:])
    if argv and argv[0] == "produce":
        return produce_main(argv[1:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
