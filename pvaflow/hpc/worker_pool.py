"""Several worker processes behind one consumer, fed through shared memory.

:class:`WorkerPoolProcessor` is a processor for CPU-heavy per-frame work.
``process()`` copies the frame's pixels once into a free slot of a shared
memory ring and hands the slot number (never the pixels) to a worker
process; a gathering thread takes results back in frame order, builds the
output NTNDArray from the result slot and publishes it.

The per-frame work is a small class with the method names of pvapy's
``UserMpDataProcessor`` (``start``, ``configure``, ``process``, ``stop``,
``resetStats``, ``getStats``); here ``process(image)`` receives a read-only
numpy image and returns a numpy array (or None for no output).

Processor arguments (``--processor-args``): ``workerClass`` (``module.Class``
or ``Class`` with ``workerFile``), ``workers`` (default 2), ``slots``
(default 2 x workers + 2), ``workerArgs`` (dict for the worker class),
``waitTimeout`` (seconds ``process()`` may wait for a free slot; default 5),
``outputSize`` (output slot size as a multiple of the input frame's; default 8).
A worker that dies is restarted; its frames in flight are counted as lost.
"""

import importlib
import importlib.util
import multiprocessing
import threading
import time
from multiprocessing import shared_memory

import numpy as np
import pvaccess as pva

from . import ntndarray
from .processor import AdImageProcessor

_STOP = None
_DIED = "worker died"


def _load_class(class_path, file_path=None):
    if file_path:
        spec = importlib.util.spec_from_file_location("pvaflow_pool_worker", file_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, class_path)
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _worker_main(index, class_path, file_path, worker_args, in_name, out_name, slot_bytes, out_bytes,
                 tasks, results):
    """A worker process: map the rings, run the user's class on each task."""
    in_shm = shared_memory.SharedMemory(name=in_name)
    out_shm = shared_memory.SharedMemory(name=out_name)
    try:
        cls = _load_class(class_path, file_path)
        try:
            worker = cls(worker_args) if worker_args else cls(index + 1)
        except TypeError:
            worker = cls()
        worker.start()
        while True:
            task = tasks.get()
            if task is _STOP:
                break
            seq, slot, shape, dtype = task
            start = slot * slot_bytes
            image = np.ndarray(shape, dtype=dtype, buffer=in_shm.buf, offset=start)
            image.flags.writeable = False
            try:
                result = worker.process(image)
                if result is None:
                    results.put((seq, slot, None, None, ""))
                    continue
                result = np.ascontiguousarray(result)
                if result.nbytes > out_bytes:
                    raise ValueError(f"result of {result.nbytes} bytes exceeds the output slot ({out_bytes});"
                                     " raise 'outputSize' in the processor arguments")
                out = np.ndarray(result.shape, dtype=result.dtype, buffer=out_shm.buf,
                                 offset=slot * out_bytes)
                out[...] = result
                results.put((seq, slot, result.shape, result.dtype.str, ""))
            except Exception as exc:  # counted by the parent, the worker goes on
                results.put((seq, slot, None, None, f"{type(exc).__name__}: {exc}"[:300]))
        worker.stop()
    finally:
        in_shm.close()
        out_shm.close()


