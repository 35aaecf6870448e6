"""Operations tools: fleet monitoring, control, workflow files and reports.

These modules serve the ``pvapy-hpc-monitor``, ``pvapy-hpc-control``,
``pvapy-hpc-workflow`` and ``pvapy-hpc-report`` tools. They are clients of
the status and control records and of the ``--stats-file`` output; nothing
in :mod:`pvaflow.hpc` imports them.
"""
