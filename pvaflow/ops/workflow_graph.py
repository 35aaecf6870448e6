"""Wiring the stages of a workflow: channels, upstream stages, commands, the graph text.

Channel names default to ``<prefix>:<stage>:...`` and may use ``{prefix}``.
An input is the name of a stage (its output, given a default name if it has
none) or a channel, which must be some stage's output or be listed under
``external``. A consumer stage with several ids reading another such stage
reads the output with its own id (both must have the same ids); a collector
reading consumer stages gets their output pattern and their ids as
producers.
"""

import os
import re
import sys

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.naming import validate_channel

from . import workflow_args
from .workflow_spec import Checker, SpecError

PROCESSING = ("consumer", "writer", "collector")


def compact_ids(ids):
    """``[1, 2, 3, 5]`` as ``1-3,5`` (the id-list syntax of the tools)."""
    parts, start = [], None
    for index, value in enumerate(ids):
        if start is None:
            start = value
        following = ids[index + 1] if index + 1 < len(ids) else None
        if following != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ",".join(parts)


def _expand(pattern, ids):
    return [pattern.replace("*", str(i)) for i in ids] if "*" in pattern else [pattern]


def _external_match(flow, channel):
    for item in flow.external:
        regex = "^" + re.escape(item).replace(r"\*", r"[^:]+") + "$"
        if re.match(regex, channel):
            return True
    return False


def _defaults(flow, check):
    """Output, status and control patterns of every stage."""
    prefix = {"prefix": flow.prefix}
    flow.external = [workflow_args.substitute(e, prefix) for e in flow.external]
    for stage in flow.stages:
        what = f"stage '{stage.name}'"
        raw = stage.raw
        for key in ("output", "status", "control"):
            value = raw.get(key)
            if isinstance(value, str):
                value = workflow_args.substitute(value, prefix)
                try:
                    validate_channel(value.replace("*", "1"), f"{key} channel")
                except ConfigurationError as exc:
                    check.add(raw.line_of(key), f"{what}: {exc}")
                    continue
                if len(stage.ids) > 1 and "*" not in value:
                    check.add(raw.line_of(key), f"{what}: {key} '{value}' needs a '*' (the id):"
                                                f" the stage has {len(stage.ids)} ids")
                if stage.kind in ("simulator", "mirror") and "*" in value:
                    check.add(raw.line_of(key), f"{what}: {key} of a {stage.kind} has no id; "
                                                "remove the '*'")
                setattr(stage, key, value)
        base = f"{flow.prefix}:{stage.name}"
        if stage.kind == "simulator" and stage.output is None:
            stage.output = f"{base}:image"
        elif stage.kind == "mirror" and stage.output is None:
            stage.output = f"{base}:mirror"
        if stage.kind in PROCESSING:
            star = ":*" if stage.kind != "collector" else ""
            stage.status = stage.status or f"{base}{star}:status"
            stage.control = stage.control or f"{base}{star}:control"


def _default_output(flow, stage):
    if stage.output is None:
        star = ":*" if stage.kind in ("consumer", "writer") else ""
        stage.output = f"{flow.prefix}:{stage.name}{star}:output"
    return stage.output


def _producers(flow):
    """Map every concrete output channel to its stage (outputs named so far)."""
    found = {}
    for other in flow.stages:
        if other.output:
            for channel in _expand(other.output, other.ids or [1]):
                found.setdefault(channel, other)
    return found


def _resolve_input(flow, stage, check):
    what, raw = f"stage '{stage.name}'", stage.raw
    value, line = raw.get("input"), raw.line_of("input")
    names = value if isinstance(value, list) else [value]
    if not names or any(not isinstance(n, str) for n in names):
        return
    names = [workflow_args.substitute(n, {"prefix": flow.prefix}) for n in names]
    referenced = [flow.stage(n) for n in names]
    if all(referenced):
        if stage.name in names:
            check.add(line, f"{what}: a stage cannot read its own output")
            return
        _wire_stages(flow, stage, referenced, check, line)
        return
    if isinstance(value, list):
        check.add(line, f"{what}: a list input must name stages; unknown: "
                        + ", ".join(n for n, r in zip(names, referenced) if not r))
        return
    _wire_channel(flow, stage, names[0], check, line)


