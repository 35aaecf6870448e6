"""A pass-through processor that counts frames and ids, for the benchmarks.

Written in pvapy's processor style so that both frameworks load the same
file unchanged (``-pf benchmarks/counting_processor.py -pc CountingProcessor``)
without importing either framework's base class: a plain class with
``__init__(configDict)``, ``process(pvObject)``, ``stop()`` and the other
hooks and attributes the frameworks call or set.

Per frame it reads the object id (``objectIdField``, default ``uniqueId``)
and keeps: the number of frames, the first and last id, and every step
between consecutive ids that is not the expected ``stride`` (1 for one
consumer; N with the distributor, ``-du 1`` and N consumers). Ids <= 0 (the
simulator's initial record) are counted apart and otherwise ignored. When an
output channel is configured the frame is published unchanged (pvapy's
default pass-through behaviour); without one nothing is published.

With ``"latency": true`` it also records, per frame, ``time.time()`` minus
the frame's ``timeStamp`` (seconds) with its id.

``stop()`` writes one JSON file into ``out_dir`` named
``count-<processorId>-<pid>.json``::

    {"n": frames, "first": id, "last": id, "stride": N, "missing": ids missing
     between strided steps, "irregular": steps not a positive multiple of the
     stride, "backwards": steps <= 0, "zero_ids": ids <= 0 ignored,
     "gaps": [[last, id], ...] (first 200 abnormal steps),
     "latency_p50_ms", "latency_p99_ms", "latency": [[id, seconds], ...]}

Processor arguments (``-pa`` JSON): ``out_dir`` (required), ``stride``
(default 1), ``latency`` (default false).
"""

import json
import logging
import os
import time

_MAX_GAPS = 200


def _percentile(sorted_values, fraction):
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


class CountingProcessor:
    """Counts frames and ids; see the module docstring."""

    def __init__(self, configDict={}):  # pylint: disable=dangerous-default-value
        config = dict(configDict or {})
        self.configDict = config
        self.logger = logging.getLogger(f"bench.{type(self).__name__}")
        # Attributes both frameworks set after construction.
        self.processorId = config.get("processorId")
        self.dataPublisher = None
        self.pvaServer = None
        self.inputChannel = config.get("inputChannel")
        self.outputChannel = config.get("outputChannel")
        self.objectIdField = config.get("objectIdField") or "uniqueId"
        self.metadataQueueMap = {}
        # Our own state.
        self.out_dir = config.get("out_dir") or "."
        self.stride = int(config.get("stride", 1)) or 1
        self.record_latency = bool(config.get("latency", False))
        self.n = 0
        self.first = None
        self.last = None
        self.missing = 0
        self.irregular = 0
        self.backwards = 0
        self.zero_ids = 0
        self.gaps = []
        self.latency_ids = []
        self.latency_values = []
        self.start_time = None
        self.extra = {}  # anything the host wants written with the counts
        self._stopped = False

    # ------------------------------------------------------------------ hooks
    def start(self):
        self.start_time = time.time()

    def configure(self, configDict):
        pass

    def process(self, pvObject):
        uid = pvObject.getInt(self.objectIdField)
        if uid <= 0:
            self.zero_ids += 1
            return pvObject
        last = self.last
        if last is None:
            self.first = uid
        elif uid - last != self.stride:
            self._abnormal_step(last, uid)
        self.last = uid
        self.n += 1
        if self.record_latency:
            stamp = (pvObject.getLong("timeStamp.secondsPastEpoch")
                     + pvObject.getInt("timeStamp.nanoseconds") * 1e-9)
            self.latency_ids.append(uid)
            self.latency_values.append(time.time() - stamp)
        publisher = self.dataPublisher
        if publisher is not None:
            publisher.updateOutputChannel(pvObject)
        return pvObject

    def _abnormal_step(self, last, uid):
        step = uid - last
        if step <= 0:
            self.backwards += 1
        elif step % self.stride == 0:
            self.missing += step // self.stride - 1
        else:
            self.irregular += 1
        if len(self.gaps) < _MAX_GAPS:
            self.gaps.append([last, uid])

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        result = {
            "processorId": self.processorId, "pid": os.getpid(), "n": self.n,
            "first": self.first, "last": self.last, "stride": self.stride,
            "missing": self.missing, "irregular": self.irregular,
            "backwards": self.backwards, "zero_ids": self.zero_ids, "gaps": self.gaps,
            "start_time": self.start_time, "stop_time": time.time(), "extra": self.extra,
        }
        if self.record_latency:
            ordered = sorted(self.latency_values)
            p50, p99 = _percentile(ordered, 0.50), _percentile(ordered, 0.99)
            result["latency_p50_ms"] = None if p50 is None else 1e3 * p50
            result["latency_p99_ms"] = None if p99 is None else 1e3 * p99
            result["latency"] = [[i, round(v, 7)] for i, v in zip(self.latency_ids,
                                                                 self.latency_values)]
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, f"count-{self.processorId}-{os.getpid()}.json")
        temporary = path + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(result, handle)
        os.replace(temporary, path)

    # ----------------------------------------------- the rest of the contract
    def resetStats(self):
        """Called by pvapy at construction and by a reset command; counts are kept."""

    def getStats(self):
        return {"nCounted": self.n, "lastId": self.last or 0}

    def getStatsPvaTypes(self):
        return {}

    def getInputPvObjectType(self):
        return None

    def getOutputPvObjectType(self, pvObject):
        return pvObject

    def updateOutputChannel(self, pvObject):
        if self.dataPublisher is not None:
            self.dataPublisher.updateOutputChannel(pvObject)
