"""Push input modes: upstream clients put objects into this process.

* ``pvas``: this process serves the input record (its structure from the
  processor's ``getInputPvObjectType()``); each client put is one object.
* ``rpc``: this process serves an RPC service on the input channel; each
  request carries one object, and the reply says whether it was accepted:
  ``{status: 0}`` or ``{status: -1, errorMessage, reason}`` with ``reason``
  ``queue_full`` (try again later), ``bad_type`` or ``error``. The reply is
  what makes ``rpc`` a lossless hand-off: a sender knows what was refused.

Both hand objects to the same per-frame function as the monitor input; it
returns :data:`ACCEPTED` or :data:`REJECTED`. Each call first keeps the
Python thread state of the server thread it runs on (pvaccess would build a
new one per call; an RPC service runs one thread per client connection).
"""

import logging

import pvaccess as pva

from .errors import ConfigurationError
from .thread_state import RELEASE_GUARD, UNLOCKED, keep_thread_state_once

log = logging.getLogger(__name__)

ACCEPTED = 0
REJECTED = 1

REPLY_TYPE = {"status": pva.INT, "errorMessage": pva.STRING, "reason": pva.STRING}


class PvasInput:
    """The input record on our own server; puts are the stream."""

    def __init__(self, server, channel, type_object, on_object, policy=None):
        if type_object is None:
            raise ConfigurationError(
                "input mode 'pvas' needs the input structure: the processor must define"
                " getInputPvObjectType() returning a PvObject (e.g. pvaccess.NtNdArray())")
        self.channel_name = channel
        self._on_object = on_object
        self._record = type_object.copy()
        if policy is not None and policy.active:
            policy.add_control(server, channel, self._record, self._put)
        else:
            server.addRecord(channel, self._record, self._put)
        self.n_errors = 0

    def _put(self, record):
        keep_thread_state_once()
        try:
            self._on_object(record)
        except Exception:  # never let a put kill the server thread
            self.n_errors += 1
            log.debug("pvas input failed", exc_info=True)
        finally:  # pvaccess's Release must see "unlocked" (thread_state.py)
            RELEASE_GUARD.value = UNLOCKED

    def start(self):
        pass

    def stop(self):
        self._on_object = _ignore

    def overruns(self):
        return 0

    def reset_stats(self):
        self.n_errors = 0


class RpcInput:
    """An RPC service on the input channel; the reply reports acceptance."""

    def __init__(self, channel, on_object, type_check=None):
        self.channel_name = channel
        self._on_object = on_object
        self._type_check = type_check
        self._server = pva.RpcServer()
        self._server.registerService(channel, self._request)
        self._ok = pva.PvObject(REPLY_TYPE, {"status": 0})
        self._full = pva.PvObject(REPLY_TYPE, {"status": -1, "reason": "queue_full",
                                               "errorMessage": "input queue is full; retry later"})
        self._stopped = pva.PvObject(REPLY_TYPE, {"status": -1, "reason": "stopped",
                                                  "errorMessage": "the consumer is stopping"})
        self._running = False
        self.n_errors = 0

    def _request(self, pv):
        keep_thread_state_once()
        try:
            return self._reply(pv)
        finally:  # pvaccess's Release must see "unlocked" (thread_state.py)
            RELEASE_GUARD.value = UNLOCKED

    def _reply(self, pv):
        if not self._running:
            return self._stopped
        if self._type_check is not None and not self._type_check(pv):
            self.n_errors += 1
            return pva.PvObject(REPLY_TYPE, {"status": -1, "reason": "bad_type",
                                             "errorMessage": "object structure not accepted"})
        try:
            outcome = self._on_object(pv)
        except Exception as exc:
            self.n_errors += 1
            return pva.PvObject(REPLY_TYPE, {"status": -1, "reason": "error",
                                             "errorMessage": f"{type(exc).__name__}: {exc}"[:500]})
        return self._full if outcome == REJECTED else self._ok

    def start(self):
        self._running = True
        self._server.startListener()

    def stop(self):
        self._running = False
        try:
            self._server.stopListener()
        except pva.PvaException:
            log.debug("stopListener", exc_info=True)

    def overruns(self):
        return 0

    def reset_stats(self):
        self.n_errors = 0


def _ignore(_pv):
    return REJECTED