def _wire_stages(flow, stage, upstream, check, line):
    what = f"stage '{stage.name}'"
    for other in upstream:
        if other.kind == "writer" and other.output is None:
            check.add(line, f"{what}: writer stage '{other.name}' has no output to read")
            return
    patterns = {_default_output(flow, other) for other in upstream}
    stage.upstream = [other.name for other in upstream]
    if stage.kind == "collector":
        if len(patterns) > 1:
            check.add(line, f"{what}: the stages {', '.join(stage.upstream)} publish on different"
                            " patterns; give them one 'output' pattern with '*' to collect them")
            return
        ids = [i for other in upstream for i in (other.ids or [1])]
        if len(set(ids)) != len(ids):
            check.add(line, f"{what}: the producer stages share ids; give them distinct ids")
            return
        stage.input_channel, stage.producer_ids = patterns.pop(), ids
        return
    if len(upstream) > 1:
        check.add(line, f"{what}: only a collector reads several stages")
        return
    other, pattern = upstream[0], patterns.pop()
    if "*" in pattern and len(other.ids) > 1:
        if stage.kind == "mirror" or stage.ids != other.ids:
            check.add(line, f"{what}: '{other.name}' has ids {compact_ids(other.ids)}, one output"
                            " each; read it with a collector or give this stage the same ids")
            return
        stage.input_channel = pattern
    else:
        stage.input_channel = _expand(pattern, other.ids or [1])[0]


def _wire_channel(flow, stage, channel, check, line):
    what = f"stage '{stage.name}'"
    try:
        validate_channel(channel.replace("*", "1"), "input channel")
    except ConfigurationError as exc:
        check.add(line, f"{what}: {exc}")
        return
    ids = stage.ids or [1]
    if stage.kind == "collector":
        ids = stage.producer_ids or []
        if "*" in channel and not ids:
            check.add(line, f"{what}: give 'producer_ids' for the pattern '{channel}'")
            return
    producers = _producers(flow)
    upstream = []
    for concrete in _expand(channel, ids):
        if concrete in producers:
            upstream.append(producers[concrete].name)
        elif not _external_match(flow, concrete):
            check.add(line, f"{what}: input '{concrete}' is neither a stage name, the output of"
                            " a stage, nor listed under 'external'")
            return
    stage.upstream = list(dict.fromkeys(upstream))
    if stage.name in stage.upstream:
        check.add(line, f"{what}: a stage cannot read its own output")
    stage.input_channel = channel


def topological(flow, check):
    """Stages, every one after its upstream stages; a cycle is a problem."""
    order, state = [], {}

    def visit(stage, path):
        """Place ``stage`` after its upstream stages."""
        if state.get(stage.name) == "done":
            return
        if state.get(stage.name) == "visiting":
            check.add(stage.line, "stages read each other in a circle: "
                                  + " -> ".join(path + [stage.name]))
            return
        state[stage.name] = "visiting"
        for name in stage.upstream:
            visit(flow.stage(name), path + [stage.name])
        state[stage.name] = "done"
        order.append(stage)

    for stage in flow.stages:
        visit(stage, [])
    return order


def _stage_argv(flow, stage, run_dir, check, base_dir):
    """The flags the workflow sets (channels, ids, processor, distributor, files)."""
    raw = stage.raw
    stats = os.path.join(run_dir, f"{stage.name}.stats.jsonl")
    rp = f"{stage.report_period:g}"
    if stage.kind == "simulator":
        argv = ["-cn", stage.output, "--summary-file",
                os.path.join(run_dir, f"{stage.name}.summary.json")]
    elif stage.kind == "mirror":
        entry = f"({stage.output},{stage.input_channel},{raw.get('protocol', 'pva')}," \
                f"{raw.get('queue_size', 0)})"
        argv = ["-cm", entry, "-rp", rp, "--stats-file", stats]
    else:
        argv = ["-ic", stage.input_channel or "", "-sc", stage.status, "-cc", stage.control,
                "-rp", rp, "--stats-file", stats]
        if stage.output:
            argv += ["-oc", stage.output]
        if stage.kind == "collector":
            argv += ["-id", str(stage.ids[0]), "-pid", compact_ids(stage.producer_ids or [1])]
        elif len(stage.ids) > 1:
            argv += ["-cid", compact_ids(stage.ids)]
        else:
            argv += ["-id", str(stage.ids[0])]
        argv += _processor_flags(flow, stage, check, base_dir, run_dir)
        distributor = raw.get("distributor") if isinstance(raw.get("distributor"), dict) else {}
        for key, flag in (("group", "-dg"), ("set", "-ds"), ("sets", "-nds"),
                          ("updates", "-du"), ("trigger", "-dt"), ("plugin", "-dpn")):
            if key in distributor:
                argv += [flag, str(distributor[key])]
    return argv


