"""Exact frame accounting from object ids, and latency recording.

:class:`FrameAccounting` decides, for every update that arrives, whether it is
a frame to process and what the id sequence says about frames that never
came: ``missed`` counts ids that were meant for this consumer but were never
received (gaps), never overrun events. A source restart (ids going back) is
counted as an id reset, not as loss; a repeated id is a duplicate and is not
processed twice.

Which ids are meant for a consumer is described by :class:`IdSchedule`: a
consumer alone on a channel gets every id; a consumer behind the distributor
gets ``updates`` consecutive ids out of every ``period`` ids.
"""

import collections
import threading

import numpy as np


class IdSchedule:
    """Which object ids belong to one consumer.

    The consumer receives blocks of ``updates`` consecutive ids, one block
    every ``period`` ids (``period >= updates``). ``period == updates == 1``
    means every id. The position of the blocks is learned from the ids seen.
    """

    def __init__(self, updates=1, period=1):
        if updates < 1 or period < updates:
            raise ValueError(f"invalid id schedule: updates={updates}, period={period}")
        self.updates = updates
        self.period = period
        self._phase = None  # id % period of the first id of a block
        # A jump that, in the steady state, misses nothing and teaches nothing (the
        # frame path then skips the schedule); 0 when there is none.
        self.steady_step = period if updates == 1 and period > 1 else 0

    @classmethod
    def from_offset(cls, offset, updates=1):
        """Build from pvapy's object id offset: the id step after a block."""
        offset = max(int(offset), 1)
        return cls(updates, offset + updates - 1)

    @property
    def every_id(self):
        return self.period == self.updates

    def learn(self, previous, current):
        """Learn the block phase: a jump of exactly the block step lands on a block start."""
        if self.updates == 1:
            return
        if current - previous == self.period - self.updates + 1:
            self._phase = current % self.period

    def _mine_up_to(self, x):
        """Number of ids <= x that belong to this consumer (relative count)."""
        base = x - self._phase
        full, rest = divmod(base, self.period)
        return full * self.updates + min(rest + 1, self.updates)

    def count_between(self, previous, current):
        """Ids meant for this consumer strictly between ``previous`` and ``current``."""
        gap = current - previous - 1
        if gap <= 0:
            return 0
        if self.period == self.updates:  # every id is ours
            return gap
        if self.updates == 1:
            return gap // self.period if self.period > 1 else gap
        if self._phase is None:
            # Block position unknown yet: count whole periods only.
            return (gap // self.period) * self.updates
        return max(self._mine_up_to(current - 1) - self._mine_up_to(previous), 0)

    def observe(self, previous, current, counted):
        """Called for every jump with the missed count it produced; returns a
        correction to subtract from ``missed`` (always 0 for a fixed schedule)."""
        self.learn(previous, current)
        return 0


class LearnedIdSchedule(IdSchedule):
    """An id schedule behind the distributor whose period is learned from the ids.

    Consumers started by different commands (or hosts) cannot know how many
    peers share the stream, so the id step after a block is taken from the
    stream itself: when the last ``confirm`` block-boundary jumps are all the
    same size, that size is the step. Until a step is known no loss is
    counted. When the step changes (a peer joined or left), the missed
    counts that the confirming jumps produced under the old step are
    corrected, so a membership change is not reported as loss.
    """

    def __init__(self, updates=1, confirm=8):
        super().__init__(updates, updates)
        self.known = False
        self._recent = collections.deque(maxlen=confirm)
        self._run_step = None  # the size of the latest jumps and how many in a row
        self._run_length = 0

    @property
    def every_id(self):
        return False  # peers share the stream, even while the step is unknown

    def count_between(self, previous, current):
        if not self.known:
            return 0
        return super().count_between(previous, current)

    def observe(self, previous, current, counted):
        recent = self._recent
        recent.append((previous, current, counted))
        self.learn(previous, current)
        step = current - previous
        if step == self._run_step:
            self._run_length += 1
        else:
            self._run_step, self._run_length = step, 1
            self.steady_step = 0
        if self._run_length < recent.maxlen:  # the last `confirm` jumps differ
            return 0
        period = step + self.updates - 1
        if self.updates == 1:
            # Confirmed: further jumps of this size skip the schedule until another
            # size comes (the last `confirm` jumps, all of this size, are in `recent`).
            self.steady_step = step
        if self.known and period == self.period:
            return 0
        before = sum(n for _, _, n in recent)
        self.period, self.known = period, True
        self._phase = current % period if self.updates > 1 else None
        after = sum(super(LearnedIdSchedule, self).count_between(p, c) for p, c, _ in recent)
        return before - after


class FrameAccounting:
    """Counts what arrived, what was skipped and what the id gaps say was lost.

    ``admit(uid)`` is called once per update, on the receiving thread; it
    returns True when the update is a frame to hand to the processor.
    """

    def __init__(self, schedule=None, skip_initial=1):
        self.schedule = schedule or IdSchedule()
        self.skip_initial = max(int(skip_initial), 0)
        self._to_skip = self.skip_initial
        self._resuming = False
        self.last_id = None
        self.first_id = None
        self.reset()

    def reset(self):
        """Zero the counters; keep the id position so later gaps stay exact."""
        self.received = 0
        self.admitted = 0
        self.skipped = 0
        self.empty = 0
        self.duplicates = 0
        self.missed = 0
        self.id_resets = 0
        self.reconnects = 0
        self.missed_while_down = 0
        self.first_id = self.last_id

    def resume_after(self, last_id):
        """Continue a predecessor's count (a restarted consumer): the gap between
        ``last_id`` and the first id admitted is loss while nobody was receiving."""
        self.last_id = last_id
        self._resuming = True

    def expect_initial_update(self):
        """A (re)connection: the next updates are the record's current value."""
        self._to_skip = self.skip_initial
        self.reconnects += 1

    def admit(self, uid):
        self.received += 1
        if self._to_skip:
            self._to_skip -= 1
            self.skipped += 1
            self._skip_position(uid)
            return False
        last = self.last_id
        self.last_id = uid
        if self.first_id is None:
            self.first_id = uid
        if last is None:
            pass
        elif uid > last + 1:
            schedule = self.schedule
            if uid - last != schedule.steady_step:  # the steady jump: nothing missed
                counted = schedule.count_between(last, uid)
                self.missed += counted - schedule.observe(last, uid, counted)
                if self._resuming:
                    self.missed_while_down += counted
        elif uid == last:
            self.duplicates += 1
            return False
        elif uid < last:
            self.id_resets += 1
        self._resuming = False
        self.admitted += 1
        return True

    def _skip_position(self, uid):
        """A skipped initial update still tells where the stream is, when every id
        is ours. After a reconnection its id may be new: that frame and the ids
        before it that never came were not processed, so they count as missed."""
        last = self.last_id
        if not self.schedule.every_id or last is None:
            return
        if uid > last:
            self.missed += uid - last
        elif uid < last:
            self.id_resets += 1
        self.last_id = uid

    def count_empty(self, uid):
        """An update without data: counted as empty; its id still marks the position.

        An empty record's value at connection time is the initial update: it uses up
        the skip, so the first real frame is not skipped in its place."""
        self.received += 1
        if self._to_skip:
            self._to_skip -= 1
            self.skipped += 1
            return
        self.empty += 1
        last = self.last_id
        if last is not None and uid > last:
            if uid > last + 1:
                self.missed += self.schedule.count_between(last, uid)
            self.last_id = uid

    def as_dict(self):
        return {
            "nReceived": self.received,
            "nSkipped": self.skipped,
            "nEmpty": self.empty,
            "nDuplicates": self.duplicates,
            "nMissed": self.missed,
            "nIdResets": self.id_resets,
            "nReconnects": self.reconnects,
            "nMissedWhileDown": self.missed_while_down,
            "firstId": self.first_id if self.first_id is not None else -1,
            "lastId": self.last_id if self.last_id is not None else -1,
        }


class LatencyRecorder:
    """Latencies (seconds) in a fixed ring buffer; percentiles on demand.

    Recording is one array store; nothing is allocated per frame.
    Percentiles cover the samples since the last :meth:`take_period` call
    (at most ``capacity`` of them); the maximum covers the whole run.
    """

    def __init__(self, capacity=1 << 16):
        self._buffer = np.zeros(capacity, dtype=np.float64)
        self._store = memoryview(self._buffer).cast("B").cast("d")  # cheaper stores
        self._mask = capacity - 1
        if capacity & self._mask:
            raise ValueError("capacity must be a power of two")
        self._count = 0
        self._period_start = 0
        self._run_start = 0
        self.maximum = 0.0
        self._last = (0.0, 0.0)
        self._lock = threading.Lock()

    def record(self, latency):
        self._store[self._count & self._mask] = latency
        self._count += 1
        if latency > self.maximum:
            self.maximum = latency

    def reset(self):
        self._period_start = self._run_start = self._count
        self.maximum = 0.0
        self._last = (0.0, 0.0)

    def recent(self):
        """Return (p50, p99) in seconds over the last ``capacity`` samples of the run."""
        with self._lock:
            end = self._count
            n = min(end - self._run_start, self._mask + 1)
        return self._percentiles(end, n)

    def take_period(self):
        """Return (p50, p99) in seconds over the samples since the last call."""
        with self._lock:
            end = self._count
            n = min(end - self._period_start, self._mask + 1)
            self._period_start = end
        return self._percentiles(end, n)

    def _percentiles(self, end, n):
        if n <= 0:
            return self._last
        start = end - n
        idx = np.arange(start, end) & self._mask
        samples = self._buffer[idx]
        p50, p99 = np.percentile(samples, (50, 99))
        self._last = (float(p50), float(p99))
        return self._last
