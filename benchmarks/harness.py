"""Benchmark harness: pvaflow against pvapy's streaming framework.

What it does (used by ``bench_frameworks.py``):

* runs the tools as separate processes (``python -m pvaflow.cli.*`` and
  ``python -m pvapy.cli.*``) with equal flags, every run on a fresh channel,
  and reaps them with ``os.wait4`` (whole-life CPU of a process and the
  children it reaped); CPU time of a process tree at given moments comes
  from psutil;
* decides whether a run was lossless from the files the counting processor
  (``counting_processor.py``) writes in ``stop()`` and from what the
  publisher says it published (``--summary-file``);
* searches the highest lossless rate (exponential ramp, then geometric
  bisection, capped by a number of probes and by a time budget);
* keeps results in ``benchmarks/results/results.json`` and draws
  ``benchmarks/results/results.png`` (matplotlib, Agg backend).

The same file has two helper processes, started by the harness::

    python harness.py monitor --channel C [--channel C2 ...] --sqs N --out-dir D
            [--stride K] [--distributor-updates U] [--instances M] [--idle-exit S] [--timing]
        bare pvaccess monitors (no framework), one per channel, that count
        frames and ids with the counting processor's process() (ids K apart);
        U > 0 adds the distributor to the request, M > 1 runs M such processes
        (a bare fleet); stops on SIGINT (or S seconds after the last frame)
        and writes the same JSON file per monitor;
    python harness.py produce --prefix P --n 4 --size S --fps R --runtime T ...
        one process serving P:1 .. P:n and publishing frames round robin
        (id k on P:((k-1) % n) + 1), the producers of the collector case.

Settings come from environment variables (see ``Settings.from_env`` and
``benchmarks/README.md``).

This module is the entry point of both and re-exports what the benchmarks
use; the code is in ``harness_settings`` (paths, settings, budget, frame
sizes), ``harness_procs`` (tool processes, count files), ``harness_runs``
(command lines, one run, lossless check), ``harness_search`` (rate search,
trials), ``harness_report`` (results.json, results.png) and
``harness_helper_procs`` (the monitor and the producer).
"""

import sys

from harness_helper_procs import monitor_main, produce_main
from harness_procs import Proc, read_counts
from harness_report import draw_png, load_results, meta, save_case
from harness_runs import (collector_cmd, collector_run, consumer_cmd, consumer_run, evaluate,
                          sim_cmd, sim_run, stage_args)
from harness_search import alternating_searches, median_runs, search_max_rate
from harness_settings import (FRAMEWORKS, RESULTS_DIR, RESULTS_JSON, RESULTS_PNG, Budget, Settings,
                              cache_frames, frame_bytes, rate_guess, sqs_for)

__all__ = [
    "FRAMEWORKS", "RESULTS_DIR", "RESULTS_JSON", "RESULTS_PNG", "Budget", "Proc", "Settings",
    "alternating_searches", "cache_frames", "collector_cmd", "collector_run", "consumer_cmd",
    "consumer_run", "draw_png", "evaluate", "frame_bytes", "load_results", "main", "median_runs",
    "meta", "monitor_main", "produce_main", "rate_guess", "read_counts", "save_case",
    "search_max_rate", "sim_cmd", "sim_run", "sqs_for", "stage_args",
]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "monitor":
        return monitor_main(argv[1:])
    if argv and argv[0] == "produce":
        return produce_main(argv[1:])
    print(__doc__)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
