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
    """The transport ceiling: a bare pvaccess monitor counting ids (no framework)."""
    parser = argparse.ArgumentParser(prog="harness.py monitor")
    parser.add_argument("--channel", required=True)
    parser.add_argument("--sqs", type=int, default=0)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--idle-exit", type=float, default=0.0,
                        help="exit this many seconds after the last frame (0: only on SIGINT)")
    parser.add_argument("--timing", action="store_true", help="record first/last arrival times")
    parser.add_argument("--limit", type=float, default=0.0, help="exit after this many seconds")
    args = parser.parse_args(argv)

    import pvaccess as pva  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, HERE)
    from counting_processor import CountingProcessor  # pylint: disable=import-outside-toplevel

    processor = CountingProcessor({"out_dir": args.out_dir, "processorId": "bare"})
    processor.start()
    count = processor.process
    clock = time.monotonic
    times = {"t_first": None, "t_last": None}
    if args.timing or args.idle_exit > 0:
        def callback(pv):
            before = processor.n
            count(pv)
            if processor.n != before:  # a counted frame (not the initial record)
                now = clock()
                if times["t_first"] is None:
                    times["t_first"] = now
                times["t_last"] = now
    else:
        callback = count
    stop = []
    _install_stop(stop)
    channel = pva.Channel(args.channel)
    request = f"record[queueSize={args.sqs}]field()" if args.sqs > 0 else "field()"
    channel.monitor(callback, request)
    started = clock()
    while not stop:
        time.sleep(0.05)
        now = clock()
        if args.limit > 0 and now - started > args.limit:
            break
        if args.idle_exit > 0 and times["t_last"] is not None and now - times["t_last"] > args.idle_exit:
            break
    channel.stopMonitor()
    processor.extra = {"t_first": times["t_first"], "t_last": times["t_last"]}
    processor.stop()
    return 0


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
