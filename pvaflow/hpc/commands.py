"""Control commands of a processing stage: configure, reset_stats, get_stats, stop.

Mixed into :class:`pvaflow.hpc.consumer.Consumer`; runs on the owner's thread.
"""

import time

from .accounting import IdSchedule
from .shared_counters import ADMITTED, ERRORS, MISSED, PROCESSED, REJECTED

FAILED = object()  # what Consumer._call_user returns when the processor raised


class CommandsMixin:
    def _execute(self, request):
        command = request.command
        ok, message, result = True, "", ""
        if command == "stop":
            self._stop_requested = True
            message = "stopping: draining received frames"
        elif command == "reset_stats":
            self.reset_stats()
            message = "statistics reset"
        elif command == "get_stats":
            stats = self._tick(report=False)
            result = self.reporter.to_json(stats)
            message = "statistics published"
        elif command == "configure":
            ok, message = self.configure(request.args)
        if self.control is not None:
            self.control.reply(request, ok, message, result)

    def configure(self, config_dict):
        """Apply framework keys, pass the rest to the processor's configure()."""
        system = {}
        for key in ("receiverQueueSize", "skipInitialUpdates", "objectIdOffset"):
            if key in config_dict:
                system[key] = config_dict[key]
        try:
            if "receiverQueueSize" in system:
                if self.queue is None:
                    raise ValueError("receiverQueueSize can change only when started with -rqs >= 0")
                self.queue.max_length = max(int(system["receiverQueueSize"]), 0)
            if "skipInitialUpdates" in system:
                self.accounting.skip_initial = max(int(system["skipInitialUpdates"]), 0)
            if "objectIdOffset" in system:
                offset = int(system["objectIdOffset"])
                if offset < 1:
                    raise ValueError(f"objectIdOffset must be >= 1, got {offset}")
                updates = self.accounting.schedule.updates
                self.accounting.schedule = IdSchedule.from_offset(offset, updates)
        except (TypeError, ValueError) as exc:
            return False, f"configure failed: {exc}"
        if self._call_user("configure", config_dict) is FAILED:
            return False, f"configure failed: {self.last_error}"
        return True, "configuration applied"

    def reset_stats(self):
        with self._lock:
            self.accounting.reset()
            self.n_processed = 0
            self.n_errors = 0
            self.n_hook_errors = 0
            self._errors_reported = 0
            self.process_seconds = 0.0
            self.last_error = ""
            self.latency.reset()
            if self.queue is not None:
                self.queue.reset_stats()
            shared = self.shared
            if shared is not None:  # the parent's exact copy follows the reset at once
                for index in (ADMITTED, PROCESSED, ERRORS, REJECTED, MISSED):
                    shared[index] = 0
            if self.publisher is not None:
                self.publisher.reset_stats()
            if self.receiver is not None:
                self.receiver.reset_stats()
            for extension in self.extensions:
                extension.reset_stats()
            self.reporter.begin(time.time())
        self._call_user("resetStats")

