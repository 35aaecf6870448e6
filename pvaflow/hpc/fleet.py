"""A fleet of consumers: one spawned OS process each, supervised by the parent.

The parent starts every consumer with the ``spawn`` method (EPICS threads
are not fork-safe), collects their statistics over a pipe (JSON text, never
pickled objects), prints the combined report, forwards SIGINT/SIGTERM, and
restarts a child that dies, with exponential back-off up to a restart
limit. A restarted child keeps its id and channel names. The counters of
the dead incarnation are read from shared memory (:mod:`shared_counters`),
so frames it admitted but never finished are counted as lost in flight,
and, without the distributor, ids published while it was down are counted
when it resumes.
"""

import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

from . import shared_counters
from .errors import ConfigurationError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RestartPolicy:
    limit: int = 5          # restarts per child before it is given up
    backoff: float = 1.0    # first delay, doubled for each further restart
    max_backoff: float = 30.0
    unresponsive: float = 30.0  # seconds without a status message before a child is killed


def _stop_with_parent(parent_pid, consumer, period=0.5):
    """Stop ``consumer`` (drained, final status published) once the supervising parent is
    gone: a parent killed with SIGKILL cannot forward a stop, and an orphaned consumer
    would keep its channel names from the fleet started next."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(period)
        log.warning("supervising process %d is gone: stopping", parent_pid)
        consumer.request_stop()

    threading.Thread(target=watch, name="pvaflow-parent-watch", daemon=True).start()


def _child_main(config_dict, raw_counters, conn, log_level, log_file, parent_pid=None):
    """Entry point of a spawned consumer process."""
    parent_pid = parent_pid or os.getppid()
    from .consumer import Consumer
    from .consumer_config import ConsumerConfig

    setup = logging.getLogger("pvaflow")
    if log_level or log_file:
        handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        setup.handlers[:] = [handler]
        setup.setLevel(getattr(logging, (log_level or "warning").upper()))
        setup.propagate = False

    def send(kind, **payload):
        try:
            conn.send_bytes(json.dumps(dict(payload, type=kind), default=str).encode())
        except (OSError, ValueError):
            pass

    try:
        consumer = Consumer(ConsumerConfig(**config_dict))
    except ConfigurationError as exc:
        send("fatal", message=str(exc), code=2)
        sys.exit(2)
    consumer.shared = shared_counters.as_array(raw_counters)
    consumer.stats_listener = lambda stats, final: send("final" if final else "stats", stats=stats)
    consumer.reporter.print_reports = False
    signal.signal(signal.SIGINT, consumer.request_stop)
    signal.signal(signal.SIGTERM, consumer.request_stop)
    _stop_with_parent(parent_pid, consumer)
    try:
        code = consumer.run()
    except Exception as exc:  # reported to the parent, which decides on a restart
        send("fatal", message=f"{type(exc).__name__}: {exc}", code=1)
        raise
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown under live pvaccess threads


class _Child:
    """One consumer slot: its current process and what earlier incarnations did."""

    def __init__(self, config, context):
        self.config = config
        self.consumer_id = config.consumer_id
        self.context = context
        self.process = None
        self.conn = None
        self.raw = None
        self.stats = None
        self.final = None
        self.fatal = None
        self.restarts = 0
        self.next_start = 0.0
        self.state = "starting"
        self.ever_ran = False
        self.carried = {"processed": 0, "errors": 0, "rejected": 0, "missed": 0,
                        "lostInFlight": 0, "received": 0}
        self.down_since = None
        self.down_seconds = 0.0

    def start(self, log_level, log_file, resume_after=None, cuda_device=None):
        config = dataclasses.replace(self.config, resume_after_id=resume_after,
                                     stats_file=None)
        self.raw = shared_counters.new_shared_counters(self.context)
        parent_conn, child_conn = self.context.Pipe(duplex=False)
        self.process = self.context.Process(
            target=_child_main, name=f"pvaflow-consumer-{self.consumer_id}",
            args=(dataclasses.asdict(config), self.raw, child_conn, log_level, log_file,
                  os.getpid()))
        saved = os.environ.get("CUDA_VISIBLE_DEVICES")
        if cuda_device is not None:  # a spawned child inherits the environment at start
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_device
        try:
            self.process.start()
        finally:
            if cuda_device is not None:
                if saved is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = saved
        child_conn.close()
        self.conn = parent_conn
        self.stats = None
        self.final = None
        self.state = "running"
        self.started_at = self.last_heard = time.monotonic()
        if self.down_since is not None:
            self.down_seconds += time.monotonic() - self.down_since
            self.down_since = None

    def poll(self):
        while self.conn is not None and self.conn.poll():
            try:
                message = json.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                self.conn = None
                break
            kind = message.get("type")
            if kind == "stats":
                self.stats = message["stats"]
                self.ever_ran = True
                self.last_heard = time.monotonic()
            elif kind == "final":
                self.final = self.stats = message["stats"]
            elif kind == "fatal":
                self.fatal = message

    def close_incarnation(self):
        """Fold the dead process's exact counters into the carried totals."""
        counters = shared_counters.snapshot(self.raw)
        finished = counters["processed"] + counters["errors"] + counters["rejected"]
        lost = max(counters["admitted"] - finished, 0)
        for key in ("processed", "errors", "rejected", "missed"):
            self.carried[key] += counters[key]
        self.carried["lostInFlight"] += lost
        received = (self.stats or {}).get("receiverStats", {}).get("nReceived", 0)
        self.carried["received"] += received
        return counters

    def totals(self):
        """Counters over all incarnations (live values for a running child)."""
        t = dict(self.carried)
        if self.state == "running" and self.stats:
            r, p = self.stats["receiverStats"], self.stats["processorStats"]
            t["processed"] += p["nProcessed"]
            t["errors"] += p["nErrors"]
            t["rejected"] += r["nRejected"]
            t["missed"] += r["nMissed"]
            t["received"] += r["nReceived"]
        t["restarts"] = self.restarts
        t["downSeconds"] = self.down_seconds + (time.monotonic() - self.down_since
                                                if self.down_since is not None else 0.0)
        return t


