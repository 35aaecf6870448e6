"""Exact frame accounting from object ids (pvaflow.hpc.accounting).

What the accounting guarantees, as these tests pin it down:

* Every id (a consumer alone on a channel): ``missed`` is exactly the number
  of ids never received between the first admitted id and the last one.
* Behind the distributor with ``updates == 1``: the consumer's ids are
  ``period`` apart, so the same holds for the ids of its share.
* Behind the distributor with ``updates > 1``: the position of the blocks
  (phase) is unknown until the first clean jump between blocks (a jump of
  exactly ``period - updates + 1``) is seen; before that only whole periods
  are counted, so ids lost in the first blocks may go uncounted (``missed`` is
  a lower bound there). After the phase is known the count is exact, whatever
  is lost (whole blocks, block heads, tails or single ids).
* Ids lost before the first admitted id (including between a skipped initial
  update and the first admitted one) or after the last received id cannot be
  seen and are not counted.
"""

import random

import numpy as np
import pytest

from pvaflow.hpc.accounting import FrameAccounting, IdSchedule, LatencyRecorder


def feed(acc, ids):
    """Admit ``ids`` in order; return the list of admitted ids."""
    return [uid for uid in ids if acc.admit(uid)]


# ---------------------------------------------------------------------- IdSchedule


def test_schedule_every_id():
    s = IdSchedule()
    assert s.every_id and s.updates == 1 and s.period == 1
    assert s.count_between(5, 6) == 0
    assert s.count_between(5, 10) == 4
    assert s.count_between(0, 1001) == 1000
    assert s.count_between(5, 5) == 0
    assert s.count_between(10, 5) == 0


@pytest.mark.parametrize("updates,period", [(0, 1), (2, 1), (4, 3), (-1, 5)])
def test_schedule_rejects_invalid(updates, period):
    with pytest.raises(ValueError):
        IdSchedule(updates, period)


@pytest.mark.parametrize("offset,updates,period", [
    (1, 1, 1), (0, 1, 1), (-5, 1, 1), (3, 1, 3), (5, 1, 5),
    (9, 4, 12),   # 3 consumers, 4 updates each: (3-1)*4+1
    (4, 2, 5), (1, 4, 4),
])
def test_schedule_from_offset(offset, updates, period):
    s = IdSchedule.from_offset(offset, updates)
    assert (s.updates, s.period) == (updates, period)
    assert s.every_id == (period == updates)


def test_schedule_offset_with_single_updates():
    s = IdSchedule.from_offset(3)  # ids k, k+3, k+6, ...
    assert s.count_between(1, 4) == 0
    assert s.count_between(1, 7) == 1
    assert s.count_between(2, 32) == 9
    s.learn(1, 4)  # nothing to learn with updates == 1
    assert s.count_between(1, 10) == 2


def test_schedule_blocks_phase_zero():
    s = IdSchedule(4, 12)  # mine: 0-3, 12-15, 24-27, ...
    s.learn(3, 12)
    assert s.count_between(3, 12) == 0
    assert s.count_between(3, 24) == 4          # 12..15
    assert s.count_between(1, 3) == 1           # 2
    assert s.count_between(13, 26) == 4         # 14, 15, 24, 25
    assert s.count_between(15, 48) == 8         # 24..27, 36..39
    assert s.count_between(0, 15) == 6          # 1, 2, 3, 12, 13, 14


def test_schedule_blocks_phase_learned_from_jump():
    s = IdSchedule(4, 12)  # consumer 1 of 3: 4-7, 16-19, 28-31, ...
    s.learn(7, 16)
    assert s.count_between(5, 18) == 4          # 6, 7, 16, 17
    assert s.count_between(7, 28) == 4          # 16..19
    assert s.count_between(19, 52) == 8         # 28..31, 40..43
    s.learn(16, 17)  # consecutive ids teach nothing
    assert s.count_between(7, 28) == 4


def test_schedule_blocks_unknown_phase_counts_whole_periods():
    s = IdSchedule(4, 12)
    assert s.count_between(7, 16) == 0
    assert s.count_between(7, 28) == 4   # one whole period between them
    assert s.count_between(7, 40) == 8
    assert s.count_between(5, 16) == 0   # 6, 7 lost: not countable before the phase is known


