"""Metadata PVs of the simulated area detector (``-mpv/--metadata-pv``).

``-mpv 'pva://a,ca://b,c'`` makes the simulator serve one scalar (double)
PV per name and update every one of them once per frame, just before the
frame, with

* the value :func:`metadata_value` ``(uniqueId, k)`` (``k``: the PV's position
  in the list, from 0), so a test can tell which frame a value belongs to;
* the frame's own time stamp, to the nanosecond.

PVA PVs (``pva://``) are records of the simulator's PVA server. CA PVs
(``ca://`` or a bare name) are ``ao`` records of an IOC running inside the
simulator (:class:`pvaccess.CaIoc`), loaded from the ``base.dbd`` that ships
with pvaccess (:func:`find_dbd_directory`).

An IOC record takes its time stamp from the IOC's clock when it processes;
no client can write it. So with CA PVs the frame time is *read from* the
IOC: a helper ``ai`` record (``<helper>:clk``) is processed once per frame,
every CA metadata record copies its time stamp (``TSEL`` -> ``clk.TIME``),
and a ``stringin`` record with the ``Soft Timestamp`` device support
(``<helper>:clks``, same ``TSEL``) formats that time stamp as
``seconds.nanoseconds``, which becomes the time stamp of the PVA metadata
PVs and of the frame. All three then carry the same time to the nanosecond.
"""

import os
import re
import tempfile
import time
import uuid

import pvaccess as pva

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.metadata import parse_metadata_channels

METADATA_TYPE = {"value": pva.DOUBLE, "timeStamp": pva.PvTimeStamp()}

_DB_TEXT = (
    'record(ai, "$(H):clk") {\n  field(FLNK, "$(H):clks")\n}\n'
    'record(stringin, "$(H):clks") {\n  field(DTYP, "Soft Timestamp")\n'
    '  field(INP, "@%s.%09f")\n  field(TSEL, "$(H):clk.TIME")\n}\n'
)
_DB_RECORD = ('record(ao, "{name}") {{\n  field(TSEL, "$(H):clk.TIME")\n'
              '  field(MDEL, "-1")\n  field(ADEL, "-1")\n  field(PREC, "3")\n}}\n')

#: Characters EPICS accepts in record names without a warning.
_RECORD_NAME = re.compile(r"[A-Za-z0-9_\-+:\[\]<>;]+")

#: The IOC clock and the host clock must agree this well at start-up.
_CLOCK_CHECK_S = 5.0


def metadata_value(unique_id, index):
    """The value PV ``index`` (0, 1, ...) carries with frame ``unique_id``."""
    return float(unique_id * 1000 + index)


def find_dbd_directory(candidates=None):
    """The folder holding ``base.dbd`` for :class:`pvaccess.CaIoc`.

    Looked for in ``$EPICS_DB_INCLUDE_PATH`` (if set) and then in the ``dbd``
    folder inside the installed ``pvaccess`` package, or in ``candidates``
    when given (tests). Raises :class:`ConfigurationError` when none has it.
    """
    if candidates is None:
        candidates = [p for p in os.environ.get("EPICS_DB_INCLUDE_PATH", "").split(os.pathsep) if p]
        candidates.append(os.path.join(os.path.dirname(pva.__file__), "dbd"))
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "base.dbd")):
            return folder
    raise ConfigurationError(
        "CA metadata PVs need the EPICS database definitions (base.dbd), found in none of "
        + ", ".join(candidates) + "; reinstall pvapy or set EPICS_DB_INCLUDE_PATH to the"
        " folder holding base.dbd")


