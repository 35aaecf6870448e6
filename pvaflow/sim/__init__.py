"""Simulated area detector: frame sources and the NTNDArray publishing engine.

See :mod:`pvaflow.sim.frames` and :mod:`pvaflow.sim.server`; the command-line
tool is :mod:`pvaflow.cli.sim_server` (``pvapy-ad-sim-server``).
"""
