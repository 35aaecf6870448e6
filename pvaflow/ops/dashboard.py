"""Rendering fleet rows: a rich table for terminals, plain text otherwise."""

import time

from .fleet_view import problems

COLUMNS = (
    # header, row key, width
    ("process", "label", 28), ("state", "state", 8), ("status", "status", 7),
    ("rate/s", "processedRate", 9), ("processed", "processed", 10), ("missed", "missed", 8),
    ("rejected", "rejected", 8), ("errors", "errors", 7), ("queue", "queue", 11),
    ("p99 ms", "latencyP99Ms", 8), ("restarts", "restarts", 8),
)
STATUS_STYLE = {"ok": "green", "stale": "bold yellow", "down": "bold red", "stopped": "dim"}


def _queue_text(row):
    depth, size = row.get("queueDepth"), row.get("queueMax")
    if depth is None:
        return "-"
    return f"{depth}/{size}" if size else f"{depth}/inf"


def cell(row, key):
    """The text of one cell."""
    if key == "queue":
        return _queue_text(row)
    value = row.get(key)
    if value is None or value == "":
        return "-"
    if key == "processedRate":
        return f"{value:.1f}"
    if key == "latencyP99Ms":
        return f"{value:.2f}"
    return str(value)


def total_cells(total):
    """Cells of the totals row, by row key."""
    return {
        "label": f"TOTAL {total['alive']}/{total['processes']} alive",
        "state": "", "status": f"{total['stale']} stale" if total["stale"] else "",
        "processedRate": f"{total['processedRate']:.1f}", "processed": str(total["processed"]),
        "missed": str(total["missed"]), "rejected": str(total["rejected"]),
        "errors": str(total["errors"]), "queue": str(total["queueDepth"]),
        "latencyP99Ms": f"{total['latencyP99Ms']:.2f}", "restarts": str(total["restarts"]),
    }


def title(total, source, period):
    """The heading of a table: source, time, refresh period and liveness counts."""
    stamp = time.strftime("%H:%M:%S")
    refresh = f"refresh {period:g} s  " if period else ""
    return (f"pvaflow fleet {source}  {stamp}  {refresh}"
            f"{total['alive']}/{total['processes']} alive, {total['down']} down, "
            f"{total['stale']} stale" + ("  (Ctrl-C quits)" if period else ""))


def render_rich(rows, total, heading):
    """A :class:`rich.table.Table` of the rows with a totals row; problems in colour."""
    from rich.table import Table  # pylint: disable=import-outside-toplevel

    table = Table(title=heading, title_justify="left", show_footer=True, expand=False)
    foot = total_cells(total)
    for header, key, _ in COLUMNS:
        justify = "left" if key in ("label", "state", "status") else "right"
        table.add_column(header, footer=foot[key], justify=justify, no_wrap=True,
                         overflow="ellipsis", max_width=40 if key == "label" else None)
    for row in rows:
        bad = problems(row)
        cells = []
        for _, key, _ in COLUMNS:
            text = cell(row, key)
            if key == "status":
                style = STATUS_STYLE.get(row.get("status"), "")
            elif key in bad:
                style = "red" if key in ("errors", "queue") else "yellow"
            else:
                style = ""
            cells.append(f"[{style}]{_escape(text)}[/]" if style else _escape(text))
        table.add_row(*cells, style="dim" if row.get("status") == "stopped" else None)
    if total["down"] or total["errors"]:
        table.footer_style = "bold red"
    elif total["stale"] or total["missed"] or total["rejected"]:
        table.footer_style = "bold yellow"
    else:
        table.footer_style = "bold"
    return table


def _escape(text):
    return text.replace("[", r"\[")


def render_plain(rows, total, heading):
    """The same table as plain text lines (no control codes), problems marked with '!'."""
    lines = [heading]
    lines.append(" ".join(h.rjust(w) if i > 2 else h.ljust(w)
                          for i, (h, _, w) in enumerate(COLUMNS)))
    foot = total_cells(total)
    for values, bad in [({k: cell(r, k) for _, k, _ in COLUMNS}, problems(r)) for r in rows] + \
            [(foot, set())]:
        parts = []
        for i, (_, key, width) in enumerate(COLUMNS):
            text = values[key]
            if key in bad:
                text += "!"
            if len(text) > width:
                text = "~" + text[1 - width:] if key == "label" else text[:width - 1] + "~"
            parts.append(text.rjust(width) if i > 2 else text.ljust(width))
        lines.append(" ".join(parts).rstrip())
    return "\n".join(lines)
