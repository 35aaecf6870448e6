"""The start notification of the simulated area detector (``-npv``/``-nvl``).

Just before the first frame is published, the simulator puts a value into
one PV, the way an operator starts an areaDetector acquisition (for the
areaDetector PVA driver: ``-npv 13PVA1:cam1:Acquire -nvl Acquire``).

``-npv`` names the PV as ``-mpv`` does: ``ca://name`` or a bare name is
Channel Access, ``pva://name`` is PV Access. ``-nvl`` is text; the put
converts it to the PV's type (a number, or an enum choice by name or
index), and a value the PV does not take is an error. A PV that does not
connect within the timeout, or refuses the put, stops the simulator with a
one-line error (exit 1) before any frame is published: a detector that was
never started would otherwise look like a silent stream.
"""

import pvaccess as pva

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.naming import validate_channel


class NotifyError(RuntimeError):
    """The notification PV could not be set."""


def parse_notify_pv(spec):
    """``(name, provider, scheme)`` of ``-npv``: ``ca://`` or bare is CA, ``pva://`` is PVA."""
    spec = (spec or "").strip()
    scheme, sep, name = spec.partition("://")
    if not sep:
        scheme, name = "ca", spec
    scheme = scheme.lower()
    if scheme not in ("ca", "pva"):
        raise ConfigurationError(
            f"-npv {spec!r}: unknown protocol '{scheme}://'; use ca://name, pva://name or a"
            " bare (CA) name")
    if not name:
        raise ConfigurationError("-npv: the PV name is empty; give e.g. -npv 13PVA1:cam1:Acquire")
    validate_channel(name, "notification PV (-npv)")
    return name, pva.CA if scheme == "ca" else pva.PVA, scheme


class StartNotifier:
    """Puts ``value`` into the ``-npv`` PV when :meth:`notify` is called."""

    def __init__(self, spec, value, timeout=5.0):
        self.name, self._provider, self.scheme = parse_notify_pv(spec)
        if value is None or str(value) == "":
            raise ConfigurationError("-nvl: the notification value is empty; give e.g. -nvl 1")
        if timeout <= 0:
            raise ConfigurationError(f"--notify-timeout must be > 0 seconds, got {timeout:g}")
        self.value = str(value)
        self.timeout = float(timeout)

    def describe(self):
        """One line for the start-up report."""
        return f"will put {self.value!r} to {self.scheme}://{self.name} when publishing starts"

    def notify(self):
        """Put the value; raise :class:`NotifyError` with a one-line message on failure."""
        try:
            channel = pva.Channel(self.name, self._provider)
            channel.setTimeout(self.timeout)
            channel.put(self.value)
        except Exception as exc:  # pvaccess reports every failure as PvaException
            reason = str(exc).strip() or type(exc).__name__
            raise NotifyError(
                f"cannot put {self.value!r} to notification PV {self.scheme}://{self.name}:"
                f" {reason}; check the PV name (-npv), its protocol and the value (-nvl)") from None
        return f"put {self.value!r} to {self.scheme}://{self.name}"
