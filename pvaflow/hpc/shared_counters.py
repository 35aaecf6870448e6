"""Counters a supervised consumer shares with its parent through shared memory.

They survive the child: when a child is killed (even with SIGKILL), the
parent still reads exactly how many frames it admitted, processed, failed,
rejected and missed, and the last id it admitted, so nothing that child
received goes uncounted.
"""

import multiprocessing

import numpy as np

ADMITTED, PROCESSED, ERRORS, REJECTED, MISSED, LAST_ID = range(6)
NAMES = ("admitted", "processed", "errors", "rejected", "missed", "lastId")


def new_shared_counters(context=None):
    """A zeroed block of counters in shared memory (pass it to a spawned child)."""
    ctx = context or multiprocessing.get_context("spawn")
    return ctx.RawArray("q", len(NAMES))


def as_array(raw):
    """A view of the shared block for the frame path: a memoryview of int64, whose
    element store costs half that of a numpy array's."""
    return memoryview(raw).cast("B").cast("q")


def snapshot(raw):
    return dict(zip(NAMES, (int(v) for v in np.frombuffer(raw, dtype=np.int64))))
