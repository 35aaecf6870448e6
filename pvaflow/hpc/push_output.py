"""Push output modes: send each output object to a channel served elsewhere.

* ``pva``: a PV Access put of each object into the remote record (e.g. a
  downstream consumer in ``pvas`` input mode).
* ``rpc``: an RPC request per object to a remote service (e.g. a downstream
  consumer in ``rpc`` input mode). The reply says whether the object was
  accepted; with ``{"retry": seconds}`` in ``--output-args`` a refused object
  (queue full) is sent again, with a growing pause, until it is accepted or
  the retry time is spent -- back-pressure instead of loss. What is finally
  dropped is counted.

Both keep working when the downstream restarts (a new connection is made
on the next object) and never block longer than their timeout. Counters:
sent, failed (transport errors), rejected (refused by the receiver),
retried, dropped and the seconds spent waiting.
"""

import time

import pvaccess as pva

from .errors import ConfigurationError

OUTPUT_ARG_KEYS = {"pva": {"timeout"}, "rpc": {"timeout", "retry", "retryDelay"},
                   "scatter": {"timeout", "retry", "targets"}}


def check_output_args(mode, args):
    allowed = OUTPUT_ARG_KEYS.get(mode, set())
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ConfigurationError(
            f"--output-args key(s) {', '.join(unknown)} unknown for output mode '{mode}';"
            f" allowed: {', '.join(sorted(allowed)) or 'none'}")
    for key in allowed & set(args) - {"targets"}:
        value = args[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigurationError(f"--output-args '{key}' must be a number >= 0, got {value!r}")


class _PushOutput:
    def __init__(self, channel, args):
        self.outputChannel = channel
        self.timeout = float(args.get("timeout", 5.0))
        self._created = True  # nothing to create: the record lives downstream
        self.reset_stats()

    def create_record(self, type_object):
        pass

    def reset_stats(self):
        self.n_published = 0
        self.n_errors = 0
        self.n_rejected = 0
        self.n_retried = 0
        self.n_dropped = 0
        self.wait_seconds = 0.0
        self.last_error = ""

    def stats(self):
        return {"nPublished": self.n_published, "nErrors": self.n_errors, "nRejected": self.n_rejected,
                "nRetried": self.n_retried, "nDropped": self.n_dropped, "waitSeconds": self.wait_seconds}


class PvaPutOutput(_PushOutput):
    def __init__(self, channel, args):
        super().__init__(channel, args)
        self._channel = None

    def updateOutputChannel(self, pvObject):
        try:
            if self._channel is None:
                self._channel = pva.Channel(self.outputChannel)
                self._channel.setTimeout(self.timeout)
            self._channel.put(pvObject, "")
            self.n_published += 1
        except Exception as exc:  # downstream gone or refusing: count, reconnect next time
            self.n_errors += 1
            self.n_dropped += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            self._channel = None


class RpcOutput(_PushOutput):
    def __init__(self, channel, args):
        super().__init__(channel, args)
        self.retry = float(args.get("retry", 0.0))
        self.retry_delay = float(args.get("retryDelay", 0.001))
        self._client = None

    def _invoke(self, pvObject):
        if self._client is None:
            self._client = pva.RpcClient(self.outputChannel)
        return self._client.invoke(pvObject, self.timeout)

    def updateOutputChannel(self, pvObject):
        deadline = None
        delay = self.retry_delay
        while True:
            try:
                reply = self._invoke(pvObject)
            except Exception as exc:  # no such service, timeout, downstream restarting
                self.n_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self._client = None
                reason = "error"
            else:
                if reply.getInt("status") == 0:
                    self.n_published += 1
                    return
                self.n_rejected += 1
                reason = reply.getString("reason") if reply.hasField("reason") else "error"
                self.last_error = reply.getString("errorMessage")[:300]
            if self.retry <= 0 or reason not in ("queue_full", "error"):
                break
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.retry
            if now + delay > deadline:
                break
            time.sleep(delay)
            self.wait_seconds += delay
            self.n_retried += 1
            delay = min(delay * 2, 0.05)
        self.n_dropped += 1


class ScatterOutput(_PushOutput):
    """Load-aware scatter over several ``rpc`` receivers.

    Each object goes to the next target (round robin) whose queue has room:
    a target that refuses (queue full) or fails is skipped for this object
    and the next one is tried; the object is dropped only when every target
    refused it (after ``retry`` seconds of further rounds, when given).
    Per-target counters: sent, skipped (refused or failed), errors.
    """

    def __init__(self, channel_pattern, args):
        super().__init__(channel_pattern, args)
        targets = args.get("targets")
        if not targets:
            raise ConfigurationError(
                "output mode 'scatter' needs --output-args '{\"targets\": \"1-3\"}': the ids that"
                " replace '*' in -oc (the downstream rpc input channels)")
        from .id_list import parse_id_list
        ids = parse_id_list(str(targets))
        if "*" not in channel_pattern:
            raise ConfigurationError(
                f"output mode 'scatter' needs a '*' in -oc for the target id, got '{channel_pattern}'")
        self.targets = [RpcOutput(channel_pattern.replace("*", str(i)), {"timeout": self.timeout})
                        for i in ids]
        self.target_ids = ids
        self.retry = float(args.get("retry", 0.0))
        self._next = 0
        self._sent = [0] * len(ids)
        self._skipped = [0] * len(ids)

    def reset_stats(self):
        super().reset_stats()
        n = len(getattr(self, "target_ids", ()))
        self._sent = [0] * n
        self._skipped = [0] * n

    def _try(self, index, pvObject):
        target = self.targets[index]
        try:
            reply = target._invoke(pvObject)
        except Exception as exc:
            target._client = None
            self.n_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return False
        return reply.getInt("status") == 0

    def updateOutputChannel(self, pvObject):
        n = len(self.targets)
        deadline = None
        while True:
            for step in range(n):
                index = (self._next + step) % n
                if self._try(index, pvObject):
                    self._sent[index] += 1
                    self._next = (index + 1) % n
                    self.n_published += 1
                    return
                self._skipped[index] += 1
                self.n_rejected += 1
            if self.retry <= 0:
                break
            now = time.monotonic()
            deadline = deadline or now + self.retry
            if now >= deadline:
                break
            time.sleep(0.001)
            self.wait_seconds += 0.001
            self.n_retried += 1
        self.n_dropped += 1

    def stats(self):
        stats = super().stats()
        stats["targets"] = {str(t): {"nSent": s, "nSkipped": k}
                            for t, s, k in zip(self.target_ids, self._sent, self._skipped)}
        return stats
