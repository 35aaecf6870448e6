"""EPICS access security for the records a pvaflow process serves.

Without an access security file (ACF) records are served as pvaccess serves
them: any client on the network may write them, and the process says so in
its start-up log. With an ACF (``--access-security-file``):

* status and output records join the read-only group (default ``READONLY``);
* the control record joins the control group (default ``CONTROL``), whose
  WRITE rule names the users and hosts allowed to steer the process;
* any other record joins the ACF's ``DEFAULT`` group.

A group the ACF does not define falls back to ``DEFAULT``, so the ACF must
define the groups it is given; :meth:`AccessPolicy.check_groups` refuses to
start otherwise. Clients are identified by their operating-system user name
and host, as EPICS access security does.
"""

import logging
import os
import re

import pvaccess as pva

from .errors import ConfigurationError

log = logging.getLogger(__name__)

AS_LEVEL = 1


class AccessPolicy:
    def __init__(self, acf_path=None, control_group="CONTROL", readonly_group="READONLY",
                 macros=""):
        self.acf_path = acf_path
        self.control_group = control_group
        self.readonly_group = readonly_group
        self.macros = macros or ""
        if acf_path:
            self.check_groups()

    @property
    def active(self):
        return bool(self.acf_path)

    def check_groups(self):
        if not os.path.isfile(self.acf_path):
            raise ConfigurationError(
                f"access security file '{self.acf_path}' does not exist; check --access-security-file")
        with open(self.acf_path, errors="replace") as f:
            text = f.read()
        defined = set(re.findall(r"\bASG\s*\(\s*([A-Za-z0-9_\-:]+)\s*\)", text))
        missing = [g for g in (self.control_group, self.readonly_group) if g not in defined]
        if missing:
            raise ConfigurationError(
                f"access security file '{self.acf_path}' defines no ASG({missing[0]}); add it"
                " (see the 'Access security' section of streamingFramework.md) or name another"
                " group with --access-security-group / --access-security-readonly-group")

    def apply(self, server):
        """Load the ACF into ``server`` (before any record is added)."""
        if not self.active:
            return
        try:
            with _native_stderr_silenced():  # our one-line error replaces EPICS' parser output
                server.initAs(self.acf_path, self.macros)
        except pva.PvaException as exc:
            raise ConfigurationError(
                f"access security file '{self.acf_path}' is not valid: {exc}; check its syntax") from None
        log.info("access security from %s: control group %s, read-only group %s", self.acf_path,
                 self.control_group, self.readonly_group)

    def add_readonly(self, server, name, pv_object):
        if self.active:
            server.addRecordWithAs(name, pv_object, AS_LEVEL, self.readonly_group)
        else:
            server.addRecord(name, pv_object, None)

    def add_control(self, server, name, pv_object, on_write):
        if self.active:
            server.addRecordWithAs(name, pv_object, AS_LEVEL, self.control_group, on_write)
        else:
            server.addRecord(name, pv_object, on_write)

    def describe(self, names):
        """The start-up log line about protection of ``names``."""
        if self.active:
            return f"records protected by {self.acf_path}: {', '.join(names)}"
        return (f"records served WITHOUT access control (any client may write them): {', '.join(names)};"
                " use --access-security-file to protect them")


class _native_stderr_silenced:
    """Send file descriptor 2 to /dev/null for the duration (C libraries write there)."""

    def __enter__(self):
        import sys
        sys.stderr.flush()
        self._saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        return False