def _processor_flags(flow, stage, check, base_dir, run_dir):
    processor = stage.raw.get("processor")
    if not isinstance(processor, dict) or not isinstance(processor.get("class"), str):
        return []
    argv = ["-pc", processor["class"]]
    path = processor.get("file")
    if isinstance(path, str):
        path = path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))
        if not os.path.isfile(path):
            check.add(processor.line_of("file"), f"stage '{stage.name}': processor file"
                                                 f" '{path}' does not exist")
        argv += ["-pf", path]
    if isinstance(processor.get("args"), dict):
        substitutions = {"run_dir": run_dir, "prefix": flow.prefix, "stage": stage.name}
        argv += ["-pa", workflow_args.to_text(
            workflow_args.substitute(dict(processor["args"]), substitutions))]
    return argv


def resolve(flow, run_dir, host=None):
    """Wire channels, order the stages and build every stage's command.

    Raises SpecError listing the problems of the file's structure, wiring and
    stage arguments together.
    """
    check = Checker(flow.source)
    check.problems.extend(flow.problems)
    if host is not None and host not in {s.host for s in flow.stages} | set(flow.hosts):
        used = sorted({s.host for s in flow.stages if s.host})
        check.add(None, f"--host '{host}': no stage has this host"
                        f" (hosts: {', '.join(used) or 'none'})")
    _defaults(flow, check)
    for stage in flow.stages:
        if "input" in stage.raw:
            _resolve_input(flow, stage, check)
    for stage in flow.stages:  # argument problems are listed even when the wiring has some
        substitutions = {"run_dir": run_dir, "prefix": flow.prefix, "stage": stage.name}
        stage.argv = workflow_args.flags(stage.kind, stage.args, check, f"stage '{stage.name}'",
                                         substitutions)
    check.raise_if_any()
    order = topological(flow, check)
    check.raise_if_any()
    base_dir = os.path.dirname(os.path.abspath(flow.source))
    for stage in order:
        stage.argv = _stage_argv(flow, stage, run_dir, check, base_dir) + stage.argv
        problem = workflow_args.check_command(stage.kind, stage.argv)
        if problem:
            check.add(stage.line, f"stage '{stage.name}': {problem}")
    check.raise_if_any()
    flow.stages = order
    return flow


def command(stage):
    """The full command line that starts ``stage``."""
    return [sys.executable, "-m", stage.module, *stage.argv]


def downstream(flow, name):
    """The stages that read ``name``."""
    return [s for s in flow.stages if name in s.upstream]


def graph_text(flow, host=None):
    """The channel graph as plain text: stages in order, then the edges."""
    lines = [f"workflow {flow.name}: {len(flow.stages)} stages, channel prefix {flow.prefix}"]
    for stage in flow.stages:
        ids = f" ids {compact_ids(stage.ids)}" if stage.kind in PROCESSING else ""
        where = f" on {stage.host}" if stage.host else ""
        skip = "  (not on this host)" if host is not None and stage.host != host else ""
        lines.append(f"  [{stage.name}] {stage.kind}{ids}{where}{skip}")
        if stage.input_channel:
            producers = f" (producers {compact_ids(stage.producer_ids)})" \
                if stage.kind == "collector" else ""
            lines.append(f"      in:     {stage.input_channel}{producers}")
        if stage.output:
            lines.append(f"      out:    {stage.output}")
        if stage.status:
            lines.append(f"      status: {stage.status}   control: {stage.control}")
    lines.append("channel graph:")
    for stage in flow.stages:
        sources = stage.upstream or (["(external)"] if stage.input_channel else [])
        for name in sources:
            lines.append(f"  {name} --[{stage.input_channel}]--> {stage.name}")
    for stage in flow.stages:
        if not downstream(flow, stage.name) and stage.output and stage.kind != "simulator":
            lines.append(f"  {stage.name} --> [{stage.output}] (served, no stage reads it)")
    return "\n".join(lines)


def stop_order_text(flow):
    """One line describing the stop order."""
    sources = [s.name for s in flow.stages if not s.upstream]
    return ("stop order: sources first (" + ", ".join(sources) + "), then each stage once its"
            " upstream stages have ended")


__all__ = ["resolve", "command", "graph_text", "downstream", "compact_ids", "SpecError"]
