"""pvapy-hpc-report: plot and summarise ``--stats-file`` output of one or many processes.

Reads the JSON lines written by ``--stats-file`` of consumers, collectors,
consumer fleets (one series per consumer) and mirror servers, prints a
plain-text summary table (one row per process and a total) and, with
``-o FILE.png``, plots processed rate, loss and latency p99 over time.

Exit codes: 0 done; 1 runtime failure; 2 bad input (unreadable file, no
statistics in it, matplotlib missing for ``-o``).
"""

import json

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.ops import stats_lines

from . import common

PROG = "pvapy-hpc-report"


def build_parser():
    """The argument parser of the report tool."""
    p = common.new_parser(PROG, "Plot rates, loss and latency over time from --stats-file output"
                                " and print a summary table.")
    p.add_argument("stats_files", nargs="+", metavar="STATS_FILE",
                   help="--stats-file output (JSON lines) of consumers, collectors, fleets or"
                        " mirror servers; several files are shown together.")
    p.add_argument("-o", "--output", dest="output", default=None,
                   help="Write the plots to this image file (.png, .svg, .pdf); needs matplotlib.")
    p.add_argument("--title", dest="title", default=None, help="Title of the plot.")
    p.add_argument("--json", dest="json", action="store_true",
                   help="Print the summary rows as JSON instead of a table.")
    common.add_logging_options(p)
    return p


def _run(args):
    common.setup_logging(args.log_level, args.log_file)
    series, skipped = stats_lines.read_many(args.stats_files)
    series = [s for s in series if s.points]
    if not series:
        raise ConfigurationError("no statistics lines in " + ", ".join(args.stats_files)
                                 + "; run a consumer with --stats-file FILE and a report period"
                                   " (-rp)")
    rows = stats_lines.summary_rows(series)
    if args.output:
        from pvaflow.ops import stats_plot  # pylint: disable=import-outside-toplevel
        stats_plot.plot(series, args.output, args.title or ", ".join(args.stats_files))
    if args.json:
        print(json.dumps({"processes": rows[:-1], "total": rows[-1], "skippedLines": skipped,
                          "plot": args.output}, indent=1))
    else:
        print(stats_lines.format_table(rows))
        if skipped:
            print(f"({skipped} line(s) that are not statistics were skipped)")
        if args.output:
            print(f"plots written to {args.output}")
    return common.EXIT_OK


def main(argv=None):
    """Run the report tool; return the exit code."""
    return common.run_tool(PROG, build_parser(), argv, _run)


if __name__ == "__main__":
    raise SystemExit(main())
