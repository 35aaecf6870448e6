"""A collector: merges several producer channels and processes objects in id order.

Each producer channel (the input pattern with ``*`` replaced by a producer
id) is monitored; objects go through :class:`OrderedRelease` and the
released ones are handed, in strictly increasing id order, to the processor
on the worker thread. Everything else (processor, output, status, control,
reports, stop and drain) is the consumer's machinery.
"""

import dataclasses
import logging
import threading
import time

import pvaccess as pva

from .consumer import Consumer
from .consumer_config import ConsumerConfig
from .errors import ConfigurationError
from .frame_queue import FrameQueue
from .naming import resolve_channel
from .ordering import OrderedRelease
from .receiver import MonitorReceiver, build_request
from .thread_state import RELEASE_GUARD as _GUARD
from .thread_state import UNLOCKED as _UNLOCKED
from .thread_state import keep_thread_state_once

log = logging.getLogger(__name__)


@dataclasses.dataclass
class CollectorConfig(ConsumerConfig):
    KIND = "collector"
    INPUT_MODES = ("pva", "ca")
    producer_ids: tuple = (1,)
    cache_size: int = 1000
    collector_timeout: float = 1.0
    objects_per_id: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not self.producer_ids:
            raise ConfigurationError("the collector needs at least one producer id (-pid)")
        if self.cache_size < 1:
            raise ConfigurationError("--collector-cache-size must be >= 1")
        if self.collector_timeout <= 0:
            raise ConfigurationError("--collector-timeout must be > 0 seconds")
        if self.objects_per_id < 1:
            raise ConfigurationError("--objects-per-id must be >= 1")
        if "*" not in self.input_channel and len(self.producer_ids) > 1:
            raise ConfigurationError(
                f"input channel '{self.input_channel}' has no '*' for the producer id; with"
                " several producers use e.g. 'pvapy:consumer:*:output'")
        for pid in self.producer_ids:
            self.producer_channel(pid)

    def producer_channel(self, pid):
        return resolve_channel(self.input_channel, "output", "consumer", pid, self.id_format_spec,
                               what="input channel")


class _Producer:
    __slots__ = ("pid", "channel", "receiver", "received", "skipped", "last_id", "to_skip",
                 "reconnects", "new_thread")

    def __init__(self, pid, channel, skip):
        self.pid = pid
        self.channel = channel
        self.receiver = None
        self.received = 0
        self.skipped = 0
        self.last_id = -1
        self.to_skip = skip
        self.reconnects = 0
        self.new_thread = True  # the next update comes on a thread not yet kept


class _CollectorAccounting:
    """Presents the ordering counters under the names the reports use."""

    def __init__(self, collector):
        self._c = collector
        self.reconnects = 0
        self.missed_while_down = 0
        self.id_resets = 0
        self.empty = 0

    def __getattr__(self, name):
        o, producers = self._c.ordering, self._c.producers
        if name == "received":
            return sum(p.received for p in producers)
        if name == "skipped":
            return sum(p.skipped for p in producers)
        if name == "missed":
            return o.missed
        if name == "duplicates":
            return o.duplicates
        if name == "admitted":
            return o.received
        raise AttributeError(name)

    def reset(self):
        for p in self._c.producers:
            p.received = p.skipped = 0
        self._c.ordering.reset_stats()

    def as_dict(self):
        o = self._c.ordering
        return {"nReceived": self.received, "nSkipped": self.skipped, "nEmpty": 0,
                "nDuplicates": o.duplicates, "nMissed": o.missed, "nIdResets": 0,
                "nReconnects": sum(p.reconnects for p in self._c.producers),
                "nMissedWhileDown": 0,
                "firstId": o.first_id if o.first_id is not None else -1, "lastId": (o.next_id - o.id_step) if o.next_id is not None else -1}


class _Overruns:
    def __init__(self, producers):
        self.producers = producers

    def overruns(self):
        return sum(p.receiver.overruns() for p in self.producers if p.receiver is not None)

    def reset_stats(self):
        for p in self.producers:
            if p.receiver is not None:
                p.receiver.reset_stats()

    def stop(self):
        for p in self.producers:
            if p.receiver is not None:
                p.receiver.stop()


