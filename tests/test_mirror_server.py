"""Tests of ``pvapy-mirror-server`` (pvaflow.cli.mirror_server and pvaflow.hpc.mirror).

System tests run the simulator and the mirror server as processes on
loopback under unique channel names; clients open monitors on a mirror only
once the mirror server reports an update from its source (the record then
has its final structure, and a p4p client does not back off searching).
"""

import json
import signal
import subprocess
import sys
import threading

import numpy as np
import pvaccess as pva
import pytest
from p4p.client.thread import Context

from conftest import REPO, read_stats_lines, wait_for
from pvaflow.cli.mirror_server import main
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.mirror import MirrorEntry, parse_channel_map
from pvaflow.hpc.ntndarray import image_view

PROG = "pvapy-mirror-server"
ERROR_PREFIX = f"{PROG}: error: "
MIRROR = "pvaflow.cli.mirror_server"
pytestmark = pytest.mark.timeout(15)


class Collector:
    """A pvaccess monitor keeping (uniqueId, pixels) of every published frame."""

    def __init__(self, channel, request="record[queueSize=200]field()"):
        self.frames = {}
        self._lock = threading.Lock()
        self._channel = pva.Channel(channel)
        self._channel.monitor(self._on_frame, request)

    def _on_frame(self, pv):
        unique_id = pv.getInt("uniqueId")
        if unique_id > 0:
            with self._lock:
                self.frames[unique_id] = np.array(image_view(pv))

    @property
    def ids(self):
        with self._lock:
            return sorted(self.frames)

    def stop(self):
        self._channel.stopMonitor()


def start_sim(procs, channel, tmp_path, *extra, fps=100, runtime=1.0, start_delay=2.5):
    summary = tmp_path / f"sim-{channel.rsplit(':', 1)[-1]}.json"
    proc = procs.sim("-cn", channel, "-fps", fps, "-rt", runtime, "-std", start_delay,
                     "-shd", 0.5, "-rp", 0, "--summary-file", summary, *extra)
    return proc, summary


def sim_published(procs, proc, summary):
    rc, out, err = procs.wait(proc, 12)
    assert rc == 0, f"simulator failed:\n{out}\n{err}"
    with open(summary) as handle:
        return json.load(handle)["published"]


def wait_mirrored(stats_file, *mirrors, timeout=6):
    """Wait until every mirror counts its source's first value (the record then exists)."""
    def ready():
        lines = read_stats_lines(stats_file)
        return lines and all(lines[-1]["channels"][m]["nMirrored"] > 0 for m in mirrors)
    wait_for(ready, timeout, message=f"mirror server to connect {mirrors}")


def stop_mirror(procs, proc, sig=signal.SIGINT):
    proc.send_signal(sig)
    rc, out, err = procs.wait(proc, 5)
    assert rc == 0, f"mirror server exit {rc}:\n{out}\n{err}"
    return out, err


