"""Attach metadata channel values to NTNDArray frames by time stamp.

Run it in a consumer or a collector that monitors metadata channels::

    pvapy-hpc-consumer -ic det:image -oc det:withMetadata -mc 'pva://x,ca://y' \\
        -pc pvaflow.processors.metadata_association.MetadataAssociationProcessor \\
        -pa '{"timestampTolerance": 0.0005, "waitTime": 0.1}'

For each frame and each queue of ``metadataQueueMap`` the processor picks the
update whose time stamp is closest to the frame's ``timeStamp`` and at most
``timestampTolerance`` seconds away, and adds it to the frame as an NTNDArray
attribute named like the channel (the key of ``metadataQueueMap``), with the
update's time stamp and ``source`` = the channel name. The frame is then
published on the output channel.

Updates are consumed: each is attached to at most one frame. Updates older
than the frame minus the tolerance can match no later frame either (frames
arrive in time order) and are discarded; so are updates older than the one
attached. A frame that finds no value for some channel is counted as
incomplete and either published without that attribute
(``unmatchedFrames: "publish"``, the default) or held back, i.e. not
published (``"hold"``).

Processor arguments (``-pa``, JSON; all but the last also by ``configure``):

``timestampTolerance``
    seconds (default 0.001).
``metadataTimestampOffset``
    seconds added to every metadata time stamp before comparing (default 0).
``waitTime``
    the most seconds one frame may wait for metadata not yet arrived
    (default 0: never wait). Metadata travels on other connections than the
    frame (CA, another server), so it may arrive a little after its frame;
    a channel waited for in vain is not waited for again until it delivers.
``unmatchedFrames``
    ``"publish"`` or ``"hold"`` (see above).
``bufferSize``
    updates kept per channel for later frames (default 10000).

Queues are read with ``get(0)`` (or ``get(timeout)`` while waiting) and
``pvaccess.QueueEmpty``, so any pvapy-style queue map works. Per channel the
counters ``nAssociated``, ``nDiscarded`` and ``nUnmatched`` are added to the
queue (``addToCounter``), which the stage shows in its ``metadataStats``.
"""

import bisect
import time

import pvaccess as pva

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.processor import UserDataProcessor

MODES = ("publish", "hold")

#: NDAttribute source type of an EPICS PV (areaDetector's NDAttrSourceEPICSPV).
_SOURCE_EPICS_PV = 2

_NS = 1_000_000_000


