"""Metadata: simulator PVs (-mpv), stage channels (-mc), the association processor.

Unit tests run in-process on pvaccess queues; system tests run the real
simulator (with its in-process CA IOC), consumers, fleets and a collector
on loopback and check every frame that comes out.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pvaccess as pva
import pytest

from conftest import REPO, read, read_stats_lines, wait_for
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.metadata import MetadataChannels, parse_metadata_channels
from pvaflow.hpc.ntndarray import attributes_of, new_ntndarray
from pvaflow.processors.metadata_association import MetadataAssociationProcessor
from pvaflow.sim.metadata_pvs import METADATA_TYPE, find_dbd_directory, metadata_value

MDP = "pvaflow.processors.metadata_association.MetadataAssociationProcessor"
ARGS = json.dumps({"timestampTolerance": 0.0002, "waitTime": 0.2})


# ---------------------------------------------------------------- parsing
def test_channel_spec_parsing_keys_and_pvapy_queue_map():
    spec = "pva://a:x, ca://b:y,c:z,,"
    assert parse_metadata_channels(spec) == [("pva", "a:x"), ("ca", "b:y"), ("ca", "c:z")]
    channels = MetadataChannels(spec, 7)
    assert list(channels.queue_map) == ["a:x", "b:y", "c:z"]  # pvapy: names without protocol
    queue = channels.queue_map["a:x"]
    assert isinstance(queue, pva.PvObjectQueue) and queue.maxLength == 7
    with pytest.raises(pva.QueueEmpty):  # what pvapy-style processors catch
        queue.get(0)
    types = channels.status_types()["metadataStats"]
    assert list(types) == ["metadata1", "metadata2", "metadata3"]
    stats = channels.stats()["metadataStats"]
    assert stats["metadata2"]["channel"] == "b:y" and stats["metadata2"]["protocol"] == "ca"
    assert stats["metadata1"]["nReceived"] == 0 and stats["metadata1"]["nAssociated"] == 0
    assert "metadata ca://c:z (disconnected) received 0" in channels.report_lines(channels.stats())[2]


@pytest.mark.parametrize("spec,message", [
    ("http://x", "unknown protocol 'http://'"),
    ("pva://", "empty or blank"),
    ("pva://a b", "empty or blank"),
    ("pva://x,ca://x", "given twice"),
    ("ca://" + "n" * 61, "more than the 60 EPICS allows"),
])
def test_bad_channel_specs(spec, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_metadata_channels(spec)


def test_empty_spec_and_bad_queue_size():
    with pytest.raises(ConfigurationError, match="names no channel"):
        MetadataChannels(" , ", 10)
    with pytest.raises(ConfigurationError, match="too small"):
        MetadataChannels("pva://x", 0)


def test_dbd_directory_found_in_pvaccess_or_env_or_clear_error(tmp_path, monkeypatch):
    folder = find_dbd_directory()
    assert os.path.isfile(os.path.join(folder, "base.dbd"))
    with pytest.raises(ConfigurationError, match="base.dbd.*EPICS_DB_INCLUDE_PATH"):
        find_dbd_directory([str(tmp_path)])
    (tmp_path / "base.dbd").write_text("")
    monkeypatch.setenv("EPICS_DB_INCLUDE_PATH", str(tmp_path))
    assert find_dbd_directory() == str(tmp_path)


# ------------------------------------------------------ processor, in-process
T0 = 1_700_000_000
OWN = {"ColorMode": 0, "Other": 5}  # the frame's own attributes, kept


class _Published:
    def __init__(self):
        self.frames = []

    def updateOutputChannel(self, pv):
        self.frames.append(pv.copy())


def _frame(uid, t_ns):
    nt = new_ntndarray(np.zeros((2, 2), np.uint8), unique_id=uid, attributes={"Other": 5})
    nt.setLong("timeStamp.secondsPastEpoch", T0 + t_ns // 10**9)
    nt.setInt("timeStamp.nanoseconds", t_ns % 10**9)
    return nt


def _put(queue, value, t_ns):
    md = pva.PvObject(METADATA_TYPE)
    md["value"] = value
    md.setLong("timeStamp.secondsPastEpoch", T0 + t_ns // 10**9)
    md.setInt("timeStamp.nanoseconds", t_ns % 10**9)
    queue.put(md)


def _processor(names=("m0", "m1"), **args):
    p = MetadataAssociationProcessor(args)
    p.metadataQueueMap = {n: pva.PvObjectQueue(100) for n in names}
    p.dataPublisher = _Published()
    p.start()
    return p, p.metadataQueueMap, p.dataPublisher.frames


MS = 1_000_000


def test_exact_association_adds_attributes_with_time_and_source():
    p, q, out = _processor()
    for uid in (1, 2, 3):
        for k, name in enumerate(q):
            _put(q[name], metadata_value(uid, k), uid * 10 * MS)
    for uid in (1, 2, 3):
        p.process(_frame(uid, uid * 10 * MS))
    assert len(out) == 3
    for uid, frame in zip((1, 2, 3), out):
        attrs = attributes_of(frame)
        assert attrs == dict(OWN, m0=metadata_value(uid, 0), m1=metadata_value(uid, 1))
        m1 = [a for a in frame["attribute"] if a["name"] == "m1"][0]
        assert m1["timeStamp"]["secondsPastEpoch"] == T0 and m1["source"] == "m1"
        assert m1["timeStamp"]["nanoseconds"] == uid * 10 * MS and m1["sourceType"] == 2
    assert p.getStats()["nFramesComplete"] == 3 and p.getStats()["nMetadataAssociated"] == 6
    assert q["m0"].getCounters()["nAssociated"] == 3 and q["m0"].getCounters()["nDiscarded"] == 0


def test_closest_within_tolerance_stale_discarded_future_kept():
    p, q, out = _processor(names=("m",), timestampTolerance=0.0005)
    m = q["m"]
    _put(m, 1.0, 5 * MS)              # stale for a frame at 10 ms
    _put(m, 2.0, 10 * MS - MS // 3)   # within, but farther than the next
    _put(m, 3.0, 10 * MS + MS // 10)  # closest
    _put(m, 4.0, 12 * MS)             # outside: kept for the frame at 12 ms
    p.process(_frame(1, 10 * MS))
    assert attributes_of(out[-1])["m"] == 3.0
    assert m.getCounters()["nDiscarded"] == 2
    p.process(_frame(2, 12 * MS))
    assert attributes_of(out[-1])["m"] == 4.0
    assert m.getCounters()["nAssociated"] == 2 and p.getStats()["nMetadataBuffered"] == 0


def test_out_of_order_updates_and_timestamp_offset():
    p, q, out = _processor(names=("m",), metadataTimestampOffset=0.001)
    _put(q["m"], 2.0, 19 * MS)
    _put(q["m"], 1.0, 9 * MS)  # arrives late, sorted in before the other
    p.process(_frame(1, 10 * MS))
    p.process(_frame(2, 20 * MS))
    assert [attributes_of(f)["m"] for f in out] == [1.0, 2.0]


@pytest.mark.parametrize("mode", ["publish", "hold"])
def test_unmatched_frames_are_counted_and_published_or_held(mode):
    p, q, out = _processor(unmatchedFrames=mode)
    _put(q["m0"], 1.0, 10 * MS)  # m1 has nothing for this frame
    p.process(_frame(1, 10 * MS))
    stats = p.getStats()
    assert stats["nFramesIncomplete"] == 1 and stats["nFramesComplete"] == 0
    assert q["m1"].getCounters()["nUnmatched"] == 1 and q["m0"].getCounters()["nUnmatched"] == 0
    if mode == "publish":
        assert len(out) == 1 and attributes_of(out[0]) == dict(OWN, m0=1.0)
    else:
        assert out == [] and stats["nFramesHeld"] == 1


def test_value_types_and_replaced_attributes():
    p, q, out = _processor(names=("i", "s", "Other"))
    q["i"].put(pva.PvObject({"value": pva.INT, "timeStamp": pva.PvTimeStamp()},
                            {"value": 7, "timeStamp": pva.PvTimeStamp(T0, 0)}))
    q["s"].put(pva.PvObject({"value": pva.STRING, "timeStamp": pva.PvTimeStamp()},
                            {"value": "open", "timeStamp": pva.PvTimeStamp(T0, 0)}))
    _put(q["Other"], 9.5, 0)
    p.process(_frame(1, 0))
    assert attributes_of(out[0]) == {"ColorMode": 0, "i": 7, "s": "open", "Other": 9.5}  # replaced


def test_wait_for_late_metadata_then_stop_waiting_for_a_silent_channel():
    p, q, out = _processor(waitTime=0.5)
    _put(q["m1"], 1.0, 10 * MS)

    def late():
        time.sleep(0.05)
        _put(q["m0"], 0.5, 10 * MS)
    threading.Thread(target=late).start()
    p.process(_frame(1, 10 * MS))
    assert attributes_of(out[0]) == dict(OWN, m0=0.5, m1=1.0)
    assert 0.03 < p.getStats()["waitSeconds"] < 0.4
    t = time.monotonic()
    p.process(_frame(2, 20 * MS))  # nothing comes: waits once, up to waitTime
    assert 0.4 < time.monotonic() - t < 0.8
    t = time.monotonic()
    p.process(_frame(3, 30 * MS))  # the silent channels are not waited for again
    assert time.monotonic() - t < 0.1
    assert p.getStats()["nFramesIncomplete"] == 2


def test_configure_stop_and_bad_arguments():
    p, q, out = _processor(names=("m",))
    p.configure({"timestampTolerance": 0.01, "receiverQueueSize": 5})  # framework keys ignored
    _put(q["m"], 1.0, 15 * MS)
    p.process(_frame(1, 10 * MS))
    assert attributes_of(out[0])["m"] == 1.0
    with pytest.raises(ConfigurationError, match="unmatchedFrames"):
        p.configure({"unmatchedFrames": "drop"})
    assert p.mode == "publish" and p.tolerance == 0.01
    _put(q["m"], 2.0, 50 * MS)
    _put(q["m"], 3.0, 60 * MS)
    p.stop()  # what no frame took any more is discarded
    assert q["m"].getCounters()["nDiscarded"] == 2 and p.getStats()["nMetadataDiscarded"] == 2
    for bad, message in [({"timestampTolerance": -1}, ">= 0"), ({"waitTime": "x"}, "number"),
                         ({"bufferSize": 0}, "bufferSize")]:
        with pytest.raises(ConfigurationError, match=message):
            MetadataAssociationProcessor(bad)


def test_without_channels_frames_pass_through():
    p, _, out = _processor(names=())
    p.process(_frame(1, 0))
    assert len(out) == 1 and attributes_of(out[0]) == OWN


# ------------------------------------------------------------- bad input, CLI
def _cli(module, *argv):
    return subprocess.run([sys.executable, "-m", module, *map(str, argv)], capture_output=True,
                          text=True, errors="replace", cwd=REPO, timeout=30, env=dict(os.environ, PYTHONPATH=REPO))


@pytest.mark.parametrize("argv,message", [
    (["-mpv", "ftp://x"], "unknown protocol"),
    (["-mpv", "ca://a.b"], "not a valid CA record name"),
    (["-mpv", "ca://" + "n" * 61], "more than the 60"),
    (["-mpv", "pva://img"], "also the image channel"),
])
def test_sim_bad_metadata_pvs_exit_2(argv, message):
    result = _cli("pvaflow.cli.sim_server", "-cn", "img", "-nf", 1, "-std", 0, *argv)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("pvapy-ad-sim-server: error:") and message in lines[-1], result.stderr


@pytest.mark.parametrize("module,argv,message", [
    ("pvaflow.cli.consumer", ["-mc", "http://x"], "unknown protocol"),
    ("pvaflow.cli.collector", ["-mc", ","], "names no channel"),
    ("pvaflow.cli.consumer", ["-mc", "pva://x", "-pc", MDP, "-pa", '{"unmatchedFrames": 1}'],
     "unmatchedFrames must be"),
])
def test_stage_bad_metadata_options_exit_2(module, argv, message):
    result = _cli(module, "-ic", "x:*", *argv)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and message in lines[0], result.stderr


# ------------------------------------------------------------- system tests
def _names(prefix, n_pva=3, n_ca=3):
    """Metadata PV names and the -mpv/-mc spec: PVA, then CA as ca://name and bare names."""
    names = [f"{prefix}:p{k}" for k in range(n_pva)] + [f"{prefix}:c{k}" for k in range(n_ca)]
    spec = [f"pva://{n}" for n in names[:n_pva]]
    spec += [f"ca://{n}" if k % 2 == 0 else n for k, n in enumerate(names[n_pva:])]
    return names, ",".join(spec)


