"""A bounded hand-off queue between the receiving and the processing thread.

Putting never blocks: a full queue rejects the object and counts it.
Appending and popping are deque operations; the consumer is woken through a
condition only when it is actually asleep, so a busy stream costs no locking.
"""

import collections
import threading
import time


class FrameQueue:
    def __init__(self, max_length=0, track_age=False):
        self.max_length = max(int(max_length), 0)  # 0: unbounded
        self._items = collections.deque()
        # Arrival times, kept only when asked (for the accumulation timeout).
        self._arrivals = collections.deque() if track_age else None
        self._wakeup = threading.Condition(threading.Lock())
        self._sleeping = False
        self.n_queued = 0
        self.n_rejected = 0
        self.peak = 0

    def __len__(self):
        return len(self._items)

    def refuse_if_full(self):
        """For pushed input: True (and counted) when full, before anything else is done,
        so that the sender's retry of the same object is not taken for a duplicate."""
        if self.max_length and len(self._items) >= self.max_length:
            self.n_rejected += 1
            return True
        return False

    def put(self, item, copy=False):
        """Queue ``item`` (or ``item.copy()``); return False, and count it, when full.

        pvaccess reuses the storage of a monitor's update for later updates, so an
        update that outlives its callback must be queued as a copy; the copy is
        made only when the queue accepts it.
        """
        items = self._items
        depth = len(items)
        if self.max_length and depth >= self.max_length:
            self.n_rejected += 1
            return False
        items.append(item.copy() if copy else item)
        if self._arrivals is not None:
            self._arrivals.append(time.monotonic())
        self.n_queued += 1
        if depth >= self.peak:
            self.peak = depth + 1
        if self._sleeping:
            with self._wakeup:
                self._wakeup.notify()
        return True

    def get(self, timeout):
        """Oldest item, or None when nothing arrives within ``timeout`` seconds."""
        item = self.get_nowait()
        if item is not None:
            return item
        with self._wakeup:
            self._sleeping = True
            try:
                if not self._items:
                    self._wakeup.wait(timeout)
            finally:
                self._sleeping = False
        return self.get_nowait()

    def get_nowait(self):
        try:
            item = self._items.popleft()
        except IndexError:
            return None
        if self._arrivals:
            self._arrivals.popleft()
        return item

    def oldest_age(self):
        """Seconds the oldest queued item has waited (needs ``track_age``); 0 when empty."""
        arrivals = self._arrivals
        return time.monotonic() - arrivals[0] if arrivals else 0.0

    def wake(self):
        with self._wakeup:
            self._wakeup.notify_all()

    def reset_stats(self):
        self.n_queued = 0
        self.n_rejected = 0
        self.peak = len(self._items)

    def stats(self):
        return {"maxLength": self.max_length, "nQueued": self.n_queued, "peak": self.peak,
                "nRejected": self.n_rejected}
