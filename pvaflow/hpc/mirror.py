"""Mirror channels: the channel-map syntax and a wrapper of ``PvaMirrorServer``.

A channel map lists one or more entries separated by commas::

    (mirrorName,sourceName[,pva|ca[,queueSize[,nMonitors[,requestDescriptor]]]])

The protocol defaults to ``pva``, the source queue size to 0 (no server-side
queue). The last two fields, for the data distributor plugin of the source
server, are accepted as pvapy accepts them: the number of source monitors
(default 1) and their field request descriptor (default: none). Whitespace
around fields and entries is ignored.

:func:`parse_channel_map` checks the whole map before anything is served and
raises :class:`~pvaflow.hpc.errors.ConfigurationError` with one line saying
what is wrong at which character (counted from 1) and showing the right form.

:class:`MirrorServer` serves the entries with pvaccess' C++ mirror server:
the updates never pass through Python. Once a mirror's source has
connected, the server holds a counting monitor (a "tap") on the mirror
channel: a pvaccess queueing monitor of the time stamp only (or the whole
structure without ``timeStamp``) into a one-element queue never read, so
counting runs in C++ at one small copy per update. Its ``nReceived`` is the
channel's count of mirrored updates (from the tap's connection, its first
value included); reports derive the rates from it. The server's own counters
are reported too, but pvaccess 5.6 sums them over all mirror records: per
channel only when one channel is mirrored, otherwise as server totals.
"""

import json
import logging
import re
import sys
import time
from dataclasses import dataclass

import pvaccess as pva

from .errors import ConfigurationError
from .naming import validate_channel

log = logging.getLogger(__name__)

PROTOCOLS = {"pva": pva.PVA, "ca": pva.CA}

MAP_FORM = "(mirror,source[,pva|ca[,queueSize]]),..."
MAP_EXAMPLE = '"(mirror:image,det:image,pva,100),(mirror:temp,det:temp,ca)"'

# pvaccess 5.6: getMirrorRecordCounters(name) returns the counters of *all*
# mirror records summed (and resetMirrorRecordCounters resets them all), so
# they are per channel only while a single channel is mirrored.
SERVER_COUNTERS_ARE_SHARED = True
# Requests of the counting monitors ("taps") on the mirror channels: a small
# field that changes with every update when there is one, else everything.
_TAP_REQUEST_SMALL = "record[queueSize=64]field(timeStamp)"
_TAP_REQUEST_FULL = "record[queueSize=4]field()"
_TAP_CONNECT_TIMEOUT_S = 2.0
_QUEUE_SIZE = re.compile(r"^[+-]?\d+$")
_MAX_FIELDS = 6


@dataclass(frozen=True)
class MirrorEntry:
    """One mirror channel and the source it copies."""

    mirror: str
    source: str
    protocol: str = "pva"
    queue_size: int = 0
    n_monitors: int = 1
    request: str = ""

    def describe(self):
        """A short human description, e.g. ``m <- s (pva, queue 10)``."""
        text = f"{self.mirror} <- {self.source} ({self.protocol}, queue {self.queue_size}"
        if self.n_monitors != 1 or self.request:
            text += f", {self.n_monitors} monitors, request {self.request!r}"
        return text + ")"


def _fail(position, message):
    raise ConfigurationError(
        f"invalid channel map at character {position}: {message}; use the form {MAP_FORM},"
        f" e.g. {MAP_EXAMPLE}")


def _skip_space(text, pos):
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _split_fields(text, start, end):
    """The comma-separated fields of ``text[start:end]`` as (stripped text, position)."""
    fields = []
    pos = start
    while True:
        comma = text.find(",", pos, end)
        stop = end if comma < 0 else comma
        raw = text[pos:stop]
        value = raw.strip()
        lead = len(raw) - len(raw.lstrip()) if value else 0
        fields.append((value, pos + lead + 1))
        if comma < 0:
            return fields
        pos = comma + 1


