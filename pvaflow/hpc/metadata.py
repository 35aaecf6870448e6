"""Metadata channels of a processing stage (``-mc/--metadata-channels``).

``--metadata-channels 'pva://a,ca://b,c'`` names channels whose updates the
processor wants next to the frames: motor positions, temperatures, a
shutter state. Each channel is monitored into its own bounded
:class:`pvaccess.PvObjectQueue`; the processor finds the queues in
``self.metadataQueueMap`` (``{name: queue}``), exactly as pvapy's framework
hands them over, and reads them with ``queue.get(0)`` catching
``pvaccess.QueueEmpty``.

Keys of ``metadataQueueMap`` are the names as written without the protocol
prefix (``pva://a`` -> ``a``), as in pvapy. A bare name is a CA channel.

The monitors are pvaccess queue monitors (``Channel.qMonitor``): pvaccess
copies every update into the queue in its own thread, no Python code runs
per update, and a full queue rejects the update and counts it. Processors
report what became of the updates they took by adding to counters of the
queue (``queue.addToCounter(name, n)``): ``nAssociated`` (attached to a
frame), ``nDiscarded`` (too old for any frame), ``nUnmatched`` (frames that
found no value of this channel). The built-in
:class:`pvaflow.processors.metadata_association.MetadataAssociationProcessor`
does so; the status record shows them per channel in ``metadataStats``.
"""

import logging

import pvaccess as pva

from .errors import ConfigurationError

log = logging.getLogger(__name__)

PROTOCOLS = ("pva", "ca")

#: Longest CA record/channel name EPICS accepts (PVNAME_STRINGSZ - 1).
CA_NAME_LIMIT = 60

#: Server-side monitor queue (``record[queueSize=N]``) of each metadata channel;
#: without one, a CA or PVA server keeps only the last few updates of a fast PV.
SERVER_QUEUE_SIZE = 100

#: Counters a processor adds to on the queues (``queue.addToCounter``).
PROCESSOR_COUNTERS = ("nAssociated", "nDiscarded", "nUnmatched")

CHANNEL_STATUS_TYPES = {
    "channel": pva.STRING, "protocol": pva.STRING, "connected": pva.BOOLEAN,
    "nReceived": pva.ULONG, "nRejected": pva.ULONG, "nQueued": pva.ULONG,
    "nDelivered": pva.ULONG, "nAssociated": pva.ULONG, "nDiscarded": pva.ULONG,
    "nUnmatched": pva.ULONG, "nOverruns": pva.ULONG, "maxLength": pva.ULONG,
}


def parse_metadata_channels(spec, what="--metadata-channels"):
    """Split ``'pva://a,ca://b,c'`` into ``[(protocol, name), ...]``.

    A bare name is CA (as in pvapy). Empty items are skipped; an empty name,
    an unknown protocol, a name given twice or a CA name longer than EPICS
    allows raise :class:`ConfigurationError`.
    """
    result = []
    seen = set()
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        protocol, sep, name = item.partition("://")
        if not sep:
            protocol, name = "ca", item
        protocol = protocol.lower()
        if protocol not in PROTOCOLS:
            raise ConfigurationError(
                f"{what}: '{item}' has an unknown protocol '{protocol}://'; use pva://NAME,"
                " ca://NAME or a bare NAME (CA)")
        name = name.strip()
        if not name or any(c.isspace() for c in name):
            raise ConfigurationError(
                f"{what}: '{item}' has an empty or blank-containing channel name; give e.g. pva://x:y")
        if protocol == "ca" and len(name) > CA_NAME_LIMIT:
            raise ConfigurationError(
                f"{what}: CA name '{name}' has {len(name)} characters, more than the"
                f" {CA_NAME_LIMIT} EPICS allows; use a shorter name")
        if name in seen:
            raise ConfigurationError(
                f"{what}: channel '{name}' is given twice (the protocol prefix does not make"
                " names distinct); give each name once")
        seen.add(name)
        result.append((protocol, name))
    return result