def test_schedule_period_equal_to_updates_is_every_id():
    s = IdSchedule.from_offset(1, 4)
    assert s.count_between(0, 3) == 2
    # and over a stream: every gap is loss, whatever the block position
    acc = FrameAccounting(IdSchedule.from_offset(1, 4), skip_initial=0)
    ids = [i for i in range(1000) if i % 7 not in (3, 4)]
    feed(acc, ids)
    assert ids[0] == 0 and ids[-1] == 999
    assert acc.missed == 1000 - len(ids)


# -------------------------------------------------------------- FrameAccounting


def test_consecutive_ids():
    acc = FrameAccounting(skip_initial=0)
    assert feed(acc, range(100, 200)) == list(range(100, 200))
    assert (acc.received, acc.admitted, acc.missed, acc.skipped) == (100, 100, 0, 0)
    assert (acc.first_id, acc.last_id) == (100, 199)
    assert acc.duplicates == acc.id_resets == acc.reconnects == acc.empty == 0


def test_gaps_counted_exactly():
    acc = FrameAccounting(skip_initial=0)
    ids = [0, 1, 2, 5, 6, 100, 101, 103, 1000]
    assert feed(acc, ids) == ids
    # lost: 3,4 (2) + 7..99 (93) + 102 (1) + 104..999 (896)
    assert acc.missed == 2 + 93 + 1 + 896
    assert acc.received + acc.missed == 1001


def test_skip_initial_updates():
    acc = FrameAccounting(skip_initial=2)
    admitted = feed(acc, [50, 50, 51, 52, 53])
    assert admitted == [51, 52, 53]
    assert acc.skipped == 2 and acc.received == 5 and acc.admitted == 3
    assert acc.first_id == 51 and acc.missed == 0 and acc.duplicates == 0


def test_skip_zero_admits_first():
    acc = FrameAccounting(skip_initial=0)
    assert acc.admit(7) and acc.first_id == 7 and acc.skipped == 0


def test_negative_skip_is_zero():
    acc = FrameAccounting(skip_initial=-3)
    assert acc.skip_initial == 0
    assert acc.admit(1)


def test_reconnect_skips_again_and_counts():
    acc = FrameAccounting(skip_initial=1)
    assert feed(acc, [9, 10, 11, 12]) == [10, 11, 12]
    acc.expect_initial_update()
    assert acc.reconnects == 1
    # nothing published while disconnected: the current value (12) comes first
    assert feed(acc, [12, 13, 14]) == [13, 14]
    assert acc.skipped == 2 and acc.duplicates == 0 and acc.missed == 0
    acc.expect_initial_update()
    acc.expect_initial_update()  # a second reconnection before any update
    assert acc.reconnects == 3
    assert feed(acc, [14, 15]) == [15]
    assert acc.skipped == 3
    assert acc.as_dict()["nReconnects"] == 3


def test_reconnect_initial_update_is_accounted_once():
    """After a reconnection the current value (20) is skipped, not processed: it counts
    as missed together with 11..19, so processed + missed covers every id exactly once."""
    acc = FrameAccounting(skip_initial=1)
    feed(acc, range(0, 11))  # 0 is skipped at the first connection (published before it)
    acc.expect_initial_update()
    feed(acc, range(20, 31))  # 11..19 published while disconnected; 20 is the current value
    assert acc.missed == 10
    assert acc.admitted + acc.missed == 30  # ids 1..30


def test_duplicates_not_admitted():
    acc = FrameAccounting(skip_initial=0)
    assert feed(acc, [1, 2, 2, 2, 3, 3, 4]) == [1, 2, 3, 4]
    assert acc.duplicates == 3 and acc.admitted == 4 and acc.received == 7
    assert acc.missed == 0 and acc.id_resets == 0


def test_id_reset_is_not_loss():
    acc = FrameAccounting(skip_initial=0)
    feed(acc, range(1, 101))
    assert feed(acc, [1, 2, 3]) == [1, 2, 3]  # source restarted
    assert acc.id_resets == 1 and acc.missed == 0 and acc.duplicates == 0
    assert acc.admitted == 103 and acc.last_id == 3
    feed(acc, [4, 7])  # gaps after the reset are counted again
    assert acc.missed == 2
    assert acc.admit(5) and acc.id_resets == 2  # an older id also counts as a reset