def _seconds(config, key, default, minimum=0.0):
    value = config.get(key, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{key} must be a number of seconds, got {value!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{key} must be >= {minimum:g} seconds, got {value:g}")
    return value


#: Python type of a metadata value -> the PvObject type that holds it in an attribute.
_HOLDERS = {bool: pva.PvBoolean, int: pva.PvLong, float: pva.PvDouble, str: pva.PvString}


def _plain(value):
    """``value`` as one of the types of :data:`_HOLDERS` (enum: its index; others: text)."""
    if type(value) in _HOLDERS:
        return value
    if isinstance(value, dict) and "index" in value:
        return int(value["index"])
    return str(value)


class _Channel:
    """Per-channel state: the queue, the sorted buffer, the reused attribute."""

    __slots__ = ("name", "queue", "times", "items", "stalled", "attribute", "holder", "kind")

    def __init__(self, name, queue):
        self.name = name
        self.queue = queue
        self.times = []  # sorted time stamps (ns, offset applied) of the buffered updates
        self.items = []  # (seconds, nanoseconds, value), same order
        self.stalled = False
        self.attribute = None  # NtAttribute reused frame after frame (setting it copies it)
        self.holder = None
        self.kind = None

    def fill_attribute(self, seconds, nanoseconds, value):
        """The channel's attribute holding ``value`` and its time stamp."""
        value = _plain(value)
        kind = type(value)
        if kind is not self.kind:  # the first value, or the channel changed its type
            self.kind, self.holder = kind, _HOLDERS[kind](value)
            self.attribute = pva.NtAttribute(self.name, self.holder)
            self.attribute.setSource(self.name)
            self.attribute.setSourceType(_SOURCE_EPICS_PV)
        else:
            self.holder.set(value)
            self.attribute.setValue(self.holder)
        attribute = self.attribute
        attribute.setLong("timeStamp.secondsPastEpoch", seconds)
        attribute.setInt("timeStamp.nanoseconds", nanoseconds)
        return attribute


class MetadataAssociationProcessor(UserDataProcessor):
    """See the module docstring."""

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self._apply(self.configDict, initial=True)
        size = self.configDict.get("bufferSize", 10000)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"bufferSize must be a whole number >= 1, got {size!r}")
        self.buffer_size = size
        self._channels = []
        self.resetStats()

    def _apply(self, config, initial=False):
        """Validate and take the tunable arguments (all or nothing)."""
        tolerance = _seconds(config, "timestampTolerance", 0.001 if initial else self.tolerance)
        offset = _seconds(config, "metadataTimestampOffset", 0.0 if initial else self.offset,
                          minimum=-float("inf"))
        wait = _seconds(config, "waitTime", 0.0 if initial else self.wait_time)
        mode = config.get("unmatchedFrames", "publish" if initial else self.mode)
        if mode not in MODES:
            raise ConfigurationError(f"unmatchedFrames must be 'publish' or 'hold', got {mode!r}")
        self.tolerance, self.offset, self.wait_time, self.mode = tolerance, offset, wait, mode
        self._tolerance_ns = int(round(tolerance * _NS))
        self._offset_ns = int(round(offset * _NS))

    # life cycle ------------------------------------------------------------
    def start(self):
        self._channels = [_Channel(name, queue) for name, queue in (self.metadataQueueMap or {}).items()]
        for c in self._channels:  # make our counters visible in getCounters() from the start
            for counter in ("nAssociated", "nDiscarded", "nUnmatched"):
                c.queue.addToCounter(counter, 0)
        if not self._channels:
            self.logger.warning("no metadata channels (-mc/--metadata-channels): frames pass"
                                " through without metadata attributes")

    def configure(self, configDict):
        self._apply(configDict)

    def stop(self):
        """Whatever is still queued or buffered matches no frame any more: discarded."""
        for c in self._channels:
            self._drain(c)
            n = len(c.times)
            if n:
                del c.times[:], c.items[:]
                self._discard(c, n)

    def resetStats(self):
        self.n_complete = 0
        self.n_incomplete = 0
        self.n_held = 0
        self.n_associated = 0
        self.n_discarded = 0
        self.wait_seconds = 0.0

    def getStats(self):
        return {"nFramesComplete": self.n_complete, "nFramesIncomplete": self.n_incomplete,
                "nFramesHeld": self.n_held, "nMetadataAssociated": self.n_associated,
                "nMetadataDiscarded": self.n_discarded,
                "nMetadataBuffered": sum(len(c.times) for c in self._channels),
                "waitSeconds": self.wait_seconds}

    def getStatsPvaTypes(self):
        return {"nFramesComplete": pva.ULONG, "nFramesIncomplete": pva.ULONG,
                "nFramesHeld": pva.ULONG, "nMetadataAssociated": pva.ULONG,
                "nMetadataDiscarded": pva.ULONG, "nMetadataBuffered": pva.ULONG,
                "waitSeconds": pva.DOUBLE}

    # per frame -------------------------------------------------------------
    def process(self, pvObject):
        channels = self._channels
        if not channels:
            self.updateOutputChannel(pvObject)
            return pvObject
        frame_ns = (pvObject.getLong("timeStamp.secondsPastEpoch") * _NS
                    + pvObject.getInt("timeStamp.nanoseconds"))
        deadline = None
        attributes = []
        missing = 0
        for c in channels:
            self._drain(c)
            item = self._match(c, frame_ns)
            # An empty buffer means nothing later than this frame came yet: its value may
            # still be on the way (a later update would show the channel has moved on).
            while item is None and self.wait_time > 0 and not c.stalled and not c.times:
                if deadline is None:
                    deadline = time.monotonic() + self.wait_time
                if not self._wait(c, deadline):
                    c.stalled = True
                    break
                item = self._match(c, frame_ns)
            if item is None:
                missing += 1
                c.queue.addToCounter("nUnmatched", 1)
                continue
            attributes.append(c.fill_attribute(*item))
        if attributes:
            # keep the frame's own attributes; ours replace any of the same name
            kept = [a for a in pvObject["attribute"] if a["name"] not in self.metadataQueueMap]
            pvObject["attribute"] = kept + attributes
        if missing:
            self.n_incomplete += 1
            if self.mode == "hold":
                self.n_held += 1
                return None
        else:
            self.n_complete += 1
        self.updateOutputChannel(pvObject)
        return pvObject

    def _drain(self, c):
        """Move everything queued for ``c`` into its sorted buffer, without blocking.

        The length is checked first: a ``QueueEmpty`` exception costs pvaccess
        over 100 us, more than the rest of a frame's work.
        """
        queue = c.queue
        while len(queue):
            try:
                update = queue.get(0)
            except pva.QueueEmpty:  # taken by someone else meanwhile
                return
            self._add(c, update)

    def _add(self, c, update):
        seconds = update.getLong("timeStamp.secondsPastEpoch")
        nanoseconds = update.getInt("timeStamp.nanoseconds")
        t = seconds * _NS + nanoseconds + self._offset_ns
        times = c.times
        entry = (seconds, nanoseconds, update["value"])
        if not times or t >= times[-1]:
            times.append(t)
            c.items.append(entry)
        else:  # out of order: keep the buffer sorted
            i = bisect.bisect_right(times, t)
            times.insert(i, t)
            c.items.insert(i, entry)
        c.stalled = False
        if len(times) > self.buffer_size:
            del times[0], c.items[0]
            self._discard(c, 1)

    def _match(self, c, frame_ns):
        """Take the buffered update closest to ``frame_ns`` within the tolerance, or None.

        Updates too old for this frame, and those older than the one taken,
        are discarded.
        """
        times = c.times
        low = frame_ns - self._tolerance_ns
        high = frame_ns + self._tolerance_ns
        first = bisect.bisect_left(times, low)
        best = -1
        best_distance = 0
        i, n = first, len(times)
        while i < n and times[i] <= high:
            distance = abs(times[i] - frame_ns)
            if best < 0 or distance < best_distance:
                best, best_distance = i, distance
            i += 1
        if best < 0:
            if first:
                del times[:first], c.items[:first]
                self._discard(c, first)
            return None
        item = c.items[best]
        del times[:best + 1], c.items[:best + 1]
        if best:
            self._discard(c, best)
        self.n_associated += 1
        c.queue.addToCounter("nAssociated", 1)
        return item

    def _wait(self, c, deadline):
        """Wait for one update of ``c`` until ``deadline``; False when none came."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        t0 = time.monotonic()
        try:
            update = c.queue.get(remaining)
        except pva.QueueEmpty:
            return False
        finally:
            self.wait_seconds += time.monotonic() - t0
        self._add(c, update)
        self._drain(c)
        return True

    def _discard(self, c, n):
        self.n_discarded += n
        c.queue.addToCounter("nDiscarded", n)
