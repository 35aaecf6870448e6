"""The bad-input catalogue: every tool, the control channel and malformed frames.

Start-up errors: exactly one line ``<tool>: error: ...`` on stderr and exit 2.
Runtime input (control requests, frames): an error status and a counter, and
nothing already received is lost.
"""

import json
import os
import signal
import time

import numpy as np
import pvaccess as pva
import pytest
from p4p.client.thread import Context

from conftest import REPO, read_stats_lines, wait_for
from pvaflow.cli import collector, consumer, mirror_server, sim_server
from pvaflow.hpc.ntndarray import new_ntndarray, set_codec

FAULTY = os.path.join(REPO, "tests", "processors", "faulty.py")
BROKEN = "def broken(:\n"

TOOLS = {
    "pvapy-hpc-consumer": consumer.main,
    "pvapy-hpc-collector": collector.main,
    "pvapy-ad-sim-server": sim_server.main,
    "pvapy-mirror-server": mirror_server.main,
}

CASES = [
    # consumer
    ("pvapy-hpc-consumer", ["-ic", "x", "-nc", "0"], "must be > 0"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-nc", "two"], "is not a valid int"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-cid", "1-"], "not an id or a span"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-cid", "range(5,1)"], "holds no ids"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-cid", "eval('1')"], "not an id or a span"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-pf", "{broken}", "-pc", "P"], "failed to load: SyntaxError"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-pc", "os.path"], "is a module, not a class"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-pc", "json.dumps"], "is a function, not a class"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-pf", FAULTY, "-pc", "NotAProcessor"], "not a processor"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-pa", '{"a": }'], "not valid JSON"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-pa", '"text"'], "must be a JSON object"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-rqs", "1.5"], "invalid int value"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-at", "-1"], "must be >= 0"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-siu", "-1"], "must be >= 0"),
    ("pvapy-hpc-consumer", ["-ic", "x y"], "invalid input channel name"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-sc", "st\"atus"], "invalid status channel name"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-cc", ""], "invalid control channel name"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-ll", "chatty"], "invalid choice"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-im", "udp"], "input mode 'udp' is not available"),
    ("pvapy-hpc-consumer", ["-ic", "x", "-du", "many"], "is not a valid int"),
    ("pvapy-hpc-consumer", ["-ic", "x", "--access-security-file", "/no/such.acf"], "does not exist"),
    # collector
    ("pvapy-hpc-collector", ["-ic", "p:*", "-pid", ""], "empty id list"),
    ("pvapy-hpc-collector", ["-ic", "p:*", "-pid", "3-1"], "runs backwards"),
    ("pvapy-hpc-collector", ["-ic", "p:*", "-pid", "1,1"], "repeats id"),
    ("pvapy-hpc-collector", ["-ic", "p:*", "--collector-timeout", "soon"], "is not a valid float"),
    ("pvapy-hpc-collector", ["-ic", "p:*", "-pa", "{"], "not valid JSON"),
    ("pvapy-hpc-collector", ["-ic", "p:*", "-pf", FAULTY, "-pc", "ConstructorRaises"], "could not be created"),
    ("pvapy-hpc-collector", ["-pid", "1"], "the following arguments are required: -ic"),
    # simulator
    ("pvapy-ad-sim-server", ["-nx", "0"], "must be > 0"),
    ("pvapy-ad-sim-server", ["-dt", "complex64"], "invalid choice"),
    ("pvapy-ad-sim-server", ["-if", "/no/such/frames.npy"], "does not exist"),
    ("pvapy-ad-sim-server", ["-mn", "5", "-mx", "1"], "greater than maximum"),
    ("pvapy-ad-sim-server", ["-fps", "fast"], "is not a valid float"),
    ("pvapy-ad-sim-server", ["-cm", "7"], "invalid choice"),
    ("pvapy-ad-sim-server", ["-cn", "bad name"], "invalid channel (-cn) name"),
    ("pvapy-ad-sim-server", ["--frobnicate"], "unrecognized arguments"),
    # mirror server
    ("pvapy-mirror-server", ["-cm", "(a,b"], "missing ')'"),
    ("pvapy-mirror-server", ["-cm", "(a,b,http)"], "protocol"),
    ("pvapy-mirror-server", ["-cm", "(a,b,pva,many)"], "queue"),
    ("pvapy-mirror-server", ["-cm", ""], "empty"),
    ("pvapy-mirror-server", ["-cm", "(a,b),(a,c)"], "already defined by entry 1"),
    ("pvapy-mirror-server", [], "the following arguments are required"),
]


