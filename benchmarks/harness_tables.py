"""The consumer cases' tables (cases 1, 2 and 3): each size (and fleet) searched
for the bare monitor, pvaflow and pvapy alternating, so that every framework's
share of the transport ceiling compares runs made side by side, and each row
says whether the issue's goal is met."""

import harness as h
from bench_format import fmt as _fmt, fmt_rate as _fmt_rate, gbs as _gbs, pct as _pct
from bench_format import ratio as _ratio, ratio_text as _ratio_text

KINDS = ("bare",) + h.FRAMEWORKS
RATIO_GOAL = 1.5        # pvaflow / pvapy
NEAR_CEILING = 0.90     # ... or this share of the ceiling (where pvapy is near it too)
SINGLE_CEILING = 0.85   # case 2: pvaflow within 15% of the bare monitor at every size


def goal(ours, theirs, ceiling, single=False):
    """'met' or 'NOT met (why)' for one row: pvaflow >= 1.5x pvapy, or pvaflow
    within 10% of the ceiling; for one consumer also within 15% of it."""
    o, t = ours["median"], theirs["median"]
    if not o or not ceiling:
        return "n/a"
    share = o / ceiling
    why = []
    if single and share < SINGLE_CEILING:
        why.append(f"{100 * share:.0f}% of ceiling < {100 * SINGLE_CEILING:.0f}%")
    if not (t and o / t >= RATIO_GOAL) and share < NEAR_CEILING:
        why.append(f"ratio {o / t:.2f} < {RATIO_GOAL}" if t else "no pvapy figure")
    return "met" if not why else "NOT met (" + "; ".join(why) + ")"


def ceiling_text(result):
    return _fmt_rate(result["median"], result["bound"])


def consumer_header(first_column):
    return (f"{first_column} | {'bare fps':>10} | {'pvaflow fps':>12} {'GB/s':>7} {'%ceil':>6} |"
            f" {'pvapy fps':>12} {'GB/s':>7} {'%ceil':>6} | {'ratio':>7} | goal")


def consumer_row(label, size, result, single):
    """One table line and its row dict for a search over KINDS at ``size``."""
    bare, ours, theirs = result["bare"], result["pvaflow"], result["pvapy"]
    ceiling = bare["median"]
    row = {"size": size, "ceiling": ceiling, "ceiling_bound": bare["bound"],
           "bare": {"fps": ceiling, "gbs": _gbs(ceiling, size), "bound": bare["bound"],
                    "trials": bare["rates"]}}
    for kind in h.FRAMEWORKS:
        fps = result[kind]["median"]
        row[kind] = {"fps": fps, "gbs": _gbs(fps, size), "bound": result[kind]["bound"],
                     "ceiling_share": fps / ceiling if ceiling and fps else None,
                     "trials": result[kind]["rates"]}
    row["ratio"] = _ratio(ours["median"], theirs["median"])
    row["goal"] = goal(ours, theirs, ceiling, single)
    line = (f"{label} | {ceiling_text(bare):>10} |"
            f" {_fmt_rate(ours['median'], ours['bound']):>12}"
            f" {_fmt(_gbs(ours['median'], size)):>7} {_pct(ours['median'], ceiling):>6} |"
            f" {_fmt_rate(theirs['median'], theirs['bound']):>12}"
            f" {_fmt(_gbs(theirs['median'], size)):>7} {_pct(theirs['median'], ceiling):>6} |"
            f" {_ratio_text(ours, theirs):>7} | {row['goal']}")
    return line, row


def trials_line(label, result):
    return f"    {label} trials (fps): " + " ; ".join(
        f"{kind} " + "/".join(f"{r:,.0f}" for r in result[kind].get("rates", []))
        for kind in KINDS)


FOOTNOTE = ("  bare = the transport ceiling of the same rows' runs (bare pvaccess monitors, no"
            " framework, searched alternating with the frameworks); %ceil = share of it;"
            " ratio = pvaflow/pvapy; goal: ratio >= 1.5 or pvaflow >= 90% of the ceiling"
            " (one consumer: also >= 85%)")