def _sim(procs, prefix, tmp_path, fps, runtime, start_delay, spec):
    summary = tmp_path / "sim.json"
    proc = procs.sim("-cn", f"{prefix}:img", "-nx", 16, "-ny", 16, "-fps", fps, "-rt", runtime,
                     "-std", start_delay, "-shd", 1, "-rp", 0, "--summary-file", summary,
                     *(("-mpv", spec) if spec else ()))
    # clients search only once the channels exist (a search too early backs off for seconds)
    wait_for(lambda: "target" in read(proc.out_path) or proc.poll() is not None, 15,
             message="simulator serving")
    assert proc.poll() is None, read(proc.err_path)
    return proc, summary


def _published(procs, sim, summary):
    rc, out, err = procs.wait(sim, 40)
    assert rc == 0, out + err
    return json.loads(read(summary))["published"]


class _Output:
    """Every update of a stage's output channel, through a pvaccess queue monitor."""

    def __init__(self, channel):
        self.queue = pva.PvObjectQueue()
        self.channel = pva.Channel(channel)
        self.channel.qMonitor(self.queue, "record[queueSize=5000]field(uniqueId,attribute,timeStamp)")

    def frames(self):
        self.channel.stopMonitor()
        frames = []
        while len(self.queue):
            pv = self.queue.get(0)
            if pv["uniqueId"] > 0:
                frames.append(pv)
        return frames


