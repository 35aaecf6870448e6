"""The harness's two helper processes, run as ``harness.py monitor`` and
``harness.py produce`` (see ``harness.py``): a bare pvaccess monitor counting
ids with the counting processor, and one process serving n producer channels
round robin."""

import argparse
import json
import os
import signal
import sys
import time

from harness_settings import HERE, cache_frames


# --------------------------------------------------------------- helper processes
def _install_stop(flag):
    def handler(signum, frame):  # pylint: disable=unused-argument
        flag.append(signum)
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def monitor_main(argv):
    """The transport ceiling: bare pvaccess monitors counting ids (no framework).

    One monitor per ``--channel`` (several: the collector case's producers),
    each counting with its own counting processor (``--stride`` between its
    ids). ``--distributor-updates U`` adds the distributor part to the
    request; ``--instances N`` runs N such processes (a bare fleet), this one
    only starting, signalling and reaping them."""
    parser = argparse.ArgumentParser(prog="harness.py monitor")
    parser.add_argument("--channel", required=True, action="append")
    parser.add_argument("--sqs", type=int, default=0)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--stride", type=int, default=1, help="expected step between the ids")
    parser.add_argument("--distributor-updates", type=int, default=0,
                        help="updates per consumer through the distributor (0: no distributor)")
    parser.add_argument("--distributor-group", default="bare")
    parser.add_argument("--instances", type=int, default=1, help="monitor processes to run")
    parser.add_argument("--idle-exit", type=float, default=0.0,
                        help="exit this many seconds after the last frame (0: only on SIGINT)")
    parser.add_argument("--timing", action="store_true", help="record first/last arrival times")
    parser.add_argument("--limit", type=float, default=0.0, help="exit after this many seconds")
    parser.add_argument("--keep-thread-state", action="store_true",
                        help="keep the Python thread state of pvaccess's delivering thread"
                             " (what pvaflow does) instead of a new one per update")
    args = parser.parse_args(argv)
    if args.instances > 1:
        return _run_instances(argv, args.instances)

    import pvaccess as pva  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, HERE)
    from counting_processor import CountingProcessor  # pylint: disable=import-outside-toplevel

    clock = time.monotonic
    times = {"t_first": None, "t_last": None}
    processors, callbacks = [], []
    for index, _ in enumerate(args.channel):
        name = "bare" if len(args.channel) == 1 else f"bare-{index + 1}"
        processor = CountingProcessor({"out_dir": args.out_dir, "processorId": name,
                                       "stride": args.stride})
        processor.start()
        processors.append(processor)
        callbacks.append(_timed(processor, times, clock) if args.timing or args.idle_exit > 0
                         else processor.process)
    if args.keep_thread_state:
        callbacks = [_keeping(callback) for callback in callbacks]
    stop = []
    _install_stop(stop)
    record = f"record[queueSize={args.sqs}]" if args.sqs > 0 else ""
    fields = (f"_[pydistributor=group:{args.distributor_group};updates:{args.distributor_updates}]"
              if args.distributor_updates > 0 else "")
    channels = [pva.Channel(name) for name in args.channel]
    for channel, callback in zip(channels, callbacks):
        channel.monitor(callback, f"{record}field({fields})")
    started = clock()
    while not stop:
        time.sleep(0.05)
        now = clock()
        if args.limit > 0 and now - started > args.limit:
            break
        if args.idle_exit > 0 and times["t_last"] is not None and now - times["t_last"] > args.idle_exit:
            break
    for channel in channels:
        channel.stopMonitor()
    for processor in processors:
        processor.extra = {"t_first": times["t_first"], "t_last": times["t_last"]}
        processor.stop()
    return 0


def _keeping(callback):
    """``callback`` that first keeps its thread's Python thread state (raises the
    thread's PyGILState counter once, so pvaccess's Release leaves the state)
    and ends by writing "unlocked" into pvaccess's shared GIL state, as
    pvaflow's callbacks do (pvaflow/hpc/thread_state.py)."""
    import ctypes  # pylint: disable=import-outside-toplevel
    from pvaccess import pvaccess as extension  # pylint: disable=import-outside-toplevel
    shared = ctypes.c_int.in_dll(ctypes.CDLL(extension.__file__), "_ZN12PyGilManager8gilStateE")
    kept = []

    def call(pv):
        if not kept:
            kept.append(ctypes.pythonapi.PyGILState_Ensure())
        try:
            callback(pv)
        finally:
            shared.value = 1  # PyGILState_UNLOCKED
    return call


