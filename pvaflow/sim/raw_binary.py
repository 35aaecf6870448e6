"""Raw binary detector dumps (``-cfg/--config-file``).

A raw file is a header followed by frames of ``height`` x ``width`` pixels
of one data type, optionally separated by a fixed gap. The YAML file
describes it, under ``file_info`` (pvapy's layout) or at the top level::

    file_info:
      header_offset: 1024     # bytes before the first frame (default 0)
      between_frames: 64      # bytes between two frames (default 0)
      width: 2048             # pixels per row (required)
      height: 2048            # rows per frame (required)
      n_images: 100           # frames (default: as many whole frames as the file holds)
      datatype: uint16        # numpy name: uint8 ... float64 (required)
      endian: little          # little (default), big or native

The file is memory-mapped and read one frame at a time as it is published
(big-endian frames are converted to the host's byte order then), so dumps of
any size stream without conversion. Every mistake in the YAML or a file
smaller than the layout needs is a one-line
:class:`~pvaflow.hpc.errors.ConfigurationError`.
"""

import os
from dataclasses import dataclass

import numpy as np

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.ntndarray import FIELD_BY_DTYPE
from pvaflow.sim.frames import ArrayFrames

_KEYS = ("header_offset", "between_frames", "width", "height", "n_images", "datatype", "endian")
_ENDIAN = {"little": "<", "<": "<", "big": ">", ">": ">", "native": "=", "=": "="}


@dataclass(frozen=True)
class RawLayout:
    """Where the frames of a raw binary file lie."""

    width: int
    height: int
    datatype: np.dtype
    header_offset: int = 0
    between_frames: int = 0
    n_images: int = 0  # 0: as many as the file holds

    @property
    def frame_bytes(self):
        """Bytes of one frame's pixels."""
        return self.width * self.height * self.datatype.itemsize

    def frames_in(self, size):
        """Whole frames a file of ``size`` bytes holds."""
        room = size - self.header_offset
        if room < self.frame_bytes:
            return 0
        return 1 + (room - self.frame_bytes) // (self.frame_bytes + self.between_frames)


def _integer(source, info, key, minimum, default=None):
    value = info.get(key, default)
    if value is None:
        raise ConfigurationError(f"{source}: '{key}' is missing; give the {key} of the frames")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{source}: '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def parse_layout(info, source="-cfg"):
    """A :class:`RawLayout` from the YAML mapping ``info`` (``file_info`` or top level)."""
    if isinstance(info, dict) and set(info) == {"file_info"}:
        info = info["file_info"]
    if not isinstance(info, dict):
        raise ConfigurationError(
            f"{source}: expected a mapping of {', '.join(_KEYS)} (under 'file_info'),"
            f" got {type(info).__name__}")
    unknown = sorted(set(info) - set(_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown key(s) {', '.join(map(str, unknown))}; use {', '.join(_KEYS)}")
    name = info.get("datatype")
    if name is None:
        raise ConfigurationError(f"{source}: 'datatype' is missing; give e.g. uint16")
    try:
        dtype = np.dtype(str(name))
    except TypeError:
        dtype = None
    if dtype is None or dtype.newbyteorder("=") not in FIELD_BY_DTYPE:
        raise ConfigurationError(
            f"{source}: datatype {name!r} is not an integer or float type of 8 to 64 bits;"
            " use e.g. uint16 or float32")
    endian = str(info.get("endian", "little")).lower()
    if endian not in _ENDIAN:
        raise ConfigurationError(
            f"{source}: endian {info.get('endian')!r} is unknown; use little, big or native")
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(_ENDIAN[endian])
    return RawLayout(width=_integer(source, info, "width", 1),
                     height=_integer(source, info, "height", 1),
                     datatype=dtype,
                     header_offset=_integer(source, info, "header_offset", 0, 0),
                     between_frames=_integer(source, info, "between_frames", 0, 0),
                     n_images=_integer(source, info, "n_images", 0, 0))


def load_layout(path):
    """Read and check the ``-cfg`` YAML file."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigurationError(
            f"reading the raw binary layout {path} needs the pyyaml package:"
            " pip install pyyaml") from None
    try:
        with open(path, encoding="utf-8") as handle:
            info = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigurationError(f"cannot read -cfg file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigurationError(f"-cfg file {path} is not valid YAML{line}") from None
    return parse_layout(info, f"-cfg file {path}")


def open_raw(path, layout):
    """The frames of raw binary file ``path`` laid out as ``layout`` says (memory-mapped)."""
    size = os.path.getsize(path)
    available = layout.frames_in(size)
    count = layout.n_images or available
    if count == 0 or count > available:
        needed = (layout.header_offset + count * layout.frame_bytes
                  + max(count - 1, 0) * layout.between_frames) if count else (
                      layout.header_offset + layout.frame_bytes)
        raise ConfigurationError(
            f"{path} has {size} bytes, but the -cfg layout needs {needed} for"
            f" {max(count, 1)} frame(s) of {layout.width}x{layout.height}"
            f" {layout.datatype.name}; check width, height, datatype, header_offset,"
            " between_frames and n_images")
    try:
        mapped = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot map raw file {path}: {exc}") from None
    itemsize = layout.datatype.itemsize
    stack = np.ndarray(shape=(count, layout.height, layout.width), dtype=layout.datatype,
                       buffer=mapped, offset=layout.header_offset,
                       strides=(layout.frame_bytes + layout.between_frames,
                                layout.width * itemsize, itemsize))
    return [ArrayFrames(stack, f"{path} (raw)")]
