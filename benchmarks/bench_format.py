"""Formatting of the benchmark tables: rates with their bound marks, ratios, shares."""

import harness as h


def fmt_rate(value, bound=None):
    """A rate; ``*`` when the publisher could not go faster (the pipeline's limit on these
    CPUs), ``>=`` when no tried rate was lossy (the limit is higher)."""
    if value is None:
        return "-"
    text = f"{value:,.0f}"
    if bound == "probes":
        return ">=" + text
    if bound == "sim":
        return text + "*"
    return text


def gbs(rate, size):
    return None if rate is None else rate * h.frame_bytes(size) / 1e9


def fmt(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def ratio(a, b):
    return a / b if a and b else None


def ratio_text(ours, theirs):
    """pvaflow/pvapy of two search results, marked like the rates they come from."""
    value = ratio(ours["median"], theirs["median"])
    if value is None:
        return "-"
    if ours["bound"] == "probes" and theirs["bound"] == "probes":
        return "n/a"  # both only lower bounds: not comparable
    prefix = ">=" if ours["bound"] == "probes" else "<=" if theirs["bound"] == "probes" else ""
    suffix = "*" if "sim" in (ours["bound"], theirs["bound"]) else ""
    return f"{prefix}{value:.2f}{suffix}"


def pct(value, ceiling):
    return "-" if not value or not ceiling else f"{100 * value / ceiling:.0f}%"