def _timed(processor, times, clock):
    """The processor's process() that also notes the first and last arrival times."""
    count = processor.process

    def callback(pv):
        before = processor.n
        count(pv)
        if processor.n != before:  # a counted frame (not the initial record)
            now = clock()
            if times["t_first"] is None:
                times["t_first"] = now
            times["t_last"] = now
    return callback


def _run_instances(argv, instances):
    """Run ``instances`` monitor processes with the same arguments; pass signals on."""
    import subprocess  # pylint: disable=import-outside-toplevel
    child_argv = []
    skip = False
    for item in argv:  # drop --instances N / --instances=N
        if skip:
            skip = False
            continue
        if item == "--instances":
            skip = True
            continue
        if not item.startswith("--instances="):
            child_argv.append(item)
    command = [sys.executable, os.path.join(HERE, "harness.py"), "monitor"] + child_argv
    children = [subprocess.Popen(command) for _ in range(instances)]

    def forward(signum, frame):  # pylint: disable=unused-argument
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [child.wait() for child in children]
    return max(codes, key=abs) if codes else 0


def produce_main(argv):
    """n producer channels in one process; frame k goes to channel ((k-1) % n) + 1."""
    parser = argparse.ArgumentParser(prog="harness.py produce")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--fps", type=float, default=1000.0)
    parser.add_argument("--runtime", type=float, default=3.0)
    parser.add_argument("--start-delay", type=float, default=2.0)
    parser.add_argument("--shutdown-delay", type=float, default=5.0)
    parser.add_argument("--summary-file", default=None)
    args = parser.parse_args(argv)

    import numpy as np  # pylint: disable=import-outside-toplevel
    import pvaccess as pva  # pylint: disable=import-outside-toplevel
    from pvaflow.sim.frames import build_frame  # pylint: disable=import-outside-toplevel

    stop = []
    _install_stop(stop)
    rng = np.random.default_rng(12345)
    n_frames = cache_frames(args.size)
    frames = [build_frame(rng.integers(0, 256, (args.size, args.size), dtype=np.uint8), 0)
              for _ in range(n_frames)]
    channels = [f"{args.prefix}:{i}" for i in range(1, args.n + 1)]
    server = pva.PvaServer()
    for name in channels:
        server.addRecord(name, frames[0].copy())
    created = time.monotonic()
    while not stop and time.monotonic() < created + args.start_delay:
        time.sleep(0.02)
    period = 1.0 / args.fps if args.fps > 0 else 0.0
    clock, wall = time.monotonic, time.time
    count = 0
    start = clock()
    deadline = start + args.runtime
    first_time = last_time = None
    update = server.update
    n = args.n
    while not stop:
        now = clock()
        if period:
            due = start + count * period
            if due >= deadline:
                break
            if due > now:
                time.sleep(due - now)
                now = clock()
        elif now >= deadline:
            break
        count += 1
        nt = frames[count % n_frames]
        nt.setInt("uniqueId", count)
        stamp = wall()
        seconds = int(stamp)
        nanoseconds = int((stamp - seconds) * 1e9)
        nt.setLong("timeStamp.secondsPastEpoch", seconds)
        nt.setInt("timeStamp.nanoseconds", nanoseconds)
        nt.setLong("dataTimeStamp.secondsPastEpoch", seconds)
        nt.setInt("dataTimeStamp.nanoseconds", nanoseconds)
        update(channels[(count - 1) % n], nt)
        if count == n:
            update = server.updateUnchecked
        if first_time is None:
            first_time = now
        last_time = now
    elapsed = (last_time - first_time) if count > 1 else 0.0
    summary = {"published": count, "first_id": 1 if count else None,
               "last_id": count if count else None, "elapsed_s": elapsed,
               "rate": (count - 1) / elapsed if elapsed > 0 else 0.0, "target_fps": args.fps,
               "channels": channels}
    if args.summary_file:
        temporary = args.summary_file + ".tmp"
        with open(temporary, "w") as handle:
            json.dump(summary, handle)
        os.replace(temporary, args.summary_file)
    print(json.dumps(summary), flush=True)
    stops = len(stop)
    end = time.monotonic() + args.shutdown_delay
    while time.monotonic() < end and len(stop) <= stops:
        time.sleep(0.05)
    server.stop()
    return 0
