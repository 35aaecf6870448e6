"""Publishing engine of the simulated area detector.

:class:`SimServer` turns a :class:`~pvaflow.sim.frames.FrameSet` into an
NTNDArray channel:

1. the first frame is built and the record is created with a copy of it
   (``uniqueId`` 0), so clients can connect during the start delay;
2. the frames are built once into NTNDArray objects: all of them when they
   fit in the cache (they are then republished in a cycle), otherwise a
   producer thread keeps a queue of ``cache_size`` built frames ahead of the
   publisher and every frame is published once (pvapy's ``-nf`` > ``-cs``);
3. one publishing thread sets ``uniqueId`` (1, 2, ...) and both time stamps
   on the next built frame and hands it to the server (after updating the
   metadata PVs of ``-mpv``, whose time stamp the frame then carries, see
   :mod:`pvaflow.sim.metadata_pvs`). It paces against
   ``time.monotonic()``: frame k is due at ``start + k / fps`` and the thread
   sleeps only when it is ahead, so short oversleeps are caught up and the
   average rate holds; ``fps`` 0 publishes as fast as possible;
4. the calling thread prints a plain-text report every report period and
   the summary at the end.
"""

import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from itertools import cycle

import pvaccess as pva

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.sim.frames import build_frame, make_encoder
from pvaflow.sim.summary import summary_line, write_summary

log = logging.getLogger(__name__)

# Sleeps longer than this wait on the stop event, so a stop is seen at once.
_EVENT_WAIT_MIN_S = 0.02
# When this late past the runtime end, stop even if due frames are left.
_RUNTIME_GRACE_S = 0.02
# Refuse caches needing more than this share of the physical memory.
_MEMORY_SHARE = 0.8


@dataclass
class SimConfig:
    """Publishing options (all times in seconds)."""

    channel: str = "pvapy:image"
    frame_rate: float = 20.0
    runtime: float = 300.0
    start_delay: float = 10.0
    shutdown_delay: float = 10.0
    report_period: float = 1.0
    cache_size: int = 1000
    summary_file: str = None
    codec: str = None
    metadata_pvs: str = None
    notifier: object = None  # pvaflow.sim.notify.StartNotifier (-npv), or None
    access_policy: object = None  # pvaflow.hpc.access.AccessPolicy, or None: unprotected


