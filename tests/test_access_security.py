"""EPICS access security on the records a consumer serves."""

import getpass
import os
import signal
import subprocess
import sys

import pytest
from p4p.client.thread import Context

from conftest import REPO, wait_for

ACF = """
UAG(OPERATORS) {%s}
ASG(DEFAULT) { RULE(1, READ) }
ASG(READONLY) { RULE(1, READ) }
ASG(CONTROL) {
    RULE(1, READ)
    RULE(1, WRITE) { UAG(OPERATORS) }
}
"""


def start(procs, prefix, tmp_path, operator):
    acf = tmp_path / "test.acf"
    acf.write_text(ACF % operator)
    sim = procs.sim("-cn", f"{prefix}:img", "-nx", 8, "-ny", 8, "-fps", 50, "-rt", 60, "-std", 0.2,
                    "-rp", 0)
    consumer = procs.consumer("-ic", f"{prefix}:img", "-oc", f"{prefix}:out", "-sc", f"{prefix}:st",
                              "-cc", f"{prefix}:ctl", "-rp", 0.5, "--access-security-file", acf,
                              "-ll", "info")
    return sim, consumer


def put_error(ctx, name, value):
    try:
        ctx.put(name, value, timeout=5)
        return None
    except Exception as exc:  # p4p raises RemoteError for a refused put
        return str(exc)


def wait_records(ctx, names):
    for name in names:
        wait_for(lambda n=name: _gettable(ctx, n), 15, message=f"record {name}")


def _gettable(ctx, name):
    try:
        ctx.get(name, timeout=0.5)
        return True
    except Exception:
        return False


def test_operator_may_control_nobody_may_write_status_or_output(procs, prefix, tmp_path):
    sim, consumer = start(procs, prefix, tmp_path, getpass.getuser())
    ctx = Context("pva")
    try:
        import time
        time.sleep(1.5)  # records exist before the first search (p4p backs off otherwise)
        wait_records(ctx, [f"{prefix}:st", f"{prefix}:ctl", f"{prefix}:out"])
        assert put_error(ctx, f"{prefix}:ctl", {"command": "get_stats", "sequence": 5}) is None
        wait_for(lambda: ctx.get(f"{prefix}:ctl").replySequence == 5, 5, message="reply")
        error = put_error(ctx, f"{prefix}:st", {"state": "hacked"})
        assert error and "not allowed" in error
        error = put_error(ctx, f"{prefix}:out", {"uniqueId": 1})
        assert error and "not allowed" in error
        assert ctx.get(f"{prefix}:st").state == "running"
        assert put_error(ctx, f"{prefix}:ctl", {"command": "stop"}) is None
        rc, out, err = procs.wait(consumer, 20)
        assert rc == 0 and "records protected by" in err
    finally:
        ctx.close()


def test_unauthorised_user_cannot_control(procs, prefix, tmp_path):
    sim, consumer = start(procs, prefix, tmp_path, "somebody_else")
    ctx = Context("pva")
    try:
        import time
        time.sleep(1.5)
        wait_records(ctx, [f"{prefix}:ctl"])
        error = put_error(ctx, f"{prefix}:ctl", {"command": "stop"})
        assert error and "not allowed" in error
        time.sleep(1.0)
        assert consumer.poll() is None  # the refused stop did nothing
    finally:
        ctx.close()
        consumer.send_signal(signal.SIGINT)
        assert procs.wait(consumer, 20)[0] == 0


def test_without_acf_the_log_says_unprotected(procs, prefix):
    consumer = procs.consumer("-ic", f"{prefix}:img", "-sc", f"{prefix}:st", "-rt", 0.5)
    rc, out, err = procs.wait(consumer, 20)
    assert rc == 0 and "WITHOUT access control" in err


@pytest.mark.parametrize("content,message", [
    (None, "does not exist"),
    ("ASG(DEFAULT) { RULE(1, READ) }\n", "defines no ASG(CONTROL)"),
    ("ASG(CONTROL) { RULE(1, READ\n}\nASG(READONLY) { RULE(1, READ) }\n", "is not valid"),
])
def test_bad_access_security_file(tmp_path, content, message):
    acf = tmp_path / "bad.acf"
    if content is not None:
        acf.write_text(content)
    result = subprocess.run([sys.executable, "-m", "pvaflow.cli.consumer", "-ic", "x", "-sc", "y",
                             "-rt", "1", "--access-security-file", str(acf)], capture_output=True,
                            text=True, errors="replace", cwd=REPO, timeout=30, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pvapy-hpc-consumer: error:") and message in lines[0], \
        result.stderr


def test_mirror_records_follow_the_default_group(procs, prefix, tmp_path):
    acf = tmp_path / "mirror.acf"
    acf.write_text("ASG(DEFAULT) { RULE(1, READ) }\n")
    procs.sim("-cn", f"{prefix}:img", "-nx", 8, "-ny", 8, "-fps", 20, "-rt", 30, "-std", 0.2, "-rp", 0)
    mirror = procs.start("pvaflow.cli.mirror_server", "-cm", f"({prefix}:m,{prefix}:img)", "-rt", 30,
                         "--access-security-file", acf, "-ll", "info")
    import time
    time.sleep(2.0)
    ctx = Context("pva")
    try:
        wait_records(ctx, [f"{prefix}:m"])
        error = put_error(ctx, f"{prefix}:m", {"uniqueId": 5})
        assert error and "not allowed" in error
    finally:
        ctx.close()
        mirror.send_signal(signal.SIGINT)
        rc, out, err = procs.wait(mirror, 20)
    assert rc == 0 and "records protected by" in err


def test_simulator_image_record_is_read_only_with_an_acf(procs, prefix, tmp_path):
    acf = tmp_path / "sim.acf"
    acf.write_text("ASG(DEFAULT) { RULE(1, READ) }\nASG(READONLY) { RULE(1, READ) }\n")
    sim = procs.sim("-cn", f"{prefix}:img", "-nx", 8, "-ny", 8, "-fps", 20, "-rt", 30, "-std", 0.2, "-rp", 0,
                    "--access-security-file", acf, "-ll", "info")
    import time
    time.sleep(2.0)
    ctx = Context("pva")
    try:
        wait_records(ctx, [f"{prefix}:img"])
        error = put_error(ctx, f"{prefix}:img", {"uniqueId": 5})
        assert error and "not allowed" in error
    finally:
        ctx.close()
        sim.send_signal(signal.SIGINT)
        rc, out, err = procs.wait(sim, 30)
    assert rc == 0 and "records protected by" in err
