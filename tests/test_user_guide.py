"""The user guide cannot drift from the code.

* Every ``sh`` block of streamingFramework.md is marked, on the line before
  its fence, ``<!-- test: run [key=value ...] -->`` or
  ``<!-- test: illustration: why -->``; run blocks are executed at small
  scale (unique channel names, short runtimes, low rates) and every command
  must exit 0.
* Every flag given to a tool in any block is accepted by that tool.
* Every processor class the guide names can be loaded.

Run-block keys: ``runtime=S`` (consumers, collectors, mirrors; default 6),
``timeout=S`` (for the whole block; default 60), ``asis`` (no runtime or rate
changes, only channel names).
"""

import functools
import os
import re
import shlex
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO
from pvaflow.hpc.loader import load_processor_class

GUIDE = os.path.join(REPO, "streamingFramework.md")
BIN = os.path.dirname(sys.executable)
MODULES = {
    "pvapy-hpc-consumer": "pvaflow.cli.consumer",
    "pvapy-hpc-collector": "pvaflow.cli.collector",
    "pvapy-ad-sim-server": "pvaflow.cli.sim_server",
    "pvapy-mirror-server": "pvaflow.cli.mirror_server",
    "pvapy-hpc-monitor": "pvaflow.cli.monitor",
    "pvapy-hpc-control": "pvaflow.cli.control",
    "pvapy-hpc-workflow": "pvaflow.cli.workflow",
    "pvapy-hpc-report": "pvaflow.cli.report",
}
CHANNEL_PREFIXES = ("demo:", "det:", "mirror:", "pvapy:", "secret:", "clear:", "roi:", "hot:",
                    "rotated:", "meta:", "sim:")
MARK = re.compile(r"<!--\s*test:\s*(run|illustration)\b:?\s*(.*?)\s*-->")


def blocks():
    """(line number, kind, options, commands) for every sh block of the guide."""
    lines = open(GUIDE).read().splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].strip() in ("```sh", "```bash", "```shell"):
            start = i
            mark = MARK.search(lines[i - 1]) if i else None
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            kind, options = (mark.group(1), mark.group(2)) if mark else (None, "")
            found.append((start + 1, kind, options, commands_of(body)))
        i += 1
    return found


def commands_of(body):
    """Commands of a block: backslash continuations joined, and lines joined while a
    quoted argument (a JSON object, say) is still open."""
    text = "\n".join(line for line in body if not line.lstrip().startswith("#"))
    text = text.replace("\\\n", " ")
    commands, pending = [], ""
    for line in text.splitlines():
        pending = f"{pending} {line.strip()}" if pending else line.strip()
        try:
            shlex.split(pending)
        except ValueError:
            continue
        if pending:
            commands.append(pending)
        pending = ""
    assert not pending, f"unterminated quote in: {pending}"
    return commands


BLOCKS = blocks()
RUN = [b for b in BLOCKS if b[1] == "run"]
ILLUSTRATIONS = [b for b in BLOCKS if b[1] == "illustration"]


def test_every_shell_block_is_marked():
    unmarked = [line for line, kind, _, _ in BLOCKS if kind is None]
    assert not unmarked, f"sh blocks without a '<!-- test: ... -->' mark at lines {unmarked}"
    print("illustration-only blocks:", [(line, why) for line, _, why, _ in ILLUSTRATIONS])


@functools.lru_cache(maxsize=None)
def accepted_flags(tool, subcommand=None):
    argv = [sys.executable, "-m", MODULES[tool]] + ([subcommand] if subcommand else []) + ["--help"]
    result = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                            cwd=REPO, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", result.stdout))


def all_commands():
    for line, _, _, commands in BLOCKS:
        for command in commands:
            words = shlex.split(command.rstrip("&").strip())
            if words and words[0] in MODULES:
                yield line, words


@pytest.mark.parametrize("line,words", list(all_commands()), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_flags_in_the_guide_are_accepted(line, words):
    tool = words[0]
    known = accepted_flags(tool)
    if tool == "pvapy-hpc-workflow" and len(words) > 1 and not words[1].startswith("-"):
        known = known | accepted_flags(tool, words[1])  # flags of the subcommand
    flags = [w.split("=")[0] for w in words[1:] if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", w)]
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"line {line}: {tool} does not accept {unknown}"


def class_references():
    text = open(GUIDE).read()
    refs = set(re.findall(r"\b(pvaflow\.(?:processors|hpc)(?:\.\w+)+\.[A-Z]\w+)", text))
    for _, words in all_commands():
        if "-pf" in words and "-pc" in words:
            refs.add((words[words.index("-pf") + 1], words[words.index("-pc") + 1]))
    return sorted(refs, key=str)


@pytest.mark.parametrize("ref", class_references(), ids=str)
def test_named_processor_classes_exist(ref):
    if isinstance(ref, tuple):
        load_processor_class(os.path.join(REPO, ref[0]), ref[1])
    else:
        load_processor_class(None, ref)


def _set(words, flag, value, only_if_present=False):
    if flag in words:
        words[words.index(flag) + 1] = str(value)
    elif not only_if_present:
        words += [flag, str(value)]


def _cap(words, flag, limit):
    if flag in words:
        i = words.index(flag) + 1
        words[i] = f"{min(float(words[i]), limit):g}"


def small_scale(words, options, prefix, tmp):
    words = [_rename(w, prefix) for w in words]
    tool = words[0]
    words = [sys.executable, "-m", MODULES[tool]] + words[1:]
    if "asis" in options:
        return words
    runtime = float(options.get("runtime", 6))
    if tool == "pvapy-ad-sim-server":
        _set(words, "-rt", 1.5)
        _set(words, "-std", 2)
        _set(words, "-shd", 1)
        _cap(words, "-fps", 300)
        _cap(words, "-nx", 64)
        _cap(words, "-ny", 64)
    elif tool in ("pvapy-hpc-consumer", "pvapy-hpc-collector", "pvapy-mirror-server"):
        _set(words, "-rt", runtime)
        _cap(words, "-rp", 2)
    return words


def _rename(word, prefix):
    for p in CHANNEL_PREFIXES:
        word = word.replace(p, f"{prefix}:{p}")
    return word


def _workdir(tmp_path):
    """Run where relative example paths resolve and written files land in tmp_path."""
    for name in ("examples", "tests"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("line,kind,options,commands", RUN, ids=[f"line{b[0]}" for b in RUN])
def test_run_blocks_work_at_small_scale(line, kind, options, commands, tmp_path):
    opts = dict(o.split("=", 1) if "=" in o else (o, True) for o in options.split())
    prefix = f"guide{uuid.uuid4().hex[:8]}"
    cwd = _workdir(tmp_path)
    env = dict(os.environ, PYTHONPATH=REPO, PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    procs = []
    try:
        for command in commands:
            words = shlex.split(command.rstrip("&").strip())
            assert words[0] in MODULES, f"line {line}: '{words[0]}' is not a pvaflow tool"
            argv = small_scale(words, opts, prefix, tmp_path)
            log = open(tmp_path / f"cmd{len(procs)}.log", "w+", errors="replace")
            procs.append((command, subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                                    stderr=subprocess.STDOUT), log))
            time.sleep(0.5)
        deadline = time.monotonic() + float(opts.get("timeout", 60))
        for command, proc, log in procs:
            rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            log.seek(0)
            assert rc == 0, f"line {line}: '{command}' exited {rc}:\n{log.read()[-3000:]}"
    finally:
        for _, proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