def _integer(value, position, what, minimum):
    if not _QUEUE_SIZE.match(value):
        _fail(position, f"{what} {value!r} is not an integer")
    number = int(value)
    if number < minimum:
        _fail(position, f"{what} {value!r} must be >= {minimum}")
    return number


def _entry(fields, index, open_pos):
    """Build and check one entry from its fields."""
    if len(fields) < 2:
        _fail(open_pos, f"entry {index} has {len(fields)} field, it needs at least a mirror"
                        " and a source name")
    if len(fields) > _MAX_FIELDS:
        _fail(fields[_MAX_FIELDS][1], f"entry {index} has {len(fields)} fields, at most"
                                      f" {_MAX_FIELDS} are allowed")
    names = []
    for (value, position), what in zip(fields[:2], ("mirror", "source")):
        if not value:
            _fail(position, f"entry {index} has an empty {what} channel name")
        try:
            validate_channel(value, f"{what} channel")
        except ConfigurationError as exc:
            _fail(position, f"entry {index}: {exc}")
        names.append(value)
    if names[0] == names[1]:
        _fail(fields[1][1], f"entry {index} mirrors {names[0]!r} onto itself")
    protocol, queue_size, n_monitors, request = "pva", 0, 1, ""
    if len(fields) > 2:
        value, position = fields[2]
        protocol = value.lower()
        if protocol not in PROTOCOLS:
            _fail(position, f"entry {index} has protocol {value!r}; it must be pva or ca")
    if len(fields) > 3:
        queue_size = _integer(*fields[3], f"entry {index} queue size", 0)
    if len(fields) > 4:
        n_monitors = _integer(*fields[4], f"entry {index} number of source monitors", 1)
    if len(fields) > 5:
        request = fields[5][0]
    return MirrorEntry(names[0], names[1], protocol, queue_size, n_monitors, request)


def parse_channel_map(text):
    """Parse a channel map into a list of :class:`MirrorEntry` (no ``eval``).

    Raises :class:`ConfigurationError` (one line) on the first problem found.
    """
    if text is None or not text.strip():
        raise ConfigurationError(
            f"the channel map is empty; give -cm/--channel-map {MAP_EXAMPLE}"
            f" (form {MAP_FORM})")
    entries, seen = [], {}
    pos = _skip_space(text, 0)
    while True:
        index = len(entries) + 1
        if text[pos] != "(":
            _fail(pos + 1, f"expected '(' to open entry {index}, found {text[pos]!r}")
        close = text.find(")", pos + 1)
        nested = text.find("(", pos + 1, close if close >= 0 else len(text))
        if nested >= 0:
            _fail(nested + 1, f"unexpected '(' inside entry {index} (missing ')' before it?)")
        if close < 0:
            _fail(len(text) + 1, f"missing ')' at the end to close entry {index} opened at"
                                 f" character {pos + 1}")
        fields = _split_fields(text, pos + 1, close)
        entry = _entry(fields, index, pos + 1)
        if entry.mirror in seen:
            _fail(fields[0][1], f"mirror channel {entry.mirror!r} of entry {index} is"
                                f" already defined by entry {seen[entry.mirror]}")
        seen[entry.mirror] = index
        entries.append(entry)
        pos = _skip_space(text, close + 1)
        if pos == len(text):
            return entries
        if text[pos] != ",":
            _fail(pos + 1, f"expected ',' or the end after entry {index}, found {text[pos]!r}")
        pos = _skip_space(text, pos + 1)
        if pos == len(text):
            _fail(pos + 1, f"expected another entry after the ',' that follows entry {index}")