class MetadataChannel:
    """One monitored metadata channel and its queue."""

    __slots__ = ("index", "name", "protocol", "queue", "channel", "request",
                 "_received_base", "_overrun_base")

    def __init__(self, index, protocol, name, queue_size, server_queue_size):
        self.index = index
        self.name = name
        self.protocol = protocol
        self.queue = pva.PvObjectQueue(queue_size)
        self.channel = pva.Channel(name, pva.CA if protocol == "ca" else pva.PVA)
        record = f"record[queueSize={server_queue_size}]" if server_queue_size > 0 else ""
        # CA channels have only value/alarm/timeStamp/display; PVA ones may carry more.
        self.request = f"{record}field(value,timeStamp)" if protocol == "ca" else f"{record}field()"
        self._received_base = 0
        self._overrun_base = 0

    def start(self):
        # No connection callback: pvaccess keeps the GIL state of its Python callbacks in
        # one process-wide variable, so callbacks running in several of its threads at
        # once can leave a thread without the GIL (fatal). qMonitor runs no Python code;
        # the connection state is polled when statistics are collected.
        self.channel.qMonitor(self.queue, self.request)

    def stop(self):
        try:
            self.channel.stopMonitor()
        except pva.PvaException as exc:
            log.debug("stopMonitor %s: %s", self.name, exc)

    def reset_stats(self):
        counters = self.channel.getMonitorCounters()
        self._received_base = counters.get("nReceived", 0)
        self._overrun_base = counters.get("nOverruns", 0)
        self.queue.resetCounters()

    def stats(self):
        monitor = self.channel.getMonitorCounters()
        queue = self.queue.getCounters()
        values = {
            "channel": self.name, "protocol": self.protocol,
            "connected": bool(self.channel.isConnected()),
            "nReceived": max(monitor.get("nReceived", 0) - self._received_base, 0),
            "nRejected": queue.get("nRejected", 0), "nQueued": len(self.queue),
            "nDelivered": queue.get("nDelivered", 0),
            "nOverruns": max(monitor.get("nOverruns", 0) - self._overrun_base, 0),
            "maxLength": self.queue.maxLength,
        }
        for counter in PROCESSOR_COUNTERS:
            values[counter] = queue.get(counter, 0)
        return values


class MetadataChannels:
    """The stage extension behind ``--metadata-channels`` (see the module docstring).

    ``queue_map`` is what the stage hands to the processor as
    ``metadataQueueMap``; ``start``/``stop``/``reset_stats``/``status_types``/
    ``stats``/``report_lines`` are the extension hooks the consumer and the
    collector call.
    """

    def __init__(self, spec, queue_size=1000, server_queue_size=SERVER_QUEUE_SIZE):
        if int(queue_size) < 1:
            raise ConfigurationError(
                f"--metadata-queue-size {queue_size} is too small; give a size >= 1")
        parsed = parse_metadata_channels(spec)
        if not parsed:
            raise ConfigurationError(
                f"--metadata-channels '{spec}' names no channel; give e.g. 'pva://x,ca://y'")
        self.channels = [MetadataChannel(i + 1, protocol, name, int(queue_size), server_queue_size)
                         for i, (protocol, name) in enumerate(parsed)]
        self.queue_map = {c.name: c.queue for c in self.channels}
        self.started = False

    def start(self):
        for c in self.channels:
            c.start()
        self.started = True
        log.info("monitoring metadata channels %s",
                 ", ".join(f"{c.protocol}://{c.name}" for c in self.channels))

    def stop(self):
        if self.started:
            self.started = False
            for c in self.channels:
                c.stop()

    def reset_stats(self):
        for c in self.channels:
            c.reset_stats()

    def status_types(self):
        """``metadataStats`` section of the status record: ``metadata<i>`` per channel."""
        return {"metadataStats": {f"metadata{c.index}": dict(CHANNEL_STATUS_TYPES)
                                  for c in self.channels}}

    def stats(self):
        return {"metadataStats": {f"metadata{c.index}": c.stats() for c in self.channels}}

    def report_lines(self, stats):
        lines = []
        for s in stats.get("metadataStats", {}).values():
            lines.append(
                f"  metadata {s['protocol']}://{s['channel']}"
                f"{'' if s['connected'] else ' (disconnected)'} received {s['nReceived']}"
                f" rejected {s['nRejected']} queued {s['nQueued']}/{s['maxLength']}"
                f" associated {s['nAssociated']} discarded {s['nDiscarded']}"
                f" unmatched {s['nUnmatched']} overruns {s['nOverruns']}")
        return lines
