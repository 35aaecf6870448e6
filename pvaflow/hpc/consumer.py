"""One consumer: input monitor -> processor -> output, with status and control.

Threads:

* the monitor thread of pvaccess runs :meth:`Consumer._receive` for each
  update: id accounting, then either processing right there (no receiver
  queue) or a non-blocking put into the :class:`FrameQueue`;
* with a receiver queue, one worker thread drains it through the processor;
* the owner's thread (:meth:`Consumer.run`) carries out control commands,
  publishes status, prints reports and finally stops everything in order:
  stop receiving, drain what was received, ``processor.stop()``, final
  status and report.

Nothing on the per-frame path logs, builds dicts or allocates beyond what
pvaccess hands us.
"""

import logging
import math
import queue
import threading
import time

import pvaccess as pva

from . import loader
from .access import AccessPolicy
from .accounting import FrameAccounting, LatencyRecorder
from .consumer_config import ConsumerConfig
from .commands import FAILED as _FAILED
from .commands import CommandsMixin
from .control import ControlChannel
from .stage_io import StageIOMixin
from .frame_queue import FrameQueue
from .push_input import ACCEPTED
from .push_input import REJECTED as NOT_ACCEPTED
from .shared_counters import ADMITTED, ERRORS, LAST_ID, MISSED, PROCESSED, REJECTED
from .stats_report import StatsReporter
from .status import fill_status, status_record_type
from .thread_state import RELEASE_GUARD as _GUARD
from .thread_state import UNLOCKED as _UNLOCKED
from .thread_state import keep_thread_state_once

log = logging.getLogger(__name__)

_STOP = object()  # wakes the owner's loop on a signal
_clock = time.perf_counter
_now = time.time