class _Tap:
    """Counts the updates of one mirror channel with a queueing monitor."""

    def __init__(self, name):
        self.name = name
        self.channel = None
        self.request = None
        self._queue = None

    def start(self):
        """Subscribe (the mirror record must exist); blocking for up to a few seconds."""
        channel = pva.Channel(self.name)
        channel.setTimeout(_TAP_CONNECT_TIMEOUT_S)
        fields = channel.getIntrospectionDict()
        self.request = _TAP_REQUEST_SMALL if "timeStamp" in fields else _TAP_REQUEST_FULL
        self._queue = pva.PvObjectQueue(1)
        channel.qMonitor(self._queue, self.request)
        self.channel = channel

    def counters(self):
        """(updates counted, monitor overruns) so far."""
        if self.channel is None:
            return 0, 0
        counters = self.channel.getMonitorCounters()
        return int(counters.get("nReceived", 0)), int(counters.get("nOverruns", 0))

    def stop(self):
        if self.channel is not None:
            self.channel.stopMonitor()
            self.channel = None


class MirrorServer:
    """Serve mirror channels and report their statistics.

    :param entries: the :class:`MirrorEntry` list (from :func:`parse_channel_map`)
    :param out: text stream for the reports (default: stdout)
    :param stats_file: path that gets one JSON line per report, or None
    """

    def __init__(self, entries, out=None, stats_file=None, policy=None):
        self.entries = list(entries)
        self.policy = policy
        self.out = out if out is not None else sys.stdout
        self.stats_file = stats_file
        self._stats_stream = None
        self._server = None
        self._taps = {e.mirror: _Tap(e.mirror) for e in self.entries}
        self._untapped = list(self._taps.values())
        self._stop_requested = False
        self._t0 = self._last_t = time.time()
        self._last_mirrored = dict.fromkeys(self._taps, 0)

    # life cycle ------------------------------------------------------------
    def start(self):
        """Create the server and its mirror records (``pvaccess`` errors propagate)."""
        if self.stats_file:
            try:
                self._stats_stream = open(self.stats_file, "a", encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot open --stats-file {self.stats_file!r}: {exc.strerror}") from None
        self._server = pva.PvaMirrorServer()
        if self.policy is not None:
            # Mirror records join the ACF's DEFAULT group (pvaccess gives them no other).
            self.policy.apply(self._server)
        for entry in self.entries:
            self._server.addMirrorRecord(entry.mirror, entry.source, PROTOCOLS[entry.protocol],
                                         entry.queue_size, entry.n_monitors, entry.request)
            self._print(f"mirroring {entry.describe()}")
        self._t0 = self._last_t = time.time()
        self._print(f"mirror server started with {len(self.entries)} channel(s)")
        names = [e.mirror for e in self.entries]
        if self.policy is not None and self.policy.active:
            log.info(self.policy.describe(names) + " (ACF group DEFAULT)")
        else:
            log.warning("records served WITHOUT access control (any client may write them): %s;"
                        " use --access-security-file to protect them", ", ".join(names))

    def request_stop(self, *_):
        """Ask :meth:`run` to return (safe from signal handlers)."""
        self._stop_requested = True

    def stop(self):
        """Stop the taps and the server; close the stats file."""
        for tap in self._taps.values():
            tap.stop()
        if self._server is not None:
            try:
                self._server.removeAllMirrorRecords()
            finally:
                self._server.stop()
                self._server = None
        if self._stats_stream is not None:
            self._stats_stream.close()
            self._stats_stream = None

    def attach_taps(self):
        """Start the tap of every mirror whose record now exists; return how many wait."""
        for tap in list(self._untapped):
            if self._stop_requested:
                break
            if self._server.hasRecord(tap.name):
                try:
                    tap.start()
                except pva.PvaException:
                    continue  # not reachable yet: try again on the next tick
                self._untapped.remove(tap)
        return len(self._untapped)

    def run(self, runtime=0.0, report_period=0.0, tick=0.1):
        """Serve until ``runtime`` seconds passed (<= 0: forever) or a stop request.

        Prints a report every ``report_period`` seconds (<= 0: none) and a
        final one; returns the final statistics.
        """
        start = time.monotonic()
        next_report = start + report_period if report_period > 0 else None
        while not self._stop_requested:
            if self._untapped:
                self.attach_taps()
            now = time.monotonic()
            if runtime > 0 and now - start >= runtime:
                break
            if next_report is not None and now >= next_report:
                self.report()
                while next_report <= now:
                    next_report += report_period
            wake = [now + tick]
            if runtime > 0:
                wake.append(start + runtime)
            if next_report is not None:
                wake.append(next_report)
            time.sleep(max(0.0, min(wake) - now))
        return self.report(final=True)

    # statistics ------------------------------------------------------------
    def collect(self, final=False):
        """Statistics of every channel and their totals, as a JSON-ready dict."""
        now = time.time()
        elapsed = max(now - self._t0, 1e-9)
        span = max(now - self._last_t, 1e-9)
        self._last_t = now
        channels, total, total_period = {}, 0, 0
        server_total = {}
        for entry in self.entries:
            mirrored, tap_overruns = self._taps[entry.mirror].counters()
            period = mirrored - self._last_mirrored[entry.mirror]
            self._last_mirrored[entry.mirror] = mirrored
            server = {k: int(v) for k, v in
                      self._server.getMirrorRecordCounters(entry.mirror).items()}
            channels[entry.mirror] = {
                "source": entry.source, "protocol": entry.protocol,
                "queueSize": entry.queue_size, "connected": self._server.hasRecord(entry.mirror),
                "nMirrored": mirrored, "mirroredRate": mirrored / elapsed,
                "periodMirrored": period, "periodMirroredRate": period / span,
                "tapOverruns": tap_overruns, "serverCounters": server,
            }
            total += mirrored
            total_period += period
            if SERVER_COUNTERS_ARE_SHARED:
                server_total = server
            else:
                for key, value in server.items():
                    server_total[key] = server_total.get(key, 0) + value
        return {"runtime": elapsed, "statusTime": now, "final": final,
                "nChannels": len(channels),
                "totals": {"nMirrored": total, "mirroredRate": total / elapsed,
                           "periodMirroredRate": total_period / span,
                           "serverCounters": server_total},
                "channels": channels}

    @staticmethod
    def format(stats):
        """The plain-text report of :meth:`collect`'s result."""
        totals = stats["totals"]
        per_channel = stats["nChannels"] == 1 or not SERVER_COUNTERS_ARE_SHARED
        head = (f"[mirror] {'FINAL ' if stats['final'] else ''}{stats['runtime']:.1f} s"
                f" {stats['nChannels']} channel(s): mirrored {totals['nMirrored']}"
                f" ({totals['mirroredRate']:.1f}/s, last {totals['periodMirroredRate']:.1f}/s)")
        if not per_channel:
            head += " server counters (all channels):" + _counters(totals["serverCounters"])
        lines = [head]
        for name, ch in stats["channels"].items():
            line = (f"  {name} <- {ch['source']} ({ch['protocol']}, queue {ch['queueSize']}):"
                    f" mirrored {ch['nMirrored']} ({ch['mirroredRate']:.1f}/s,"
                    f" last {ch['periodMirroredRate']:.1f}/s)")
            if per_channel:
                line += " server counters:" + _counters(ch["serverCounters"])
            if ch["tapOverruns"]:
                line += f" (count low: {ch['tapOverruns']} tap overruns)"
            if not ch["connected"]:
                line += " (source not connected)"
            lines.append(line)
        return "\n".join(lines)

    def report(self, final=False):
        """Collect, print and (with a stats file) write one report; return it."""
        stats = self.collect(final)
        self._print(self.format(stats))
        if self._stats_stream is not None:
            self._stats_stream.write(json.dumps(stats) + "\n")
            self._stats_stream.flush()
        return stats

    def _print(self, text):
        print(text, file=self.out, flush=True)


def _counters(counters):
    return "".join(f" {key} {value}" for key, value in counters.items()) or " none"