class WorkerPoolProcessor(AdImageProcessor):
    def __init__(self, configDict=None):
        super().__init__(configDict)
        c = self.configDict
        if "workerClass" not in c:
            raise ValueError("WorkerPoolProcessor needs 'workerClass' (module.Class, or Class with "
                             "'workerFile')")
        self.n_workers = int(c.get("workers", 2))
        if self.n_workers < 1:
            raise ValueError("'workers' must be >= 1")
        self.n_slots = int(c.get("slots", 2 * self.n_workers + 2))
        self.wait_timeout = float(c.get("waitTimeout", 5.0))
        self.output_size = int(c.get("outputSize", 8))  # output slot / input slot (uint8 -> float64)
        self.last_error = ""
        self._class_path, self._file = c["workerClass"], c.get("workerFile")
        self._worker_args = c.get("workerArgs") or {}
        _load_class(self._class_path, self._file)  # fail now, not in a worker
        self._ctx = multiprocessing.get_context("spawn")
        self._started = False
        self._lock = threading.Condition()
        self.reset_counters()

    def reset_counters(self):
        self.n_dispatched = self.n_done = self.n_failed = self.n_lost = self.n_dropped = 0
        self.per_worker = [[0, 0, 0] for _ in range(self.n_workers)]  # done, failed, restarts

    # life cycle ------------------------------------------------------------
    def _start_pool(self, slot_bytes):
        self.slot_bytes = slot_bytes
        self.out_bytes = slot_bytes * self.output_size
        self._in = shared_memory.SharedMemory(create=True, size=slot_bytes * self.n_slots)
        self._out = shared_memory.SharedMemory(create=True, size=self.out_bytes * self.n_slots)
        self._free = list(range(self.n_slots))
        self._results = self._ctx.Queue()
        self._tasks, self._procs = [], []
        self._in_flight = {}   # seq -> (worker, slot, uid, seconds, nanoseconds)
        self._done = {}        # seq -> (slot, shape, dtype, error)
        self._seq = self._next_out = 0
        for index in range(self.n_workers):
            self._tasks.append(self._ctx.SimpleQueue())
            self._procs.append(self._spawn(index))
        self._gatherer = threading.Thread(target=self._gather, name="pvaflow-pool", daemon=True)
        self._running = True
        self._gatherer.start()
        self._started = True

    def _spawn(self, index):
        proc = self._ctx.Process(target=_worker_main, name=f"pvaflow-pool-worker-{index + 1}", args=(
            index, self._class_path, self._file, self._worker_args, self._in.name, self._out.name,
            self.slot_bytes, self.out_bytes, self._tasks[index], self._results), daemon=True)
        proc.start()
        return proc

    def stop(self):
        if not self._started:
            return
        deadline = time.monotonic() + max(self.wait_timeout, 1.0) * 4
        with self._lock:
            while self._in_flight and time.monotonic() < deadline:
                self._lock.wait(0.1)
        self._running = False
        for q in self._tasks:
            q.put(_STOP)
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        self._gatherer.join(5)
        for shm in (self._in, self._out):
            shm.close()
            shm.unlink()
        self._started = False

    # per frame -------------------------------------------------------------
    def process(self, pvObject):
        image = ntndarray.image_view(pvObject)
        if not self._started:
            self._start_pool(max(image.nbytes, 1) * 2)  # room for frames up to twice the first
        if image.nbytes > self.slot_bytes:
            raise ValueError(f"frame of {image.nbytes} bytes exceeds the pool's slot ({self.slot_bytes})")
        with self._lock:
            deadline = None
            while not self._free:
                now = time.monotonic()
                deadline = deadline or now + self.wait_timeout
                if now >= deadline:
                    self.n_dropped += 1
                    raise RuntimeError("worker pool saturated: no free slot within waitTimeout")
                self._lock.wait(0.05)
            slot = self._free.pop()
            seq = self._seq
            self._seq += 1
            worker = seq % self.n_workers
            self._in_flight[seq] = (worker, slot, pvObject.getInt("uniqueId"),
                                    pvObject.getLong("timeStamp.secondsPastEpoch"),
                                    pvObject.getInt("timeStamp.nanoseconds"))
        start = slot * self.slot_bytes
        np.ndarray(image.shape, image.dtype, buffer=self._in.buf, offset=start)[...] = image  # the one copy
        self.n_dispatched += 1
        self._tasks[worker].put((seq, slot, image.shape, image.dtype.str))

    def _gather(self):
        while self._running or self._in_flight:
            try:
                seq, slot, shape, dtype, error = self._results.get(timeout=0.2)
            except Exception:  # queue.Empty: check the workers' health
                self._check_workers()
                if not self._running and not any(p.is_alive() for p in self._procs):
                    return
                continue
            with self._lock:
                if seq not in self._in_flight:
                    continue  # given up when its worker died
                self._done[seq] = (slot, shape, dtype, error)
                self._publish_in_order()

    def _publish_in_order(self):
        while self._next_out in self._done:
            seq = self._next_out
            slot, shape, dtype, error = self._done.pop(seq)
            worker, _, uid, seconds, nanoseconds = self._in_flight.pop(seq)
            if error == _DIED:
                self.n_lost += 1
            elif error:
                self.n_failed += 1
                self.last_error = error
                self.per_worker[worker][1] += 1
            else:
                self.n_done += 1
                self.per_worker[worker][0] += 1
                if shape is not None:
                    result = np.ndarray(shape, np.dtype(dtype), buffer=self._out.buf,
                                        offset=slot * self.out_bytes)
                    out = self._output_frame(result, _Stamp(uid, seconds, nanoseconds))
                    self.updateOutputChannel(out)
            self._free.append(slot)
            self._next_out += 1
            self._lock.notify_all()

    def _check_workers(self):
        for index, proc in enumerate(self._procs):
            if proc.is_alive() or not self._running:
                continue
            with self._lock:
                lost = [s for s, f in self._in_flight.items() if f[0] == index and s not in self._done]
                for seq in lost:
                    self._done[seq] = (self._in_flight[seq][1], None, None, _DIED)
                self.per_worker[index][2] += 1
                self._tasks[index] = self._ctx.SimpleQueue()
                self._procs[index] = self._spawn(index)
                self._publish_in_order()

    # statistics -------------------------------------------------------------
    def resetStats(self):
        restarts = [w[2] for w in self.per_worker]
        self.reset_counters()
        for w, r in zip(self.per_worker, restarts):
            w[2] = r

    def getStats(self):
        stats = {"nDispatched": self.n_dispatched, "nDone": self.n_done, "nFailed": self.n_failed,
                 "nLost": self.n_lost, "nDropped": self.n_dropped, "lastError": self.last_error}
        for i, (done, failed, restarts) in enumerate(self.per_worker, start=1):
            stats[f"worker{i}Done"] = done
            stats[f"worker{i}Failed"] = failed
            stats[f"worker{i}Restarts"] = restarts
        return stats

    def getStatsPvaTypes(self):
        return {k: (pva.STRING if k == "lastError" else pva.ULONG) for k in self.getStats()}

    def configure(self, configDict):
        if "waitTimeout" in configDict:
            self.wait_timeout = float(configDict["waitTimeout"])


class _Stamp:
    """What _output_frame reads from an input frame, kept after the frame is gone."""

    __slots__ = ("uid", "seconds", "nanoseconds")

    def __init__(self, uid, seconds, nanoseconds):
        self.uid, self.seconds, self.nanoseconds = uid, seconds, nanoseconds

    def getInt(self, field):
        return self.uid if field == "uniqueId" else self.nanoseconds

    def getLong(self, field):
        return self.seconds
