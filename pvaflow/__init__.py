"""pvaflow: stream EPICS PV Access area-detector data through processing fleets."""

__version__ = "0.1.0"