def _check_frames(frames, names):
    """Each frame carries every name, with the value published for it and its time stamp."""
    for pv in frames:
        uid, stamp = pv["uniqueId"], pv["timeStamp"]
        attrs = {a["name"]: a for a in pv["attribute"]}
        for k, name in enumerate(names):
            assert name in attrs, f"frame {uid} has no {name}"
            value = next(iter(attrs[name]["value"][0].values()))
            assert value == metadata_value(uid, k), f"frame {uid}: {name} = {value}"
            assert attrs[name]["timeStamp"] == stamp, f"frame {uid}: {name} time stamp"
    return sorted(pv["uniqueId"] for pv in frames)


def _check_channel_counts(metadata_stats, names, published, associated):
    """Every update the monitor received is rejected, associated, discarded or still queued."""
    assert [s["channel"] for s in metadata_stats.values()] == names
    for s in metadata_stats.values():
        assert s["nReceived"] == published + 1, s  # + the PV's value at connection
        assert s["nRejected"] == 0 and s["nOverruns"] == 0 and s["nUnmatched"] == 0, s
        assert s["nAssociated"] == associated, s
        assert s["nDiscarded"] == s["nReceived"] - s["nAssociated"] - s["nQueued"], s


def _connected(stats_lines):
    """True once the last stats line shows every metadata channel connected."""
    return bool(stats_lines) and all(s["connected"] for s in stats_lines[-1]["metadataStats"].values())


