"""Benchmark results: ``results.json`` (merged case by case, with the run's
metadata) and ``results.png`` (one panel per case, matplotlib Agg)."""

import json
import math
import os
import sys
import time

from harness_procs import load_json
from harness_search import is_nan
from harness_settings import RESULTS_DIR, RESULTS_JSON, RESULTS_PNG, Settings


# ------------------------------------------------------------------------- results
def load_results():
    data = load_json(RESULTS_JSON)
    if not isinstance(data, dict):
        data = {}
    data.setdefault("cases", {})
    return data


def save_case(case_key, payload, meta):
    """Merge one case's results into results.json and redraw results.png."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    data = load_results()
    data["meta"] = meta
    data["cases"][case_key] = payload
    data["table"] = [line for key in sorted(data["cases"])
                     for line in data["cases"][key].get("table", [])]
    temporary = RESULTS_JSON + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(data, handle, indent=1, default=_json_default)
    os.replace(temporary, RESULTS_JSON)
    try:
        draw_png(data)
    except Exception as exc:  # the chart is a convenience; never lose the JSON for it
        print(f"(results.png not drawn: {type(exc).__name__}: {exc})", flush=True)
    return data


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def meta():
    versions = {}
    for name in ("pvaflow", "pvaccess"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:  # pylint: disable=broad-except
            versions[name] = None
    try:
        from importlib.metadata import version  # pylint: disable=import-outside-toplevel
        versions["pvapy"] = version("pvapy")
    except Exception:  # pylint: disable=broad-except
        versions["pvapy"] = None
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "versions": versions,
            "settings": Settings.from_env().describe()}


COLORS = {"bare": "#888888", "bare-kept": "#bbbbbb", "pvaflow": "#1f77b4", "pvapy": "#ff7f0e"}


def _short(value):
    if value is None or is_nan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.3g}"


def draw_png(data):
    """One figure, one panel per case present in ``data``."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    cases = data.get("cases", {})
    panels = [key for key in ("case1", "case2", "case3", "case4", "case5", "case6") if key in cases]
    if not panels:
        return
    cols = min(3, len(panels))
    rows = int(math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.3 * rows), squeeze=False)
    for ax, key in zip([a for row in axes for a in row], panels):
        chart = cases[key].get("chart", {})
        groups = chart.get("groups", [])
        series = chart.get("series", {})
        width = 0.8 / max(1, len(series))
        for index, (name, values) in enumerate(series.items()):
            xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
            ys = [v if v is not None else 0 for v in values]
            bars = ax.bar(xs, ys, width, label=name, color=COLORS.get(name.split()[0]))
            ax.bar_label(bars, labels=[_short(v) for v in values], fontsize=6, padding=1)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups, fontsize=8)
        ax.set_title(cases[key].get("title", key), fontsize=9)
        ax.set_ylabel(chart.get("ylabel", ""), fontsize=8)
        if chart.get("log"):
            ax.set_yscale("log")
            positive = [v for values in series.values() for v in values
                        if v is not None and not is_nan(v) and v > 0]
            if positive:
                ax.set_ylim(bottom=min(positive) / 4, top=max(positive) * 2)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in [a for row in axes for a in row][len(panels):]:
        ax.axis("off")
    meta_ = data.get("meta", {})
    fig.suptitle(f"pvaflow vs pvapy  ({meta_.get('time', '')}, {meta_.get('cpus', '?')} CPUs,"
                 f" median of {meta_.get('settings', {}).get('trials', '?')} trials)", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS_PNG, dpi=110)
    plt.close(fig)
