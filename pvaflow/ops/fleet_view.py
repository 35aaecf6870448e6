"""Polling the status records of many consumers and collectors.

A :class:`FleetView` reads every status record once per refresh (pvaccess
``get`` with a short timeout, in a thread pool, so one unreachable process
never holds up the others) and turns each into a row of numbers a person can
scan: alive or not, rates, loss counters, queue fill, latency and restarts.

Liveness rules:

* ``down``: the status channel did not answer within the timeout;
* ``stale``: it answers, but ``statusTime`` has not changed for three report
  periods (a frozen process keeps its record served). In ``--once`` mode
  there is only one sample, so the age of ``statusTime`` against the local
  clock is used instead, with one second more allowed (clocks of the hosts
  must agree);
* ``stopped``: the process says it is stopping or stopped (draining);
* ``ok`` otherwise.

Restarts are counted by the monitor itself: a status record whose
``runtime`` went back after the channel had been unreachable or had lost its
connection (pvaccess reports that even between two reads) is a new
incarnation of the process; ``reset_stats`` also sets ``runtime`` back, but
without the channel going away. A record with a ``startTime`` field is
judged by that field changing instead.
"""

import concurrent.futures
import dataclasses
import os
import time

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.id_list import parse_id_list
from pvaflow.hpc.naming import format_id, validate_channel

STALE_PERIODS = 3
ONCE_ALLOWANCE = 1.0  # seconds added in --once mode for clock skew and transport


@dataclasses.dataclass
class Target:
    """One status channel to watch."""

    label: str
    channel: str
    report_period: float = 1.0
    stage: str = ""
    control: str = ""


def expand(pattern, ids, id_format_spec=None):
    """Channel names of ``pattern`` (``*`` becomes each id); one name without ``*``."""
    if "*" not in pattern:
        return [pattern]
    return [pattern.replace("*", format_id(i, id_format_spec)) for i in ids]


def targets_from_patterns(patterns, id_text=None, report_period=1.0, id_format_spec=None,
                          what="status channel"):
    """Targets for channel patterns and an id list (``--ids 1-8``)."""
    ids = parse_id_list(id_text) if id_text else None
    if any("*" in p for p in patterns) and ids is None:
        starred = next(p for p in patterns if "*" in p)
        raise ConfigurationError(f"channel pattern '{starred}' has '*' but no ids are given;"
                                 " add e.g. --ids 1-8")
    if ids is not None and not any("*" in p for p in patterns):
        raise ConfigurationError("--ids given but no channel pattern has a '*' to replace;"
                                 " write e.g. 'consumer:*:status'")
    targets = []
    for pattern in patterns:
        for name in expand(pattern, ids or [], id_format_spec):
            validate_channel(name, what)
            targets.append(Target(label=name, channel=name, report_period=report_period))
    names = [t.channel for t in targets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"{what} {repeated[0]} is listed twice")
    for target, label in zip(targets, short_labels(names)):
        target.label = label
    return targets


def short_labels(names):
    """Labels without the parts all names share, cut at ':' (ids stay visible)."""
    if len(names) < 2:
        return list(names)
    head = os.path.commonprefix(names)
    head = head[:head.rfind(":") + 1]
    tail = os.path.commonprefix([n[::-1] for n in names])[::-1]
    tail = tail[tail.find(":"):] if ":" in tail else ""
    labels = [n[len(head):len(n) - len(tail)] for n in names]
    return labels if all(labels) and len(set(labels)) == len(labels) else list(names)


