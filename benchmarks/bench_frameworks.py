"""Benchmarks: pvaflow against pvapy's streaming framework, case by case.

Run all (about 25 minutes on 2 cores; ``make bench`` does this)::

    python -m pytest -m bench benchmarks/bench_frameworks.py -s

or one case, in the smoke mode (``-k case1`` ... ``-k case6``)::

    PVAFLOW_BENCH_QUICK=1 python -m pytest -m bench benchmarks/bench_frameworks.py -s -k case2

Each test prints its part of the table (absolute figures, ratio
pvaflow/pvapy and, for cases 2-3, the share of the transport ceiling of
case 1) and merges its results into ``benchmarks/results/results.json``
and ``results.png``; at the end the whole table of the cases run is
printed again. Timing goals are read from the output; nothing asserts on
timing. See ``benchmarks/README.md`` for what each case measures.
"""

import dataclasses
import os
import sys

import pytest

import harness as h
import harness_tables as ht
from bench_format import fmt as _fmt, fmt_rate as _fmt_rate, gbs as _gbs, pct as _pct
from bench_format import ratio as _ratio, ratio_text as _ratio_text

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]

BOUND_NOTE = ("  * : lossless at the highest rate the simulator reached (it could not publish"
              " faster with the consumers on the same CPUs: the pipeline's limit); >= : no tried"
              " rate was lossy (the limit is higher)")
_SESSION_TABLES = {}   # case key -> table lines, for the final print


def _log(text):
    print(text, flush=True)


@pytest.fixture(scope="module")
def settings():
    return h.Settings.from_env()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module", autouse=True)
def final_table():
    yield
    if not _SESSION_TABLES:
        return
    lines = ["", "=" * 100, "pvaflow vs pvapy: all cases run in this session", "=" * 100]
    for key in sorted(_SESSION_TABLES):
        lines.extend(_SESSION_TABLES[key])
        lines.append("")
    lines.append(f"results: {h.RESULTS_JSON}")
    lines.append(f"chart:   {h.RESULTS_PNG}")
    _log("\n".join(lines))


def _saved_ceiling(size):
    """The last saved case 1 figure at ``size`` (a start rate for the searches), or None."""
    for row in h.load_results()["cases"].get("case1", {}).get("rows", []):
        if row.get("size") == size:
            return row.get("fps")
    return None


def _header(settings, title, sizes=()):
    trials = settings.trials
    large = sorted({settings.trials_for(size) for size in sizes} - {trials})
    more = f" ({large[-1]} at frames >= 4 MB)" if large else ""
    mode = " QUICK MODE (smoke test, noisy)" if settings.quick else ""
    return (f"{title}  [median of {trials} trial{'s' if trials != 1 else ''}{more},"
            f" window {settings.window_s:g} s, {os.cpu_count()} CPUs{mode}]")


def _finish(case_key, title, table, rows, chart, raw, settings):
    _SESSION_TABLES[case_key] = table
    _log("\n" + "\n".join(table))
    h.save_case(case_key, {"title": title, "table": table, "rows": rows, "chart": chart,
                           "raw": raw, "settings": settings.describe()}, h.meta())


def _trials_note(result):
    rates = result.get("rates", [])
    return "/".join(f"{r:,.0f}" for r in rates)


def _check_harness(result, kind):
    """The harness worked when at least one run of the kind published frames."""
    probes = [p for t in result["trials"] for p in t["probes"]]
    assert probes, f"{kind}: no run was made"
    assert any(p.get("published") or p.get("received") for p in probes), (
        f"{kind}: no run published or received anything; see the run logs: "
        f"{[p.get('reason') for p in probes][:3]}")


def _consumer_probe(kind, size, n_consumers, settings, workdir):
    return lambda rate: h.consumer_run(kind, size, rate, n_consumers, settings, workdir)


