"""Sending a control command to many processes and waiting for each reply.

For each control channel: read it once (the channel is connected), put
``{command, args, sequence}``, and read the reply fields every few
milliseconds until ``replySequence`` is our sequence and ``replyCommand`` is
our command. Channels are served in parallel threads, with pvaccess gets
only (pvaccess monitors started from several threads at once are not
reliable). A ``stop`` whose channel disappears before the reply was read
counts as done: the process has ended.
"""

import concurrent.futures
import dataclasses
import json
import random
import time

REPLY_REQUEST = "field(replyCommand,replySequence,status,statusMessage,result)"

@dataclasses.dataclass
class Reply:
    """The outcome for one process."""

    label: str
    channel: str
    outcome: str = "timeout"     # ok, error or timeout
    message: str = ""
    result: str = ""
    seconds: float = 0.0

    @property
    def ok(self):
        """The process replied ok."""
        return self.outcome == "ok"

    def as_dict(self):
        """The reply as a dict, with a JSON result parsed."""
        data = dataclasses.asdict(self)
        try:
            data["result"] = json.loads(self.result) if self.result else None
        except ValueError:
            pass
        return data


def new_sequence():
    """A request number unlikely to match an earlier reply on the record."""
    return random.randint(1, 2 ** 31 - 1)


def _request(command, args, sequence):
    import pvaccess as pva  # pylint: disable=import-outside-toplevel
    return pva.PvObject({"command": pva.STRING, "args": pva.STRING, "sequence": pva.LONG},
                        {"command": command, "args": args, "sequence": sequence})


def send(label, channel_name, command, args="", sequence=None, timeout=5.0, poll=0.03):
    """Send one command and wait for its reply; never raises for network trouble."""
    import pvaccess as pva  # pylint: disable=import-outside-toplevel
    reply = Reply(label=label, channel=channel_name)
    sequence = sequence or new_sequence()
    start = time.monotonic()
    channel = pva.Channel(channel_name)
    channel.setTimeout(timeout)
    try:
        try:
            channel.get("field(replySequence)")
        except pva.PvaException:
            reply.message = f"no connection to {channel_name} within {timeout:g} s"
            return reply
        channel.setTimeout(min(timeout, 2.0))
        channel.put(_request(command, args, sequence), "field(command,args,sequence)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(poll)
            try:
                update = channel.get(REPLY_REQUEST).toDict()
            except pva.PvaException:
                if command == "stop":  # it replied and ended between two reads
                    reply.outcome, reply.message = "ok", "stopped (gone before the reply was read)"
                    return reply
                continue
            if update.get("replySequence") == sequence and \
                    update.get("replyCommand") == command[:200] and update.get("status"):
                reply.outcome = "ok" if update["status"] == "ok" else "error"
                reply.message = update.get("statusMessage", "")
                reply.result = update.get("result", "")
                return reply
        reply.message = f"no reply within {timeout:g} s"
        return reply
    except pva.PvaException as exc:
        reply.outcome = "error"
        reply.message = str(exc).strip()
        return reply
    finally:
        reply.seconds = round(time.monotonic() - start, 3)


def send_all(targets, command, args="", timeout=5.0, workers=16):
    """Send to every ``(label, channel)`` in parallel; return the replies in order."""
    sequence = new_sequence()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) \
            as pool:
        futures = [pool.submit(send, label, channel, command, args, sequence, timeout)
                   for label, channel in targets]
        return [f.result() for f in futures]


def stats_line(result_text):
    """A one-line digest of a ``get_stats`` result (JSON text)."""
    try:
        stats = json.loads(result_text)
    except ValueError:
        return ""
    r, p = stats.get("receiverStats") or {}, stats.get("processorStats") or {}
    return (f"processed {p.get('nProcessed', 0)} ({p.get('processedRate', 0.0):.1f}/s)"
            f" missed {r.get('nMissed', 0)} rejected {r.get('nRejected', 0)}"
            f" errors {p.get('nErrors', 0)} p99 {p.get('latencyP99Ms', 0.0):.2f} ms")
