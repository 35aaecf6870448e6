"""Tool processes of the benchmark: ``Proc`` (start, signal, reap with
``os.wait4``, kill the tree, CPU of the tree), waiting for a file or a moment,
run directories and the count files the counting processor writes."""

import json
import os
import signal
import subprocess
import time
import uuid

from harness_settings import REPO


# -------------------------------------------------------------------------- processes
def child_env():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _default_sigint():
    """In the child before exec: SIGINT back to its default action.

    Runs are stopped with SIGINT. Started in the background (``cmd &``,
    ``nohup``), the harness inherits SIGINT ignored and its children would
    too; Python then installs no KeyboardInterrupt handler, and a tool that
    relies on it (pvapy's consumer) never stops and is killed without
    writing its counts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Proc:
    """One tool process started by the harness; always reaped (and killed if needed)."""

    def __init__(self, args, log_path):
        self.args = [str(a) for a in args]
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._log.write((" ".join(self.args) + "\n").encode())
        self._log.flush()
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=child_env(), cwd=REPO,
                                      preexec_fn=_default_sigint)
        self.pid = self.popen.pid
        self.started = time.monotonic()
        self.returncode = None
        self.rusage = None

    def _reap(self, block=False):
        if self.returncode is not None:
            return True
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.returncode = self.popen.returncode if self.popen.returncode is not None else -1
            return True
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.returncode
        self.rusage = usage
        return True

    def alive(self):
        return not self._reap()

    def wait(self, timeout):
        """Wait for the exit; True when it exited within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while not self._reap():
            if time.monotonic() >= end:
                return False
            time.sleep(0.02)
        return True

    def send(self, signum):
        if self.alive():
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def tree_cpu(self):
        """CPU seconds (user + system) of the process and its descendants now, or None.

        Each live process counts its own time plus that of the children it
        has reaped, so a child exiting between two samples is not lost."""
        import psutil  # pylint: disable=import-outside-toplevel
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system + times.children_user + times.children_system
        return total

    def tree_cpu_precise(self):
        """On-CPU seconds of the live threads of the tree, in nanoseconds resolution
        (/proc/PID/task/TID/schedstat), or None where that is not available.

        Threads that end between two samples take their time with them, so
        this is for windows in which the tree's threads live throughout."""
        import psutil  # pylint: disable=import-outside-toplevel
        try:
            root = psutil.Process(self.pid)
            pids = [root.pid] + [p.pid for p in root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None
        total = 0
        for pid in pids:
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                        total += int(handle.read().split()[0])
                except (OSError, ValueError, IndexError):
                    if pid == root.pid:
                        return None
        return total / 1e9 if total else None

    def life_cpu(self):
        """CPU seconds of the whole life (with reaped descendants), after the exit."""
        if self.rusage is None:
            return None
        return self.rusage.ru_utime + self.rusage.ru_stime

    def kill_tree(self):
        """SIGKILL this process and its descendants (only what this harness started)."""
        import psutil  # pylint: disable=import-outside-toplevel
        try:
            descendants = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in descendants:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self._reap(block=True)

    def close(self):
        if self.alive():
            self.kill_tree()
        try:
            self._log.close()
        except OSError:
            pass

    def log_tail(self, chars=1500):
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - chars))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""


def sleep_until(deadline, procs=()):
    """Sleep until ``deadline`` (monotonic); False if one of ``procs`` exits first."""
    while True:
        now = time.monotonic()
        if now >= deadline:
            return True
        for proc in procs:
            if not proc.alive():
                return False
        time.sleep(min(0.05, deadline - now))


def wait_for_file(path, deadline, procs=()):
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        if any(not proc.alive() for proc in procs) and not os.path.exists(path):
            return False
        time.sleep(0.05)
    return True


def load_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def read_counts(out_dir):
    """The JSON files written by the counting processor (one per instance)."""
    records = []
    if not os.path.isdir(out_dir):
        return records
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("count-") and name.endswith(".json"):
            data = load_json(os.path.join(out_dir, name))
            if data is not None:
                records.append(data)
    return records


def new_run_dir(workdir, tag):
    run_id = uuid.uuid4().hex[:10]
    run_dir = os.path.join(workdir, f"{tag}-{run_id}")
    os.makedirs(os.path.join(run_dir, "counts"), exist_ok=True)
    return run_id, run_dir
