"""Putting objects from several producers back in object-id order.

:class:`OrderedRelease` holds objects that arrive early and releases each id
as soon as every earlier id has been released: nothing waits for a full
cache. An id that does not come is given up after ``timeout`` seconds (or
when the cache is full) and counted as missed. Objects that share an id
(tiles of one image) are kept together and released together once
``objects_per_id`` of them are there (or, incomplete, when they time out).

The first id is not known in advance: release starts once every one of
``n_sources`` producers has delivered an object (its lowest id is then the
first), or when the oldest held object has waited ``timeout``.

Not thread-safe: the owner serialises calls.
"""

import collections


class OrderedRelease:
    def __init__(self, cache_size=1000, timeout=1.0, objects_per_id=1, id_step=1, n_sources=1):
        if cache_size < 1 or timeout <= 0 or objects_per_id < 1 or id_step < 1:
            raise ValueError("cache_size, objects_per_id, id_step must be >= 1 and timeout > 0")
        self.cache_size = cache_size
        self.timeout = timeout
        self.objects_per_id = objects_per_id
        self.id_step = id_step
        self._groups = {}       # id -> list of objects
        self._since = {}        # id -> time its first object arrived
        self._held = 0          # objects in the cache
        self.next_id = None
        self.first_id = None
        self.n_sources = n_sources
        self._sources_seen = set()
        self._given_up = collections.deque(maxlen=4096)
        self.reset_stats()

    def reset_stats(self):
        self.received = 0
        self.released = 0
        self.released_ids = 0
        self.missed = 0
        self.late = 0
        self.duplicates = 0
        self.incomplete = 0
        self.peak = self._held

    @property
    def held(self):
        return self._held

    def add(self, uid, obj, now, out, source=0):
        """Take one object; append released ``(id, objects)`` pairs to ``out``."""
        self.received += 1
        if self.next_id is None:
            self._hold(uid, obj, now)
            self._sources_seen.add(source)
            if len(self._sources_seen) >= self.n_sources or self._held > self.cache_size:
                self._begin(out)
            return
        if uid < self.next_id:
            if uid in self._given_up:
                self.late += 1
            else:
                self.duplicates += 1
            return
        group = self._groups.get(uid)
        if group is None:
            self._groups[uid] = [obj]
            self._since[uid] = now
        elif len(group) >= self.objects_per_id:
            self.duplicates += 1
            return
        else:
            group.append(obj)
        self._held += 1
        if self._held > self.peak:
            self.peak = self._held
        self._release_ready(out)
        if self._held > self.cache_size:
            self._give_up_next(out)

    def _hold(self, uid, obj, now):
        group = self._groups.get(uid)
        if group is None:
            self._groups[uid] = [obj]
            self._since[uid] = now
        else:
            group.append(obj)
        self._held += 1
        if self._held > self.peak:
            self.peak = self._held

    def _begin(self, out):
        self.next_id = self.first_id = min(self._groups)
        self._release_ready(out)
        while self._held > self.cache_size:
            self._give_up_next(out)

    def expire(self, now, out):
        """Give up missing ids whose successors have waited longer than the timeout."""
        if self.next_id is None:
            if self._groups and now - min(self._since.values()) >= self.timeout:
                self._begin(out)
            else:
                return
        while self._groups:
            oldest = min(self._since.values())
            if now - oldest < self.timeout:
                return
            self._give_up_next(out)

    def flush(self, out):
        """Release everything held, giving up the gaps (used at stop)."""
        if self.next_id is None and self._groups:
            self.next_id = self.first_id = min(self._groups)
        while self._groups:
            self._give_up_next(out)

    def _release_ready(self, out):
        groups, need = self._groups, self.objects_per_id
        while True:
            group = groups.get(self.next_id)
            if group is None or len(group) < need:
                return
            self._pop(self.next_id, out)
            self.next_id += self.id_step

    def _give_up_next(self, out):
        """Skip to the lowest held id (counting the ids skipped) and release it."""
        if not self._groups:
            return
        first = min(self._groups)
        if first > self.next_id:
            skipped = (first - self.next_id) // self.id_step
            self.missed += skipped
            for missing in range(self.next_id, first, self.id_step):
                self._given_up.append(missing)
            self.next_id = first
        if len(self._groups[first]) < self.objects_per_id:
            self.incomplete += 1
        self._pop(first, out)
        self.next_id = first + self.id_step
        self._release_ready(out)

    def _pop(self, uid, out):
        group = self._groups.pop(uid)
        del self._since[uid]
        self._held -= len(group)
        self.released += len(group)
        self.released_ids += 1
        out.append((uid, group))
