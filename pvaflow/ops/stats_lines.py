"""Reading ``--stats-file`` output: time series per process, final totals, a summary table.

Three kinds of lines are understood:

* a consumer's or collector's report (``consumerId``/``collectorId``,
  ``statusTime``, ``receiverStats``, ``processorStats``, ...);
* a fleet parent's report (``total``, ``consumers`` with the counters of
  each consumer over all its restarts, ``children`` with each child's
  latest report);
* a mirror server's report (``totals`` with ``nMirrored``, ``channels``).

Anything else (a blank or foreign line) is skipped and counted.
"""

import dataclasses
import json
import os

from pvaflow.hpc.errors import ConfigurationError

COUNTERS = ("processed", "received", "missed", "rejected", "errors")


@dataclasses.dataclass
class Series:
    """The reports of one process over time."""

    label: str
    points: list = dataclasses.field(default_factory=list)
    restarts: int = 0

    def add(self, point):
        """Append a report (a repeated one replaces the last)."""
        if self.points and self.points[-1]["t"] == point["t"]:
            self.points[-1] = point  # the same report seen twice (a fleet line repeats it)
        else:
            self.points.append(point)


def _point(stats, totals=None):
    r, p = stats.get("receiverStats") or {}, stats.get("processorStats") or {}
    point = {
        "t": float(stats.get("statusTime") or 0.0), "runtime": float(stats.get("runtime") or 0.0),
        "processed": p.get("nProcessed", 0), "received": r.get("nReceived", 0),
        "missed": r.get("nMissed", 0), "rejected": r.get("nRejected", 0),
        "errors": p.get("nErrors", 0),
        "processedRate": p.get("periodProcessedRate", 0.0),
        "receivedRate": r.get("periodReceivedRate", 0.0),
        "meanRate": p.get("processedRate", 0.0),
        "latencyP50Ms": p.get("latencyP50Ms", 0.0), "latencyP99Ms": p.get("latencyP99Ms", 0.0),
        "latencyMaxMs": p.get("latencyMaxMs", 0.0), "final": bool(stats.get("final")),
    }
    if totals:  # a fleet's counters survive restarts of the child
        for key in COUNTERS:
            point[key] = totals.get(key, point[key])
    return point


def _process_key(stats):
    if "collectorId" in stats:
        return f"collector {stats['collectorId']}"
    return f"consumer {stats.get('consumerId', '?')}"