# ------------------------------------------------------------------ system tests
def test_mirror_serves_the_source_frames(procs, prefix, tmp_path):
    """simulator -> mirror -> pvaccess client: same uniqueIds and pixels as the source."""
    stack = np.random.default_rng(7).integers(0, 60000, size=(6, 12, 10), dtype=np.uint16)
    np.save(tmp_path / "stack.npy", stack)
    source, mirror = f"{prefix}:image", f"{prefix}:mirror"
    stats_file = tmp_path / "stats.jsonl"
    sim, summary = start_sim(procs, source, tmp_path, "-if", tmp_path / "stack.npy",
                             fps=100, runtime=1.0)
    server = procs.start(MIRROR, "-cm", f"({mirror},{source},pva,100)", "-rp", 0.2,
                         "--stats-file", stats_file)
    wait_mirrored(stats_file, mirror)
    at_mirror, at_source = Collector(mirror), Collector(source)
    published = sim_published(procs, sim, summary)
    wait_for(lambda: len(at_mirror.ids) >= published, 3, message="all frames at the mirror")
    at_mirror.stop()
    at_source.stop()
    out, _ = stop_mirror(procs, server)

    assert published == 100
    assert at_mirror.ids == list(range(1, published + 1))
    assert at_source.ids == at_mirror.ids
    for unique_id, image in at_mirror.frames.items():
        np.testing.assert_array_equal(image, stack[(unique_id - 1) % len(stack)])
        np.testing.assert_array_equal(image, at_source.frames[unique_id])
    lines = read_stats_lines(stats_file)
    final = lines[-1]
    assert final["final"]
    # The mirror record exists while its source is up (the simulator has ended).
    assert any(s["channels"][mirror]["connected"] for s in lines)
    assert not final["channels"][mirror]["connected"]
    channel = final["channels"][mirror]
    assert channel["source"] == source and channel["queueSize"] == 100
    # The source's value at connection time, then every published frame.
    assert channel["nMirrored"] == published + 1 and channel["tapOverruns"] == 0
    # One channel: the server's counters are this channel's.
    assert channel["serverCounters"] == {"nReceived": published + 1, "nOverruns": 0}
    assert final["totals"]["nMirrored"] == published + 1
    final_text = out.split("FINAL")[1]
    assert (f"{mirror} <- {source} (pva, queue 100): mirrored {published + 1} (" in final_text
            and f"server counters: nReceived {published + 1} nOverruns 0" in final_text)


def test_two_channels_with_queue_size_and_stats(procs, prefix, tmp_path):
    """Two mirrors at once (one with a source queue); p4p clients; reports count updates."""
    src_a, src_b = f"{prefix}:a", f"{prefix}:b"
    mir_a, mir_b = f"{prefix}:ma", f"{prefix}:mb"
    stats_file = tmp_path / "stats.jsonl"
    sim_a, sum_a = start_sim(procs, src_a, tmp_path, "-nx", 16, "-ny", 8, fps=200, runtime=1.5)
    sim_b, sum_b = start_sim(procs, src_b, tmp_path, "-nx", 8, "-ny", 4, fps=50, runtime=1.5)
    server = procs.start(MIRROR, "-cm", f" ( {mir_a} , {src_a} , PVA , 50 ) ,({mir_b},{src_b})",
                         "-rp", 0.25, "--stats-file", stats_file)
    wait_mirrored(stats_file, mir_a, mir_b)
    seen = {mir_a: [], mir_b: []}
    ctx = Context("pva")
    try:
        subs = [ctx.monitor(name, lambda v, ids=ids: ids.append(int(v.uniqueId)),
                            request="record[queueSize=500]field(uniqueId)")
                for name, ids in seen.items()]
        published_a = sim_published(procs, sim_a, sum_a)
        published_b = sim_published(procs, sim_b, sum_b)
        wait_for(lambda: max(seen[mir_a], default=0) >= published_a
                 and max(seen[mir_b], default=0) >= published_b, 3,
                 message="last frames at both mirrors")
        for sub in subs:
            sub.close()
    finally:
        ctx.close()
    out, _ = stop_mirror(procs, server, signal.SIGTERM)

    assert [i for i in seen[mir_a] if i > 0] == list(range(1, published_a + 1))
    assert [i for i in seen[mir_b] if i > 0] == list(range(1, published_b + 1))
    lines = read_stats_lines(stats_file)
    assert len(lines) >= 8 and lines[-1]["final"] and not any(s["final"] for s in lines[:-1])
    final = lines[-1]
    a, b = final["channels"][mir_a], final["channels"][mir_b]
    assert (a["protocol"], a["queueSize"], b["protocol"], b["queueSize"]) == ("pva", 50, "pva", 0)
    assert a["nMirrored"] == published_a + 1 and b["nMirrored"] == published_b + 1
    assert a["tapOverruns"] == 0 and b["tapOverruns"] == 0
    assert final["totals"]["nMirrored"] == a["nMirrored"] + b["nMirrored"]
    assert final["totals"]["serverCounters"]["nOverruns"] == 0
    # Counts only grow; the periodic rates saw the streams.
    counts = [s["channels"][mir_a]["nMirrored"] for s in lines]
    assert counts == sorted(counts)
    assert max(s["channels"][mir_a]["periodMirroredRate"] for s in lines) > 100
    assert max(s["channels"][mir_b]["periodMirroredRate"] for s in lines) > 25
    assert a["mirroredRate"] > 0 and b["mirroredRate"] > 0
    assert sum(s["channels"][mir_a]["periodMirrored"] for s in lines) == a["nMirrored"]
    # The text report has a line per channel in every report.
    assert out.count(f"  {mir_a} <- {src_a} (pva, queue 50): mirrored") == len(lines)
    assert out.count(f"  {mir_b} <- {src_b} (pva, queue 0): mirrored") == len(lines)
    assert f"mirrored {a['nMirrored']} (" in out.split("FINAL")[1]