@pytest.mark.parametrize("fps,runtime", [(100, 3.0), (1000, 2.0)])
def test_sim_to_consumer_every_frame_carries_its_six_values(procs, prefix, tmp_path, fps, runtime):
    names, spec = _names(prefix)
    sim, summary = _sim(procs, prefix, tmp_path, fps, runtime, 4, spec)
    stats_file = tmp_path / "stats.jsonl"
    status = f"{prefix}:status"
    consumer = procs.consumer("-ic", f"{prefix}:img", "-oc", f"{prefix}:out", "-sc", status,
                              "-sqs", 1000, "-mc", spec, "--metadata-queue-size", 3000,
                              "-pc", MDP, "-pa", ARGS, "-rp", 0.5, "--stats-file", stats_file)
    wait_for(lambda: _connected(read_stats_lines(stats_file)), 10, message="metadata connected")
    output = _Output(f"{prefix}:out")
    published = _published(procs, sim, summary)
    assert published >= 0.9 * fps * runtime
    wait_for(lambda: read_stats_lines(stats_file)[-1]["processorStats"]["nProcessed"] == published,
             10, message="every frame processed")
    record = pva.Channel(status).get("field(metadataStats)")["metadataStats"]
    assert record["metadata4"]["channel"] == names[3] and record["metadata4"]["protocol"] == "ca"
    assert record["metadata1"]["nAssociated"] == published
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 20)
    assert rc == 0, err
    final = read_stats_lines(stats_file)[-1]
    user = final["userStats"]
    assert user["nFramesComplete"] == published and user["nFramesIncomplete"] == 0, out
    _check_channel_counts(final["metadataStats"], names, published, published)
    assert f"metadata ca://{names[3]}" in out and f"metadata ca://{names[4]}" in out
    assert _check_frames(output.frames(), names) == list(range(1, published + 1))