@pytest.mark.parametrize("tool,argv,message", CASES, ids=[f"{t[6:]}:{m}" for t, _, m in CASES])
def test_start_up_errors(tool, argv, message, tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text(BROKEN)
    argv = [a.replace("{broken}", str(broken)) for a in argv]
    if tool == "pvapy-ad-sim-server":
        argv = ["-rt", "0.1", "-std", "0", "-shd", "0"] + argv
    code = TOOLS[tool](argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{tool}: error:") and message in lines[0], lines[0]


def test_catalogue_size():
    assert len(CASES) + len(CONTROL_CASES) + len(FRAME_CASES) >= 40


# control channel ------------------------------------------------------------------------------
CONTROL_CASES = [
    ({"command": "reboot"}, "unknown command"),
    ({"command": ""}, "no command"),
    ({"args": '{"x": 1}'}, "no command"),
    ({"command": "configure"}, "needs args"),
    ({"command": "configure", "args": "{x: 1}"}, "not valid JSON"),
    ({"command": "configure", "args": "[1, 2]"}, "must be a JSON object"),
    ({"command": "configure", "args": "x" * 70000}, "args too long"),
    ({"command": "configure", "args": '{"receiverQueueSize": "big"}'}, "configure failed"),
    ({"command": "configure", "args": '{"objectIdOffset": -2}'}, "configure failed"),
]

# frames ---------------------------------------------------------------------------------------


def _inconsistent_dims():
    nt = new_ntndarray(np.zeros((4, 4), np.uint8))
    nt["dimension"] = [{"size": 5}, {"size": 5}]
    return nt


def _unknown_codec():
    nt = new_ntndarray(np.zeros((4, 4), np.uint8))
    set_codec(nt, "zstd-made-up", np.uint8, 16)
    return nt


def _colour_without_three():
    nt = new_ntndarray(np.zeros((4, 4), np.uint8))
    nt["dimension"] = [{"size": 2}, {"size": 2}, {"size": 4}]  # 3-D, but the ColorMode says mono
    return nt


FRAME_CASES = [
    ("inconsistent dimensions", _inconsistent_dims),
    ("unknown codec", _unknown_codec),
    ("three dimensions without a colour mode", _colour_without_three),
]


def test_control_and_frame_errors_are_counted_and_nothing_is_lost(procs, prefix, tmp_path):
    """One consumer running the rotation example gets good frames, bad frames (counted as
    errors) and bad control requests (error replies); every good frame is processed."""
    channel, stats = f"{prefix}:img", tmp_path / "stats.jsonl"
    server = pva.PvaServer()
    good = new_ntndarray(np.arange(12, dtype=np.uint16).reshape(3, 4))
    server.addRecord(channel, good.copy())
    proc = procs.consumer("-ic", channel, "-oc", f"{prefix}:out", "-cc", f"{prefix}:ctl", "-rqs", 100,
                          "-pf", os.path.join(REPO, "examples", "rotation_processor.py"),
                          "-pc", "RotationProcessor", "-rp", 0.3, "--stats-file", stats)
    ctx = Context("pva")
    try:
        wait_for(lambda: any(s["receiverStats"]["nReceived"] for s in read_stats_lines(stats)), 15,
                 message="consumer connected")
        uid, bad_frames = 0, 0
        for round_ in range(3):
            for _, make in FRAME_CASES:
                uid += 1
                good.setInt("uniqueId", uid)
                server.update(channel, good)
                bad = make()
                uid += 1
                bad.setInt("uniqueId", uid)
                server.update(channel, bad)
                bad_frames += 1
                time.sleep(0.01)
        for sequence, (request, message) in enumerate(CONTROL_CASES, start=100):
            ctx.put(f"{prefix}:ctl", dict(request, sequence=sequence))
            reply = wait_for(lambda: (lambda v: v if v.replySequence == sequence else None)(
                ctx.get(f"{prefix}:ctl")), 5, message=f"reply {sequence}")
            assert reply.status == "error" and message in reply.statusMessage, (request, reply.statusMessage)
        assert reply.nErrors == len(CONTROL_CASES)
        time.sleep(0.5)
    finally:
        ctx.close()
        proc.send_signal(signal.SIGINT)
        rc, out, err = procs.wait(proc, 20)
        server.stop()
    assert rc == 0, err
    final = read_stats_lines(stats)[-1]
    p, r = final["processorStats"], final["receiverStats"]
    assert p["nErrors"] == bad_frames
    assert p["nProcessed"] == uid - bad_frames
    assert r["nMissed"] == 0 and r["nRejected"] == 0
    assert "FrameFormatError" in p["lastError"]
    assert json.loads(json.dumps(final))  # the stats file stays valid JSON