def test_runtime_ends_the_run_with_a_final_report(procs, prefix, tmp_path):
    stats_file = tmp_path / "stats.jsonl"
    server = procs.start(MIRROR, "-cm", f"({prefix}:m,{prefix}:nosource,ca,3)", "-rt", 1.0,
                         "-rp", 0.3, "--stats-file", stats_file, "-dc")
    rc, out, err = procs.wait(server, 8)
    assert rc == 0, f"{out}\n{err}"
    lines = read_stats_lines(stats_file)
    assert 3 <= len(lines) <= 5 and lines[-1]["final"]
    channel = lines[-1]["channels"][f"{prefix}:m"]
    assert channel["protocol"] == "ca" and channel["nMirrored"] == 0 and not channel["connected"]
    assert 1.0 <= lines[-1]["runtime"] < 3.0
    assert "(source not connected)" in out and "FINAL" in out


PLAIN_SOURCE = """
import sys, time
import pvaccess as pva

name, delay, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
server = pva.PvaServer(name, pva.PvObject({"x": pva.INT}, {"x": 0}))
time.sleep(delay)
for i in range(1, count + 1):
    server.update(name, pva.PvObject({"x": pva.INT}, {"x": i}))
    time.sleep(0.02)
time.sleep(0.5)
"""


def test_source_without_time_stamp_is_counted(procs, prefix, tmp_path):
    """A structure without timeStamp: the counting monitor takes the whole structure."""
    (tmp_path / "plain_source.py").write_text(PLAIN_SOURCE)
    source, mirror = f"{prefix}:plain", f"{prefix}:mplain"
    stats_file = tmp_path / "stats.jsonl"
    src = procs.start("plain_source", source, 2.5, 40)
    server = procs.start(MIRROR, "-cm", f"({mirror},{source})", "-rp", 0.2,
                         "--stats-file", stats_file)
    wait_mirrored(stats_file, mirror)
    values = []
    ctx = Context("pva")
    try:
        sub = ctx.monitor(mirror, lambda v: values.append(int(v.x)),
                          request="record[queueSize=100]")
        rc, out, err = procs.wait(src, 8)
        assert rc == 0, f"{out}\n{err}"
        sub.close()
    finally:
        ctx.close()
    stop_mirror(procs, server)
    assert values[-40:] == list(range(1, 41))
    assert read_stats_lines(stats_file)[-1]["channels"][mirror]["nMirrored"] == 41