def test_four_distributed_consumers_associate_exactly(procs, prefix, tmp_path):
    names, spec = _names(prefix)
    # a long start delay: four spawned consumers must all be connected before the first frame
    sim, summary = _sim(procs, prefix, tmp_path, 400, 2.5, 10, spec)
    stats_file = tmp_path / "fleet.jsonl"
    fleet = procs.consumer("-ic", f"{prefix}:img", "-nc", 4, "-dg", "g", "-dt", "uniqueId", "-du", 1,
                           "-sqs", 500, "-oc", f"{prefix}:out:*", "-mc", spec, "-pc", MDP, "-pa", ARGS,
                           "-rt", 16, "-rp", 0.5, "--stats-file", stats_file)

    def all_connected():
        lines = read_stats_lines(stats_file)
        children = lines[-1]["children"] if lines else {}
        return len(children) == 4 and all(
            c and c["receiverStats"]["nReceived"] > 0 for c in children.values())
    wait_for(all_connected, 15, message="four consumers connected")
    outputs = [_Output(f"{prefix}:out:{i}") for i in range(1, 5)]
    published = _published(procs, sim, summary)
    rc, out, err = procs.wait(fleet, 30)
    assert rc == 0, out + err
    final = read_stats_lines(stats_file)[-1]
    assert final["final"] and final["total"]["processed"] == published, out
    ids = []
    for i, output in enumerate(outputs, start=1):
        child = final["children"][str(i)]
        processed = child["processorStats"]["nProcessed"]
        assert 0.2 * published <= processed <= 0.3 * published  # a quarter each
        assert child["userStats"]["nFramesComplete"] == processed
        _check_channel_counts(child["metadataStats"], names, published, processed)
        # the other consumers' three quarters of the metadata: discarded and counted
        assert child["userStats"]["nMetadataDiscarded"] == 6 * (published + 1 - processed)
        mine = _check_frames(output.frames(), names)
        assert len(mine) == processed
        ids += mine
    assert sorted(ids) == list(range(1, published + 1))


def test_collector_with_metadata_channels(procs, prefix, tmp_path):
    names, spec = _names(prefix, n_pva=1, n_ca=2)
    sim, summary = _sim(procs, prefix, tmp_path, 300, 2.0, 7, spec)
    procs.consumer("-ic", f"{prefix}:img", "-nc", 2, "-dg", "g", "-dt", "uniqueId", "-du", 1,
                   "-sqs", 300, "-oc", f"{prefix}:out:*", "-rt", 14)
    stats_file = tmp_path / "collector.jsonl"
    collector = procs.start("pvaflow.cli.collector", "-ic", f"{prefix}:out:*", "-pid", "1,2",
                            "-oc", f"{prefix}:merged", "-sqs", 300, "-mc", spec, "-pc", MDP,
                            "-pa", ARGS, "-rt", 13, "-rp", 0.5, "--stats-file", stats_file)

    def producers_connected():
        lines = read_stats_lines(stats_file)
        return lines and all(p["nReceived"] > 0 for p in lines[-1]["producerStats"].values())
    wait_for(producers_connected, 12, message="collector connected to both consumers")
    output = _Output(f"{prefix}:merged")
    published = _published(procs, sim, summary)
    rc, out, err = procs.wait(collector, 30)
    assert rc == 0, out + err
    final = read_stats_lines(stats_file)[-1]
    assert final["processorStats"]["nProcessed"] == published, out
    assert final["userStats"]["nFramesComplete"] == published
    _check_channel_counts(final["metadataStats"], names, published, published)
    assert "metadata pva://" in out
    assert _check_frames(output.frames(), names) == list(range(1, published + 1))


def test_full_metadata_queue_rejects_and_counts(procs, prefix, tmp_path):
    """A processor that never reads the queues: each holds its bound, the rest is rejected."""
    names, spec = _names(prefix, n_pva=1, n_ca=1)
    sim, summary = _sim(procs, prefix, tmp_path, 200, 1.0, 3, spec)
    stats_file = tmp_path / "stats.jsonl"
    consumer = procs.consumer("-ic", f"{prefix}:img", "-mc", spec, "--metadata-queue-size", 5,
                              "-rp", 0.5, "--stats-file", stats_file)
    wait_for(lambda: read_stats_lines(stats_file), 10, message="consumer running")
    published = _published(procs, sim, summary)
    time.sleep(0.5)
    consumer.send_signal(signal.SIGINT)
    rc, out, err = procs.wait(consumer, 20)
    assert rc == 0, err
    final = read_stats_lines(stats_file)[-1]
    for s in final["metadataStats"].values():
        assert s["nReceived"] == published + 1 and s["nQueued"] == 5 and s["maxLength"] == 5, s
        assert s["nRejected"] == published + 1 - 5, s
    assert "rejected" in out


