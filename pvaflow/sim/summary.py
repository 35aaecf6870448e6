"""The simulator's end-of-run summary: the report line and the ``--summary-file`` JSON."""

import json
import math
import os


def summary_line(summary):
    """The final report line of a summary dict (see ``SimServer.summary``)."""
    ids = "no ids"
    if summary["published"]:
        ids = f"ids {summary['first_id']}-{summary['last_id']}"
    return (f"summary: published {summary['published']} frames ({ids}),"
            f" {summary['rate']:.1f} fps, elapsed {summary['elapsed_s']:.3f} s,"
            f" stopped by {summary['stopped_by']}")


def write_summary(path, summary):
    """Write ``summary`` as JSON, atomically (temporary file then rename)."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as handle:
        json.dump(summary, handle, default=_json_default)
        handle.write("\n")
    os.replace(temporary, path)


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
