"""One benchmark run each: the command lines (each framework's simulator,
consumer or distributor fleet and collector, with equal flags; the bare
monitor), the lossless check of a run from the count files and the
publisher's summary, and a consumer run, a collector run and a simulator run."""

import json
import math
import os
import signal
import time

from harness_procs import Proc, load_json, new_run_dir, read_counts, sleep_until, wait_for_file
from harness_settings import (COLLECTOR_MODULES, CONSUMER_MODULES, HARNESS_FILE, PROCESSOR_CLASS,
                              PROCESSOR_FILE, PY, SIM_BOUND_SHARE, SIM_MODULES, cache_frames,
                              sqs_for)


# ------------------------------------------------------------------------ commands
def flag_number(value):
    """A number as a command-line argument (floats without trailing zeros)."""
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def sim_cmd(kind, channel, size, fps, runtime, start_delay, shutdown_delay, summary=None):
    """The simulator command: pvaflow's or pvapy's, same flags."""
    frames = cache_frames(size)
    args = [PY, "-m", SIM_MODULES[kind], "-cn", channel, "-nx", size, "-ny", size, "-dt", "uint8",
            "-fps", flag_number(float(fps)), "-rt", flag_number(float(runtime)),
            "-std", flag_number(float(start_delay)), "-shd", flag_number(float(shutdown_delay)),
            "-rp", "0", "-nf", frames, "-cs", frames, "-dc"]
    if summary:
        args += ["--summary-file", summary]
    return args


def stage_args(sqs, out_dir, stride=1, latency=False):
    """Flags shared by consumers and collectors of both frameworks (equal for both)."""
    processor_args = json.dumps({"out_dir": out_dir, "stride": stride, "latency": latency})
    return ["-sqs", sqs, "-siu", "0", "-pf", PROCESSOR_FILE, "-pc", PROCESSOR_CLASS,
            "-pa", processor_args, "-rp", "0", "-dc"]


def consumer_cmd(kind, channel, sqs, n_consumers, out_dir):
    """A consumer (or, with n_consumers > 1, a fleet with the distributor, -du 1)."""
    if kind in ("bare", "bare-kept"):
        args = [PY, HARNESS_FILE, "monitor", "--channel", channel, "--sqs", sqs,
                "--out-dir", out_dir]
        if kind == "bare-kept":
            args.append("--keep-thread-state")
        if n_consumers > 1:  # a bare fleet: N monitor processes behind the distributor
            args += ["--instances", n_consumers, "--stride", n_consumers,
                     "--distributor-updates", 1]
        return args
    args = [PY, "-m", CONSUMER_MODULES[kind], "-ic", channel] + stage_args(sqs, out_dir,
                                                                           stride=n_consumers)
    if n_consumers > 1:
        args += ["-nc", n_consumers, "-du", "1"]
    return args


def collector_cmd(kind, pattern, n_producers, sqs, out_dir):
    if kind == "bare":  # the ceiling: one process monitoring every producer channel
        prefix = pattern[:-1]  # "P:*" -> "P:"
        args = [PY, HARNESS_FILE, "monitor", "--sqs", sqs, "--out-dir", out_dir,
                "--stride", n_producers]
        for index in range(1, n_producers + 1):
            args += ["--channel", f"{prefix}{index}"]
        return args
    ids = ",".join(str(i) for i in range(1, n_producers + 1))
    return ([PY, "-m", COLLECTOR_MODULES[kind], "-ic", pattern, "-pid", ids]
            + stage_args(sqs, out_dir, stride=1, latency=True))


# ---------------------------------------------------------------------- evaluation
def evaluate(records, published, last_id, expected_instances):
    """Lossless check of one run.

    Lossless: every expected instance reported, the last published id was
    seen, and the frames counted over all instances equal the ids from the
    smallest first id to the last published id (with the distributor each
    id reaches one consumer, so the union covers the span exactly when the
    counts add up); no id went backwards."""
    result = {"instances": len(records), "expected_instances": expected_instances,
              "published": published, "published_last_id": last_id}
    firsts = [r["first"] for r in records if r.get("first") is not None]
    received = sum(r.get("n", 0) for r in records)
    result["received"] = received
    result["per_instance"] = [r.get("n", 0) for r in records]
    result["irregular_steps"] = sum(r.get("irregular", 0) for r in records)
    result["backwards"] = sum(r.get("backwards", 0) for r in records)
    result["gaps_sample"] = [g for r in records for g in r.get("gaps", [])][:10]
    if not published or not last_id:
        result.update(lossless=False, reason="nothing was published")
        return result
    if len(records) < expected_instances:
        result.update(lossless=False,
                      reason=f"{len(records)} of {expected_instances} instances wrote counts")
        return result
    if not firsts:
        result.update(lossless=False, reason="nothing was received", missed=published)
        return result
    first = min(firsts)
    last = max(r["last"] for r in records if r.get("last") is not None)
    span = last_id - first + 1
    result.update(first_id=first, last_id=last, late_ids=first - 1, missed=span - received,
                  tail_missing=max(0, last_id - last))
    reason = None
    if first > 1 + published // 2:
        reason = f"clients connected late (first id {first} of {last_id})"
    elif last != last_id:
        reason = f"last id seen {last}, published {last_id}"
    elif received != span:
        reason = f"{span - received} of {span} ids missing"
    elif result["backwards"]:
        reason = f"{result['backwards']} ids out of order"
    result["lossless"] = reason is None
    if reason:
        result["reason"] = reason
    return result