# ------------------------------------------------------------------------ cases
def test_case1_2_ceiling_and_single_consumer(settings, workdir):
    """Cases 1 and 2: the bare monitor (case 1, the transport ceiling) and one
    pass-through consumer of each framework (case 2, server queue on), searched
    alternating at every size so that shares of the ceiling compare runs made
    side by side."""
    budget = h.Budget((settings.budgets.get("case1", 210.0) + settings.budgets.get("case2", 360.0))
                      * settings.budget_scale)
    title1 = "Case 1 - transport ceiling: bare pvaccess monitor, max lossless rate"
    title2 = "Case 2 - one pass-through consumer: max lossless rate"
    table1 = [_header(settings, title1, settings.sizes),
              f"{'size':>10} {'sqs':>5} {'fps':>12} {'GB/s':>8}   trials (fps)"]
    table2 = [_header(settings, title2, settings.sizes), ht.consumer_header(f"{'size':>10}")]
    rows1, rows2, raw = [], [], {}
    chart_rows = {kind: [] for kind in ht.KINDS}
    weights = [settings.trials_for(size) for size in settings.sizes]
    for index, size in enumerate(settings.sizes):
        _log(f"\ncases 1-2: {size}x{size}")
        # each size's share of what is left, by its number of trials
        share = h.Budget(budget.left() * weights[index] / sum(weights[index:]))
        start = _saved_ceiling(size) or h.rate_guess(size)
        result = h.alternating_searches(
            list(ht.KINDS), lambda kind, size=size: _consumer_probe(kind, size, 1, settings, workdir),
            lambda kind, start=start: start, settings, share, log=_log,
            trials=settings.trials_for(size))
        for kind in ht.KINDS:
            _check_harness(result[kind], kind)
        bare = result["bare"]
        rows1.append({"size": size, "fps": bare["median"], "gbs": _gbs(bare["median"], size),
                      "bound": bare["bound"], "trials": bare["rates"],
                      "sqs": h.sqs_for(size, settings)})
        table1.append(f"{f'{size}x{size}':>10} {h.sqs_for(size, settings):>5}"
                      f" {_fmt_rate(bare['median'], bare['bound']):>12}"
                      f" {_fmt(_gbs(bare['median'], size)):>8}   {_trials_note(bare)}")
        line, row = ht.consumer_row(f"{f'{size}x{size}':>10}", size, result, single=True)
        table2.append(line)
        table2.append(ht.trials_line(f"{size}x{size}", result))
        rows2.append(row)
        raw[size] = result
        for kind in ht.KINDS:
            chart_rows[kind].append(result[kind]["median"])
    table1.append(BOUND_NOTE)
    table2.append(ht.FOOTNOTE)
    table2.append(BOUND_NOTE)
    groups = [f"{s}x{s}" for s in settings.sizes]
    _finish("case1", title1, table1, rows1,
            {"groups": groups, "ylabel": "frames/s", "log": True,
             "series": {"bare": chart_rows["bare"]}}, {"see": "case2"}, settings)
    _finish("case2", title2, table2, rows2,
            {"groups": groups, "ylabel": "frames/s", "log": True, "series": chart_rows},
            raw, settings)


def test_case3_distributor_fleets(settings, workdir):
    """Case 3: 2 and 4 consumers with the distributor (-du 1), aggregate lossless rate;
    the ceiling is as many bare monitors behind the distributor, searched alongside."""
    budget = settings.budget("case3")
    title = "Case 3 - consumers with the distributor (-nc N -du 1): aggregate max lossless rate"
    table = [_header(settings, title), ht.consumer_header(f"{'N':>2} {'size':>10}")]
    rows, raw = [], {}
    chart = {"groups": [], "ylabel": "aggregate frames/s", "log": True,
             "series": {kind: [] for kind in ht.KINDS}}
    groups = [(n, size) for n in settings.fleets for size in settings.fleet_sizes]
    single = {row["size"]: row for row in h.load_results()["cases"].get("case2", {}).get("rows", [])}
    for index, (n, size) in enumerate(groups):
        _log(f"\ncase 3: {n} consumers, {size}x{size}")
        share = h.Budget(budget.left() / (len(groups) - index))

        def start(kind, size=size):
            known = single.get(size, {}).get(kind, {}).get("fps")
            return known or _saved_ceiling(size) or h.rate_guess(size)

        result = h.alternating_searches(
            list(ht.KINDS),
            lambda kind, size=size, n=n: _consumer_probe(kind, size, n, settings, workdir),
            start, settings, share, log=_log)
        for kind in ht.KINDS:
            _check_harness(result[kind], kind)
        line, row = ht.consumer_row(f"{n:>2} {f'{size}x{size}':>10}", size, result, single=False)
        row["n_consumers"] = n
        table.append(line)
        table.append(ht.trials_line(f"{n} x {size}x{size}", result))
        rows.append(row)
        raw[f"{n}x{size}"] = result
        chart["groups"].append(f"{n}c {size}")
        for kind in ht.KINDS:
            chart["series"][kind].append(result[kind]["median"])
    table.append(ht.FOOTNOTE.replace("bare pvaccess monitors", "N bare pvaccess monitor"
                                     " processes behind the distributor"))
    table.append("  lossless = the union of the consumers' ids covers every published id")
    table.append(BOUND_NOTE)
    _finish("case3", title, table, rows, chart, raw, settings)


