"""pvapy-hpc-monitor: a live dashboard of many consumers and collectors.

Give status channel patterns and ids (``'pvapy:consumer:*:status' --ids
1-8``) or a workflow file (``--workflow pipeline.yaml``). Every period each
status record is read (pvaccess, short timeouts, in parallel) and one row
per process is shown: alive/stale/down, processed rate, processed, missed,
rejected, errors, queue fill, latency p99 and restarts, with a totals row;
problems are coloured. On a terminal the table is redrawn in place (rich);
otherwise (or with ``--plain``) it is printed as plain text every period.
``--once --json`` prints one sample as JSON for scripts.

Exit codes: 0 (Ctrl-C, or ``--once`` with every process alive and fresh);
1 (``--once``: a process is down or stale); 2 bad input.
"""

import json
import signal
import sys
import time

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.ops import dashboard
from pvaflow.ops.fleet_view import FleetView, targets_from_patterns, targets_from_workflow

from . import common

PROG = "pvapy-hpc-monitor"


def add_target_options(p, kind="status"):
    """Options naming the processes: patterns with --ids, or a workflow file."""
    p.add_argument("channels", nargs="*", metavar="CHANNEL",
                   help=f"{kind.capitalize()} channel names or patterns; '*' becomes each id of"
                        f" --ids (e.g. 'pvapy:consumer:*:{kind}').")
    p.add_argument("--ids", dest="ids", default=None,
                   help="Ids for the '*' in the patterns: '1-8', '1,3,5' or 'range(1,9)'.")
    p.add_argument("-ifs", "--id-format-spec", dest="id_format_spec", default=None,
                   help="Format of the ids in channel names, e.g. 02d (as the consumers' -ifs).")
    p.add_argument("--workflow", dest="workflow", default=None, metavar="FILE",
                   help="Take the consumers and collectors of this workflow file.")
    p.add_argument("--stage", dest="stages", action="append", default=None, metavar="NAME",
                   help="With --workflow: only this stage (repeatable).")
    p.add_argument("--host", dest="host", default=None,
                   help="With --workflow: only the stages of this host.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="With --workflow: the same overrides as given to pvapy-hpc-workflow.")


def targets_from_args(args, kind="status", report_period=1.0):
    """Targets named by :func:`add_target_options` (ConfigurationError when none or both)."""
    if args.workflow and args.channels:
        raise ConfigurationError("give channel patterns or --workflow, not both")
    if args.workflow:
        return targets_from_workflow(args.workflow, args.host, args.overrides, args.stages)
    if not args.channels:
        raise ConfigurationError(f"name the {kind} channels (e.g. 'pvapy:consumer:*:{kind}'"
                                 " --ids 1-4) or give --workflow FILE")
    for option in ("stages", "host"):
        if getattr(args, option):
            raise ConfigurationError(f"--{option.rstrip('s')} needs --workflow")
    return targets_from_patterns(args.channels, args.ids, report_period, args.id_format_spec,
                                 what=f"{kind} channel")


def build_parser():
    """The argument parser of the monitor."""
    p = common.new_parser(PROG, "Live dashboard of consumers and collectors read from their"
                                " status channels: liveness, rates, loss, queues, latency.")
    add_target_options(p)
    p.add_argument("-p", "--period", dest="period", type=common.positive(float, allow_zero=False),
                   default=1.0, help="Seconds between refreshes (default: 1).")
    p.add_argument("-rp", "--report-period", dest="report_period",
                   type=common.positive(float, allow_zero=False), default=1.0,
                   help="Report period of the processes (their -rp; 1 when they run without"
                        " one): a record unchanged for 3 periods is stale (default: 1).")
    p.add_argument("--timeout", dest="timeout", type=common.positive(float, allow_zero=False),
                   default=None, help="Seconds to wait for each record (default: the period,"
                                      " at most 2; 5 with --once, which connects afresh).")
    p.add_argument("--once", dest="once", action="store_true",
                   help="Take one sample, print it and exit (1 if a process is down or stale).")
    p.add_argument("--json", dest="json", action="store_true",
                   help="Print JSON (rows and totals) instead of a table.")
    p.add_argument("--plain", dest="plain", action="store_true",
                   help="Plain text tables even on a terminal (no redrawing, no colour).")
    common.add_logging_options(p)
    return p


def _sample_json(rows, total):
    return json.dumps({"time": time.time(), "processes": rows, "totals": total},
                      default=str, indent=None)


def _source_text(args, targets):
    if args.workflow:
        return f"workflow {args.workflow}"
    return ", ".join(args.channels) + (f" ids {args.ids}" if args.ids else "")


def _interrupt(*_):
    raise KeyboardInterrupt


def _run(args):
    common.setup_logging(args.log_level, args.log_file)
    targets = targets_from_args(args, "status", args.report_period)
    # Ctrl-C and SIGTERM end the dashboard cleanly (exit 0), even when started
    # from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    timeout = args.timeout or (5.0 if args.once else min(args.period, 2.0))
    view = FleetView(targets, timeout=timeout)
    source = _source_text(args, targets)
    try:
        if args.once:
            rows, total = view.refresh(once=True)
            if args.json:
                print(_sample_json(rows, total))
            else:
                print(dashboard.render_plain(rows, total, dashboard.title(total, source, 0)))
            return common.EXIT_OK if total["ok"] + total["stopped"] == total["processes"] \
                else common.EXIT_FAILURE
        if sys.stdout.isatty() and not args.plain and not args.json:
            return _live(view, source, args.period)
        return _periodic(view, source, args)
    finally:
        view.close()


def _periodic(view, source, args):
    while True:
        started = time.monotonic()
        rows, total = view.refresh()
        if args.json:
            print(_sample_json(rows, total), flush=True)
        else:
            print(dashboard.render_plain(rows, total, dashboard.title(total, source, args.period))
                  + "\n", flush=True)
        time.sleep(max(args.period - (time.monotonic() - started), 0.0))


def _live(view, source, period):
    try:
        from rich.console import Console  # pylint: disable=import-outside-toplevel
        from rich.live import Live  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigurationError("the live dashboard needs rich: pip install 'pvaflow[ops]'"
                                 " (or use --plain)") from None
    console = Console()
    rows, total = view.refresh()
    with Live(dashboard.render_rich(rows, total, dashboard.title(total, source, period)),
              console=console, auto_refresh=False, transient=False) as live:
        while True:
            started = time.monotonic()
            rows, total = view.refresh()
            live.update(dashboard.render_rich(rows, total, dashboard.title(total, source, period)),
                        refresh=True)
            time.sleep(max(period - (time.monotonic() - started), 0.0))


def main(argv=None):
    """Run the monitor; return the exit code."""
    return common.run_tool(PROG, build_parser(), argv, _run)


if __name__ == "__main__":
    raise SystemExit(main())