# ---------------------------------------------------------------------- one run each
def consumer_run(kind, size, fps, n_consumers, settings, workdir, measure_cpu=False):
    """One run: our simulator at ``fps`` for the window, ``kind`` consuming it.

    ``kind``: "bare" (pvaccess monitor), "pvaflow" or "pvapy". Returns a dict
    with lossless, the published rate (rate), the target and, with
    ``measure_cpu``, the consumer tree's CPU seconds between just before the
    first frame and the grace period after the last (cpu_s, cpu_us_per_frame)."""
    run_id, run_dir = new_run_dir(workdir, f"{kind}-{size}-{n_consumers}c-{int(fps)}")
    channel = f"pvaflowbench:{run_id}:image"
    out_dir = os.path.join(run_dir, "counts")
    summary_path = os.path.join(run_dir, "summary.json")
    start_delay = settings.start_delay_s if n_consumers == 1 else settings.fleet_start_delay_s
    sqs = sqs_for(size, settings)
    sim = Proc(sim_cmd("pvaflow", channel, size, fps, settings.window_s, start_delay,
                       settings.grace_s + 5.0, summary_path), os.path.join(run_dir, "sim.log"))
    consumer = Proc(consumer_cmd(kind, channel, sqs, n_consumers, out_dir),
                    os.path.join(run_dir, "consumer.log"))
    result = {"kind": kind, "size": size, "target": fps, "n_consumers": n_consumers,
              "sqs": sqs, "run_dir": run_dir}
    cpu0 = cpu1 = None
    try:
        if measure_cpu:
            # Publishing starts start_delay after the simulator created its record,
            # which takes it a few tenths of a second after launch.
            sleep_until(sim.started + start_delay - 0.2, (consumer,))
            cpu0 = (consumer.tree_cpu_precise(), consumer.tree_cpu())
        deadline = time.monotonic() + start_delay + settings.window_s + 60.0
        wait_for_file(summary_path, deadline, (sim,))
        summary = load_json(summary_path) or {}
        sleep_until(time.monotonic() + settings.grace_s, (consumer,))
        if measure_cpu:
            cpu1 = (consumer.tree_cpu_precise(), consumer.tree_cpu())
        consumer.send(signal.SIGINT)
        exited = consumer.wait(40.0 if n_consumers > 1 else 20.0)
        result["consumer_exit"] = consumer.returncode if exited else "killed"
        sim.send(signal.SIGINT)
        sim.wait(10.0)
    finally:
        consumer.close()
        sim.close()
    published = summary.get("published") or 0
    result.update(rate=summary.get("rate") or 0.0, published=published,
                  consumer_life_cpu_s=consumer.life_cpu())
    result.update(evaluate(read_counts(out_dir), published, summary.get("last_id"), n_consumers))
    result["sim_bound"] = bool(published) and result["rate"] < SIM_BOUND_SHARE * fps
    if not published:
        result["reason"] = "simulator published nothing: " + sim.log_tail(400)
    if cpu0 is not None and cpu1 is not None:
        precise = None if None in (cpu0[0], cpu1[0]) else cpu1[0] - cpu0[0]
        ticks = None if None in (cpu0[1], cpu1[1]) else cpu1[1] - cpu0[1]
        # schedstat (ns) unless a thread ended in between and took its time
        # along (then the tick-based figure, 10 ms resolution, is larger).
        cpu = precise if precise is not None and (ticks is None or precise >= ticks - 0.03) else ticks
        result.update(cpu_s=cpu, cpu_schedstat_s=precise, cpu_ticks_s=ticks)
        if result["received"] and cpu is not None:
            result["cpu_us_per_frame"] = 1e6 * cpu / result["received"]
    if not result["lossless"] and not result.get("reason", "").startswith("simulator"):
        result["consumer_log_tail"] = consumer.log_tail(600)
    return result