def test_case4_collector(settings, workdir):
    """Case 4: a collector merging 4 producers: max lossless rate and p50/p99 latency."""
    budget = settings.budget("case4")
    size, n = settings.collector_size, settings.n_producers
    title = (f"Case 4 - collector merging {n} producers ({size}x{size}):"
             " max lossless rate, latency frame timeStamp -> collector processor")
    _log(f"\ncase 4: collector, {n} producers, {size}x{size}")
    search_budget = h.Budget(budget.left() * 0.75)
    result = h.alternating_searches(
        list(ht.KINDS),  # bare: one process monitoring the producers, the ceiling
        lambda kind: (lambda rate: h.collector_run(kind, size, rate, settings, workdir)),
        lambda kind: h.rate_guess(size) / 2, settings, search_budget, log=_log)
    for kind in ht.KINDS:
        _check_harness(result[kind], kind)
    # Latency at one fixed rate, equal for both, alternating.
    fixed = {kind: [] for kind in h.FRAMEWORKS}
    for trial in range(settings.trials):
        for kind in (h.FRAMEWORKS if trial % 2 == 0 else tuple(reversed(h.FRAMEWORKS))):
            run = h.collector_run(kind, size, settings.latency_rate, settings, workdir)
            _log(f"    {kind} latency run at {settings.latency_rate:g} fps:"
                 f" {'lossless' if run['lossless'] else 'LOSSY ' + str(run.get('reason'))}"
                 f" p50 {_fmt(run.get('latency_p50_ms'), '.2f')} ms"
                 f" p99 {_fmt(run.get('latency_p99_ms'), '.2f')} ms"
                 + (f" (pvaflow's own stats file: p50 {_fmt(run['self_reported_p50_ms'], '.2f')}"
                    f" p99 {_fmt(run.get('self_reported_p99_ms'), '.2f')} ms)"
                    if run.get("self_reported_p50_ms") is not None else ""))
            fixed[kind].append(run)
    # Latency at half of each framework's own max lossless rate (the goal's operating point).
    half = {kind: [] for kind in h.FRAMEWORKS}
    for trial in range(settings.trials):
        for kind in (h.FRAMEWORKS if trial % 2 == 0 else tuple(reversed(h.FRAMEWORKS))):
            if result[kind]["median"]:
                half[kind].append(h.collector_run(kind, size, result[kind]["median"] / 2,
                                                  settings, workdir))
    figures = {}
    for kind in h.FRAMEWORKS:
        best_runs = [t["best"] for t in result[kind]["trials"] if t.get("best")]
        figures[kind] = {
            "fps": result[kind]["median"], "bound": result[kind]["bound"],
            "trials": result[kind]["rates"],
            "p50_fixed_ms": h.median_runs(fixed[kind], "latency_p50_ms"),
            "p99_fixed_ms": h.median_runs(fixed[kind], "latency_p99_ms"),
            "fixed_lossless": [r["lossless"] for r in fixed[kind]],
            "p50_half_ms": h.median_runs(half[kind], "latency_p50_ms"),
            "p99_half_ms": h.median_runs(half[kind], "latency_p99_ms"),
            "half_lossless": [r["lossless"] for r in half[kind]],
            "p50_max_ms": h.median_runs(best_runs, "latency_p50_ms"),
            "p99_max_ms": h.median_runs(best_runs, "latency_p99_ms"),
        }
    ours, theirs = figures["pvaflow"], figures["pvapy"]
    bare = result["bare"]
    figures["bare"] = {"fps": bare["median"], "bound": bare["bound"], "trials": bare["rates"]}
    half_p99 = ours["p99_half_ms"]
    figures["goal"] = ht.goal(result["pvaflow"], result["pvapy"], bare["median"])
    figures["goal_latency"] = ("met" if half_p99 is not None and half_p99 < 50.0
                               else "NOT met (p99 at half max >= 50 ms or not measured)")
    rate_label = f"@{settings.latency_rate:g} fps"
    table = [_header(settings, title),
             f"{'':>26} {'pvaflow':>12} {'pvapy':>12} {'ratio':>7} {'bare':>10} {'%ceil':>6}",
             f"{'max lossless fps':>26} {_fmt_rate(ours['fps'], ours['bound']):>12}"
             f" {_fmt_rate(theirs['fps'], theirs['bound']):>12}"
             f" {_ratio_text(result['pvaflow'], result['pvapy']):>7}"
             f" {ht.ceiling_text(bare):>10} {_pct(ours['fps'], bare['median']):>6}"]
    for key, label in (("p50_fixed_ms", f"p50 ms {rate_label}"), ("p99_fixed_ms", f"p99 ms {rate_label}"),
                       ("p50_half_ms", "p50 ms @half own max"), ("p99_half_ms", "p99 ms @half own max"),
                       ("p50_max_ms", "p50 ms @own max rate"), ("p99_max_ms", "p99 ms @own max rate")):
        ratio = _fmt(_ratio(ours[key], theirs[key]), '.2f') if "fixed" in key else "-"
        table.append(f"{label:>26} {_fmt(ours[key], '.2f'):>12} {_fmt(theirs[key], '.2f'):>12}"
                     f" {ratio:>7}")
    table.append("  latency ratio < 1: pvaflow lower (only at the common rate; '@own max rate' is"
                 " each framework at its own max lossless rate)")
    table.append("  the last 10% of ids (end-of-stream flush) are left out of the percentiles;"
                 " trials fps: "
                 f"{_trials_note(result['pvaflow'])} ; {_trials_note(result['pvapy'])}"
                 f" ; bare {_trials_note(bare)}")
    table.append("  bare = one process monitoring the 4 producer channels (no framework, no"
                 " merging), searched alternating with the collectors: the transport ceiling;"
                 f" goal (rate): {figures['goal']}; goal (p99 < 50 ms at half max):"
                 f" {figures['goal_latency']}")
    table.append(BOUND_NOTE)
    chart = {"groups": [f"p50 {rate_label}", f"p99 {rate_label}", "p50 @max", "p99 @max"],
             "ylabel": "latency ms", "log": True,
             "series": {kind: [figures[kind][k] for k in ("p50_fixed_ms", "p99_fixed_ms",
                                                          "p50_max_ms", "p99_max_ms")]
                        for kind in h.FRAMEWORKS}}
    title_chart = (f"Case 4 - collector, {n} producers: max fps pvaflow"
                   f" {_fmt_rate(ours['fps'], ours['bound'])}, pvapy {_fmt_rate(theirs['fps'], theirs['bound'])}")
    raw = {"search": result, "fixed_rate_runs": fixed, "half_rate_runs": half}
    _finish("case4", title_chart, table, figures, chart, raw, settings)