def test_runtime_failure_exits_1(monkeypatch, capsys):
    def broken():
        raise pva.PvaException("cannot start the server")
    monkeypatch.setattr(pva, "PvaMirrorServer", broken)
    assert main(["-cm", "(pvaflowtest:m:y,pvaflowtest:s:y)"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [ERROR_PREFIX + "PvaException: cannot start the server"]


# -------------------------------------------------------------------- bad input
BAD_MAPS = [
    ("missing-close", "(a:m,a:s", "character 9: missing ')' at the end to close entry 1"),
    ("missing-open", "a:m,a:s)", "character 1: expected '(' to open entry 1"),
    ("missing-close-2", "(a:m,a:s),(b:m,b:s", "missing ')' at the end to close entry 2"),
    ("nested", "(a:m,a:s,(b:m,b:s)", "character 10: unexpected '(' inside entry 1"),
    ("protocol", "(a:m,a:s,tcp)", "character 10: entry 1 has protocol 'tcp'; it must be pva"),
    ("queue-text", "(a:m,a:s,pva,ten)", "character 14: entry 1 queue size 'ten' is not an"),
    ("queue-float", "(a:m,a:s,ca,1.5)", "entry 1 queue size '1.5' is not an integer"),
    ("queue-negative", "(a:m,a:s,pva,-1)", "entry 1 queue size '-1' must be >= 0"),
    ("monitors", "(a:m,a:s,pva,1,0)", "number of source monitors '0' must be >= 1"),
    ("empty", "", "the channel map is empty"),
    ("blank", "   ", "the channel map is empty"),
    ("empty-entry", "()", "entry 1 has 1 field, it needs at least a mirror and a source"),
    ("one-field", "(a:m)", "entry 1 has 1 field"),
    ("too-many", "(a,b,pva,1,1,x,y)", "entry 1 has 7 fields, at most 6"),
    ("empty-source", "(a:m, ,pva)", "character 6: entry 1 has an empty source channel name"),
    ("bad-name", "(a:m,a s)", "entry 1: invalid source channel name 'a s'"),
    ("self", "(a:m,a:m)", "entry 1 mirrors 'a:m' onto itself"),
    ("duplicate", "(a:m,a:s), ( a:m ,b:s)", "character 14: mirror channel 'a:m' of entry 2 is"
                                             " already defined by entry 1"),
    ("no-comma", "(a:m,a:s)(b:m,b:s)", "character 10: expected ',' or the end after entry 1"),
    ("trailing-comma", "(a:m,a:s),", "expected another entry after the ','"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in BAD_MAPS], ids=[c[0] for c in BAD_MAPS])
def test_bad_map_exits_2_with_one_line(text, expected, capsys):
    assert main(["-cm", text]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), captured.err
    assert expected in lines[0]
    assert "use the form (mirror,source[,pva|ca[,queueSize]])" in lines[0] or "empty" in lines[0]


@pytest.mark.parametrize("text", ["(a:m,a:s", "(a:m,a:s,udp)", "(a:m,a:s,pva,x)", "",
                                  "(a:m,a:s),(a:m,b:s)"])
def test_bad_map_process_exit_code(text):
    proc = subprocess.run([sys.executable, "-m", MIRROR, "-cm", text], capture_output=True,
                          text=True, errors="replace", cwd=REPO, timeout=10)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(ERROR_PREFIX)


@pytest.mark.parametrize("argv,expected", [
    ([], "the following arguments are required: -cm/--channel-map"),
    (["-cm", "(a:m,a:s)", "-rp", "often"], "argument -rp/--report-period"),
    (["-cm", "(a:m,a:s)", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_exit_2(argv, expected, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(ERROR_PREFIX) and expected in err


def test_unwritable_stats_file_exits_2(tmp_path, capsys):
    path = tmp_path / "missing-dir" / "stats.jsonl"
    assert main(["-cm", "(pvaflowtest:m:x,pvaflowtest:s:x)", "--stats-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(ERROR_PREFIX) and "cannot open --stats-file" in err


def test_version():
    proc = subprocess.run([sys.executable, "-m", MIRROR, "--version"], capture_output=True,
                          text=True, errors="replace", cwd=REPO, timeout=10)
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"{PROG} (pvaflow) ")


# ------------------------------------------------------------------- the parser
def test_parse_defaults_options_and_whitespace():
    entries = parse_channel_map(" (m:1,s:1) ,\t(m:2, s:2 ,CA) ,(m:3,s:3,pva,20),"
                                "(m:4,s:4,pva,5,2,_[pydistributor=updates:1;group:g])")
    assert entries == [
        MirrorEntry("m:1", "s:1"),
        MirrorEntry("m:2", "s:2", "ca"),
        MirrorEntry("m:3", "s:3", "pva", 20),
        MirrorEntry("m:4", "s:4", "pva", 5, 2, "_[pydistributor=updates:1;group:g]"),
    ]


def test_parse_errors_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="character 1"):
        parse_channel_map("m:1,s:1")