def collector_run(kind, size, fps, settings, workdir):
    """One run: the 4-channel producer at ``fps`` (aggregate), ``kind``'s collector merging.

    Latency: (processor call time - frame timeStamp) per frame; the steady
    figures leave out the last 10 % of ids (the end-of-stream flush)."""
    n = settings.n_producers
    run_id, run_dir = new_run_dir(workdir, f"collector-{kind}-{size}-{int(fps)}")
    prefix = f"pvaflowbench:{run_id}:producer"
    out_dir = os.path.join(run_dir, "counts")
    summary_path = os.path.join(run_dir, "summary.json")
    sqs = sqs_for(size, settings)
    producer = Proc([PY, HARNESS_FILE, "produce", "--prefix", prefix, "--n", n,
                     "--size", size, "--fps", flag_number(float(fps)),
                     "--runtime", settings.window_s,
                     "--start-delay", settings.start_delay_s + 0.5,
                     "--shutdown-delay", settings.grace_s + 8.0, "--summary-file", summary_path],
                    os.path.join(run_dir, "producer.log"))
    command = collector_cmd(kind, prefix + ":*", n, sqs, out_dir)
    stats_path = os.path.join(run_dir, "stats.jsonl")
    if kind == "pvaflow":
        command += ["--stats-file", stats_path]  # a report option only: final line, -rp 0
    collector = Proc(command, os.path.join(run_dir, "collector.log"))
    result = {"kind": kind, "size": size, "target": fps, "n_producers": n, "sqs": sqs,
              "run_dir": run_dir}
    try:
        deadline = time.monotonic() + settings.start_delay_s + settings.window_s + 60.0
        wait_for_file(summary_path, deadline, (producer,))
        summary = load_json(summary_path) or {}
        sleep_until(time.monotonic() + settings.grace_s, (collector,))
        collector.send(signal.SIGINT)
        exited = collector.wait(30.0)
        result["collector_exit"] = collector.returncode if exited else "killed"
        producer.send(signal.SIGINT)
        producer.send(signal.SIGINT)
        producer.wait(10.0)
    finally:
        collector.close()
        producer.close()
    published = summary.get("published") or 0
    records = read_counts(out_dir)
    result.update(rate=summary.get("rate") or 0.0, published=published)
    result.update(evaluate(records, published, summary.get("last_id"), n if kind == "bare" else 1))
    result["sim_bound"] = bool(published) and result["rate"] < SIM_BOUND_SHARE * fps
    if kind != "bare" and records and records[0].get("latency"):
        pairs = records[0]["latency"]
        last_id = summary.get("last_id") or 0
        cut = last_id - int(0.1 * published)
        steady = sorted(v for i, v in pairs if i <= cut) or sorted(v for _, v in pairs)
        result["latency_p50_ms"] = 1e3 * _quantile(steady, 0.50)
        result["latency_p99_ms"] = 1e3 * _quantile(steady, 0.99)
        result["latency_all_p50_ms"] = records[0].get("latency_p50_ms")
        result["latency_all_p99_ms"] = records[0].get("latency_p99_ms")
        result["latency_frames"] = len(steady)
    final = _final_stats(stats_path)
    if final:
        processor = final.get("processorStats", {})
        result["self_reported_p50_ms"] = processor.get("latencyP50Ms")
        result["self_reported_p99_ms"] = processor.get("latencyP99Ms")
    if not result["lossless"]:
        result["collector_log_tail"] = collector.log_tail(600)
    return result


def _final_stats(path):
    """The line marked final of a pvaflow --stats-file, or None."""
    try:
        with open(path) as handle:
            lines = [json.loads(line) for line in handle if line.strip()]
    except (OSError, ValueError):
        return None
    finals = [line for line in lines if line.get("final")]
    return finals[-1] if finals else None


def sim_run(kind, size, fps, settings, workdir):
    """One run of ``kind``'s simulator at ``fps`` with a bare counting client.

    The rate is the client's: (frames - 1) / (last arrival - first arrival);
    the target is held when that is within 1 % and no id was missed."""
    run_id, run_dir = new_run_dir(workdir, f"sim-{kind}-{size}-{int(fps)}")
    channel = f"pvaflowbench:{run_id}:image"
    out_dir = os.path.join(run_dir, "counts")
    sqs = sqs_for(size, settings)
    start_delay = settings.start_delay_s
    sim = Proc(sim_cmd(kind, channel, size, fps, settings.window_s, start_delay, 1.0),
               os.path.join(run_dir, "sim.log"))
    client = Proc([PY, HARNESS_FILE, "monitor", "--channel", channel, "--sqs", sqs,
                   "--out-dir", out_dir, "--idle-exit", "1.0", "--timing",
                   "--limit", start_delay + settings.window_s + 30.0],
                  os.path.join(run_dir, "client.log"))
    result = {"kind": kind, "size": size, "target": fps, "sqs": sqs, "run_dir": run_dir}
    try:
        client.wait(start_delay + settings.window_s + 40.0)
        sim.wait(15.0)
    finally:
        client.close()
        sim.close()
    records = read_counts(out_dir)
    record = records[0] if records else {}
    n = record.get("n", 0)
    extra = record.get("extra", {})
    span = (extra.get("t_last") or 0) - (extra.get("t_first") or 0)
    rate = (n - 1) / span if n > 1 and span > 0 else 0.0
    missed = record.get("missing", 0) + record.get("irregular", 0) + record.get("backwards", 0)
    error = (rate - fps) / fps
    result.update(rate=rate, received=n, missed=missed, error_pct=100 * error,
                  first_id=record.get("first"), last_id=record.get("last"))
    result["lossless"] = n > 1 and missed == 0 and abs(error) <= 0.01
    if not result["lossless"]:
        result["reason"] = ("nothing received" if n <= 1 else
                            f"{missed} ids missed" if missed else f"rate off by {100 * error:+.2f}%")
    result["sim_bound"] = False
    return result


def _quantile(sorted_values, fraction):
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(math.ceil(fraction * len(sorted_values))) - 1))
    return sorted_values[index]