def targets_from_workflow(path, host=None, overrides=(), stages=None):
    """Targets for the consumer, writer and collector stages of a workflow file.

    Labels are ``<stage>/<id>``; ``control`` holds each process's control channel.
    """
    from .workflow_graph import PROCESSING, resolve  # pylint: disable=import-outside-toplevel
    from .workflow_spec import load_workflow  # pylint: disable=import-outside-toplevel
    flow = resolve(load_workflow(path, overrides), "RUN_DIR", host)
    unknown = [n for n in stages or () if flow.stage(n) is None]
    if unknown:
        raise ConfigurationError(f"{path} has no stage named '{unknown[0]}'; stages: "
                                 + ", ".join(s.name for s in flow.stages))
    targets = []
    for stage in flow.stages:
        if stage.kind not in PROCESSING or (host and stage.host != host) or \
                (stages and stage.name not in stages):
            continue
        for process_id in stage.ids:
            targets.append(Target(
                label=f"{stage.name}/{process_id}", channel=expand(stage.status, [process_id])[0],
                report_period=stage.report_period, stage=stage.name,
                control=expand(stage.control, [process_id])[0]))
    if not targets:
        raise ConfigurationError(f"{path}: no consumer, writer or collector stage"
                                 + (f" on host '{host}'" if host else "") + " to watch")
    return targets


class PvaGetter:
    """Reads whole records with pvaccess; one cached Channel per name.

    Each channel counts its disconnections, so a process that went away and
    came back between two reads is still noticed.
    """

    def __init__(self, timeout=1.0):
        import pvaccess  # pylint: disable=import-outside-toplevel
        self._pva = pvaccess
        self.timeout = timeout
        self._channels = {}
        self._connected = {}
        self._disconnects = {}

    def _on_connection(self, name, connected):
        if not connected and self._connected.get(name):
            self._disconnects[name] = self._disconnects.get(name, 0) + 1
        self._connected[name] = connected

    def disconnects(self, name):
        """How often ``name`` lost its connection so far."""
        return self._disconnects.get(name, 0)

    def get(self, name):
        """The record as a dict, or raise an exception (e.g. a timeout)."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._pva.Channel(name)
            channel.setTimeout(self.timeout)
            channel.setConnectionCallback(lambda up, name=name: self._on_connection(name, up))
            self._channels[name] = channel
        return channel.get("field()").toDict()


def _num(section, key, default=0):
    value = (section or {}).get(key, default)
    return value if isinstance(value, (int, float)) else default


def summarize(record):
    """The numbers of interest from one status record (a dict)."""
    r, q = record.get("receiverStats", {}), record.get("queueStats", {})
    p = record.get("processorStats", {})
    process_id = record.get("consumerId", record.get("collectorId"))
    kind = "collector" if "collectorId" in record else "consumer"
    processed, errors = _num(p, "nProcessed"), _num(p, "nErrors")
    q_max = _num(q, "maxLength", -1)
    depth = None
    if q_max >= 0:
        if "length" in q:
            depth = _num(q, "length")
        else:  # every queued frame ends up processed or as an error
            depth = max(_num(q, "nQueued") - processed - errors, 0)
    fill = depth / q_max if depth is not None and q_max > 0 else None
    return {
        "id": process_id, "kind": kind, "state": record.get("state", ""),
        "runtime": _num(record, "runtime", 0.0), "statusTime": _num(record, "statusTime", 0.0),
        "received": _num(r, "nReceived"), "processed": processed,
        "processedRate": _num(p, "periodProcessedRate", 0.0),
        "missed": _num(r, "nMissed"), "rejected": _num(r, "nRejected"), "errors": errors,
        "queueDepth": depth, "queueMax": q_max if q_max >= 0 else None, "queueFill": fill,
        "latencyP99Ms": _num(p, "latencyP99Ms", 0.0), "lastError": p.get("lastError", ""),
    }


class _Tracker:
    """What the view remembers about one target between refreshes."""

    def __init__(self, target):
        self.target = target
        self.row = None
        self.last_status_time = None
        self.last_change = None
        self.last_runtime = None
        self.start_time = None
        self.unreachable_since_seen = False
        self.restarts = 0
        self.error = ""
        self.disconnects = 0

    def observe(self, record, now, once, disconnects=0):
        """Take a new record: staleness, restarts and the row."""
        row = summarize(record)
        status_time = row["statusTime"]
        if self.last_status_time is None or status_time != self.last_status_time:
            self.last_change = now
        restarted = False
        if "startTime" in record:
            start = record["startTime"]
            restarted = self.start_time is not None and start != self.start_time
            self.start_time = start
        elif self.last_runtime is not None:
            outage = self.unreachable_since_seen or disconnects > self.disconnects
            restarted = outage and row["runtime"] < self.last_runtime
        self.disconnects = disconnects
        self.restarts += int(restarted)
        self.last_status_time, self.last_runtime = status_time, row["runtime"]
        self.unreachable_since_seen = False
        limit = STALE_PERIODS * max(self.target.report_period, 0.1)
        if once:  # one sample: the record's age by the local clock, allowing for skew
            age, limit = time.time() - status_time, limit + ONCE_ALLOWANCE
        else:
            age = now - self.last_change
        if row["state"] in ("stopping", "stopped"):
            status = "stopped"
        elif age > limit:
            status = "stale"
        else:
            status = "ok"
        row.update(status=status, age=max(age, 0.0), restarts=self.restarts, error="")
        self.row = row

    def unreachable(self, error):
        """The channel did not answer."""
        if self.last_runtime is not None:
            self.unreachable_since_seen = True
        self.error = error
        self.row = dict(self.row or {}, status="down", error=error, restarts=self.restarts,
                        processedRate=0.0)

    def as_row(self):
        """The row to show, with the target's names."""
        row = dict(self.row or {"status": "down", "error": self.error, "restarts": self.restarts})
        row.update(label=self.target.label, channel=self.target.channel, stage=self.target.stage)
        return row


