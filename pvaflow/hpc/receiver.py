"""Input from a remote channel through a PV Access (or CA) monitor."""

import logging
import re

import pvaccess as pva

log = logging.getLogger(__name__)


def build_request(server_queue_size=0, field_request="", id_field="uniqueId", distributor=None):
    """The pvRequest string for the input monitor.

    ``field_request`` may be ``a,b`` or ``field(a,b)``; the id field and
    ``timeStamp`` are always added to a non-empty field list so that
    accounting and latency keep working. ``distributor`` is the plugin part
    (``pydistributor=group:g;...``), which replaces the field list.
    """
    record = f"record[queueSize={int(server_queue_size)}]" if server_queue_size > 0 else ""
    if distributor:
        return f"{record}field(_[{distributor}])"
    fields = field_request.strip()
    match = re.fullmatch(r"field\((.*)\)", fields)
    if match:
        fields = match.group(1)
    names = [f.strip() for f in fields.split(",") if f.strip()]
    if names:
        for required in (id_field, "timeStamp"):
            if required not in names:
                names.append(required)
    return f"{record}field({','.join(names)})"


class MonitorReceiver:
    """Monitors ``channel`` and calls ``on_update(pvObject)`` for each update.

    ``on_reconnect()`` is called when the channel connects again after a
    disconnection (the server will send its current value first).

    The connection callback is registered only after ``monitor()`` has
    returned (see :meth:`watch_connection`): pvaccess is not safe when it
    calls into Python from one thread while another thread is inside
    ``monitor()`` (seen as "PyThreadState_Get: ... GIL is released" aborts).
    """

    def __init__(self, channel, request, on_update, on_reconnect=None, provider="pva"):
        self.channel_name = channel
        self.request = request
        self._on_update = on_update
        self._on_reconnect = on_reconnect
        self._provider = pva.CA if provider == "ca" else pva.PVA
        self._channel = pva.Channel(channel, self._provider)
        self._was_connected = False
        self._overrun_base = 0
        self.active = False
        self.connected = False

    def _connection_changed(self, connected):
        self.connected = connected
        if connected:
            if self._was_connected and self._on_reconnect is not None:
                self._on_reconnect()
            self._was_connected = True
        log.info("input channel %s %s", self.channel_name, "connected" if connected else "disconnected")

    def start(self, watch=True):
        """Start the monitor; then (unless ``watch`` is False) the connection callback."""
        self.active = True
        self._channel.monitor(self._on_update, self.request)
        if watch:
            self.watch_connection()

    def watch_connection(self):
        """Register the connection callback (after every monitor of the process started)."""
        self.connected = self._was_connected = self._channel.isConnected()
        self._channel.setConnectionCallback(self._connection_changed)

    def stop(self):
        if self.active:
            self.active = False
            try:
                self._channel.stopMonitor()
            except pva.PvaException as exc:
                log.debug("stopMonitor: %s", exc)

    def overruns(self):
        counters = self._channel.getMonitorCounters()
        return max(counters.get("nOverruns", 0) - self._overrun_base, 0)

    def reset_stats(self):
        self._overrun_base = self._channel.getMonitorCounters().get("nOverruns", 0)
