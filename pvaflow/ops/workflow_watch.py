"""Watching stages through their channels: readiness, connections, stages on other hosts."""

import threading
import time

from .fleet_view import PvaGetter, expand
from .workflow_graph import PROCESSING

REMOTE_GONE = 3.0  # seconds a once-seen remote stage must stay unreachable to count as ended


def liveness_channels(stage):
    """Channels that exist while ``stage`` runs."""
    if stage.kind in PROCESSING:
        return expand(stage.status, stage.ids)
    return [stage.output] if stage.output else []


class Probe:
    """Is a channel served right now? (pvaccess, introspection only: no data moves.)"""

    def __init__(self, timeout=1.0):
        import pvaccess  # pylint: disable=import-outside-toplevel
        self._pva = pvaccess
        self.timeout = timeout
        self._channels = {}

    def up(self, name):
        """True when ``name`` answers within the timeout."""
        channel = self._channels.get(name)
        if channel is None:
            channel = self._channels[name] = self._pva.Channel(name)
            channel.setTimeout(self.timeout)
        try:
            channel.getIntrospectionDict()
            return True
        except Exception:  # pylint: disable=broad-except  # timeout or disconnect: not served
            return False


class RemoteWatch(threading.Thread):
    """Follows stages on other hosts through their channels."""

    def __init__(self, stages, probe):
        super().__init__(name="workflow-remote-watch", daemon=True)
        self.stages = stages
        self.probe = probe
        self.seen = {s.name: False for s in stages}
        self.gone_since = {s.name: None for s in stages}
        self._halt = threading.Event()

    def run(self):
        """Probe every remote stage once a second."""
        while not self._halt.wait(1.0):
            for stage in self.stages:
                up = any(self.probe.up(n) for n in liveness_channels(stage))
                if up:
                    self.seen[stage.name], self.gone_since[stage.name] = True, None
                elif self.seen[stage.name] and self.gone_since[stage.name] is None:
                    self.gone_since[stage.name] = time.monotonic()

    def ended_at(self, name):
        """When the remote stage ``name`` went away for good (monotonic), or None."""
        gone = self.gone_since.get(name)
        if gone is not None and time.monotonic() - gone >= REMOTE_GONE:
            return gone
        return None

    def halt(self):
        """End the watch thread."""
        self._halt.set()


def connected(record):
    """Has the process behind this status record received from every input?"""
    producers = record.get("producerStats")
    if isinstance(producers, dict) and producers:
        return all((p or {}).get("nReceived", 0) > 0 for p in producers.values())
    return (record.get("receiverStats") or {}).get("nReceived", 0) > 0


class ConnectionCheck:
    """Confirms, without blocking supervision, that every stage received from its inputs."""

    def __init__(self, stages, timeout):
        self.waiting = {n: s for s in stages for n in expand(s.status, s.ids)}
        self.stage_of = {n: s.name for s in stages for n in expand(s.status, s.ids)}
        self.deadline = time.monotonic() + timeout
        self.getter = PvaGetter(timeout=0.3)
        self.next_check = 0.0
        self.done = not self.waiting

    def poll(self, say, t0):
        """Check now and then; report once when all are connected or the time is up."""
        now = time.monotonic()
        if self.done or now < self.next_check:
            return
        self.next_check = now + 0.5
        for name in list(self.waiting):
            try:
                if connected(self.getter.get(name)):
                    del self.waiting[name]
            except Exception:  # pylint: disable=broad-except  # not up yet
                pass
        if not self.waiting:
            self.done = True
            say(f"all stages receive from their inputs ({now - t0:.1f} s after the start)")
        elif now > self.deadline:
            self.done = True
            late = sorted({self.stage_of[n] for n in self.waiting})
            say(f"WARNING: {', '.join(late)} received nothing from their inputs yet; frames"
                " published before they connect are not seen by them (a longer simulator"
                " start_delay helps)")
