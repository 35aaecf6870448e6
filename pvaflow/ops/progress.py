"""A progress line: rewritten in place on a terminal, plain periodic lines otherwise."""

import sys
import time


class ProgressLine:
    """Shows ``text`` at most every ``period`` seconds.

    On a terminal the line is redrawn in place (carriage return, padded to
    erase the previous text) and ended by :meth:`end` or by any message
    printed with :meth:`message`. Elsewhere (a log file, a pipe) one plain
    line is printed per period, so logs never receive control codes.
    """

    def __init__(self, stream=None, period=10.0, live=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.period = period if not self.live else min(period, 1.0)
        self._width = 0
        self._next = 0.0

    def update(self, text, force=False):
        """Show ``text`` if a period has passed (always with ``force``)."""
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.period
        if self.live:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self):
        """Finish the live line."""
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def message(self, text):
        """Print a line of its own (ending the live line first)."""
        self.end()
        self.stream.write(text + "\n")
        self.stream.flush()