class MetadataPvs:
    """Serves and updates the metadata PVs named by ``spec`` (see the module docstring).

    ``server`` is the simulator's :class:`pvaccess.PvaServer`; ``reserved``
    are names already taken (the image channel).
    """

    def __init__(self, spec, server, reserved=()):
        parsed = parse_metadata_channels(spec, what="-mpv/--metadata-pv")
        if not parsed:
            raise ConfigurationError(f"-mpv/--metadata-pv '{spec}' names no PV; give e.g. 'pva://x,ca://y'")
        for protocol, name in parsed:
            if protocol == "ca" and not _RECORD_NAME.fullmatch(name):
                raise ConfigurationError(
                    f"-mpv/--metadata-pv: '{name}' is not a valid CA record name; use letters,"
                    " digits and _-+:[]<>; only")
            if name in reserved:
                raise ConfigurationError(
                    f"-mpv/--metadata-pv: '{name}' is also the image channel; choose another name")
        self.names = [name for _, name in parsed]
        self.ca_names = [name for protocol, name in parsed if protocol == "ca"]
        self.pva_names = [name for protocol, name in parsed if protocol == "pva"]
        # (index, name) pairs in the order of the -mpv list, split by protocol
        self._ca = [(i, n) for i, (p, n) in enumerate(parsed) if p == "ca"]
        self._pva = [(i, n, pva.PvObject(METADATA_TYPE)) for i, (p, n) in enumerate(parsed) if p == "pva"]
        self._server = server
        self._ioc = None
        self.helper = None
        if self.ca_names:
            self._start_ioc(find_dbd_directory())
        for _, name, record in self._pva:
            server.addRecord(name, record.copy(), None)

    # --------------------------------------------------------------- CA IOC
    def _start_ioc(self, dbd_directory):
        self.helper = f"pvaflow:sim:{uuid.uuid4().hex[:12]}"
        ioc = pva.CaIoc()
        try:
            ioc.loadDatabase("base.dbd", dbd_directory, "")
            ioc.registerRecordDeviceDriver()
            with tempfile.NamedTemporaryFile("w", suffix=".db", delete=False) as db:
                db.write(_DB_TEXT)
                for name in self.ca_names:
                    db.write(_DB_RECORD.format(name=name))
            try:
                ioc.loadRecords(db.name, f"H={self.helper}")
            finally:
                os.unlink(db.name)
            ioc.start()
        except pva.PvaException as exc:
            raise RuntimeError(
                f"the CA IOC for metadata PVs {', '.join(self.ca_names)} did not start: {exc}"
                " (a process can start only one IOC)") from None
        self._ioc = ioc
        seconds, _ = self._ioc_time()
        if abs(seconds - time.time()) > _CLOCK_CHECK_S:
            raise ConfigurationError(
                f"the IOC time stamp {seconds} is not the host time {time.time():.0f}; set TZ"
                " (e.g. TZ=UTC) so that strftime('%s') works, or use pva:// metadata PVs")

    def _ioc_time(self):
        """Process the clock record; return its time stamp (seconds, nanoseconds)."""
        ioc = self._ioc
        ioc.putField(self.helper + ":clk.PROC", 1)
        seconds, _, nanoseconds = ioc.getField(self.helper + ":clks").partition(".")
        return int(seconds), int(nanoseconds)

    # ----------------------------------------------------------- per frame
    def publish(self, unique_id):
        """Update every metadata PV for frame ``unique_id``; return its (seconds, nanoseconds).

        Called by the publishing thread just before the frame is published,
        which then carries the returned time stamp.
        """
        if self._ioc is not None:
            seconds, nanoseconds = self._ioc_time()
            put = self._ioc.putField
            base = unique_id * 1000
            for index, name in self._ca:
                put(name, float(base + index))
        else:
            stamp = time.time()
            seconds = int(stamp)
            nanoseconds = int((stamp - seconds) * 1e9)
        update = self._server.updateUnchecked
        for index, name, record in self._pva:
            record.setDouble("value", float(unique_id * 1000 + index))
            record.setLong("timeStamp.secondsPastEpoch", seconds)
            record.setInt("timeStamp.nanoseconds", nanoseconds)
            update(name, record)
        return seconds, nanoseconds

    def describe(self):
        """Lines for the start-up output."""
        lines = []
        if self.pva_names:
            lines.append(f"metadata PVs (PVA): {', '.join(self.pva_names)}")
        if self.ca_names:
            lines.append(f"metadata PVs (CA, in-process IOC): {', '.join(self.ca_names)}")
        lines.append("metadata value of PV k (from 0) for frame n: n * 1000 + k,"
                     " time stamp: the frame's")
        return lines

    def stop(self):
        """Shut the IOC down (the PVA records go with the server)."""
        if self._ioc is not None:
            ioc, self._ioc = self._ioc, None
            try:
                ioc.stop()
            except pva.PvaException:
                pass