def test_reset_keeps_the_id_position():
    acc = FrameAccounting(skip_initial=1)
    feed(acc, range(0, 20))
    feed(acc, [25])
    assert acc.missed == 5
    acc.reset()
    for name in ("received", "admitted", "skipped", "empty", "duplicates", "missed",
                 "id_resets", "reconnects"):
        assert getattr(acc, name) == 0, name
    assert acc.last_id == 25 and acc.first_id == 25
    # no initial update is skipped again: reset is not a reconnection
    assert feed(acc, [26, 30, 31]) == [26, 30, 31]
    assert acc.missed == 3 and acc.received == 3
    d = acc.as_dict()
    assert d["nMissed"] == 3 and d["lastId"] == 31 and d["nSkipped"] == 0


def test_count_empty_and_as_dict():
    acc = FrameAccounting(skip_initial=0)
    d = acc.as_dict()
    expected = {"nReceived": 0, "nSkipped": 0, "nEmpty": 0, "nDuplicates": 0, "nMissed": 0,
                "nIdResets": 0, "nReconnects": 0, "firstId": -1, "lastId": -1}
    assert {k: d[k] for k in expected} == expected  # further counters may be added
    assert all(v == 0 for k, v in d.items() if k not in expected)
    acc.count_empty(2)  # before any frame: nothing to measure a gap from
    feed(acc, [3, 4, 4, 9])
    d = acc.as_dict()
    assert d["nReceived"] == 5 and d["nEmpty"] == 1 and d["nDuplicates"] == 1
    assert d["nMissed"] == 4 and d["firstId"] == 3 and d["lastId"] == 9
    acc.count_empty(11)  # an empty record's id is not a gap, the ids before it are
    feed(acc, [12])
    d = acc.as_dict()
    assert d["nEmpty"] == 2 and d["nMissed"] == 5 and d["lastId"] == 12


@pytest.mark.parametrize("seed,drop_rate", [(1, 0.0), (2, 0.01), (3, 0.3), (4, 0.9), (5, 0.999)])
def test_random_drops_every_id(seed, drop_rate):
    """received + missed == published, for any drop pattern (first/last id delivered)."""
    rng = random.Random(seed)
    n = 10_000
    ids = [i for i in range(n) if i in (0, n - 1) or rng.random() >= drop_rate]
    acc = FrameAccounting(skip_initial=0)
    assert feed(acc, ids) == ids
    assert acc.received + acc.missed == n
    assert acc.missed == n - len(ids)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_drops_with_skip_and_duplicates(seed):
    rng = np.random.default_rng(seed)
    n = 10_000
    kept = np.flatnonzero(rng.random(n) > 0.2)
    kept = np.union1d(kept, [0, 1, n - 1])
    stream = []
    for uid in kept.tolist():
        stream.append(uid)
        if rng.random() < 0.05:
            stream.append(uid)  # redelivered
    acc = FrameAccounting(skip_initial=1)
    admitted = feed(acc, stream)
    assert admitted == kept.tolist()[1:]  # id 0 is the skipped initial update
    assert acc.missed == n - len(kept)
    assert acc.duplicates == len(stream) - len(kept)
    assert acc.received - acc.duplicates + acc.missed == n


# ----------------------------------------------------- distributor simulation


