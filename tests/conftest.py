"""Shared fixtures: unique channel names, child processes that are always reaped."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unique_prefix(tag="t"):
    """A channel prefix no other test (or concurrent run) uses."""
    return f"pvaflowtest:{tag}:{uuid.uuid4().hex[:10]}"


@pytest.fixture
def prefix(request):
    return unique_prefix(request.node.name.split("[")[0][-20:])


class Procs:
    """Starts tool processes and kills exactly those at the end of the test."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.started = []

    def start(self, module, *args, env=None, name=None):
        """Run ``python -m module args`` with stdout/stderr captured to files."""
        name = name or f"{module.rsplit('.', 1)[-1]}-{len(self.started)}"
        out = open(self.tmp_path / f"{name}.out", "w+")
        err = open(self.tmp_path / f"{name}.err", "w+")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
        if env:
            full_env.update(env)
        proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)],
                                stdout=out, stderr=err, env=full_env, cwd=str(self.tmp_path))
        proc.out_path, proc.err_path = out.name, err.name
        proc.files = (out, err)
        self.started.append(proc)
        return proc

    def consumer(self, *args, **kw):
        return self.start("pvaflow.cli.consumer", *args, **kw)

    def sim(self, *args, **kw):
        return self.start("pvaflow.cli.sim_server", *args, **kw)

    @staticmethod
    def wait(proc, timeout):
        """Wait for exit; return (rc, stdout, stderr)."""
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"process {proc.args} did not exit within {timeout} s:\n"
                                 + read(proc.out_path)[-3000:] + read(proc.err_path)[-3000:])
        return rc, read(proc.out_path), read(proc.err_path)

    def cleanup(self):
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in proc.files:
                f.close()


def read(path):
    # errors="replace": libca prints its own exception reports, whose context
    # text is not always valid UTF-8
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def wait_for(predicate, timeout, interval=0.05, message="condition"):
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def read_stats_lines(path):
    """Parse a --stats-file (one JSON object per line)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.cleanup()


def run_on_terminal(args, env, timeout=30):
    """Run ``args`` with stdout on a pseudo-terminal; return (exit code, what it printed)."""
    import pty
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=slave, stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    rc = proc.wait(timeout=timeout)
    os.close(master)
    return rc, b"".join(chunks).decode()
