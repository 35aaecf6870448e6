"""Settings of one consumer, as the command line (or a caller) gives them."""

import dataclasses

from .accounting import IdSchedule, LearnedIdSchedule
from .errors import ConfigurationError
from .naming import resolve_channel
from .push_output import check_output_args

STATS_SECTIONS = ("receiver", "queue", "processor", "publisher", "user")


OUTPUT_MODES = ("pvas", "pva", "rpc", "scatter")


@dataclasses.dataclass
class ConsumerConfig:
    KIND = "consumer"  # in default channel names: pvapy:<kind>:<id>:<role>
    INPUT_MODES = ("pva", "ca", "pvas", "rpc")

    input_channel: str
    input_mode: str = "pva"
    input_args: dict = dataclasses.field(default_factory=dict)
    output_mode: str = "pvas"
    output_args: dict = dataclasses.field(default_factory=dict)
    output_channel: str = None
    status_channel: str = None
    control_channel: str = None
    id_format_spec: str = None
    processor_file: str = None
    processor_class: str = None
    processor_args: dict = dataclasses.field(default_factory=dict)
    oid_field: str = "uniqueId"
    oid_offset: int = 0
    field_request: str = ""
    skip_initial_updates: int = 1
    server_queue_size: int = 0
    receiver_queue_size: int = -1
    accumulate_objects: int = -1
    accumulation_timeout: float = 1.0
    consumer_id: int = 1
    n_consumers: int = 1
    runtime: float = 0.0
    report_period: float = 0.0
    status_period: float = 1.0
    report_stats: tuple = STATS_SECTIONS
    stats_file: str = None
    distributor_plugin: str = "pydistributor"
    distributor_group: str = None
    distributor_set: str = None
    distributor_trigger: str = None
    distributor_updates: int = None
    n_distributor_sets: int = 1
    metadata_channels: str = None
    metadata_queue_size: int = 1000
    access_security_file: str = None
    access_security_group: str = "CONTROL"
    access_security_readonly_group: str = "READONLY"
    access_security_macros: str = ""
    resume_after_id: int = None  # set by a supervisor restarting this consumer

    def __post_init__(self):
        for what, mode, modes in (("input", self.input_mode, self.INPUT_MODES),
                                  ("output", self.output_mode, OUTPUT_MODES)):
            if mode == "ejfat":
                raise ConfigurationError(
                    f"{what} mode 'ejfat' needs the EJFAT (E2SAR) library, which is not available"
                    f" here; use one of {', '.join(modes)}")
            if mode not in modes:
                raise ConfigurationError(f"{what} mode '{mode}' is not available; use one of"
                                         f" {', '.join(modes)}")
        if self.input_args:
            raise ConfigurationError(
                f"--input-args key(s) {', '.join(sorted(self.input_args))} unknown for input mode"
                f" '{self.input_mode}'; this mode takes none")
        check_output_args(self.output_mode, self.output_args)
        if self.output_mode != "pvas" and not self.output_channel:
            raise ConfigurationError(f"output mode '{self.output_mode}' needs -oc: the remote channel"
                                     " to send objects to")
        unknown = set(self.report_stats) - set(STATS_SECTIONS)
        if unknown:
            raise ConfigurationError(
                f"unknown statistics section(s) {', '.join(sorted(unknown))}; use any of "
                + ", ".join(STATS_SECTIONS + ("all",)))
        if self.distributor_updates is not None and self.distributor_updates < 1:
            raise ConfigurationError("--distributor-updates must be >= 1")
        for name in ("input_channel", "output_channel", "status_channel", "control_channel"):
            self.resolved(name, name.split("_")[0])  # validate now

    def resolved(self, attribute, role):
        """The channel name for ``attribute`` with ``*``/``_`` applied."""
        return resolve_channel(getattr(self, attribute), role, self.KIND, self.consumer_id,
                               self.id_format_spec, what=attribute.replace("_", " "))

    def uses_distributor(self):
        return any(v is not None for v in (self.distributor_group, self.distributor_set,
                                           self.distributor_trigger, self.distributor_updates))

    def effective_oid_offset(self):
        """The id step after a block of ids (pvapy's object id offset)."""
        if self.oid_offset > 0:
            return self.oid_offset
        if not self.uses_distributor():
            return 1
        updates = self.distributor_updates or 1
        peers = self.n_distributor_sets if self.distributor_set is not None else self.n_consumers
        return (max(peers, 1) - 1) * updates + 1

    def id_schedule(self):
        """Which ids belong to this consumer: every id, a fixed step (``-oo``), or a
        step learned from the stream when the distributor shares it with peers."""
        updates = self.distributor_updates or 1
        if self.oid_offset > 0:
            return IdSchedule.from_offset(self.oid_offset, updates)
        if self.uses_distributor():
            return LearnedIdSchedule(updates)
        return IdSchedule()

    def distributor_request(self):
        """The distributor part of the pvRequest, or None."""
        if not self.uses_distributor():
            return None
        parts = []
        if self.distributor_group is not None:
            parts.append(f"group:{self.distributor_group}")
        if self.distributor_set is not None:
            parts.append(f"set:{self.distributor_set}")
        if self.distributor_trigger is not None:
            parts.append(f"trigger:{self.distributor_trigger}")
        if self.distributor_updates is not None:
            parts.append(f"updates:{self.distributor_updates}")
        return f"{self.distributor_plugin}=" + ";".join(parts)
