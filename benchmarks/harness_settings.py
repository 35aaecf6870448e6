"""Benchmark settings: paths, the frameworks' tool modules, ``Settings`` (every
parameter, from environment variables), the time ``Budget`` and the frame-size
rules (payload bytes, server queue size, simulator cache, first rate to try)."""

import dataclasses
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
RESULTS_JSON = os.path.join(RESULTS_DIR, "results.json")
RESULTS_PNG = os.path.join(RESULTS_DIR, "results.png")
PROCESSOR_FILE = os.path.join(HERE, "counting_processor.py")
HARNESS_FILE = os.path.join(HERE, "harness.py")  # also the monitor / producer entry point
PROCESSOR_CLASS = "CountingProcessor"
PY = sys.executable

FRAMEWORKS = ("pvaflow", "pvapy")
CONSUMER_MODULES = {"pvaflow": "pvaflow.cli.consumer", "pvapy": "pvapy.cli.hpcConsumer"}
COLLECTOR_MODULES = {"pvaflow": "pvaflow.cli.collector", "pvapy": "pvapy.cli.hpcCollector"}
SIM_MODULES = {"pvaflow": "pvaflow.cli.sim_server", "pvapy": "pvapy.cli.adSimServer"}

# A publisher "holds" a target when it reaches this share of it; below, the
# run is limited by the publisher (sim-bound), not by the consumer.
SIM_BOUND_SHARE = 0.97

# Frames of this many bytes or more get Settings.large_trials trials.
LARGE_FRAME_BYTES = 4 << 20


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
    large_trials: int = 5            # PVAFLOW_BENCH_LARGE_TRIALS: the same for frames >= 4 MB
    window_s: float = 2.5            # PVAFLOW_BENCH_WINDOW_S: publishing time of one run
    sizes: tuple = (128, 512, 1024, 2048)        # PVAFLOW_BENCH_SIZES (cases 1, 2)
    fleet_sizes: tuple = (128, 1024)             # PVAFLOW_BENCH_FLEET_SIZES (case 3)
    fleets: tuple = (2, 4)                       # PVAFLOW_BENCH_FLEETS (case 3)
    start_delay_s: float = 1.2       # PVAFLOW_BENCH_START_DELAY_S: simulator -std, one consumer
    fleet_start_delay_s: float = 3.0  # PVAFLOW_BENCH_FLEET_START_DELAY_S: -std for -nc > 1
    grace_s: float = 0.8             # PVAFLOW_BENCH_GRACE_S: wait after the last frame
    max_probes: int = 7              # PVAFLOW_BENCH_MAX_PROBES: runs of a first search
    later_probes: int = 4            # PVAFLOW_BENCH_LATER_PROBES: runs of trials 2..n
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
        "case1": 210.0, "case2": 420.0, "case3": 540.0, "case4": 220.0, "case5": 120.0})

    @classmethod
    def from_env(cls):
        quick = os.environ.get("PVAFLOW_BENCH_QUICK", "").strip() not in ("", "0", "false", "no")
        base = cls.quick_defaults() if quick else cls()
        return cls(
            quick=quick,
            trials=_env("PVAFLOW_BENCH_TRIALS", base.trials, int),
            large_trials=_env("PVAFLOW_BENCH_LARGE_TRIALS", base.large_trials, int),
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
        return cls(quick=True, trials=1, large_trials=1, window_s=1.5, sizes=(128, 1024), fleet_sizes=(128,),
                   fleets=(2, 4), start_delay_s=1.2, fleet_start_delay_s=3.0, grace_s=0.8,
                   max_probes=3, later_probes=2, tolerance=0.35, sim_tolerance=0.2,
                   budgets={"case1": 25.0, "case2": 40.0, "case3": 45.0, "case4": 30.0,
                            "case5": 25.0})

    def trials_for(self, size):
        """Trials behind one figure at a frame size: at 4 MB frames and more every
        kind's searches spread about 2x (stalls of the stream, not of the
        consumer), so their medians take ``large_trials`` trials."""
        if frame_bytes(size) >= LARGE_FRAME_BYTES:
            return max(self.trials, self.large_trials)
        return self.trials

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