def test_case5_simulator(settings, workdir):
    """Case 5: each simulator's highest rate held within 1% of the target (128x128)."""
    budget = settings.budget("case5")
    size = 128
    title = f"Case 5 - simulator: highest rate held within 1% of the target ({size}x{size})"
    _log(f"\ncase 5: simulators, {size}x{size}")
    result = h.alternating_searches(
        list(h.FRAMEWORKS),
        lambda kind: (lambda rate: h.sim_run(kind, size, rate, settings, workdir)),
        lambda kind: 5000.0, settings, budget, tolerance=settings.sim_tolerance, log=_log)
    for kind in h.FRAMEWORKS:
        _check_harness(result[kind], kind)
    ours, theirs = result["pvaflow"], result["pvapy"]
    table = [_header(settings, title),
             f"{'':>22} {'pvaflow sim':>12} {'pvapy sim':>12} {'ratio':>7}",
             f"{'max held fps':>22} {_fmt_rate(ours['median'], ours['bound']):>12}"
             f" {_fmt_rate(theirs['median'], theirs['bound']):>12} {_ratio_text(ours, theirs):>7}",
             f"  measured by a bare counting client; held = client rate within 1% of the target and"
             f" no id missed; trials: {_trials_note(ours)} ; {_trials_note(theirs)}",
             "  goal (ratio >= 1.5): " + ("met" if (_ratio(ours["median"], theirs["median"]) or 0)
                                          >= ht.RATIO_GOAL else "NOT met")]
    rows = {kind: {"fps": result[kind]["median"], "trials": result[kind]["rates"]}
            for kind in h.FRAMEWORKS}
    chart = {"groups": [f"{size}x{size}"], "ylabel": "frames/s held", "log": False,
             "series": {f"{kind} sim": [result[kind]["median"]] for kind in h.FRAMEWORKS}}
    _finish("case5", title, table, rows, chart, result, settings)


