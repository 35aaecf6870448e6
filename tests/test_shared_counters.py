"""The counters a fleet child shares with its parent (pvaflow.hpc.shared_counters):
exact after every frame, after processor errors and after reset_stats, so the
parent's count for a killed child (processed + errors + rejected + lost in
flight = admitted) is right."""

import time

import numpy as np

from pvaflow.hpc import shared_counters
from pvaflow.hpc.consumer import Consumer
from pvaflow.hpc.consumer_config import ConsumerConfig
from pvaflow.sim.frames import build_frame

PROCESSOR = '''
class FailOnOdd:
    def __init__(self, configDict={}):
        self.configDict = configDict
    def process(self, pv):
        if pv.getInt("uniqueId") % 2:
            raise ValueError("odd id")
        return pv
'''


def _consumer(tmp_path, name):
    path = tmp_path / "fail_on_odd.py"
    path.write_text(PROCESSOR)
    consumer = Consumer(ConsumerConfig(f"pvaflowtest:{name}:never", processor_file=str(path),
                                       processor_class="FailOnOdd", skip_initial_updates=0))
    consumer.publisher = None  # start() is not called: no records, no monitor
    raw = shared_counters.new_shared_counters()
    consumer.shared = shared_counters.as_array(raw)
    return consumer, raw


def _feed(consumer, ids):
    pv = build_frame(np.zeros((8, 8), np.uint8), 0)
    pv["timeStamp"] = {"secondsPastEpoch": int(time.time()), "nanoseconds": 0}
    for uid in ids:
        pv.setInt("uniqueId", uid)
        consumer._receive(pv)  # pylint: disable=protected-access


def test_counters_follow_frames_errors_gaps_and_reset(tmp_path):
    consumer, raw = _consumer(tmp_path, "shared1")
    _feed(consumer, [1, 2, 3, 4, 7, 8])  # 5 and 6 never came
    assert shared_counters.snapshot(raw) == {"admitted": 6, "processed": 3, "errors": 3,
                                             "rejected": 0, "missed": 2, "lastId": 8}
    consumer.reset_stats()
    assert shared_counters.snapshot(raw) == {"admitted": 0, "processed": 0, "errors": 0,
                                             "rejected": 0, "missed": 0, "lastId": 8}
    _feed(consumer, [10, 12])  # 9 and 11 lost; 10 processed, 12 processed
    assert shared_counters.snapshot(raw) == {"admitted": 2, "processed": 2, "errors": 0,
                                             "rejected": 0, "missed": 2, "lastId": 12}
