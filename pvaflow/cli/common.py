"""Pieces shared by the pvaflow command-line tools.

Exit codes: 0 clean run (including Ctrl-C and a ``stop`` command), 1 runtime
failure, 2 bad input. Bad input is reported as one line on stderr:
``<tool>: error: <what is wrong and how to fix it>``.
"""

import argparse
import logging
import os
import signal
import sys
import threading
import time

from pvaflow import __version__
from pvaflow.hpc.errors import ConfigurationError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class UsageError(Exception):
    """Raised by :class:`ToolArgumentParser` instead of exiting."""


class ToolArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that reports errors as one line and never exits by itself
    except for ``--help`` and ``--version``."""

    def error(self, message):
        raise UsageError(message)


def new_parser(prog, description):
    """Return a parser with the options every tool has (``-v/--version``)."""
    parser = ToolArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("-v", "--version", action="version", version=f"%(prog)s (pvaflow) {__version__}")
    return parser


def add_logging_options(parser):
    parser.add_argument("-ll", "--log-level", dest="log_level", default=None, type=str.lower,
                        choices=LOG_LEVELS, help="Log level (default: warning messages only).")
    parser.add_argument("-lf", "--log-file", dest="log_file", default=None,
                        help="Write the log to this file instead of stderr.")
    parser.add_argument("-dc", "--disable-curses", dest="disable_curses", action="store_true",
                        help="Accepted for compatibility: pvaflow never takes over the screen; "
                             "reports are plain text lines.")


def add_access_security_options(parser):
    parser.add_argument("--access-security-file", "-asf", dest="access_security_file", default=None,
                        help="EPICS access security file (ACF) protecting every record this process "
                             "serves; without it any client may write them.")
    parser.add_argument("--access-security-group", "-asg", dest="access_security_group",
                        default="CONTROL", help="ACF group of the control record (default: CONTROL).")
    parser.add_argument("--access-security-readonly-group", dest="access_security_readonly_group",
                        default="READONLY",
                        help="ACF group of the status and output records (default: READONLY).")
    parser.add_argument("--access-security-macros", dest="access_security_macros", default="",
                        help="Macro substitutions for the ACF, e.g. 'P=BL1'.")


def setup_logging(log_level, log_file):
    """Attach the one handler of the process (only CLIs do this)."""
    level = getattr(logging, (log_level or "warning").upper())
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("pvaflow")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def positive(kind=float, allow_zero=True):
    """argparse type: a number >= 0 (or > 0), with a clear message."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a valid {kind.__name__}") from None
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise argparse.ArgumentTypeError(f"'{text}' must be {bound}")
        return value
    convert.__name__ = kind.__name__
    return convert


def exit_now(code):
    """Leave the process with ``code`` once a stage has stopped cleanly.

    Everything is reported and flushed by then. Skipping the interpreter's
    teardown avoids pvaccess's threads being torn down under live callbacks,
    which can abort the process after a clean stop.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def print_error(prog, message):
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def runtime_failures_reported(prog, body):
    """Wrap ``body`` so an unexpected runtime failure becomes one line and exit 1."""
    def guarded(args):
        try:
            return body(args)
        except (ConfigurationError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a runtime failure: one line, exit 1
            logging.getLogger("pvaflow").debug("failure", exc_info=True)
            print_error(prog, f"{type(exc).__name__}: {exc}")
            return EXIT_FAILURE
    return guarded


#: Set by a launcher (the workflow runner) to its pid: the tool stops when that process is gone.
PARENT_PID_ENV = "PVAFLOW_PARENT_PID"


def stop_when_parent_is_gone(period=0.5):
    """When ``$PVAFLOW_PARENT_PID`` is set, SIGTERM ourselves once that parent is gone
    (at once when it died while we were starting).

    A launcher killed with SIGKILL cannot stop what it started; the tools stop
    themselves instead, through their usual SIGTERM path (drain, final report).
    The variable is removed from the environment so that processes we start
    do not watch a process that is not their parent.
    """
    value = os.environ.pop(PARENT_PID_ENV, "")
    if not value.isdigit():
        return
    parent = int(value)
    if os.getppid() != parent:  # the launcher died while we were starting up
        os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(period)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="pvaflow-parent-watch", daemon=True).start()


def run_tool(prog, parser, argv, body):
    """Parse ``argv`` and call ``body(args) -> int``; map errors to exit codes."""
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print_error(prog, f"{exc} (see '{prog} --help')")
        return EXIT_BAD_INPUT
    stop_when_parent_is_gone()
    try:
        return body(args)
    except ConfigurationError as exc:
        print_error(prog, str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_OK