def test_case6_overhead(settings, workdir):
    """Case 6: CPU microseconds per frame of a pass-through consumer at a fixed rate."""
    size, rate = settings.fixed_size, settings.fixed_rate
    window = max(settings.window_s, 2.0 if settings.quick else 5.0)
    run_settings = dataclasses.replace(settings, window_s=window)
    title = (f"Case 6 - per-frame overhead: consumer CPU us/frame, pass-through,"
             f" {size}x{size} at {rate:g} fps for {window:g} s")
    _log(f"\ncase 6: CPU per frame at {rate:g} fps, {size}x{size}")
    # "bare-kept": the bare monitor keeping its delivering thread's Python thread
    # state, as pvaflow does; a reference for how much of pvaflow's saving is that.
    kinds = ("bare", "bare-kept") + h.FRAMEWORKS
    runs = {kind: [] for kind in kinds}
    for trial in range(settings.trials):
        for kind in (kinds if trial % 2 == 0 else tuple(reversed(kinds))):
            run = h.consumer_run(kind, size, rate, 1, run_settings, workdir, measure_cpu=True)
            _log(f"    {kind}: {'lossless' if run['lossless'] else 'LOSSY ' + str(run.get('reason'))}"
                 f" cpu {_fmt(run.get('cpu_s'), '.4f')} s (ticks {_fmt(run.get('cpu_ticks_s'), '.2f')})"
                 f" for {run.get('received')} frames = {_fmt(run.get('cpu_us_per_frame'), '.1f')} us/frame")
            runs[kind].append(run)
    for kind in kinds:
        assert any(r.get("received") for r in runs[kind]), f"{kind}: no frames received"
    med = {kind: h.median_runs(runs[kind], "cpu_us_per_frame") for kind in kinds}

    def above(base):
        return {kind: (med[kind] - med[base]) if med[kind] is not None and med[base] is not None
                else None for kind in h.FRAMEWORKS}
    over, over_kept = above("bare"), above("bare-kept")
    over_ratio = (_ratio(over["pvaflow"], over["pvapy"])
                  if all(v is not None and v > 0 for v in over.values()) else None)
    table = [_header(dataclasses.replace(settings, window_s=window), title),
             f"{'':>30} {'bare':>9} {'bare-kept':>9} {'pvaflow':>9} {'pvapy':>9} {'ratio':>7}",
             f"{'us/frame (process tree)':>30} {_fmt(med['bare'], '.1f'):>9}"
             f" {_fmt(med['bare-kept'], '.1f'):>9}"
             f" {_fmt(med['pvaflow'], '.1f'):>9} {_fmt(med['pvapy'], '.1f'):>9}"
             f" {_fmt(_ratio(med['pvaflow'], med['pvapy']), '.2f'):>7}",
             f"{'us/frame above bare monitor':>30} {'':>9} {'':>9} {_fmt(over['pvaflow'], '.1f'):>9}"
             f" {_fmt(over['pvapy'], '.1f'):>9} {_fmt(over_ratio, '.2f'):>7}",
             f"{'above bare-kept':>30} {'':>9} {'':>9} {_fmt(over_kept['pvaflow'], '.1f'):>9}"
             f" {_fmt(over_kept['pvapy'], '.1f'):>9}",
             "  CPU = on-CPU time of the consumer process tree (schedstat) from just before the first"
             " frame to the end of the grace period, / frames counted; ratio < 1: pvaflow cheaper;"
             " bare-kept = the bare monitor keeping its callback thread's Python thread state, as"
             " pvaflow does; lossless runs: " + ", ".join(
                 f"{k} {sum(r['lossless'] for r in runs[k])}/{len(runs[k])}" for k in kinds)]
    rows = {"us_per_frame": med, "above_bare": over, "above_bare_kept": over_kept,
            "trials": {k: [r.get("cpu_us_per_frame") for r in runs[k]] for k in kinds}}
    chart = {"groups": ["CPU us/frame"], "ylabel": "us per frame", "log": False,
             "series": {kind: [med[kind]] for kind in kinds}}
    _finish("case6", title, table, rows, chart, {k: runs[k] for k in kinds}, settings)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-m", "bench", "-s"] + sys.argv[1:]))
