"""One GPU per consumer process: ``CUDA_VISIBLE_DEVICES`` from a device list.

A node with several GPUs runs one SSNet consumer per GPU: the fleet
(``pvapy-hpc-consumer -nc N``) gives consumer ``k`` (0-based position in
the fleet) device ``devices[k % len(devices)]``, so that inside that
process ``cuda`` (= ``cuda:0``) is its own GPU. The variable must be set
before CUDA is initialised in the process, i.e. in the child's environment
at spawn time (or before torch first touches CUDA).

Nothing here imports torch; these are plain functions the consumer CLI and
the fleet call.
"""

import os
import re

from pvaflow.hpc.errors import ConfigurationError

ENV = "CUDA_VISIBLE_DEVICES"
_TOKEN = re.compile(r"^(\d+|GPU-[0-9A-Za-z-]+|MIG-[0-9A-Za-z/-]+)$")


def parse_device_list(text):
    """Parse ``'0,1,3'`` (indices, ranges ``'0-3'`` or GPU/MIG UUIDs) into a list of strings."""
    if text is None or not str(text).strip():
        raise ConfigurationError("the CUDA device list is empty; give e.g. '0,1' or '0-3'")
    devices = []
    for token in str(text).split(","):
        token = token.strip()
        span = re.fullmatch(r"(\d+)-(\d+)", token)
        if span:
            first, last = int(span.group(1)), int(span.group(2))
            if last < first:
                raise ConfigurationError(f"CUDA device range '{token}' is backwards")
            devices.extend(str(n) for n in range(first, last + 1))
        elif _TOKEN.match(token):
            devices.append(token)
        else:
            raise ConfigurationError(f"'{token}' in CUDA device list '{text}' is not a device"
                                     " index, a range like 0-3 or a GPU-/MIG- UUID")
    return devices


def device_for(devices, index):
    """The device of the consumer at 0-based ``index`` (round robin over ``devices``)."""
    if isinstance(devices, str):
        devices = parse_device_list(devices)
    if not devices:
        raise ConfigurationError("the CUDA device list is empty")
    if index < 0:
        raise ConfigurationError(f"consumer index must be >= 0, got {index}")
    return devices[index % len(devices)]


def child_environments(text, count):
    """``count`` dicts ``{CUDA_VISIBLE_DEVICES: device}``, one per consumer.

    Without a list (``text`` None) every dict is empty.
    """
    if text is None:
        return [{} for _ in range(count)]
    devices = parse_device_list(text)
    return [{ENV: device_for(devices, k)} for k in range(count)]


def apply(environment, target=None):
    """Set the variables of ``environment`` in ``target`` (default ``os.environ``)."""
    target = os.environ if target is None else target
    for name, value in (environment or {}).items():
        target[name] = value
    return target
