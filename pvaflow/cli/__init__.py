"""Command-line entry points of pvaflow (thin wrappers over pvaflow.hpc)."""