class FleetView:
    """Polls every target's status record and keeps the latest rows."""

    def __init__(self, targets, timeout=1.0, getter=None, workers=16):
        if not targets:
            raise ConfigurationError("no status channels to watch")
        self.targets = list(targets)
        self.getter = getter or PvaGetter(timeout)
        self._trackers = [_Tracker(t) for t in self.targets]
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(self.targets))), thread_name_prefix="fleet-view")

    def _get(self, tracker):
        try:
            record, error = self.getter.get(tracker.target.channel), None
        except Exception as exc:  # pylint: disable=broad-except  # any failure means "down"
            record, error = None, (str(exc).strip() or type(exc).__name__)[:200]
        return tracker, record, error, time.monotonic()

    def refresh(self, once=False):
        """Read every record once; return (rows, totals)."""
        count = getattr(self.getter, "disconnects", lambda name: 0)
        for tracker, record, error, when in self._pool.map(self._get, self._trackers):
            if record is None:
                tracker.unreachable(error)
            else:
                tracker.observe(record, when, once, count(tracker.target.channel))
        rows = [t.as_row() for t in self._trackers]
        return rows, totals(rows)

    def close(self):
        """Stop the thread pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def totals(rows):
    """The totals row: sums of counters and rates, worst latency, counts by status."""
    alive = [r for r in rows if r["status"] != "down"]
    total = {"processes": len(rows), "alive": len(alive)}
    for status in ("ok", "stale", "stopped", "down"):
        total[status] = sum(1 for r in rows if r["status"] == status)
    for key in ("processed", "received", "missed", "rejected", "errors", "restarts"):
        total[key] = sum(r.get(key) or 0 for r in rows)
    total["processedRate"] = sum(r.get("processedRate") or 0.0 for r in alive)
    total["queueDepth"] = sum(r.get("queueDepth") or 0 for r in alive)
    total["latencyP99Ms"] = max([r.get("latencyP99Ms") or 0.0 for r in alive], default=0.0)
    return total


def problems(row):
    """Names of the columns of ``row`` that show a problem (for colour)."""
    found = set()
    if row.get("status") in ("down", "stale"):
        found.add("status")
    for key in ("missed", "rejected", "errors"):
        if row.get(key):
            found.add(key)
    if (row.get("queueFill") or 0) >= 0.8:
        found.add("queue")
    if row.get("restarts"):
        found.add("restarts")
    return found