def share(consumer, n_consumers, updates, n_ids):
    """Ids the distributor hands to ``consumer``: blocks of ``updates``, round robin."""
    return [i for i in range(n_ids) if (i // updates) % n_consumers == consumer]


def distributor_accounting(n_consumers, updates):
    offset = (n_consumers - 1) * updates + 1  # what ConsumerConfig.effective_oid_offset gives
    return FrameAccounting(IdSchedule.from_offset(offset, updates), skip_initial=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("consumer", [0, 1, 2])
def test_distributor_updates_1_exact(consumer, seed):
    rng = random.Random(seed)
    mine = share(consumer, 3, 1, 6000)
    middle = mine[1:-1]
    dropped = set(rng.sample(middle, 300))
    received = [uid for uid in mine if uid not in dropped]
    acc = distributor_accounting(3, 1)
    assert feed(acc, received) == received
    assert acc.missed == len(dropped)
    assert acc.received + acc.missed == len(mine)
    # the other consumers, losing nothing, count nothing
    for other in {0, 1, 2} - {consumer}:
        acc = distributor_accounting(3, 1)
        feed(acc, share(other, 3, 1, 6000))
        assert acc.missed == 0


@pytest.mark.parametrize("consumer", [0, 1, 2])
def test_distributor_updates_4_no_loss(consumer):
    acc = distributor_accounting(3, 4)
    mine = share(consumer, 3, 4, 12_000)
    assert feed(acc, mine) == mine
    assert acc.missed == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("consumer", [0, 1, 2])
def test_distributor_updates_4_whole_blocks_and_tails(consumer, seed):
    """Losing whole blocks, or the end of a block, after the phase is known: exact."""
    rng = random.Random(seed)
    mine = share(consumer, 3, 4, 12_000)
    blocks = [mine[i:i + 4] for i in range(0, len(mine), 4)]
    dropped = set()
    for block in blocks[2:-1]:  # the first jump (block 0 -> 1) teaches the phase
        r = rng.random()
        if r < 0.1:
            dropped.update(block)
        elif r < 0.2:
            dropped.update(block[rng.randint(1, 3):])
    received = [uid for uid in mine if uid not in dropped]
    acc = distributor_accounting(3, 4)
    feed(acc, received)
    assert acc.missed == len(dropped)
    assert acc.received + acc.missed == len(mine)


def test_distributor_updates_4_loss_before_phase_is_known_is_a_lower_bound():
    mine = share(1, 3, 4, 1200)  # 4-7, 16-19, ...
    received = [4, 5] + mine[8:]  # 6, 7 and the block 16-19 lost before any jump was seen
    assert received[2] == 28
    acc = distributor_accounting(3, 4)
    feed(acc, received)
    assert acc.missed <= 6
    assert acc.missed == 4  # the whole period 16-19 is counted, 6 and 7 cannot be


def test_distributor_updates_4_loss_inside_block_minimal():
    """Losing an id inside a block must not move the learned phase (only 13 is lost).

    Regression: at commit 2fe5edc IdSchedule.learn re-learned the phase from any jump,
    so 12 -> 14 set the phase to 2 and 15 -> 24 counted 2 phantom losses (missed 3).
    """
    acc = FrameAccounting(IdSchedule(4, 12), skip_initial=0)
    feed(acc, [0, 1, 2, 3, 12, 14, 15, 24])
    assert acc.missed == 1


def test_distributor_updates_4_loss_of_block_head_minimal():
    """Losing the first id of a block (24) must not move the phase (regression, as above)."""
    acc = FrameAccounting(IdSchedule(4, 12), skip_initial=0)
    feed(acc, [0, 1, 2, 3, 12, 13, 14, 15, 25, 26, 27, 36])
    assert acc.missed == 1


@pytest.mark.parametrize("consumer", [0, 1, 2])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_distributor_updates_4_random_drops_exact(seed, consumer):
    """Any loss after the first clean block boundary is counted exactly."""
    rng = random.Random(seed)
    mine = share(consumer, 3, 4, 12_000)
    candidates = mine[8:-1]  # after the first block boundary has been seen
    dropped = set(rng.sample(candidates, 200))
    received = [uid for uid in mine if uid not in dropped]
    acc = distributor_accounting(3, 4)
    feed(acc, received)
    assert acc.missed == len(dropped)


# --------------------------------------------------------------- LatencyRecorder


def test_latency_percentiles_match_numpy():
    rng = np.random.default_rng(7)
    data = rng.exponential(0.01, 5000)
    rec = LatencyRecorder(capacity=8192)
    for x in data:
        rec.record(x)
    p50, p99 = rec.take_period()
    exp50, exp99 = np.percentile(data, (50, 99))
    assert p50 == pytest.approx(exp50, rel=1e-12)
    assert p99 == pytest.approx(exp99, rel=1e-12)
    assert rec.maximum == data.max()


def test_latency_known_values():
    rec = LatencyRecorder(capacity=128)
    for x in range(1, 101):  # 1..100
        rec.record(float(x))
    p50, p99 = rec.take_period()
    assert p50 == 50.5
    assert p99 == pytest.approx(99.01)
    assert rec.maximum == 100.0


def test_latency_periods():
    rec = LatencyRecorder(capacity=64)
    assert rec.take_period() == (0.0, 0.0)
    for x in (1.0, 2.0, 3.0):
        rec.record(x)
    first = rec.take_period()
    assert first == (2.0, pytest.approx(np.percentile([1, 2, 3], 99)))
    assert rec.take_period() == first  # nothing new: the last values again
    for x in (10.0, 20.0):
        rec.record(x)
    p50, _ = rec.take_period()
    assert p50 == 15.0  # only the samples since the last call
    assert rec.maximum == 20.0


def test_latency_ring_wrap_around():
    rec = LatencyRecorder(capacity=16)
    data = np.arange(1, 51, dtype=float)  # 50 samples, buffer keeps the last 16
    for x in data:
        rec.record(x)
    p50, p99 = rec.take_period()
    exp50, exp99 = np.percentile(data[-16:], (50, 99))
    assert (p50, p99) == (pytest.approx(exp50), pytest.approx(exp99))
    assert rec.maximum == 50.0
    # a second period that itself wraps, starting mid-buffer
    more = np.linspace(100, 200, 21)
    for x in more:
        rec.record(x)
    p50, p99 = rec.take_period()
    exp50, exp99 = np.percentile(more[-16:], (50, 99))
    assert (p50, p99) == (pytest.approx(exp50), pytest.approx(exp99))
    # a period shorter than the buffer, after wrapping
    for x in (5.0, 6.0, 7.0):
        rec.record(x)
    assert rec.take_period()[0] == 6.0


def test_latency_reset():
    rec = LatencyRecorder(capacity=32)
    for x in (1.0, 9.0, 3.0):
        rec.record(x)
    rec.take_period()
    rec.record(50.0)
    rec.reset()
    assert rec.maximum == 0.0
    assert rec.take_period() == (0.0, 0.0)  # the sample before reset is not reported
    rec.record(2.0)
    rec.record(4.0)
    assert rec.take_period()[0] == 3.0
    assert rec.maximum == 4.0


@pytest.mark.parametrize("capacity", [3, 100, 1000])
def test_latency_capacity_power_of_two(capacity):
    with pytest.raises(ValueError):
        LatencyRecorder(capacity=capacity)


class _NoFastPath:
    """Mixin: a schedule whose frame-path shortcut (``steady_step``) never applies."""

    @property
    def steady_step(self):
        return 0

    @steady_step.setter
    def steady_step(self, value):
        pass


def _membership_stream(rng, n_frames):
    """The ids one consumer behind the distributor receives while peers join and
    leave (the step changes), with random losses and a few id resets."""
    ids, uid, step = [], 1, rng.choice([2, 3, 4])
    for _ in range(n_frames):
        roll = rng.random()
        if roll < 0.01:
            step = rng.choice([1, 2, 3, 4, 6])  # a peer joined or left
        if roll > 0.995:
            uid = rng.randrange(1, 50)  # the source restarted
        uid += step * (rng.choice([2, 3]) if rng.random() < 0.03 else 1)  # sometimes lost
        ids.append(uid)
    return ids


@pytest.mark.parametrize("seed", range(20))
def test_steady_step_shortcut_counts_exactly_what_the_full_schedule_counts(seed):
    from pvaflow.hpc.accounting import LearnedIdSchedule

    class FullLearned(_NoFastPath, LearnedIdSchedule):
        pass

    class FullFixed(_NoFastPath, IdSchedule):
        pass

    rng = random.Random(seed)
    ids = _membership_stream(rng, 3000)
    for fast, full in ((LearnedIdSchedule(), FullLearned()),
                       (IdSchedule(1, 4), FullFixed(1, 4)),
                       (LearnedIdSchedule(2), FullLearned(2))):
        a, b = FrameAccounting(fast, skip_initial=0), FrameAccounting(full, skip_initial=0)
        assert feed(a, ids) == feed(b, ids)
        assert a.as_dict() == b.as_dict()
    # the shortcut is taken in the steady state (else this test would prove nothing)
    steady = LearnedIdSchedule()
    feed(FrameAccounting(steady, skip_initial=0), list(range(1, 200, 4)))
    assert steady.steady_step == 4
