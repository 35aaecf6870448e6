"""Batching of frames into reused host buffers, handed to one inference thread.

``process()`` copies each frame's pixels (the received object is only valid
during the call) straight into a slot of the batch being filled, together
with its ``uniqueId`` and time stamps: no allocation per frame. A batch
is handed over when it holds ``batch_size`` rows or when its first frame
has waited ``max_latency`` seconds; a fixed pool of buffers cycles between
filling, waiting and being processed, and ``add`` blocks while every buffer
is busy (back-pressure to the consumer's queue).

A row of a batch is one event: ``slots`` planes of ``H x W``. A frame holding
every plane fills a whole row; a one-plane frame fills its plane's slot of
the first row where that slot is free, so frames of different planes share
rows and every plane's network works on each batch.
"""

import threading
import time

import numpy as np


class HostBatch:
    """One reusable batch: pixels ``[rows, slots, H, W]`` and per-slot frame metadata."""

    def __init__(self, images, array):
        self.images = images          # what the engine reads (e.g. a pinned torch tensor)
        self.array = array            # numpy view of the same memory
        rows, slots = array.shape[:2]
        self.ids = np.zeros((rows, slots), np.int64)
        self.planes = np.zeros((rows, slots), np.int64)  # plane of a one-plane frame
        self.stamps = np.zeros((rows, slots, 4), np.int64)  # ts s, ns, data ts s, ns
        self.filled = np.zeros((rows, slots), bool)
        self.arrival = np.zeros(rows * slots, np.int64)  # row * slots + slot, in arrival order
        self.counts = np.zeros(slots, np.int64)
        self.stacked = True
        self.first = 0.0
        self.n_frames = 0

    @property
    def rows(self):
        """Rows in use."""
        return int(self.counts.max())

    def reset(self):
        self.filled[:] = False
        self.counts[:] = 0
        self.n_frames = 0

    def full(self, batch_size):
        return bool(self.counts.max() >= batch_size)


class Batcher:
    """Buffers cycling between the frame thread (``add``) and the worker (``take``)."""

    def __init__(self, batch_size, max_latency, n_buffers, allocate):
        self.batch_size = int(batch_size)
        self.max_latency = float(max_latency)
        self.n_buffers = int(n_buffers)
        self._allocate = allocate  # (rows, slots, H, W) -> HostBatch
        self._cond = threading.Condition()
        self._free, self._ready = [], []
        self._filling = None
        self._shape = None
        self._closed = False
        self.n_handed = 0

    def _reallocate(self, shape):
        """New buffers for frames of ``shape`` (slots, H, W), once every buffer is back."""
        if self._filling is not None:
            self._ready.append(self._filling)
            self._filling = None
            self._cond.notify_all()
        while len(self._free) < self._in_pool():
            self._cond.wait()
        self._free = [self._allocate((self.batch_size,) + shape) for _ in range(self.n_buffers)]
        self._shape = shape

    def _in_pool(self):
        return self.n_buffers if self._shape is not None else 0

    def add(self, frame, row_shape, slot, unique_id, stamps, plane=0):
        """Copy ``frame`` into the batch being filled.

        ``row_shape`` is (slots, H, W) of one batch row; ``slot`` None means
        ``frame`` is a whole row ([slots, H, W]), else ``frame`` is [H, W] and
        goes into that slot. ``stamps`` are the 4 time-stamp integers;
        ``plane`` (one-plane frames) is kept for the output.
        """
        stacked = slot is None
        with self._cond:
            if self._closed:
                raise RuntimeError("the SSNet batcher is stopped")
            if row_shape != self._shape:
                self._reallocate(row_shape)
            batch = self._filling
            if batch is not None and batch.stacked != stacked:
                self._hand_over()
                batch = None
            if batch is None:
                while not self._free:
                    self._cond.wait()
                batch = self._filling = self._free.pop()
                batch.reset()
                batch.stacked = stacked
                batch.first = time.monotonic()
                self._cond.notify_all()  # the worker times the latency limit from now
            if stacked:
                row = batch.rows
                batch.array[row] = frame
                batch.filled[row] = True
                batch.counts[:] = row + 1
                batch.ids[row] = unique_id
                batch.stamps[row] = stamps
            else:
                row = int(batch.counts[slot])
                batch.array[row, slot] = frame
                batch.filled[row, slot] = True
                batch.counts[slot] = row + 1
                batch.ids[row, slot] = unique_id
                batch.planes[row, slot] = plane
                batch.arrival[batch.n_frames] = row * len(batch.counts) + slot
                batch.stamps[row, slot] = stamps
            batch.n_frames += 1
            if batch.full(self.batch_size):
                self._hand_over()

    def _hand_over(self):
        self._ready.append(self._filling)
        self._filling = None
        self._cond.notify_all()

    def take(self):
        """Next batch for the worker, waiting as needed; None once closed and empty."""
        with self._cond:
            while True:
                if self._ready:
                    self.n_handed += 1
                    return self._ready.pop(0)
                batch = self._filling
                if batch is not None:
                    remaining = batch.first + self.max_latency - time.monotonic()
                    if remaining <= 0 or self._closed:
                        self._hand_over()
                        continue
                    self._cond.wait(remaining)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()

    def release(self, batch):
        """Give a processed batch back to the pool."""
        with self._cond:
            if batch.array.shape[1:] == self._shape:
                self._free.append(batch)
            self._cond.notify_all()

    def set_max_latency(self, seconds):
        """Change the latency limit (applies to the batch being filled too)."""
        with self._cond:
            self.max_latency = float(seconds)
            self._cond.notify_all()

    def close(self):
        """No more frames: the worker drains what is queued, then ``take`` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
