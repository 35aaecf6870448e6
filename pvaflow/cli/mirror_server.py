"""``pvapy-mirror-server``: serve read-only copies of PVA or CA channels.

The flags are those of pvapy's ``pvapy-mirror-server`` (``-cm``, ``-rt``,
``-rp``, ``-v``) with the same meanings, plus the logging flags of every
pvaflow tool (``-ll``, ``-lf``, ``-dc``) and ``--stats-file PATH`` (one JSON
line per report). The channel map keeps pvapy's syntax::

    -cm "(mirror,source[,pva|ca[,queueSize[,nMonitors[,requestDescriptor]]]]),..."

and is checked as a whole before anything is served: a malformed map is one
``pvapy-mirror-server: error: ...`` line saying what is wrong at which
character, and exit code 2.

Reports are plain text lines every ``-rp`` seconds and a final report at
exit: per channel, the updates mirrored (counted on the mirror channel)
with the overall and recent rate, and the counters of pvaccess' mirror
server (``nReceived``, ``nOverruns``; pvaccess 5.6 sums those over all
channels, so with several channels they are reported once, as totals).
Exit codes: 0 after the runtime, Ctrl-C or SIGTERM; 1 on a runtime
failure; 2 on bad input.
"""

import logging
import signal
import sys

from pvaflow.cli.common import (EXIT_OK, add_access_security_options, add_logging_options,
                                new_parser, run_tool, runtime_failures_reported, setup_logging)
from pvaflow.hpc.access import AccessPolicy
from pvaflow.hpc.mirror import MAP_EXAMPLE, MAP_FORM, MirrorServer, parse_channel_map

PROG = "pvapy-mirror-server"

log = logging.getLogger("pvaflow.cli.mirror_server")


def build_parser():
    """The argument parser of the mirror server."""
    parser = new_parser(PROG, "Serve mirror (read-only copy) channels of PVA or CA source"
                              " channels and report per-channel statistics.")
    add = parser.add_argument
    add("-cm", "--channel-map", dest="channel_map", required=True,
        help=f"Comma-separated entries {MAP_FORM}: the mirror channel to serve, the source"
             " channel it copies, the source protocol (pva or ca, default pva) and the"
             " server-side queue size for the source (>= 0, default 0). Two more optional"
             " fields, for a source using the data distributor plugin, are the number of"
             " source monitors (>= 1, default 1) and their request descriptor."
             f" Example: {MAP_EXAMPLE}.")
    add("-rt", "--runtime", dest="runtime", type=float, default=0.0,
        help="Serve this many seconds; <= 0: until Ctrl-C or SIGTERM (default).")
    add("-rp", "--report-period", dest="report_period", type=float, default=0.0,
        help="Seconds between per-channel statistics reports; <= 0: final report only"
             " (default).")
    add("--stats-file", dest="stats_file", default=None, metavar="PATH",
        help="Append one JSON line of statistics per report (and the final one) to PATH.")
    add_access_security_options(parser)
    add_logging_options(parser)
    return parser


def _install_signal_handlers(server):
    """SIGINT and SIGTERM end the run cleanly; return the previous handlers."""
    return {signum: signal.signal(signum, server.request_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)}


def _body(args):
    entries = parse_channel_map(args.channel_map)
    setup_logging(args.log_level, args.log_file)
    policy = None
    if args.access_security_file:
        policy = AccessPolicy(args.access_security_file, "DEFAULT", "DEFAULT", args.access_security_macros)
    server = MirrorServer(entries, stats_file=args.stats_file, policy=policy)
    previous = _install_signal_handlers(server)
    try:
        server.start()
        server.run(runtime=args.runtime, report_period=args.report_period)
    finally:
        try:
            server.stop()
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
    return EXIT_OK


def main(argv=None):
    """Run the mirror server; return the exit code."""
    return run_tool(PROG, build_parser(), argv, runtime_failures_reported(PROG, _body))


if __name__ == "__main__":
    sys.exit(main())