class Consumer(StageIOMixin, CommandsMixin):
    """A single consumer process's engine. See the module docstring."""

    kind = "consumer"
    id_field = "consumerId"

    def __init__(self, config: ConsumerConfig):
        self.config = config
        cid = config.consumer_id
        self.input_channel = self._resolve_input()
        self.output_channel = config.resolved("output_channel", "output")
        self.status_channel = config.resolved("status_channel", "status")
        self.control_channel = config.resolved("control_channel", "control")
        cls = loader.load_processor_class(config.processor_file, config.processor_class)
        self.processor = loader.create_processor(cls, self._processor_config())
        self._attach_processor(cid)
        self._create_extensions()
        self.access_policy = AccessPolicy(config.access_security_file, config.access_security_group,
                                          config.access_security_readonly_group,
                                          config.access_security_macros)
        push = config.input_mode in ("pvas", "rpc")  # no initial value to skip when pushed to
        self.accounting = FrameAccounting(config.id_schedule(), 0 if push else config.skip_initial_updates)
        if config.resume_after_id is not None:
            self.accounting.resume_after(config.resume_after_id)
        self.latency = LatencyRecorder()
        self.queue = (FrameQueue(config.receiver_queue_size, track_age=config.accumulate_objects > 0)
                      if config.receiver_queue_size >= 0 else None)
        self.commands = queue.SimpleQueue()
        self.state = "created"
        self.n_processed = 0
        self.n_errors = 0
        self.n_hook_errors = 0  # start/stop/configure/getStats/resetStats that raised
        self.process_seconds = 0.0
        self.last_error = ""
        self._errors_reported = 0
        self._lock = threading.Lock()  # process() vs configure()/resetStats()
        self._first = True
        self._pending = True  # first update, or a new delivering thread (after a reconnect)
        self._oid_field = config.oid_field
        self._process_frame = self.processor.process  # bound once: the per-frame call
        self._check_empty = False
        self._get_id = None
        self._has_timestamp = True
        self._stop_requested = False
        self._exit_code = 0
        self._worker = None
        self.server = None
        self.receiver = None
        self.control = None
        self.status_record = None
        self.shared = None  # counters shared with a supervising parent (fleet.py)
        self.stats_listener = None  # called with each stats dict (fleet.py)
        self.reporter = StatsReporter(self, config)
        self._input_type = self._pvas_input_type() if config.input_mode == "pvas" else None
        self._pushed = push

    # set-up -----------------------------------------------------------------
    def _resolve_input(self):
        return self.config.resolved("input_channel", "input")

    def extra_status_types(self):
        """Further status sections (of extensions and subclasses): {name: {field: type}}."""
        types = {}
        for extension in self.extensions:
            types.update(extension.status_types())
        return types

    def extra_stats(self):
        """Values of the sections named by :meth:`extra_status_types`."""
        stats = {}
        for extension in self.extensions:
            stats.update(extension.stats())
        return stats

    def extra_report_lines(self, stats):
        return [line for extension in self.extensions for line in extension.report_lines(stats)]

    def _create_extensions(self):
        """Optional parts with their own start/stop/stats (metadata channels)."""
        self.extensions = []
        if self.config.metadata_channels:
            from .metadata import MetadataChannels
            metadata = MetadataChannels(self.config.metadata_channels, self.config.metadata_queue_size)
            self.processor.metadataQueueMap = metadata.queue_map
            self.extensions.append(metadata)

    def _processor_config(self):
        c = self.config
        conf = dict(c.processor_args)
        conf.update({
            "processorId": c.consumer_id, "inputChannel": self.input_channel,
            "inputMode": c.input_mode, "inputArgs": c.input_args, "outputChannel": self.output_channel,
            "outputMode": c.output_mode, "outputArgs": c.output_args, "objectIdField": c.oid_field,
            "skipInitialUpdates": c.skip_initial_updates, "objectIdOffset": c.effective_oid_offset(),
            "nSequentialUpdates": c.distributor_updates or 1, "fieldRequest": c.field_request,
        })
        return conf

    def _attach_processor(self, cid):
        p = self.processor
        p.processorId = cid
        p.inputChannel = self.input_channel
        p.outputChannel = self.output_channel
        p.objectIdField = self.config.oid_field
        if getattr(p, "metadataQueueMap", None) is None:
            p.metadataQueueMap = {}
        if not hasattr(p, "logger"):
            p.logger = logging.getLogger(f"pvaflow.processor.{type(p).__name__}")

    def start(self):
        """Serve our records, start the processor, then start receiving."""
        self.server = pva.PvaServer()
        policy = self.access_policy
        policy.apply(self.server)
        self.publisher = self._create_publisher(policy)
        self.processor.pvaServer = self.server
        self.processor.dataPublisher = self.publisher
        if self.status_channel:
            self._user_keys = list((self._call_user("getStatsPvaTypes") or {}).keys())
            types = status_record_type(self.id_field, self._call_user("getStatsPvaTypes"))
            types.update(self.extra_status_types())
            self.status_record = pva.PvObject(types, {self.id_field: self.config.consumer_id,
                                                      "channel": self.input_channel})
            policy.add_readonly(self.server, self.status_channel, self.status_record)
        if self.control_channel:
            self.control = ControlChannel(self.server, self.control_channel, self.id_field,
                                          self.config.consumer_id, self.commands, policy)
        names = [n for n in (self.status_channel, self.control_channel, self.output_channel) if n]
        if names:
            (log.info if policy.active else log.warning)(policy.describe(names))
        self.started_at = time.time()
        self.reporter.begin(self.started_at)
        if self._call_user("start", report=True) is _FAILED:
            self.last_error = "processor start() failed: " + self.last_error
        if self.queue is not None:
            self._worker = threading.Thread(target=self._work, name="pvaflow-worker", daemon=True)
            self._worker.start()
        self.state = "running"
        for extension in self.extensions:
            extension.start()
        self._start_input()

    def _call_user(self, method, *args, report=False):
        """Call a processor method outside the per-frame path, surviving errors."""
        try:
            with self._lock:
                return getattr(self.processor, method)(*args)
        except Exception as exc:
            self.n_hook_errors += 1
            self.last_error = f"{method}(): {type(exc).__name__}: {exc}"
            if self.n_hook_errors <= 10:
                log.error("processor %s() raised", method, exc_info=True)
            return _FAILED

    # per-frame path ----------------------------------------------------------
    def _receive(self, pv):
        try:
            if self._pending:
                self._catch_up(pv)
            q = self.queue
            if self._pushed and q is not None and q.refuse_if_full():
                return NOT_ACCEPTED
            acc = self.accounting
            uid = self._get_id(pv, self._oid_field)
            if self._check_empty and not pv.getSelectedUnionFieldName("value"):
                acc.count_empty(uid)
                return ACCEPTED
            if not acc.admit(uid):
                return ACCEPTED
            shared = self.shared
            if shared is not None:  # a supervised child: keep the parent's copy exact
                shared[ADMITTED] = acc.admitted
                shared[LAST_ID] = uid
                shared[MISSED] = acc.missed
            if q is None:
                self._process(pv)
            elif not q.put(pv, copy=True):
                if shared is not None:
                    shared[REJECTED] = q.n_rejected
                return NOT_ACCEPTED
            return ACCEPTED
        finally:  # pvaccess's Release must see "unlocked" (thread_state.py)
            _GUARD.value = _UNLOCKED

    def _catch_up(self, pv):
        """First update of the stream or of a delivering thread (outside the steady path)."""
        self._pending = False
        if self._first:
            self._first_update(pv)
        keep_thread_state_once()

    def _on_reconnect(self):
        """The input connected again: the server resends its value, on a new thread."""
        self.accounting.expect_initial_update()
        self._pending = True

    def _process(self, pv):
        shared = self.shared
        with self._lock:
            t0 = _clock()
            try:
                self._process_frame(pv)
                self.n_processed += 1
            except Exception as exc:
                self._count_error(exc)
                if shared is not None:
                    shared[ERRORS] = self.n_errors
            t1 = _clock()
            if shared is not None:
                shared[PROCESSED] = self.n_processed
        self.process_seconds += t1 - t0
        if self._has_timestamp:
            seconds = pv.getLong("timeStamp.secondsPastEpoch")
            if seconds:
                self.latency.record(_now() - seconds - pv.getInt("timeStamp.nanoseconds") * 1e-9)

    def _count_error(self, exc):
        self.n_errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.n_errors == 1:
            log.error("processor raised on a frame (later errors are summarised)", exc_info=True)

    def _work(self):
        """Worker thread: drain the receiver queue through the processor."""
        q = self.queue
        accumulate = self.config.accumulate_objects
        timeout = self.config.accumulation_timeout
        while True:
            if accumulate > 0 and self.state == "running":
                # A batch when K objects are queued or the oldest has waited T seconds.
                depth = len(q)
                if depth < accumulate and (depth == 0 or q.oldest_age() < timeout):
                    time.sleep(0.002)
                    continue
                for _ in range(depth):
                    self._process(q.get_nowait())
                continue
            pv = q.get(0.2)
            if pv is None:
                if self.state != "running" and not len(q):
                    return
                continue
            self._process(pv)

    # owner's loop ------------------------------------------------------------
    def request_stop(self, *_):
        """Ask the owner's loop to stop (safe from signal handlers)."""
        self._stop_requested = True
        self.commands.put(_STOP)

    def run(self):
        """Run until runtime, ``stop`` or a signal; return the exit code."""
        self.start()
        c = self.config
        reporting = c.report_period > 0
        period = min(c.status_period, c.report_period) if reporting else c.status_period
        deadline = self.started_at + c.runtime if c.runtime > 0 else math.inf
        next_tick = time.time() + period
        next_report = time.time() + c.report_period if reporting else math.inf
        while not self._stop_requested:
            now = time.time()
            if now >= deadline:
                break
            timeout = max(min(next_tick, deadline) - now, 0.0)
            try:
                request = self.commands.get(timeout=min(timeout, 0.5))
            except queue.Empty:
                request = None
            if request is not None and request is not _STOP:
                self._execute(request)
            now = time.time()
            if now >= next_tick:
                next_tick += period
                report = now >= next_report
                if report:
                    next_report += c.report_period
                self._tick(report=report)
        return self.shutdown()

    def shutdown(self):
        """Stop receiving, drain, stop the processor, publish the final status."""
        self.state = "stopping"
        if self.receiver is not None:
            self.receiver.stop()
        for extension in self.extensions:
            extension.stop()
        if self._worker is not None:
            self.queue.wake()
            self._worker.join()
        if self._call_user("stop") is _FAILED:
            self.last_error = "processor stop() failed: " + self.last_error
        self.state = "stopped"
        stats = self._tick(report=False, final=True)
        self.reporter.final(stats)
        time.sleep(0.1)  # let monitors of the status record see the final value
        if self.server is not None:
            self.server.stop()
        return self._exit_code

    def _tick(self, report, final=False):
        stats = self.reporter.collect(final)
        if self.status_record is not None:
            fill_status(self.status_record, stats, self._user_keys)
            self.server.update(self.status_channel, self.status_record)
        if self.n_errors > self._errors_reported + 1 or (self.n_errors > 1 and self._errors_reported == 0):
            log.error("%d processor errors so far; last: %s", self.n_errors, self.last_error)
        self._errors_reported = self.n_errors
        self.reporter.periodic(stats, print_it=report)
        if self.stats_listener is not None:
            self.stats_listener(stats, final)
        return stats

    def stats(self):
        """The nested statistics dict (also the status record's content)."""
        return self.reporter.collect()
