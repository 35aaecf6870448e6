"""Unit tests of the collector's id ordering (no network)."""

import random

import pytest

from pvaflow.hpc.ordering import OrderedRelease


def run(order, **kw):
    o = OrderedRelease(**kw)
    out = []
    for t, uid in order:
        o.add(uid, f"obj{uid}", t, out)
    return o, out


def ids(out):
    return [uid for uid, _ in out]


def test_in_order_input_is_released_immediately():
    o, out = run([(0, i) for i in range(1, 11)])
    assert ids(out) == list(range(1, 11)) and o.held == 0 and o.missed == 0


def test_early_objects_wait_only_for_the_missing_predecessor():
    o = OrderedRelease(timeout=5)
    out = []
    o.add(1, "a", 0.0, out)
    o.add(3, "c", 0.0, out)
    o.add(4, "d", 0.0, out)
    assert ids(out) == [1] and o.held == 2
    o.add(2, "b", 0.1, out)
    assert ids(out) == [1, 2, 3, 4] and o.held == 0


def test_missing_id_is_given_up_after_timeout_and_counted():
    o = OrderedRelease(timeout=0.5)
    out = []
    for uid in (1, 2, 4, 5):
        o.add(uid, uid, 0.0, out)
    o.expire(0.4, out)
    assert ids(out) == [1, 2]
    o.expire(0.6, out)
    assert ids(out) == [1, 2, 4, 5] and o.missed == 1
    o.add(3, 3, 0.7, out)  # arrives after it was given up
    assert o.late == 1 and ids(out) == [1, 2, 4, 5]


def test_full_cache_gives_up_the_gap():
    o = OrderedRelease(cache_size=3, timeout=100)
    out = []
    for uid in (1, 3, 4, 5, 6):
        o.add(uid, uid, 0.0, out)
    assert ids(out) == [1, 3, 4, 5, 6] and o.missed == 1 and o.peak == 4


def test_duplicates_are_counted_not_released():
    o, out = run([(0, 1), (0, 2), (0, 2), (0, 1), (0, 3)])
    assert ids(out) == [1, 2, 3] and o.duplicates == 2


def test_tiles_are_released_together():
    o = OrderedRelease(objects_per_id=4, timeout=1)
    out = []
    for tile in range(4):
        for uid in (1, 2):
            o.add(uid, (uid, tile), 0.0, out)
    assert [(u, len(g)) for u, g in out] == [(1, 4), (2, 4)]
    o.add(3, "x", 0.0, out)
    o.expire(2.0, out)
    assert o.incomplete == 1 and out[-1] == (3, ["x"])


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_producers_give_strictly_increasing_complete_output(seed):
    rng = random.Random(seed)
    producers = [list(range(p, 2001, 4)) for p in range(1, 5)]  # distributor, 4 producers
    o, out, t = OrderedRelease(cache_size=500, timeout=10, n_sources=4), [], 0.0
    while any(producers):
        source = rng.choice([i for i, q in enumerate(producers) if q])
        o.add(producers[source].pop(0), None, t, out, source)
        t += 0.001
    assert ids(out) == list(range(1, 2001)) and o.missed == 0 and o.held == 0


def test_flush_releases_everything():
    o = OrderedRelease(timeout=100)
    out = []
    for uid in (1, 5, 7):
        o.add(uid, uid, 0, out)
    o.flush(out)
    assert ids(out) == [1, 5, 7] and o.missed == 4 and o.held == 0


def test_release_starts_after_timeout_when_a_source_is_silent():
    o = OrderedRelease(timeout=0.5, n_sources=2)
    out = []
    o.add(3, "c", 0.0, out, source=0)
    o.add(4, "d", 0.1, out, source=0)
    o.expire(0.3, out)
    assert out == []
    o.expire(0.6, out)
    assert ids(out) == [3, 4]
