"""The search for the highest lossless rate (ramp, then geometric bisection)
and the alternating trials of several kinds whose median is a figure."""

import math
import statistics

from harness_settings import Budget


# -------------------------------------------------------------------------- search
def search_max_rate(probe, start, budget, max_probes, tolerance, step=2.0, floor=5.0, log=None,
                    min_probes=2):
    """Highest lossless rate of ``probe(rate) -> run dict`` (keys lossless, rate, sim_bound).

    Exponential ramp by ``step`` (up from ``start`` while lossless, down while
    not), then geometric bisection between the highest lossless and the
    lowest lossy rate until their ratio is <= 1 + tolerance. A lossless run
    whose publisher fell short of the target (sim_bound) counts as lossless
    at the rate achieved and as too high at the target (and ends the search
    when it achieved no more than an earlier lossless run, within the
    tolerance: the pipeline is saturated); a lossy sim-bound run as lossy at
    the rate achieved. Stops after ``max_probes`` runs, or when
    the budget is spent (after at least ``min_probes`` runs); while no run
    was lossless it goes on down to 6 runs. Returns {rate (achieved rate of the best
    lossless run; 0 if none), target, bound, probes, best}; bound is "sim"
    (publisher-limited), "probes" (no run was lossy: the limit is higher) or
    None (bracketed between a lossless and a lossy rate)."""
    good = bad = None
    bad_kind = None
    best = None
    probes = []
    rate = float(start)
    bound = None
    # Without any lossless run the search goes on (down) up to ``hard_max`` runs,
    # whatever the budget: a trial of 0 would wreck the median.
    hard_max = max(max_probes, 6)
    while True:
        if best is None:
            if len(probes) >= hard_max:
                break
        elif len(probes) >= max_probes or (len(probes) >= min_probes and budget.spent()):
            break
        run = probe(rate)
        probes.append({k: run.get(k) for k in ("target", "rate", "lossless", "sim_bound",
                                                "reason", "received", "published", "missed",
                                                "late_ids", "first_id")})
        if log:
            log(f"    {run.get('kind')} {run.get('size')} target {rate:9.1f} -> "
                f"{'lossless' if run['lossless'] else 'LOSSY   '} rate {run.get('rate', 0):9.1f}"
                f"{' (sim-bound)' if run.get('sim_bound') else ''}"
                f"{' (connected late: ids before ' + str(run['first_id']) + ' not seen)' if run.get('late_ids') else ''}"
                f"{'' if run['lossless'] else '  ' + str(run.get('reason', ''))[:90]}")
        achieved = run.get("rate") or 0.0
        if run["lossless"]:
            if best is None or achieved > best["rate"]:
                best = run
            if run.get("sim_bound"):
                # Lossless at what the publisher reached, which is short of the
                # target: good at the achieved rate, the target is too high.
                saturated = good is not None and achieved <= good * (1.0 + tolerance)
                good = max(good or 0.0, achieved)
                if bad is None or rate <= bad:
                    bad, bad_kind = rate, "sim"
                if saturated:
                    break  # the publisher cannot exceed what is already lossless
            else:
                good = rate if good is None else max(good, rate)
                if bad is not None and bad <= rate:
                    bad = None  # noise: a lossless run above an earlier lossy one
        else:
            failing = min(rate, achieved) if run.get("sim_bound") and achieved > 0 else rate
            bad, bad_kind = failing, "loss"
            if good is not None and good >= failing:
                good = None  # noise: re-establish the lower end
        if bad is None:
            rate = rate * step
        elif good is None:
            rate = bad / step
            if rate < floor:
                break
        else:
            if bad / good <= 1.0 + tolerance:
                break
            rate = math.sqrt(good * bad)
    if best is not None:
        if bad is None:
            bound = "probes"  # never lossy: the limit is above what was tried
        elif bad_kind == "sim":
            bound = "sim"  # the publisher, not a loss, set the upper end
    return {"rate": best["rate"] if best else 0.0, "target": best["target"] if best else None,
            "bound": bound, "probes": probes, "best": best}


def alternating_searches(kinds, probe_for, start_for, settings, budget, tolerance=None, log=None,
                         trials=None):
    """Median of ``trials`` (default ``settings.trials``) searches per kind, the
    kinds alternating.

    Trial t runs one search per kind, the order of the kinds reversed every
    other trial. The first search of a kind ramps by 2 from start_for(kind);
    later ones start at the kind's best result so far and step by 1.25 with
    fewer probes. Every trial is run; the time budget only limits the number of
    probes of each search (a share of what is left, by its probe cap). Returns {kind: {"median": rate, "trials": [search, ...],
    "bound": "sim" if the median trial was limited by the publisher}}."""
    tolerance = settings.tolerance if tolerance is None else tolerance
    trials = settings.trials if trials is None else trials
    out = {kind: {"trials": []} for kind in kinds}
    # Each search gets a share of what is left, weighted by its probe cap, so
    # the kind that runs first cannot spend the others' time.
    plan = [(trial, kind) for trial in range(trials)
            for kind in (list(kinds) if trial % 2 == 0 else list(reversed(kinds)))]
    weights = [settings.max_probes if trial == 0 else settings.later_probes for trial, _ in plan]
    for index, (trial, kind) in enumerate(plan):
        done = out[kind]["trials"]
        if not done:
            start, step, probes = start_for(kind), 2.0, settings.max_probes
        else:
            # From the kind's best lossless rate so far: one unlucky loss in the first
            # search (seen at 1 MB frames) must not cap every later trial below it.
            best = max(t["rate"] for t in done)
            first = done[0]
            start = best or (first["probes"][-1]["target"] if first["probes"]
                             else start_for(kind))
            step, probes = 1.25, settings.later_probes
        share = Budget(max(0.0, budget.left()) * weights[index] / sum(weights[index:]))
        if log:
            log(f"  trial {trial + 1}/{trials} {kind}: start {start:.1f} fps")
        done.append(search_max_rate(probe_for(kind), start, share, probes, tolerance,
                                    step=step, log=log))
    for kind in kinds:
        trials = out[kind]["trials"]
        rates = [t["rate"] for t in trials]
        out[kind]["median"] = statistics.median(rates) if rates else 0.0
        ordered = sorted(trials, key=lambda t: t["rate"])
        middle = ordered[(len(ordered) - 1) // 2] if ordered else None
        out[kind]["bound"] = middle["bound"] if middle else None
        out[kind]["rates"] = rates
    return out


def median_runs(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None and not is_nan(r[key])]
    return statistics.median(values) if values else None


def is_nan(value):
    return isinstance(value, float) and math.isnan(value)
