"""The consumer's per-frame Python path, timed in-process, step by step.

What one frame costs pvaflow's consumer in Python, without the transport:
``Consumer._receive`` called in a loop on a real NTNDArray ``PvObject``
(128x128 uint8) whose ``uniqueId`` advances by one, with the benchmarks'
counting processor. The steps are timed cumulatively, so each line's
increment is what that step adds:

* the processor's ``process()`` alone (the floor any framework pays);
* + the id read and the loss accounting (``FrameAccounting.admit``);
* + the processing wrapper (lock, clocks, counters, error guard);
* + the latency sample (time stamp read, ring-buffer store);
* + the counters shared with a fleet's parent (a fleet child);
* a fleet child behind the distributor (ids 4 apart, the step learned from
  the stream: ``LearnedIdSchedule``), the whole path.

Run: ``python benchmarks/bench_frame_path.py`` (or ``make bench``). Prints
microseconds per frame, the median of 5 rounds of 100,000 frames each.
"""

import os
import statistics
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from pvaflow.hpc.consumer import Consumer  # noqa: E402
from pvaflow.hpc.consumer_config import ConsumerConfig  # noqa: E402
from pvaflow.hpc import shared_counters  # noqa: E402
from pvaflow.sim.frames import build_frame  # noqa: E402

N_FRAMES = 100_000
ROUNDS = 5


def _frame():
    pv = build_frame(np.zeros((128, 128), np.uint8), 0)
    now = time.time()
    pv["timeStamp"] = {"secondsPastEpoch": int(now), "nanoseconds": 1000}
    return pv


def _consumer(tmp, shared=False, distributor=False):
    config = ConsumerConfig(f"pvaflowbench:path{os.getpid()}:never",
                            processor_file=os.path.join(HERE, "counting_processor.py"),
                            processor_class="CountingProcessor",
                            processor_args={"out_dir": tmp, "stride": 4 if distributor else 1},
                            skip_initial_updates=0,
                            distributor_updates=1 if distributor else None)
    consumer = Consumer(config)
    consumer.publisher = None  # pass-through: no output record (start() is not called)
    if shared:
        consumer.shared = shared_counters.as_array(shared_counters.new_shared_counters())
    return consumer


def _rate(step, pv, first_id, stride=1):
    """Microseconds per call of step(pv) with ids advancing by ``stride``; the median of
    ROUNDS rounds."""
    results = []
    uid = first_id
    set_id = pv.setInt
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(N_FRAMES):
            uid += stride
            set_id("uniqueId", uid)
            step(pv)
        results.append((time.perf_counter() - start) / N_FRAMES * 1e6)
    return statistics.median(results), uid


def measure(tmp):
    """{step: cumulative us/frame}; the id update alone is subtracted from each."""
    pv = _frame()
    base, uid = _rate(lambda pv: None, pv, 0)
    rows = []
    consumer = _consumer(tmp)
    consumer._first_update(pv)  # pylint: disable=protected-access
    processor = consumer.processor.process
    t, uid = _rate(processor, pv, uid)
    rows.append(("processor.process() alone", t - base))
    acc = consumer.accounting
    get_id = consumer._get_id  # pylint: disable=protected-access

    def with_accounting(pv):
        if acc.admit(get_id(pv, "uniqueId")):
            processor(pv)
    t, uid = _rate(with_accounting, pv, uid)
    rows.append(("+ id read, loss accounting", t - base))
    consumer._has_timestamp = False  # pylint: disable=protected-access
    t, uid = _rate(consumer._receive, pv, uid)  # pylint: disable=protected-access
    rows.append(("+ processing wrapper (_receive)", t - base))
    consumer._has_timestamp = True  # pylint: disable=protected-access
    t, uid = _rate(consumer._receive, pv, uid)  # pylint: disable=protected-access
    rows.append(("+ latency sample (one consumer)", t - base))
    child = _consumer(tmp, shared=True)
    child._first_update(pv)  # pylint: disable=protected-access
    t, uid = _rate(child._receive, pv, uid)  # pylint: disable=protected-access
    rows.append(("+ shared counters (fleet child)", t - base))
    member = _consumer(tmp, shared=True, distributor=True)
    member._first_update(pv)  # pylint: disable=protected-access
    t, uid = _rate(member._receive, pv, uid, stride=4)  # pylint: disable=protected-access
    rows.append(("fleet child behind the distributor", t - base))
    return rows


def report(rows):
    lines = [f"per-frame Python path, in-process, 128x128 uint8, median of {ROUNDS} x {N_FRAMES:,}"
             " frames (us/frame, cumulative)"]
    for label, value in rows:
        lines.append(f"  {label:<36} {value:6.2f}")
    return "\n".join(lines)


@pytest.mark.bench
def test_frame_path(tmp_path):
    rows = measure(str(tmp_path))
    print("\n" + report(rows))
    assert all(value > 0 for _, value in rows)


if __name__ == "__main__":
    import tempfile
    print(report(measure(tempfile.mkdtemp())))
