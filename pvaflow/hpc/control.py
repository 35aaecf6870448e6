"""The control channel: commands put by clients, replies put back.

Record fields (clients write the first three):

* ``command``  -- ``configure``, ``reset_stats``, ``get_stats`` or ``stop``
* ``args``     -- JSON object text (``configure`` only)
* ``sequence`` -- any number the client chooses; echoed in ``replySequence``
* ``replyCommand``, ``replySequence``, ``status`` (``ok``/``error``),
  ``statusMessage``, ``result`` (JSON text, e.g. stats), ``replyTime``,
  ``nCommands``, ``nErrors`` -- set by the process for each command.

After every put the request fields are cleared, so a later put that does not
set ``command`` does nothing but count an error: a command never runs twice
by accident. Commands are carried out on the owner's thread, in order.
"""

import json
import queue
import time

import pvaccess as pva

from .errors import ControlCommandError

COMMANDS = ("configure", "reset_stats", "get_stats", "stop")
MAX_ARGS_LENGTH = 65536


def control_record_type(id_field):
    return {
        id_field: pva.UINT,
        "command": pva.STRING,
        "args": pva.STRING,
        "sequence": pva.LONG,
        "replyCommand": pva.STRING,
        "replySequence": pva.LONG,
        "status": pva.STRING,
        "statusMessage": pva.STRING,
        "result": pva.STRING,
        "replyTime": pva.DOUBLE,
        "nCommands": pva.UINT,
        "nErrors": pva.UINT,
        # pvapy-compatible reply fields
        "objectTime": pva.DOUBLE,
        "objectTimestamp": pva.PvTimeStamp(),
    }


class ControlRequest:
    """One parsed command waiting to be carried out."""

    __slots__ = ("command", "args", "sequence")

    def __init__(self, command, args, sequence):
        self.command = command
        self.args = args
        self.sequence = sequence


class ControlChannel:
    """Serves the control record and queues parsed requests for the owner."""

    def __init__(self, server, name, id_field, process_id, requests=None, policy=None):
        self.server = server
        self.name = name
        self.requests = requests if requests is not None else queue.SimpleQueue()
        self.n_commands = 0
        self.n_errors = 0
        self._record = pva.PvObject(control_record_type(id_field), {id_field: int(process_id)})
        if policy is not None:
            policy.add_control(server, name, self._record, self._on_put)
        else:
            server.addRecord(name, self._record, self._on_put)

    def _on_put(self, record):
        """PvaServer put callback: parse, clear the request fields, queue."""
        command = record.getString("command").strip()
        args = record.getString("args")
        sequence = record.getLong("sequence")
        record.setString("command", "")
        record.setString("args", "")
        record.setLong("sequence", 0)
        try:
            request = self._parse(command, args, sequence)
        except ControlCommandError as exc:
            self._set_reply(record, command, sequence, "error", str(exc), "")
            return
        self.requests.put(request)

    def _parse(self, command, args, sequence):
        if not command:
            raise ControlCommandError("no command given: set 'command' to one of " + ", ".join(COMMANDS))
        if command not in COMMANDS:
            raise ControlCommandError(f"unknown command '{command[:80]}': use one of " + ", ".join(COMMANDS))
        if len(args) > MAX_ARGS_LENGTH:
            raise ControlCommandError(f"args too long ({len(args)} characters, at most {MAX_ARGS_LENGTH})")
        parsed = {}
        if command == "configure":
            if not args.strip():
                raise ControlCommandError("configure needs args: a JSON object like '{\"x\": 1}'")
            try:
                parsed = json.loads(args)
            except json.JSONDecodeError as exc:
                raise ControlCommandError(f"args is not valid JSON ({exc.msg} at character {exc.pos})") from None
            if not isinstance(parsed, dict):
                raise ControlCommandError("args must be a JSON object like '{\"x\": 1}'")
        return ControlRequest(command, parsed, sequence)

    def _set_reply(self, record, command, sequence, status, message, result):
        now = time.time()
        self.n_commands += 1
        if status != "ok":
            self.n_errors += 1
        record.setString("replyCommand", command[:200])
        record.setLong("replySequence", sequence if sequence else self.n_commands)
        record.setString("status", status)
        record.setString("statusMessage", message)
        record.setString("result", result)
        record.setDouble("replyTime", now)
        record.setUInt("nCommands", self.n_commands)
        record.setUInt("nErrors", self.n_errors)
        record.setDouble("objectTime", now)
        record["objectTimestamp"] = pva.PvTimeStamp(now)

    def reply(self, request, ok, message, result=""):
        """Publish the outcome of ``request`` (called on the owner's thread)."""
        reply = self._record.copy()
        self._set_reply(reply, request.command, request.sequence, "ok" if ok else "error", message, result)
        self._record.set(reply)
        self.server.update(self.name, reply)

    def get(self, timeout):
        """Next request, or None after ``timeout`` seconds."""
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            return None
