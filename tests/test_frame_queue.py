"""The receiver -> worker hand-off queue (pvaflow.hpc.frame_queue)."""

import threading
import time

import pytest

from pvaflow.hpc.frame_queue import FrameQueue


def test_bounded_put_rejects_and_counts_when_full():
    q = FrameQueue(3)
    assert [q.put(i) for i in range(3)] == [True, True, True]
    assert q.put(3) is False
    assert q.put(4) is False
    assert len(q) == 3
    assert q.stats() == {"maxLength": 3, "nQueued": 3, "peak": 3, "nRejected": 2}
    assert q.get_nowait() == 0  # the rejected items were never queued
    assert q.put(5) is True
    assert [q.get_nowait() for _ in range(3)] == [1, 2, 5]
    assert q.get_nowait() is None
    assert q.n_rejected == 2 and q.n_queued == 4


def test_max_length_one():
    q = FrameQueue(1)
    assert q.put("a") and not q.put("b")
    assert q.get(0.01) == "a"
    assert q.put("c") and q.get(0.01) == "c"
    assert q.n_rejected == 1


@pytest.mark.parametrize("max_length", [0, -1])
def test_unbounded_never_rejects(max_length):
    q = FrameQueue(max_length)
    assert q.max_length == 0
    n = 50_000
    assert all(q.put(i) for i in range(n))
    assert len(q) == n and q.n_rejected == 0 and q.n_queued == n and q.peak == n
    assert q.stats()["maxLength"] == 0


def test_peak_tracks_the_deepest_point():
    q = FrameQueue(10)
    for i in range(4):
        q.put(i)
    for _ in range(3):
        q.get_nowait()
    q.put(4)
    assert len(q) == 2 and q.peak == 4
    for i in range(5):
        q.put(i)
    assert len(q) == 7 and q.peak == 7
    q.reset_stats()
    assert q.peak == 7 and q.n_queued == 0 and q.n_rejected == 0  # peak restarts at the depth
    while q.get_nowait() is not None:
        pass
    q.reset_stats()
    assert q.peak == 0
    q.put("x")
    assert q.peak == 1


def test_fifo_order_and_identity():
    q = FrameQueue(0)
    items = [object() for _ in range(1000)]
    for item in items:
        q.put(item)
    out = [q.get(0.0) for _ in range(1000)]
    assert all(a is b for a, b in zip(out, items))
    assert q.get(0.0) is None


def test_none_like_items_pass_through():
    q = FrameQueue(0)
    for item in (0, "", [], False):
        q.put(item)
    assert [q.get(0.01) for _ in range(4)] == [0, "", [], False]


def test_get_times_out_with_a_bounded_wait():
    q = FrameQueue(5)
    for timeout in (0.0, 0.05, 0.2):
        start = time.monotonic()
        assert q.get(timeout) is None
        elapsed = time.monotonic() - start
        assert elapsed >= timeout * 0.9
        assert elapsed < timeout + 0.15


def test_get_wakes_promptly_when_another_thread_puts():
    q = FrameQueue(5)
    latencies = []
    for _ in range(5):
        result = {}
        started = threading.Event()

        def consumer():
            started.set()
            result["item"] = q.get(1.0)  # a missed wake-up shows as ~1 s
            result["at"] = time.monotonic()

        t = threading.Thread(target=consumer)
        t.start()
        started.wait()
        time.sleep(0.05)  # let the consumer go to sleep in the condition
        put_at = time.monotonic()
        q.put("frame")
        t.join(2.0)
        assert not t.is_alive()
        assert result["item"] == "frame"
        latencies.append(result["at"] - put_at)
    assert max(latencies) < 0.05, latencies


def test_wake_interrupts_a_waiting_get():
    q = FrameQueue(0)
    result = {}

    def consumer():
        start = time.monotonic()
        result["item"] = q.get(5.0)
        result["elapsed"] = time.monotonic() - start

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.05)
    q.wake()
    t.join(2.0)
    assert not t.is_alive()
    assert result["item"] is None and result["elapsed"] < 1.0


def _run_pair(q, n, retry_when_full):
    received = []
    done = threading.Event()

    def producer():
        for i in range(n):
            while not q.put(i):
                if not retry_when_full:
                    break
                time.sleep(0)
        done.set()

    def consumer():
        while True:
            item = q.get(0.05)
            if item is None:
                if done.is_set() and len(q) == 0:
                    return
                continue
            received.append(item)

    threads = [threading.Thread(target=consumer), threading.Thread(target=producer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return received


def test_producer_consumer_unbounded_loses_nothing():
    n = 100_000
    q = FrameQueue(0)
    received = _run_pair(q, n, retry_when_full=False)
    assert received == list(range(n))
    assert q.n_queued == n and q.n_rejected == 0


def test_producer_consumer_bounded_with_retry_loses_nothing():
    n = 100_000
    q = FrameQueue(16)
    received = _run_pair(q, n, retry_when_full=True)
    assert received == list(range(n))
    assert q.n_queued == n
    assert q.peak <= 16


def test_producer_consumer_bounded_accounts_for_every_item():
    n = 100_000
    q = FrameQueue(8)
    received = _run_pair(q, n, retry_when_full=False)
    assert len(received) + q.n_rejected == n
    assert received == sorted(received)  # FIFO: what got through is in order
    assert q.n_queued == len(received)
