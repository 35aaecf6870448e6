"""Plotting ``--stats-file`` series with matplotlib: rates, loss and latency over time."""

from pvaflow.hpc.errors import ConfigurationError


def _pyplot():
    try:
        import matplotlib  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigurationError("plotting needs matplotlib: pip install 'pvaflow[ops]'"
                                 " (or leave out -o for the summary table only)") from None
    matplotlib.use("Agg")  # files only; never opens a window
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    return plt


def plot(series_list, path, title="pvaflow run"):
    """Write a three-panel figure (rates, cumulative loss, latency p99) to ``path``."""
    plt = _pyplot()
    starts = [s.points[0]["t"] for s in series_list if s.points and s.points[0]["t"] > 0]
    t0 = min(starts) if starts else 0.0
    fig, (rates, loss, latency) = plt.subplots(3, 1, sharex=True, figsize=(10, 9))
    for item in series_list:
        if not item.points:
            continue
        times = [(p["t"] - t0) if p["t"] > 0 else p.get("runtime", 0.0) for p in item.points]
        rates.plot(times, [p.get("processedRate") or 0.0 for p in item.points],
                   marker=".", label=item.label)
        loss.plot(times, [(p.get("missed") or 0) + (p.get("rejected") or 0) + (p.get("errors") or 0)
                          for p in item.points], marker=".", label=item.label)
        latency.plot(times, [p.get("latencyP99Ms") or 0.0 for p in item.points],
                     marker=".", label=item.label)
    rates.set_ylabel("processed / s")
    rates.set_title(title)
    loss.set_ylabel("missed + rejected\n+ errors (total)")
    latency.set_ylabel("latency p99 (ms)")
    latency.set_xlabel("time (s)")
    for axes in (rates, loss, latency):
        axes.grid(True, alpha=0.3)
    handles, labels = rates.get_legend_handles_labels()
    if labels:
        rates.legend(handles, labels, fontsize="small", ncol=min(4, len(labels)), loc="best")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise ConfigurationError(f"cannot write '{path}': {exc.strerror}") from None
    finally:
        plt.close(fig)
    return path