# ------------------------------------------------------------ accumulation
BATCH_RECORDER = '''
import json, time
from pvaflow.hpc import UserDataProcessor

class BatchRecorder(UserDataProcessor):
    def start(self):
        self.log = []

    def process(self, pv):
        t = pv.getLong("timeStamp.secondsPastEpoch") + pv.getInt("timeStamp.nanoseconds") * 1e-9
        self.log.append((time.time(), pv.getInt("uniqueId"), t))

    def stop(self):
        with open(self.configDict["log"], "w") as f:
            json.dump(self.log, f)
'''


def _batches(log, gap=0.005):
    """Group (process time, id, frame time) records into batches processed back to back."""
    batches = []
    for entry in log:
        if batches and entry[0] - batches[-1][-1][0] < gap:
            batches[-1].append(entry)
        else:
            batches.append([entry])
    return [(len(b), b[0][0] - b[0][2]) for b in batches]  # size, wait of the oldest


def test_accumulation_by_count_or_subsecond_timeout(procs, prefix, tmp_path):
    """-ao K -at T: a batch goes when K objects are queued or the oldest waited T seconds."""
    recorder = tmp_path / "batch_recorder.py"
    recorder.write_text(BATCH_RECORDER)
    sim, summary = _sim(procs, prefix, tmp_path, 20, 3.0, 3, None)
    runs = {"timeout": (5, 0.12), "count": (4, 1.0)}
    consumers = {}
    for name, (k, t) in runs.items():
        consumers[name] = procs.consumer(
            "-ic", f"{prefix}:img", "-id", len(consumers) + 1, "-rqs", 0, "-ao", k, "-at", t,
            "-pf", recorder, "-pc", "BatchRecorder", "-pa", json.dumps({"log": str(tmp_path / name)}))
    published = _published(procs, sim, summary)
    time.sleep(1.5)  # longer than the largest T: every batch went while running
    for proc in consumers.values():
        proc.send_signal(signal.SIGINT)
        assert procs.wait(proc, 20)[0] == 0
    timeout_batches = _batches(json.loads(read(tmp_path / "timeout")))
    count_batches = _batches(json.loads(read(tmp_path / "count")))
    assert sum(n for n, _ in timeout_batches) == published == sum(n for n, _ in count_batches)
    # 20 fps, K=5, T=0.12 s: never 5 queued; each batch went after ~0.12 s (not a 1 s tick)
    for n, wait in timeout_batches:
        assert n < 5 and 0.11 <= wait <= 0.17, timeout_batches
    # K=4, T=1 s: batches of exactly 4 well before the timeout; only a remainder waits T
    for n, wait in count_batches[:-1]:
        assert n == 4 and wait < 0.3, count_batches
    n, wait = count_batches[-1]
    assert (n == 4 and wait < 0.3) or (n < 4 and 0.95 <= wait <= 1.1), count_batches


class _SlowRecorder:
    """Processes (records) one object in 0.2 s."""

    def __init__(self):
        self.done = []

    def process(self, item):
        time.sleep(0.2)
        self.done.append((item, time.monotonic()))


def test_accumulation_timeout_counts_from_when_the_object_was_queued():
    from pvaflow.hpc.consumer import Consumer
    from pvaflow.hpc.consumer_config import ConsumerConfig
    consumer = Consumer(ConsumerConfig("x:never", receiver_queue_size=0, accumulate_objects=3,
                                       accumulation_timeout=0.3))
    consumer.processor = recorder = _SlowRecorder()
    consumer._process_frame = recorder.process  # the consumer binds process() once
    consumer._has_timestamp = False
    consumer.state = "running"
    worker = threading.Thread(target=consumer._work, daemon=True)
    worker.start()
    try:
        for i in range(3):  # K objects: a batch at once, 0.6 s of processing
            consumer.queue.put(i)
        time.sleep(0.05)
        queued_at = time.monotonic()
        consumer.queue.put("late")  # queued during that batch
        wait_for(lambda: len(recorder.done) == 4, 5, message="all processed")
    finally:
        consumer.state = "stopping"
        consumer.queue.wake()
        worker.join(5)
    started = recorder.done[3][1] - 0.2 - queued_at  # when processing of "late" began
    # By the end of the batch (~0.55 s later) "late" had waited more than T = 0.3 s:
    # it is due at once, not 0.3 s after the batch.
    assert started < 0.3 + 0.25 + 0.1, f"'late' waited {started:.2f} s with T = 0.3 s"
