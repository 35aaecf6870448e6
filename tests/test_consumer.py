"""System tests of pvapy-hpc-consumer: real simulator, consumer and clients on loopback."""

import json
import os
import signal
import time

import numpy as np
import pytest
from p4p.client.thread import Context

from conftest import REPO, read, read_stats_lines, wait_for

PROCESSORS = os.path.join(REPO, "tests", "processors")


def start_sim(procs, channel, tmp_path, fps=500, runtime=3.0, start_delay=1.5, nx=32, ny=24,
              extra=()):
    summary = tmp_path / f"sim-{channel.rsplit(':', 1)[-1]}.json"
    proc = procs.sim("-cn", channel, "-nx", nx, "-ny", ny, "-fps", fps, "-rt", runtime,
                     "-std", start_delay, "-shd", 0.5, "-rp", 0, "--summary-file", summary, *extra)
    return proc, summary


def finish(procs, sim, summary, consumer, stats_file, settle=1.0, timeout=30):
    """Wait for the simulator to end, let the consumer drain, stop it with SIGINT."""
    rc, out, err = procs.wait(sim, timeout)
    assert rc == 0, f"simulator failed: {out}\n{err}"
    published = json.loads(read(summary))["published"]
    time.sleep(settle)
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, timeout)
    assert rc == 0, f"consumer exit {rc}:\n{out}\n{err}"
    lines = read_stats_lines(stats_file)
    assert lines and lines[-1]["final"], f"no final stats line:\n{out}\n{err}"
    return published, lines[-1], out, err


def wait_connected(stats_file, timeout=25):
    """Wait until the consumer got its first update (so its output record exists).

    Clients open monitors only then: a p4p client that searches for a channel
    before it exists backs off and may find it seconds later."""
    return wait_for(lambda: any(s["receiverStats"]["nReceived"] for s in read_stats_lines(stats_file)),
                    timeout, message="consumer to receive its first update")


def test_lossless_run_processes_every_published_frame(procs, prefix, tmp_path):
    stats_file = tmp_path / "stats.jsonl"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, fps=800, runtime=3.0)
    consumer = procs.consumer("-ic", f"{prefix}:image", "-oc", f"{prefix}:out", "-sqs", 200,
                              "-rp", 0.5, "--stats-file", stats_file)
    received_ids = []
    ctx = Context("pva")
    try:
        wait_connected(stats_file)  # output record exists; p4p would back off searching earlier
        sub = ctx.monitor(f"{prefix}:out", lambda v: received_ids.append(v if isinstance(v, Exception) else int(v.uniqueId)),
                          request="record[queueSize=1000]field(uniqueId)", notify_disconnect=True)
        published, final, out, _ = finish(procs, sim, summary, consumer, stats_file)
        sub.close()
    finally:
        ctx.close()
    r, p = final["receiverStats"], final["processorStats"]
    assert published > 1000
    assert p["nProcessed"] == published
    assert r["nMissed"] == 0 and r["nRejected"] == 0 and p["nErrors"] == 0
    assert r["firstId"] == 1 and r["lastId"] == published
    assert r["nSkipped"] == 1  # the record's initial value, never processed
    assert final["publisherStats"]["nPublished"] == published
    # An independent client (p4p) saw the pass-through output, in order.
    ids = [i for i in received_ids if isinstance(i, int) and i > 0]
    assert ids == sorted(ids) and len(ids) >= 0.5 * published  # p4p may squash under load
    assert p["latencyMaxMs"] > 0 and p["latencyP50Ms"] <= p["latencyP99Ms"] <= p["latencyMaxMs"]
    assert "FINAL" in out and "processed" in out


def test_lossy_run_accounts_for_every_published_id(procs, prefix, tmp_path):
    """A slow processor behind a small receiver queue: what is not processed is counted."""
    stats_file = tmp_path / "stats.jsonl"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, fps=400, runtime=2.5)
    consumer = procs.consumer("-ic", f"{prefix}:image", "-rqs", 5, "-pf",
                              os.path.join(PROCESSORS, "faulty.py"), "-pc", "Slow",
                              "-pa", '{"delay": 0.01}', "-rp", 0.5, "--stats-file", stats_file)
    published, final, _, _ = finish(procs, sim, summary, consumer, stats_file, settle=1.5)
    r, p, q = final["receiverStats"], final["processorStats"], final["queueStats"]
    assert r["nRejected"] > 0 and q["nRejected"] == r["nRejected"]
    accounted = p["nProcessed"] + p["nErrors"] + r["nMissed"] + r["nRejected"]
    # Ids before the first received one were published before we connected.
    assert accounted == published - (r["firstId"] - 1)
    assert q["peak"] <= 5


