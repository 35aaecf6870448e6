"""A stage's ``args`` mapping turned into command-line flags, checked by the tool's parser.

Keys are the long option names of the stage's tool, with ``_`` or ``-``
(``frame_rate`` or ``frame-rate`` for ``--frame-rate``). ``true`` gives a
switch, ``false`` leaves it out; mappings and lists become JSON text. Each
value is converted and range-checked exactly as the tool would on its
command line, so a bad value is reported at its own line before anything
starts. Options the workflow sets itself (channels, ids, processor,
distributor, stats files) are refused with a hint to the stage key to use.
"""

import argparse
import json

from pvaflow.cli import collector, common, consumer, mirror_server, sim_server

PARSERS = {
    "simulator": sim_server.build_parser, "consumer": consumer.build_parser,
    "writer": consumer.build_parser, "collector": collector.build_parser,
    "mirror": mirror_server.build_parser,
}
_STAGE_CHANNELS = {"output_channel": "output", "status_channel": "status",
                   "control_channel": "control"}
_PROCESSOR = {"processor_file": "processor: file", "processor_class": "processor: class",
              "processor_args": "processor: args"}
_DISTRIBUTOR = {"distributor_group": "distributor: group", "distributor_set": "distributor: set",
                "distributor_trigger": "distributor: trigger",
                "distributor_updates": "distributor: updates",
                "distributor_plugin": "distributor: plugin",
                "n_distributor_sets": "distributor: sets"}
_COMMON = {"stats_file": "(the workflow writes RUN_DIR/<stage>.stats.jsonl)",
           "report_period": "report_period (a stage or workflow key)",
           "id_format_spec": "(ids in workflow channel names are plain numbers)"}
RESERVED = {
    "simulator": {"channel_name": "output", "summary_file": "(the workflow writes"
                                                            " RUN_DIR/<stage>.summary.json)"},
    "consumer": dict(_STAGE_CHANNELS, input_channel="input", consumer_id="ids or first_id",
                     n_consumers="count", consumer_id_list="ids", **_PROCESSOR, **_DISTRIBUTOR,
                     **_COMMON),
    "collector": dict(_STAGE_CHANNELS, input_channel="input", collector_id="id",
                      producer_id_list="input (a stage) or producer_ids", **_PROCESSOR, **_COMMON),
    "mirror": {"channel_map": "input, output, protocol and queue_size", **_COMMON},
}
RESERVED["writer"] = RESERVED["consumer"]


def _actions(kind):
    parser = PARSERS[kind]()
    by_key = {}
    for action in parser._actions:  # pylint: disable=protected-access
        if action.dest in ("help", "version"):
            continue
        by_key[action.dest] = action
        for option in action.option_strings:
            if option.startswith("--"):
                by_key[option[2:].replace("-", "_")] = action
    return parser, by_key


def to_text(value):
    """A value as command-line text (mappings and lists as JSON)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else str(value)
    return str(value)


def substitute(value, substitutions):
    """Replace ``{run_dir}``-style placeholders in text (nested in mappings and lists)."""
    if isinstance(value, str):
        for key, replacement in substitutions.items():
            value = value.replace("{" + key + "}", replacement)
        return value
    if isinstance(value, dict):
        return {k: substitute(v, substitutions) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, substitutions) for v in value]
    return value


def flags(kind, args, check, what, substitutions):
    """Flags for ``args`` (a LineDict); problems go to ``check`` with their lines."""
    _, by_key = _actions(kind)
    reserved = RESERVED[kind]
    argv = []
    for key, value in args.items():
        line = args.line_of(key)
        norm = str(key).replace("-", "_")
        action = by_key.get(norm)
        if action is not None and action.dest in reserved:
            hint = reserved[action.dest]
            hint = f" {hint}" if hint.startswith("(") else f"; use the stage key {hint}"
            check.add(line, f"{what}: args '{key}' is set by the workflow{hint}")
            continue
        if action is None:
            known = sorted({a.dest for a in by_key.values() if a.dest not in reserved})
            check.add(line, f"{what}: args '{key}' is not an option of {kind} stages; known: "
                            + ", ".join(known))
            continue
        option = next((o for o in action.option_strings if o.startswith("--")),
                      action.option_strings[0])
        if action.nargs == 0:  # a switch
            if not isinstance(value, bool):
                check.add(line, f"{what}: args '{key}' is a switch: write true or false")
            elif value:
                argv.append(option)
            continue
        if value is None or isinstance(value, bool):
            check.add(line, f"{what}: args '{key}' needs a value, not {value!r}")
            continue
        text = to_text(substitute(value, substitutions))
        problem = _check_value(action, text)
        if problem:
            check.add(line, f"{what}: args '{key}': {problem}")
            continue
        argv.extend([option, text])
    return argv


def _check_value(action, text):
    converted = text
    if action.type is not None:
        try:
            converted = action.type(text)
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            return str(exc) or f"'{text}' is not valid"
    if action.choices is not None and converted not in action.choices:
        return f"'{text}' is not one of {', '.join(map(str, action.choices))}"
    return None


def check_command(kind, argv):
    """Parse the finished argv with the tool's own parser; the error text or None."""
    parser = PARSERS[kind]()
    try:
        parser.parse_args(argv)
    except common.UsageError as exc:
        return str(exc)
    return None
