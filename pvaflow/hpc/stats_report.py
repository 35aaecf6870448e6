"""Statistics of a consumer: collection, text reports and the stats file.

Reports are plain text lines (never screen control codes); ``--stats-file``
gets one JSON object per report for machines.
"""

import json
import sys
import time


class StatsReporter:
    def __init__(self, consumer, config):
        self.consumer = consumer
        self.config = config
        self.sections = set(config.report_stats)
        self.print_reports = True  # a supervised child reports to its parent instead
        self._progress_width = 0
        self._stats_file = open(config.stats_file, "a") if config.stats_file else None
        self.begin(time.time())

    def begin(self, t):
        self.t0 = t
        self._last = (t, 0, 0)

    # collection ------------------------------------------------------------
    def collect(self, final=False):
        c = self.consumer
        now = time.time()
        elapsed = max(now - self.t0, 1e-9)
        acc = c.accounting
        received, processed = acc.received, c.n_processed
        last_t, last_received, last_processed = self._last
        span = max(now - last_t, 1e-9)
        self._last = (now, received, processed)
        receiver = acc.as_dict()
        q = c.queue
        receiver["nRejected"] = q.n_rejected if q is not None else 0
        receiver["nOverruns"] = c.receiver.overruns() if c.receiver is not None else 0
        receiver["receivedRate"] = received / elapsed
        receiver["periodReceivedRate"] = (received - last_received) / span
        receiver["missedRate"] = acc.missed / elapsed
        p50, p99 = c.latency.recent() if final else c.latency.take_period()
        processor = {
            "nProcessed": processed, "nErrors": c.n_errors, "nHookErrors": c.n_hook_errors,
            "processedRate": processed / elapsed,
            "periodProcessedRate": (processed - last_processed) / span,
            "meanProcessUs": 1e6 * c.process_seconds / processed if processed else 0.0,
            "latencyP50Ms": 1e3 * p50, "latencyP99Ms": 1e3 * p99,
            "latencyMaxMs": 1e3 * c.latency.maximum, "lastError": c.last_error[:500],
        }
        publisher = {"nPublished": 0, "nErrors": 0, "nRejected": 0, "nRetried": 0, "nDropped": 0,
                     "waitSeconds": 0.0, "publishedRate": 0.0}
        if c.publisher is not None:
            publisher.update(c.publisher.stats())
            publisher["publishedRate"] = publisher["nPublished"] / elapsed
        user = c._call_user("getStats") if "user" in self.sections else {}
        stats = {
            c.id_field: c.config.consumer_id, "channel": c.input_channel or "", "state": c.state,
            "runtime": elapsed, "statusTime": now,
            "receiverStats": receiver,
            "queueStats": q.stats() if q is not None else {"maxLength": -1, "nQueued": 0, "peak": 0,
                                                           "nRejected": 0},
            "processorStats": processor, "publisherStats": publisher,
            "userStats": user if isinstance(user, dict) else {},
        }
        stats.update(c.extra_stats())
        return stats

    # output ----------------------------------------------------------------
    def format(self, stats, final=False):
        c = self.consumer
        r, p, q, pub = (stats["receiverStats"], stats["processorStats"], stats["queueStats"],
                        stats["publisherStats"])
        head = f"[{c.kind} {stats[c.id_field]}] {'FINAL ' if final else ''}{stats['runtime']:.1f} s {stats['state']}"
        lines = [head]
        if "receiver" in self.sections:
            lines.append(
                f"  received {r['nReceived']} ({r['receivedRate']:.1f}/s, last {r['periodReceivedRate']:.1f}/s)"
                f" missed {r['nMissed']} rejected {r['nRejected']} skipped {r['nSkipped']}"
                f" duplicates {r['nDuplicates']} empty {r['nEmpty']} id-resets {r['nIdResets']}"
                f" reconnects {r['nReconnects']} overruns {r['nOverruns']} ids {r['firstId']}..{r['lastId']}")
        if "processor" in self.sections:
            lines.append(
                f"  processed {p['nProcessed']} ({p['processedRate']:.1f}/s, last {p['periodProcessedRate']:.1f}/s)"
                f" errors {p['nErrors']} hook-errors {p['nHookErrors']} process {p['meanProcessUs']:.1f} us/frame"
                f" latency p50 {p['latencyP50Ms']:.2f} ms p99 {p['latencyP99Ms']:.2f} ms"
                f" max {p['latencyMaxMs']:.2f} ms")
            if p["lastError"]:
                lines.append(f"  last error: {p['lastError']}")
        if "queue" in self.sections and q["maxLength"] >= 0:
            size = q["maxLength"] or "unbounded"
            lines.append(f"  queue {len(c.queue)}/{size} peak {q['peak']} queued {q['nQueued']}"
                         f" rejected {q['nRejected']}")
        if "publisher" in self.sections and c.publisher is not None:
            line = f"  published {pub['nPublished']} ({pub['publishedRate']:.1f}/s) errors {pub['nErrors']}"
            if self.config.output_mode != "pvas":
                line += (f" refused {pub['nRejected']} retried {pub['nRetried']} dropped {pub['nDropped']}"
                         f" waited {pub['waitSeconds']:.2f} s")
            lines.append(line)
            for target, t in pub.get("targets", {}).items():
                lines.append(f"    target {target}: sent {t['nSent']} skipped {t['nSkipped']}")
        lines.extend(c.extra_report_lines(stats))
        if "user" in self.sections and stats["userStats"]:
            lines.append("  user " + " ".join(f"{k}={_short(v)}" for k, v in stats["userStats"].items()))
        return "\n".join(lines)

    def to_json(self, stats):
        return json.dumps(stats, default=str, separators=(",", ":"))

    def _write(self, stats, final):
        if self._stats_file is not None:
            self._stats_file.write(self.to_json(dict(stats, final=final)) + "\n")
            self._stats_file.flush()

    def periodic(self, stats, print_it):
        """A report (and a stats-file line) when due; on a terminal, a live progress line."""
        if not self.print_reports:
            return
        if print_it:
            self._end_progress()
            print(self.format(stats), flush=True, file=sys.stdout)
            self._write(stats, False)
        elif self.live:
            self._progress(stats)

    @property
    def live(self):
        return sys.stdout.isatty()

    def _progress(self, stats):
        c, r, p = self.consumer, stats["receiverStats"], stats["processorStats"]
        runtime = self.config.runtime
        left = f" / {runtime:.0f} s" if runtime > 0 else ""
        line = (f"[{c.kind} {stats[c.id_field]}] {stats['runtime']:.0f} s{left}  processed"
                f" {p['nProcessed']} ({p['periodProcessedRate']:.0f}/s)  missed {r['nMissed']}"
                f"  rejected {r['nRejected']}  errors {p['nErrors']}")
        sys.stdout.write("\r" + line[:200].ljust(self._progress_width))
        sys.stdout.flush()
        self._progress_width = len(line[:200])

    def _end_progress(self):
        if self._progress_width:
            sys.stdout.write("\n")
            self._progress_width = 0

    def final(self, stats):
        if self.print_reports:
            self._end_progress()
            print(self.format(stats, final=True), flush=True, file=sys.stdout)
        self._write(stats, True)
        if self._stats_file is not None:
            self._stats_file.close()
            self._stats_file = None


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)