def test_processor_errors_are_counted_and_survived(procs, prefix, tmp_path):
    stats_file = tmp_path / "stats.jsonl"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, fps=300, runtime=2.0)
    consumer = procs.consumer("-ic", f"{prefix}:image", "-sqs", 100, "-pf",
                              os.path.join(PROCESSORS, "faulty.py"), "-pc", "RaiseEveryTenth",
                              "-rp", 0.5, "--stats-file", stats_file)
    published, final, out, err = finish(procs, sim, summary, consumer, stats_file)
    p = final["processorStats"]
    assert p["nErrors"] == published // 10
    assert p["nProcessed"] == published - published // 10
    assert "rejected on purpose" in p["lastError"]
    # The first error is logged with its traceback once; later ones are summarised.
    assert err.count("Traceback") == 1


def test_pvapy_style_processor_runs_unchanged(procs, prefix, tmp_path):
    stats_file = tmp_path / "stats.jsonl"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, fps=200, runtime=2.0)
    consumer = procs.consumer("-ic", f"{prefix}:image", "-oc", f"{prefix}:out", "-sqs", 100,
                              "-pf", os.path.join(PROCESSORS, "pvapy_style.py"),
                              "-pc", "PvapyStyleProcessor", "-pa", '{"offset": 1000}',
                              "-rp", 0.5, "--stats-file", stats_file)
    seen = []
    ctx = Context("pva")
    try:
        wait_connected(stats_file)  # output record exists; p4p would back off searching earlier
        sub = ctx.monitor(f"{prefix}:out", lambda v: seen.append((int(v.uniqueId), int(v.shifted))),
                          request="record[queueSize=1000]", notify_disconnect=False)
        published, final, _, _ = finish(procs, sim, summary, consumer, stats_file)
        sub.close()
    finally:
        ctx.close()
    assert final["processorStats"]["nProcessed"] == published
    assert final["userStats"]["nProcessed"] == published
    frames = [(u, s) for u, s in seen if u > 0]
    assert frames and all(s == u + 1000 for u, s in frames)


def test_control_commands_with_replies(procs, prefix, tmp_path):
    stats_file = tmp_path / "stats.jsonl"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, fps=200, runtime=30, start_delay=0.5)
    control, status = f"{prefix}:ctl", f"{prefix}:status"
    consumer = procs.consumer("-ic", f"{prefix}:image", "-cc", control, "-sc", status,
                              "-pf", os.path.join(PROCESSORS, "pvapy_style.py"),
                              "-pc", "PvapyStyleProcessor", "-rp", 0.5, "--stats-file", stats_file)
    ctx = Context("pva")
    try:
        wait_connected(stats_file)

        def command(sequence, **fields):
            ctx.put(control, dict(fields, sequence=sequence))
            return wait_for(lambda: (lambda v: v if v.replySequence == sequence else None)(
                ctx.get(control)), 5, message=f"reply to request {sequence}")

        reply = command(11, command="configure", args='{"offset": 7}')
        assert reply.status == "ok" and reply.replyCommand == "configure"
        assert wait_for(lambda: ctx.get(status).userStats.offset == 7, 5, message="offset 7")

        reply = command(12, command="get_stats")
        assert reply.status == "ok" and json.loads(reply.result)["processorStats"]["nProcessed"] > 0

        reply = command(13, command="configure", args="{not json")
        assert reply.status == "error" and "JSON" in reply.statusMessage
        reply = command(14, command="explode")
        assert reply.status == "error" and "unknown command" in reply.statusMessage
        n_commands = reply.nCommands

        # A put without a command does not re-run the last command.
        reply = command(15, args='{"offset": 99}')
        assert reply.status == "error" and "no command" in reply.statusMessage
        assert reply.nCommands == n_commands + 1
        assert ctx.get(status).userStats.offset == 7

        reply = command(16, command="reset_stats")
        assert reply.status == "ok"
        after = ctx.get(status)
        assert after.processorStats.nProcessed < 200 and after.userStats.nProcessed < 200

        reply = command(17, command="stop")
        assert reply.status == "ok"
        rc, out, err = procs.wait(consumer, 15)
        assert rc == 0, err
        assert reply.nErrors == 3
    finally:
        ctx.close()
    final = read_stats_lines(stats_file)[-1]
    assert final["final"] and final["state"] == "stopped"


def test_status_record_is_published(procs, prefix, tmp_path):
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, fps=100, runtime=30, start_delay=0.2)
    consumer = procs.consumer("-ic", f"{prefix}:image", "-sc", "_", "-id", 7, "-ifs", "03d",
                              "-rp", 0.3)
    time.sleep(1.0)  # let the record exist before the first search (see wait_connected)
    ctx = Context("pva")
    try:
        name = "pvapy:consumer:007:status"
        value = wait_for(lambda: _try_get(ctx, name), 10, message="status record")
        assert value.consumerId == 7
        wait_for(lambda: ctx.get(name).receiverStats.nReceived > 10, 10, message="frames counted")
        assert ctx.get(name).state == "running"
    finally:
        ctx.close()
        consumer.send_signal(signal.SIGTERM)
        assert procs.wait(consumer, 15)[0] == 0