class Collector(Consumer):
    kind = "collector"
    id_field = "collectorId"

    def __init__(self, config: CollectorConfig):
        self.producers = [_Producer(pid, config.producer_channel(pid), config.skip_initial_updates)
                          for pid in config.producer_ids]
        self.ordering = OrderedRelease(config.cache_size, config.collector_timeout,
                                       config.objects_per_id, max(config.oid_offset, 1),
                                       n_sources=len(self.producers))
        super().__init__(config)
        self.accounting = _CollectorAccounting(self)
        bound = config.receiver_queue_size
        self.queue = FrameQueue(bound if bound > 0 else 0)
        self._order_lock = threading.Lock()
        self._released = []

    def _resolve_input(self):
        return self.config.input_channel

    def _start_input(self):
        request = build_request(self.config.server_queue_size, self.config.field_request,
                                self.config.oid_field)
        for index, producer in enumerate(self.producers):
            producer.receiver = MonitorReceiver(
                producer.channel, request, self._make_callback(index, producer),
                self._make_reconnect(producer), self.config.input_mode)
            producer.receiver.start(watch=False)
        for producer in self.producers:  # callbacks only once no monitor() call is running
            producer.receiver.watch_connection()
        self.receiver = _Overruns(self.producers)
        log.info("collecting %s", ", ".join(p.channel for p in self.producers))

    def _make_reconnect(self, producer):
        def reconnected():
            producer.to_skip = self.config.skip_initial_updates
            producer.reconnects += 1
            producer.new_thread = True
        return reconnected

    def _make_callback(self, index, producer):
        ordering, released, lock = self.ordering, self._released, self._order_lock
        field = self.config.oid_field

        def receive(pv):
            try:
                if producer.new_thread:
                    producer.new_thread = False
                    keep_thread_state_once()
                    if self._first:
                        with lock:
                            if self._first:
                                self._first_update(pv)
                producer.received += 1
                if producer.to_skip:
                    producer.to_skip -= 1
                    producer.skipped += 1
                    return
                uid = self._get_id(pv, field)
                producer.last_id = uid
                with lock:
                    # a copy: pvaccess reuses the update's storage after the callback
                    ordering.add(uid, pv.copy(), time.monotonic(), released, index)
                    if released:
                        self._hand_over()
            finally:  # pvaccess's Release must see "unlocked" (thread_state.py)
                _GUARD.value = _UNLOCKED
        return receive

    def _hand_over(self):
        """Move released groups to the processing queue (lock held)."""
        q = self.queue
        for _, group in self._released:
            for pv in group:
                q.put(pv)
        self._released.clear()

    def _work(self):
        q, lock, ordering = self.queue, self._order_lock, self.ordering
        tick = min(self.config.collector_timeout / 4, 0.05)
        while True:
            pv = q.get(tick)
            if pv is not None:
                self._process(pv)
                continue
            with lock:
                if self.state == "running":
                    ordering.expire(time.monotonic(), self._released)
                else:
                    ordering.flush(self._released)
                if self._released:
                    self._hand_over()
                    continue
            if self.state != "running" and not len(q):
                return

    def extra_status_types(self):
        producer = {"nReceived": pva.ULONG, "nSkipped": pva.ULONG, "lastId": pva.LONG,
                    "nReconnects": pva.ULONG}
        return dict(super().extra_status_types(), **{
            "collectorStats": {"nReleased": pva.ULONG, "nLate": pva.ULONG, "nIncomplete": pva.ULONG,
                               "nHeld": pva.ULONG, "peakHeld": pva.ULONG, "cacheSize": pva.ULONG,
                               "nextId": pva.LONG},
            "producerStats": {f"producer{p.pid}": dict(producer) for p in self.producers},
        })

    def extra_stats(self):
        o = self.ordering
        return dict(super().extra_stats(), **{
            "collectorStats": {"nReleased": o.released, "nLate": o.late, "nIncomplete": o.incomplete,
                               "nHeld": o.held, "peakHeld": o.peak, "cacheSize": o.cache_size,
                               "nextId": o.next_id if o.next_id is not None else -1},
            "producerStats": {f"producer{p.pid}": {"nReceived": p.received, "nSkipped": p.skipped,
                                                   "lastId": p.last_id, "nReconnects": p.reconnects}
                              for p in self.producers},
        })

    def extra_report_lines(self, stats):
        c = stats["collectorStats"]
        producers = " ".join(f"{name[8:]}:{v['nReceived']}" for name, v in stats["producerStats"].items())
        return super().extra_report_lines(stats) + [f"  collector released {c['nReleased']} late {c['nLate']} incomplete {c['nIncomplete']}"
                f" held {c['nHeld']} (peak {c['peakHeld']}/{c['cacheSize']}) next id {c['nextId']}",
                f"  producers (id:received) {producers}"]
