"""pvapy-hpc-workflow: run a whole topology described in one YAML file.

``pvapy-hpc-workflow check FILE`` validates the file and prints the channel
graph (and, with ``--commands``, the command of each stage) without starting
anything. ``pvapy-hpc-workflow run FILE`` validates, prints the graph,
starts the stages (downstream first), supervises them, stops them in order
(sources first, then each stage once its upstream has ended) and writes
``RUN_DIR/summary.json``. ``--host NAME`` runs only the stages assigned to
that host, so one file drives a multi-host deployment.

Exit codes: 0 all stages ended cleanly; 1 a stage failed, was killed or did
not come up; 2 bad input (the file's first problem as ``FILE:LINE: ...``).
"""

import os
import signal
import sys
import time

from pvaflow.ops import workflow_graph
from pvaflow.ops.workflow_spec import SpecError, load_workflow

from . import common

PROG = "pvapy-hpc-workflow"


def _add_file_options(p):
    p.add_argument("workflow_file", metavar="FILE", help="Workflow file (YAML).")
    p.add_argument("--host", dest="host", default=None,
                   help="Only the stages with 'host: NAME' (default: all stages, here).")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="Override a value before checking, e.g. --set detector.args.frame_rate=50"
                        " or --set prefix=test:1 (repeatable; VALUE is YAML).")


def build_parser():
    """The argument parser of the workflow tool."""
    p = common.new_parser(PROG, "Check or run a topology of simulators, consumers, collectors,"
                                " writers and mirrors described in one YAML file.")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = sub.add_parser("check", help="Validate the file and print the channel graph.",
                           description="Validate the file and print the channel graph;"
                                       " start nothing.")
    _add_file_options(check)
    check.add_argument("--commands", dest="commands", action="store_true",
                       help="Also print the command line of each stage.")
    run = sub.add_parser("run", help="Start, supervise and stop the stages; write a summary.",
                         description="Start the stages, supervise them, stop them in order and"
                                     " write RUN_DIR/summary.json.")
    _add_file_options(run)
    run.add_argument("--run-dir", dest="run_dir", default=None,
                     help="Directory for the stages' logs, stats files and the summary"
                          " (default: runs/<name>-<date>-<time>[-<host>]).")
    run.add_argument("--runtime", dest="runtime", type=common.positive(float), default=None,
                     help="Stop the sources after this many seconds (default: the file's"
                          " 'runtime'; 0: when the sources end by themselves or on Ctrl-C).")
    run.add_argument("--progress-period", dest="progress_period",
                     type=common.positive(float, allow_zero=False), default=10.0,
                     help="Seconds between progress lines when not on a terminal (default: 10).")
    for parser in (check, run):
        common.add_logging_options(parser)
    return p


def load(args, run_dir):
    """The checked and wired workflow (SpecError, a ConfigurationError, when it is bad)."""
    flow = load_workflow(args.workflow_file, args.overrides)
    return workflow_graph.resolve(flow, run_dir, args.host)


def _check(args):
    try:
        flow = load(args, os.path.join("runs", "RUN_DIR"))
    except SpecError as exc:
        for line in exc.lines():
            print(line)
        raise
    print(workflow_graph.graph_text(flow, args.host))
    print(workflow_graph.stop_order_text(flow))
    if args.commands:
        print("commands:")
        for stage in flow.stages:
            if args.host is None or stage.host == args.host:
                print(f"  [{stage.name}] " + " ".join(_quote(a) for a in
                                                       workflow_graph.command(stage)))
    print(f"{args.workflow_file}: OK")
    return common.EXIT_OK


def _quote(text):
    import shlex  # pylint: disable=import-outside-toplevel
    return shlex.quote(text)


def _run(args):
    from pvaflow.ops.workflow_runner import Runner  # pylint: disable=import-outside-toplevel
    name_hint = os.path.splitext(os.path.basename(args.workflow_file))[0]
    run_dir = args.run_dir or os.path.join(
        "runs", f"{name_hint}-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-{args.host}" if args.host
                                                                   else ""))
    flow = load(args, os.path.abspath(run_dir))
    print(workflow_graph.graph_text(flow, args.host))
    print(workflow_graph.stop_order_text(flow))
    print(f"run directory: {run_dir}", flush=True)
    runner = Runner(flow, run_dir, host=args.host, runtime=args.runtime,
                    progress_period=args.progress_period)
    signal.signal(signal.SIGINT, runner.interrupt)
    signal.signal(signal.SIGTERM, runner.interrupt)
    code = runner.run()
    sys.stdout.flush()
    return code


def _body(args):
    common.setup_logging(args.log_level, args.log_file)
    return _check(args) if args.action == "check" else _run(args)


def main(argv=None):
    """Run the workflow tool; return the exit code."""
    return common.run_tool(PROG, build_parser(), argv, _body)


if __name__ == "__main__":
    raise SystemExit(main())
