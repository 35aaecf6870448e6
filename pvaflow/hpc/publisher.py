"""Output of processed objects on a record of the process's own PVA server."""

import logging
import threading

log = logging.getLogger(__name__)


class ServerPublisher:
    """Publishes objects on ``channel`` of ``server`` (output mode ``pvas``).

    The record is created from the first object's structure (or from
    :meth:`create_record`), so any structure can be published.
    ``updateOutputChannel`` is the pvapy-compatible name processors call.
    """

    def __init__(self, server, channel, policy=None):
        self.server = server
        self.outputChannel = channel
        self.n_published = 0
        self.n_errors = 0
        self.last_error = ""
        self._created = False
        self._policy = policy
        self._lock = threading.Lock()

    def create_record(self, type_object):
        with self._lock:
            if not self._created:
                if self._policy is not None:
                    self._policy.add_readonly(self.server, self.outputChannel, type_object.copy())
                else:
                    self.server.addRecord(self.outputChannel, type_object.copy(), None)
                self._created = True

    def updateOutputChannel(self, pvObject):
        if not self._created:
            self.create_record(pvObject)
        try:
            self.server.update(self.outputChannel, pvObject)
            self.n_published += 1
        except Exception as exc:  # a wrong structure from the processor
            self.n_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"

    update = updateOutputChannel

    def reset_stats(self):
        self.n_published = 0
        self.n_errors = 0

    def stats(self):
        return {"nPublished": self.n_published, "nErrors": self.n_errors}