class Fleet:
    """Runs one consumer process per config and supervises them."""

    def __init__(self, configs, policy=None, report_period=0.0, stats_file=None,
                 log_level=None, log_file=None, cuda_devices=None):
        self.context = multiprocessing.get_context("spawn")
        self.children = [_Child(c, self.context) for c in configs]
        self.policy = policy or RestartPolicy()
        self.report_period = report_period
        self.stats_file = stats_file
        self.log_level = log_level
        self.log_file = log_file
        self._stop = False
        self.exit_code = 0
        self.started_at = None
        self.cuda_devices = list(cuda_devices or [])
        self._progress_width = 0

    def cuda_device(self, child):
        """The CUDA_VISIBLE_DEVICES value of ``child`` (one device each, round robin)."""
        if not self.cuda_devices:
            return None
        return self.cuda_devices[self.children.index(child) % len(self.cuda_devices)]

    def request_stop(self, *_):
        self._stop = True

    def run(self):
        self.started_at = time.monotonic()
        for child in self.children:
            child.start(self.log_level, self.log_file, cuda_device=self.cuda_device(child))
        next_report = self.started_at + (self.report_period if self.report_period > 0 else 1e18)
        live = sys.stdout.isatty()
        next_progress = self.started_at + 1.0
        forwarded = False
        while True:
            for child in self.children:
                child.poll()
                self._check(child)
            if self._stop and not forwarded:
                forwarded = True
                self._forward(signal.SIGTERM)
            if all(c.state in ("done", "failed") for c in self.children):
                break
            now = time.monotonic()
            if now >= next_report:
                next_report += self.report_period
                self._report(final=False)
            elif live and now >= next_progress:
                next_progress = now + 1.0
                self._progress(now)
            time.sleep(0.05)
        self._report(final=True)
        return self.exit_code

    def _progress(self, now):
        """On a terminal: one line, rewritten in place, with the fleet's totals."""
        _, total = self.combined()
        elapsed = now - self.started_at
        running = sum(1 for c in self.children if c.state == "running")
        line = (f"[fleet] {elapsed:.0f} s  {running}/{len(self.children)} running  processed"
                f" {total['processed']} ({total['processed'] / max(elapsed, 1e-9):.0f}/s)"
                f"  missed {total['missed']}  rejected {total['rejected']}"
                f"  errors {total['errors']}  restarts {total['restarts']}")
        sys.stdout.write("\r" + line.ljust(self._progress_width))
        sys.stdout.flush()
        self._progress_width = len(line)

    def _forward(self, signum):
        for child in self.children:
            if child.state == "running" and child.process.is_alive():
                _kill(child.process.pid, signum)
            elif child.state == "waiting":
                child.state = "done"

    def _check(self, child):
        if child.state == "waiting":
            if self._stop:
                child.state = "done"
            elif time.monotonic() >= child.next_start:
                resume = None
                if not child.config.uses_distributor() and child.last_counters["lastId"] > 0:
                    resume = child.last_counters["lastId"]
                child.start(self.log_level, self.log_file, resume, self.cuda_device(child))
            return
        if child.state != "running":
            return
        if child.process.exitcode is None:
            silent = time.monotonic() - child.last_heard
            limit = self.policy.unresponsive
            if limit > 0 and silent > limit and not self._stop:
                # Frozen (SIGSTOP, a deadlock): kill it; the restart path takes over.
                print(f"[fleet] consumer {child.consumer_id} sent no status for {silent:.1f} s;"
                      " killing it", flush=True)
                _kill(child.process.pid, signal.SIGKILL)
                child.process.join(5)
            else:
                return
        child.poll()
        code = child.process.exitcode
        child.last_counters = child.close_incarnation()
        child.process.join()
        if code == 0:
            child.state = "done"
            return
        if child.fatal and child.fatal.get("code") == 2:
            # A start-up error: restarting cannot help. Show it once and stop all.
            child.state = "failed"
            if self.exit_code != 2:
                print(f"pvapy-hpc-consumer: error: consumer {child.consumer_id}: "
                      f"{child.fatal['message']}", file=sys.stderr, flush=True)
            self.exit_code = 2
            self._stop = True
            return
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        if self._stop:
            child.state = "done"
            return
        if child.restarts >= self.policy.limit:
            child.state = "failed"
            self.exit_code = self.exit_code or 1
            print(f"pvapy-hpc-consumer: consumer {child.consumer_id} died ({how}) and reached the"
                  f" restart limit ({self.policy.limit}); giving it up", file=sys.stderr, flush=True)
            return
        delay = min(self.policy.backoff * (2 ** child.restarts), self.policy.max_backoff)
        child.restarts += 1
        child.state = "waiting"
        child.down_since = time.monotonic()
        child.next_start = time.monotonic() + delay
        child.fatal = None
        log.warning("consumer %s died (%s); restart %d/%d in %.1f s", child.consumer_id, how,
                    child.restarts, self.policy.limit, delay)
        print(f"[fleet] consumer {child.consumer_id} died ({how}); restart {child.restarts}"
              f"/{self.policy.limit} in {delay:.1f} s", flush=True)

    def combined(self):
        per_child = {c.consumer_id: c.totals() for c in self.children}
        keys = ("received", "processed", "errors", "rejected", "missed", "lostInFlight",
                "restarts", "downSeconds")
        total = {k: sum(t[k] for t in per_child.values()) for k in keys}
        return per_child, total

    def _report(self, final):
        per_child, total = self.combined()
        elapsed = time.monotonic() - self.started_at
        head = f"[fleet] {'FINAL ' if final else ''}{elapsed:.1f} s, {len(self.children)} consumers"
        lines = [head]
        for child in self.children:
            t = per_child[child.consumer_id]
            lines.append(
                f"  consumer {child.consumer_id} {child.state}: processed {t['processed']}"
                f" missed {t['missed']} rejected {t['rejected']} errors {t['errors']}"
                f" lost-in-flight {t['lostInFlight']} restarts {t['restarts']}"
                f" down {t['downSeconds']:.1f} s")
        lines.append(
            f"  total: received {total['received']} processed {total['processed']}"
            f" ({total['processed'] / max(elapsed, 1e-9):.1f}/s) missed {total['missed']}"
            f" rejected {total['rejected']} errors {total['errors']}"
            f" lost-in-flight {total['lostInFlight']} restarts {total['restarts']}")
        if self._progress_width:  # end the live line first
            sys.stdout.write("\n")
            self._progress_width = 0
        print("\n".join(lines), flush=True)
        if self.stats_file:
            with open(self.stats_file, "a") as f:
                f.write(json.dumps({
                    "final": final, "elapsed": elapsed, "total": total,
                    "consumers": {str(k): v for k, v in per_child.items()},
                    "children": {str(c.consumer_id): c.stats for c in self.children},
                }, default=str) + "\n")


def _kill(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
