"""Ready-made processors for pvaflow stages (tiles, ...)."""