def read_stats_file(path, label_prefix=""):
    """``(series by label, skipped line count)`` of one stats file.

    Raises ConfigurationError when the file cannot be read.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read stats file '{path}': {exc.strerror}") from None
    series, skipped = {}, 0
    runs = {}

    def get(label):
        """The series of ``label``; a report after a final one starts the next run."""
        current = series.get(runs.get(label, label))
        if current is not None and current.points and current.points[-1].get("final"):
            runs[label] = key = f"{label} run {len(_runs_of(series, label)) + 1}"
            return series.setdefault(key, Series(label_prefix + key))
        key = runs.get(label, label)
        return series.setdefault(key, Series(label_prefix + key))

    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            skipped += bool(line.strip())
            continue
        if not isinstance(record, dict):
            skipped += 1
        elif "processorStats" in record:
            get(_process_key(record)).add(_point(record))
        elif "consumers" in record and "total" in record:
            for key, child in (record.get("children") or {}).items():
                totals = (record.get("consumers") or {}).get(key) or {}
                if isinstance(child, dict) and "processorStats" in child:
                    entry = get(f"consumer {key}")
                    entry.add(_point(child, totals))
                    entry.restarts = totals.get("restarts", entry.restarts)
        elif "totals" in record and "channels" in record:
            totals = record["totals"]
            point = {"t": float(record.get("statusTime") or 0.0),
                     "runtime": float(record.get("runtime") or 0.0),
                     "processed": totals.get("nMirrored", 0),
                     "processedRate": totals.get("periodMirroredRate", 0.0),
                     "meanRate": totals.get("mirroredRate", 0.0), "final": record.get("final")}
            get("mirror").add(point)
        else:
            skipped += 1
    return series, skipped


def _runs_of(series, label):
    return [k for k in series if k == label or k.startswith(label + " run ")]


def read_many(paths):
    """All series of several files; labels get the file name when there are several files."""
    result, skipped = [], 0
    stems = [os.path.basename(p).split(".")[0] for p in paths]
    for path, stem in zip(paths, stems):
        if stems.count(stem) > 1:
            stem = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), stem)
        series, n = read_stats_file(path, f"{stem}/" if len(paths) > 1 else "")
        result.extend(series.values())
        skipped += n
    return result, skipped


def final_totals(path):
    """Final counters of a stats file for a run summary (empty when there is none)."""
    if not path or not os.path.exists(path):
        return {}
    series, _ = read_stats_file(path)
    totals = {}
    for item in series.values():
        last = item.points[-1]
        for key in COUNTERS + ("restarts",):
            value = item.restarts if key == "restarts" else last.get(key)
            if value is not None:
                totals[key] = totals.get(key, 0) + value
        totals["final"] = totals.get("final", True) and bool(last.get("final"))
    return totals


def summary_rows(series_list):
    """One summary dict per process plus a totals row (label TOTAL)."""
    rows = []
    for item in series_list:
        points = item.points
        if not points:
            continue
        last = points[-1]
        lost = (last.get("missed") or 0) + (last.get("rejected") or 0)
        handled = (last.get("processed") or 0) + (last.get("errors") or 0) + lost
        p99 = sorted(p.get("latencyP99Ms") or 0.0 for p in points)
        rows.append({
            "label": item.label, "reports": len(points), "runtime": last.get("runtime", 0.0),
            "processed": last.get("processed") or 0, "received": last.get("received") or 0,
            "missed": last.get("missed") or 0, "rejected": last.get("rejected") or 0,
            "errors": last.get("errors") or 0,
            "lossPercent": 100.0 * lost / handled if handled else 0.0,
            "meanRate": last.get("meanRate") or 0.0,
            "peakRate": max(p.get("processedRate") or 0.0 for p in points),
            "p99MedianMs": p99[len(p99) // 2], "p99MaxMs": p99[-1], "restarts": item.restarts,
        })
    if rows:
        total = {"label": "TOTAL", "reports": sum(r["reports"] for r in rows),
                 "runtime": max(r["runtime"] for r in rows)}
        for key in ("processed", "received", "missed", "rejected", "errors", "meanRate",
                    "peakRate", "restarts"):
            total[key] = sum(r[key] for r in rows)
        lost = total["missed"] + total["rejected"]
        handled = total["processed"] + total["errors"] + lost
        total["lossPercent"] = 100.0 * lost / handled if handled else 0.0
        total["p99MedianMs"] = max(r["p99MedianMs"] for r in rows)
        total["p99MaxMs"] = max(r["p99MaxMs"] for r in rows)
        rows.append(total)
    return rows


TABLE = (("process", "label", 24, "s"), ("runtime s", "runtime", 9, ".1f"),
         ("processed", "processed", 10, "d"), ("missed", "missed", 8, "d"),
         ("rejected", "rejected", 8, "d"), ("errors", "errors", 7, "d"),
         ("loss %", "lossPercent", 7, ".2f"), ("mean/s", "meanRate", 9, ".1f"),
         ("peak/s", "peakRate", 9, ".1f"), ("p99 med ms", "p99MedianMs", 10, ".2f"),
         ("p99 max ms", "p99MaxMs", 10, ".2f"), ("restarts", "restarts", 8, "d"))


def format_table(rows):
    """The summary rows as a plain-text table."""
    first = max([len(str(r.get("label", ""))) for r in rows] + [TABLE[0][2]])
    widths = [first] + [w for _, _, w, _ in TABLE[1:]]
    lines = [" ".join(h.ljust(w) if i == 0 else h.rjust(w)
                      for i, ((h, _, _, _), w) in enumerate(zip(TABLE, widths)))]
    for row in rows:
        cells = []
        for i, ((_, key, _, fmt), width) in enumerate(zip(TABLE, widths)):
            value = row.get(key, 0)
            text = format(int(value) if fmt == "d" else value, fmt)
            cells.append(text.ljust(width) if i == 0 else text.rjust(width))
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines)
