"""A complete local pipeline in about 20 seconds (``make demo``).

simulated detector (128x128 uint8, 1000 frames/s)
    -> consumer running examples/frame_stats_processor.py (per-frame statistics)
    -> its output channel

Prints the final report: frames published, processed, missed, rates and
latency percentiles. Exits 0 when every published frame is accounted for.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", type=float, default=20.0, help="seconds of streaming (default 20)")
    parser.add_argument("--fps", type=float, default=1000.0, help="simulated frame rate (default 1000)")
    args = parser.parse_args(argv)
    prefix = f"pvaflow:demo:{uuid.uuid4().hex[:6]}"
    work = tempfile.mkdtemp(prefix="pvaflow-demo-")
    summary, stats = os.path.join(work, "sim.json"), os.path.join(work, "consumer.jsonl")
    py = sys.executable
    print(f"demo: simulator {prefix}:image -> consumer (frame statistics) -> {prefix}:stats")
    consumer = subprocess.Popen([
        py, "-m", "pvaflow.cli.consumer", "-ic", f"{prefix}:image", "-oc", f"{prefix}:stats",
        "-sc", f"{prefix}:status", "-cc", f"{prefix}:control", "-sqs", "1000", "-rqs", "10000",
        "-pf", os.path.join(HERE, "frame_stats_processor.py"), "-pc", "FrameStatsProcessor",
        "-rp", "5", "--stats-file", stats])
    sim = subprocess.Popen([
        py, "-m", "pvaflow.cli.sim_server", "-cn", f"{prefix}:image", "-nx", "128", "-ny", "128",
        "-fps", str(args.fps), "-rt", str(args.runtime), "-std", "2", "-shd", "1", "-rp", "5",
        "--summary-file", summary])
    try:
        sim_rc = sim.wait(timeout=args.runtime + 60)
        time.sleep(1.5)  # let the consumer drain what is in flight
    finally:
        consumer.send_signal(2)
        consumer_rc = consumer.wait(timeout=60)
    if sim_rc != 0 or consumer_rc != 0:
        print(f"demo: FAILED (simulator exit {sim_rc}, consumer exit {consumer_rc})")
        return 1
    with open(summary) as f:
        published = json.load(f)["published"]
    with open(stats) as f:
        final = [json.loads(line) for line in f][-1]
    r, p = final["receiverStats"], final["processorStats"]
    accounted = p["nProcessed"] + p["nErrors"] + r["nMissed"] + r["nRejected"]
    print("\n==== pvaflow demo report ====")
    print(f"frames published   {published}")
    print(f"frames processed   {p['nProcessed']}  ({p['processedRate']:.1f} frames/s over the run)")
    print(f"frames missed      {r['nMissed']}   rejected {r['nRejected']}   errors {p['nErrors']}")
    print(f"latency            p50 {p['latencyP50Ms']:.2f} ms   p99 {p['latencyP99Ms']:.2f} ms"
          f"   max {p['latencyMaxMs']:.2f} ms")
    print(f"processing         {p['meanProcessUs']:.1f} us per frame")
    ok = accounted == published - (r["firstId"] - 1)
    print(f"accounting         {'every published frame accounted for' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