def _try_get(ctx, name):
    """The record's value (wrapped, never a bare array), or None while it cannot be read."""
    try:
        value = ctx.get(name, timeout=0.5)
    except Exception:
        return None
    return value if not isinstance(value, np.ndarray) else True





def test_runtime_limit_and_report_format(procs, prefix, tmp_path):
    consumer = procs.consumer("-ic", f"{prefix}:nothing", "-rt", 1.0, "-rp", 0.3)
    rc, out, err = procs.wait(consumer, 15)
    assert rc == 0
    assert "\x1b" not in out  # plain text, no screen control codes
    assert out.count("[consumer 1]") >= 3 and "FINAL" in out


def test_version_flag():
    import subprocess
    import sys
    from pvaflow import __version__
    result = subprocess.run([sys.executable, "-m", "pvaflow.cli.consumer", "--version"],
                            capture_output=True, text=True, errors="replace", cwd=REPO, timeout=30)
    assert result.returncode == 0 and __version__ in result.stdout


BAD_INPUT = [
    (["-ic", "x", "--no-such-flag"], "unrecognized arguments"),
    ([], "the following arguments are required: -ic"),
    (["-ic", "x", "-pf", "/no/such/file.py", "-pc", "P"], "does not exist"),
    (["-ic", "x", "-pf", os.path.join(PROCESSORS, "faulty.py"), "-pc", "Missing"], "has no class 'Missing'"),
    (["-ic", "x", "-pf", os.path.join(PROCESSORS, "faulty.py"), "-pc", "NotAProcessor"], "not a processor"),
    (["-ic", "x", "-pf", os.path.join(PROCESSORS, "faulty.py"), "-pc", "ConstructorRaises"],
     "could not be created"),
    (["-ic", "x", "-pc", "no.such.module.Class"], "cannot import module"),
    (["-ic", "x", "-pa", "{bad json"], "not valid JSON"),
    (["-ic", "x", "-pa", "[1, 2]"], "must be a JSON object"),
    (["-ic", "bad channel"], "invalid input channel name"),
    (["-ic", "x", "-oc", "a,b"], "invalid output channel name"),
    (["-ic", "x", "-sqs", "-3"], "must be >= 0"),
    (["-ic", "x", "-rp", "often"], "invalid float value"),
    (["-ic", "x", "-im", "ejfat"], "needs the EJFAT"),
    (["-ic", "x", "-rs", "receiver,bogus"], "unknown statistics section"),
    (["-ic", "x", "-ifs", "q"], "cannot format id"),
    (["-ic", "x", "-du", "0"], "must be > 0"),
    (["-ic", "x", "-pf", os.path.join(PROCESSORS, "faulty.py")], "needs --processor-class"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_input_exits_2_with_one_line(argv, message):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "pvaflow.cli.consumer", *argv],
                            capture_output=True, text=True, errors="replace", cwd=REPO, timeout=30,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pvapy-hpc-consumer: error:") and message in lines[0], lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("queue", [("-sqs", 100), ("-rqs", 100, "-ao", 10, "-at", 0.05)],
                         ids=["server-queue", "receiver-queue"])
def test_output_pixels_match_input_through_rotation_example(procs, prefix, tmp_path, queue):
    """Pixels and ids survive the trip, also when frames wait in the receiver queue
    (pvaccess reuses an update's storage, so queued frames must be copies)."""
    stats_file = tmp_path / "stats.jsonl"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, fps=200, runtime=1.5, nx=20, ny=10)
    consumer = procs.consumer("-ic", f"{prefix}:image", "-oc", f"{prefix}:rot", *queue,
                              "-pf", os.path.join(REPO, "examples", "rotation_processor.py"),
                              "-pc", "RotationProcessor", "-pa", '{"quarterTurns": 1}',
                              "-rp", 0.5, "--stats-file", stats_file)
    inputs, outputs = {}, {}
    ctx = Context("pva", unwrap=False)
    try:
        wait_connected(stats_file)
        s1 = ctx.monitor(f"{prefix}:image", lambda v: inputs.__setitem__(int(v.uniqueId), _pixels(v)),
                         request="record[queueSize=500]", notify_disconnect=False)
        s2 = ctx.monitor(f"{prefix}:rot", lambda v: outputs.__setitem__(int(v.uniqueId), _pixels(v)),
                         request="record[queueSize=500]", notify_disconnect=False)
        published, final, _, _ = finish(procs, sim, summary, consumer, stats_file)
        s1.close()
        s2.close()
    finally:
        ctx.close()
    common = [i for i in outputs if i in inputs and i > 0]
    assert len(common) >= published * 0.5  # p4p has no flow control: it may squash under load
    for uid in common:
        assert np.array_equal(outputs[uid], np.rot90(inputs[uid])), uid


def _pixels(value):
    """Decode an NTNDArray read by p4p (an independent client) into numpy."""
    dims = [d.size for d in value.dimension]
    return np.asarray(value.value).reshape(dims[::-1])
