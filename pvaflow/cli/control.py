"""pvapy-hpc-control: send a control command to one or many processes and wait for the replies.

The fleet form of putting ``{command, args}`` on each control channel (which
keeps working, e.g. with ``pvput``): the command goes to every named control
channel in parallel, each reply is awaited (matched by a sequence number)
and one line per process says ``ok``, ``error`` or ``timeout``.

Exit codes: 0 every process replied ok; 1 a process replied with an error
or did not reply in time; 2 bad input (unknown command, bad --args, ...).
"""

import json

from pvaflow.hpc.control import COMMANDS
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.ops import control_client

from . import common
from .monitor import add_target_options, targets_from_args

PROG = "pvapy-hpc-control"


def build_parser():
    """The argument parser of the control tool."""
    p = common.new_parser(PROG, "Send configure, reset_stats, get_stats or stop to the control"
                                " channels of many consumers or collectors and wait for each"
                                " reply.")
    p.add_argument("command", metavar="COMMAND", choices=COMMANDS,
                   help="One of: " + ", ".join(COMMANDS) + ".")
    add_target_options(p, kind="control")
    p.add_argument("-a", "--args", dest="command_args", default=None,
                   help="JSON object for configure, e.g. '{\"quarterTurns\": 2}'.")
    p.add_argument("-t", "--timeout", dest="timeout", type=common.positive(float, allow_zero=False),
                   default=5.0, help="Seconds to wait for each reply (default: 5).")
    p.add_argument("--json", dest="json", action="store_true",
                   help="Print the replies as JSON (get_stats results parsed).")
    common.add_logging_options(p)
    return p


def _command_args(args):
    if args.command != "configure":
        if args.command_args is not None:
            raise ConfigurationError(f"--args is only for configure, not {args.command}")
        return ""
    if args.command_args is None:
        raise ConfigurationError("configure needs --args with a JSON object, e.g."
                                 " --args '{\"x\": 1}'")
    try:
        value = json.loads(args.command_args)
    except ValueError as exc:
        raise ConfigurationError(f"--args is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigurationError("--args must be a JSON object like '{\"x\": 1}'")
    return args.command_args


def _run(args):
    common.setup_logging(args.log_level, args.log_file)
    command_args = _command_args(args)
    targets = targets_from_args(args, "control")
    pairs = [(t.label, t.control or t.channel) for t in targets]
    replies = control_client.send_all(pairs, args.command, command_args, args.timeout)
    good = sum(r.ok for r in replies)
    if args.json:
        print(json.dumps({"command": args.command, "ok": good, "failed": len(replies) - good,
                          "replies": [r.as_dict() for r in replies]}, indent=1))
    else:
        width = max(len(r.label) for r in replies)
        for reply in replies:
            detail = reply.message
            if reply.ok and args.command == "get_stats":
                detail = control_client.stats_line(reply.result) or detail
            where = f" ({reply.channel})" if reply.label != reply.channel else ""
            print(f"{reply.outcome.upper():<7} {reply.label:<{width}} {detail}{where}")
        print(f"{args.command}: {good} of {len(replies)} processes replied ok")
    return common.EXIT_OK if good == len(replies) else common.EXIT_FAILURE


def main(argv=None):
    """Run the control tool; return the exit code."""
    return common.run_tool(PROG, build_parser(), argv, _run)


if __name__ == "__main__":
    raise SystemExit(main())