def _physical_memory():
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class SimServer:
    """Serve the frames of ``frame_set`` on one NTNDArray channel."""

    def __init__(self, frame_set, config, out=None):
        self.frames = frame_set
        self.config = config
        self.out = out or sys.stdout
        self._progress_width = 0
        self.streaming = len(frame_set) > config.cache_size
        self._encoder = make_encoder(config.codec)
        self.cached = min(len(frame_set), config.cache_size)
        self._check_memory()
        self.published = 0
        self.stopped_by = None
        self.error = None
        self._stop = threading.Event()
        self._stop_requests = 0
        self._pending = []
        self._queue = None
        self._first_time = None
        self._last_time = None
        self._server = None
        self._record_time = None
        self._metadata = None

    def _check_memory(self):
        need = self.cached * self.frames.frame_nbytes
        total = _physical_memory()
        if total and need > _MEMORY_SHARE * total:
            raise ConfigurationError(
                f"caching {self.cached} frames needs {need / 1e9:.1f} GB, more than"
                f" {_MEMORY_SHARE:.0%} of the {total / 1e9:.1f} GB of memory;"
                " lower -cs/--cache-size or -nf/--n-frames")

    def _print(self, text):
        if getattr(self, "_progress_width", 0):  # end the live progress line first
            self.out.write("\n")
            self._progress_width = 0
        print(text, file=self.out, flush=True)

    # ----------------------------------------------------------------- control
    def request_stop(self):
        """Stop publishing; a second request also cuts the shutdown delay short."""
        self._stop_requests += 1
        if self.stopped_by is None:
            self.stopped_by = "signal"
        self._stop.set()

    def prepare(self):
        """Build the first frame and create the record (start-up errors: ConfigurationError)."""
        frames = iter(self.frames)
        try:
            first_image = next(frames)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigurationError(f"cannot read the first frame: {exc}") from None
        first = build_frame(first_image, self.frames.color_mode, self._encoder)
        self._frames_iter = frames
        self._pending = [first]
        self._server = pva.PvaServer()
        policy = self.config.access_policy
        if policy is not None and policy.active:
            policy.apply(self._server)  # the image record (and metadata PVs) follow the ACF
            policy.add_readonly(self._server, self.config.channel, first.copy())
            log.info(policy.describe([self.config.channel]))
        else:
            self._server.addRecord(self.config.channel, first.copy())
            log.warning("records served WITHOUT access control (any client may write them): %s;"
                        " use --access-security-file to protect them", self.config.channel)
        if self.config.metadata_pvs:
            from pvaflow.sim.metadata_pvs import MetadataPvs  # pylint: disable=import-outside-toplevel
            self._metadata = MetadataPvs(self.config.metadata_pvs, self._server,
                                         reserved=(self.config.channel,))
        self._record_time = time.monotonic()
        mode = (f"publishing each once through a queue of {self.config.cache_size}"
                if self.streaming else "cycling through them")
        rate = f"{self.config.frame_rate:g} fps" if self.config.frame_rate > 0 else "maximum rate"
        self._print(f"serving {self.config.channel}: {self.frames.describe()}")
        for line in self._metadata.describe() if self._metadata is not None else ():
            self._print(line)
        if self.config.notifier is not None:
            self._print(self.config.notifier.describe())
        self._print(f"{mode}; target {rate} for {self.config.runtime:g} s,"
                    f" starting in {self.config.start_delay:g} s")

    def _build_cache(self):
        """Build every frame (static mode); stops early on a stop request."""
        cache = self._pending
        color_mode = self.frames.color_mode
        for image in self._frames_iter:
            if self._stop.is_set():
                break
            cache.append(build_frame(image, color_mode, self._encoder))
        return cache

    def _produce(self):
        """Producer thread of streaming mode: build frames into the queue, then None."""
        color_mode = self.frames.color_mode
        try:
            for nt in self._pending:
                self._put(nt)
            for image in self._frames_iter:
                if self._stop.is_set():
                    break
                self._put(build_frame(image, color_mode, self._encoder))
        except Exception as exc:  # reported by the publisher as a runtime failure
            log.debug("frame producer failed", exc_info=True)
            self._put(exc)
        finally:
            self._put(None)

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            pass

    def _queue_frames(self):
        """Iterator over the built frames of streaming mode."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise RuntimeError(f"reading frames failed: {item}")
            yield item

    # -------------------------------------------------------------- publishing
    def _publish(self, frames):
        """The publishing loop (one thread). ``frames`` yields built NTNDArrays."""
        channel = self.config.channel
        fps = self.config.frame_rate
        period = 1.0 / fps if fps > 0 else 0.0
        clock = time.monotonic
        wall = time.time
        sleep = time.sleep
        stop = self._stop
        next_frame = frames.__next__
        update = self._server.update
        metadata = self._metadata
        count = 0
        start = deadline = None
        try:
            while not stop.is_set():
                try:
                    nt = next_frame()
                except StopIteration:
                    self.stopped_by = self.stopped_by or "frames"
                    break
                if start is None:
                    start = clock()
                    deadline = start + self.config.runtime
                    self._first_time = start
                now = clock()
                if period:
                    due = start + count * period
                    if due >= deadline or now > deadline + _RUNTIME_GRACE_S:
                        self.stopped_by = self.stopped_by or "runtime"
                        break
                    ahead = due - now
                    if ahead > 0:
                        if ahead > _EVENT_WAIT_MIN_S:
                            if stop.wait(ahead):
                                break
                        else:
                            sleep(ahead)
                        now = clock()
                elif now >= deadline:
                    self.stopped_by = self.stopped_by or "runtime"
                    break
                count += 1
                nt.setInt("uniqueId", count)
                if metadata is None:
                    stamp = wall()
                    seconds = int(stamp)
                    nanoseconds = int((stamp - seconds) * 1e9)
                else:
                    seconds, nanoseconds = metadata.publish(count)
                nt.setLong("timeStamp.secondsPastEpoch", seconds)
                nt.setInt("timeStamp.nanoseconds", nanoseconds)
                nt.setLong("dataTimeStamp.secondsPastEpoch", seconds)
                nt.setInt("dataTimeStamp.nanoseconds", nanoseconds)
                update(channel, nt)
                if count == 1:
                    update = self._server.updateUnchecked
                self.published = count
                self._last_time = now
        except Exception as exc:
            log.debug("publishing failed", exc_info=True)
            self.error = exc
            self.stopped_by = "error"
        finally:
            self._stop.set()

    def run(self):
        """Wait the start delay, publish, report; return the summary dict."""
        if self._server is None:
            self.prepare()
        config = self.config
        publisher_frames = None
        if self.streaming:
            self._queue = queue.Queue(maxsize=config.cache_size)
            threading.Thread(target=self._produce, name="sim-producer", daemon=True).start()
            publisher_frames = self._queue_frames()
        else:
            cache = self._build_cache()
            publisher_frames = cycle(cache)
            log.info("built %d frames in %.3f s", len(cache), time.monotonic() - self._record_time)
        delay = self._record_time + config.start_delay - time.monotonic()
        if delay > 0 and not self._stop.is_set():
            self._stop.wait(delay)
        publisher = None
        if config.notifier is not None and not self._stop.is_set():
            self._notify(config.notifier)
        if not self._stop.is_set():
            publisher = threading.Thread(target=self._publish, args=(publisher_frames,),
                                         name="sim-publisher", daemon=True)
            publisher.start()
            self._report_until_done(publisher)
        summary = self.summary()
        self._print(summary_line(summary))
        if config.summary_file:
            write_summary(config.summary_file, summary)
        self._shutdown()
        return summary

    def _notify(self, notifier):
        """Put the -npv value just before the first frame; a failure ends the run."""
        from pvaflow.sim.notify import NotifyError  # pylint: disable=import-outside-toplevel
        try:
            self._print(notifier.notify())
        except NotifyError as exc:
            self.error, self.stopped_by = exc, "error"
            self._stop.set()

    def _report_until_done(self, publisher):
        """Plain report lines every report period; on a terminal, a live progress line."""
        period = self.config.report_period
        live = hasattr(self.out, "isatty") and self.out.isatty()
        last_count, last_time = 0, None
        while publisher.is_alive():
            publisher.join(1.0 if live else (period if period > 0 else 0.5))
            if not publisher.is_alive() or self._first_time is None:
                continue
            if live:
                self._progress()
                continue
            if period <= 0:
                continue
            now = time.monotonic()
            count = self.published
            elapsed = now - self._first_time
            since = now - (last_time if last_time is not None else self._first_time)
            recent = (count - last_count) / since if since > 0 else 0.0
            total = count / elapsed if elapsed > 0 else 0.0
            self._print(f"published {count} frames, {total:.1f} fps"
                        f" (last period {recent:.1f} fps), elapsed {elapsed:.1f} s")
            last_count, last_time = count, now

    def _progress(self):
        elapsed = time.monotonic() - self._first_time
        runtime = self.config.runtime
        left = f" / {runtime:.0f} s ({max(runtime - elapsed, 0):.0f} s left)" if runtime > 0 else ""
        rate = self.published / elapsed if elapsed > 0 else 0.0
        line = f"[sim] {elapsed:.0f} s{left}  published {self.published} ({rate:.1f}/s)"
        self.out.write("\r" + line.ljust(self._progress_width))
        self.out.flush()
        self._progress_width = len(line)

    def _shutdown(self):
        """Keep serving for the shutdown delay (a second stop request ends it), then stop."""
        delay = self.config.shutdown_delay
        if delay > 0 and self._stop_requests < 2:
            end = time.monotonic() + delay
            requests = self._stop_requests
            while self._stop_requests == requests and time.monotonic() < end:
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        self.frames.close()
        if self._metadata is not None:
            self._metadata.stop()
        if self._server is not None:
            self._server.stop()

    # ----------------------------------------------------------------- results
    def summary(self):
        """Counts and the achieved rate: (published - 1) / (last - first publish time)."""
        count = self.published
        elapsed = 0.0
        if count > 1 and self._first_time is not None:
            elapsed = self._last_time - self._first_time
        rate = (count - 1) / elapsed if count > 1 and elapsed > 0 else 0.0
        return {
            "published": count,
            "first_id": 1 if count else None,
            "last_id": count if count else None,
            "elapsed_s": round(elapsed, 6),
            "rate": round(rate, 3),
            "target_fps": self.config.frame_rate,
            "stopped_by": self.stopped_by or "runtime",
            "error": str(self.error) if self.error else None,
            "channel": self.config.channel,
            "distinct_frames": len(self.frames),
            "cached_frames": self.cached,
            "streaming": self.streaming,
            "frame_shape": list(self.frames.frame_shape),
            "dtype": self.frames.dtype.name,
            "color_mode": int(self.frames.color_mode),
            "codec": self.config.codec or getattr(self.frames, "codec", "") or "",
        }
