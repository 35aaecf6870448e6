"""NTNDArray <-> numpy conversion.

This module knows the NTNDArray structure and nothing about channels or
servers. Conventions:

* NTNDArray ``dimension[0]`` is the fastest-varying axis (x, columns), so a
  numpy image has the dimension sizes in reverse order: a mono ``[nx, ny]``
  frame is a numpy array of shape ``(ny, nx)``.
* Colour modes follow areaDetector: ``RGB1`` is ``[3, nx, ny]`` (numpy
  ``(ny, nx, 3)``), ``RGB2`` is ``[nx, 3, ny]`` (numpy ``(ny, 3, nx)``) and
  ``RGB3`` is ``[nx, ny, 3]`` (numpy ``(3, ny, nx)``). The mode travels in the
  ``ColorMode`` attribute.
* Reading an image (:func:`image_view`) returns a read-only view of the
  received buffer: no copy. Building or updating an NTNDArray from numpy
  (:func:`new_ntndarray`, :func:`set_image`) copies the pixels once, into the
  PV structure.
"""

import enum
import math

import numpy as np
import pvaccess as pva

from .errors import FrameFormatError


class ColorMode(enum.IntEnum):
    """areaDetector colour modes (NDColorMode_t)."""

    MONO = 0
    BAYER = 1
    RGB1 = 2
    RGB2 = 3
    RGB3 = 4


#: numpy dtype -> name of the member of the NTNDArray ``value`` union.
FIELD_BY_DTYPE = {
    np.dtype(np.int8): "byteValue",
    np.dtype(np.uint8): "ubyteValue",
    np.dtype(np.int16): "shortValue",
    np.dtype(np.uint16): "ushortValue",
    np.dtype(np.int32): "intValue",
    np.dtype(np.uint32): "uintValue",
    np.dtype(np.int64): "longValue",
    np.dtype(np.uint64): "ulongValue",
    np.dtype(np.float32): "floatValue",
    np.dtype(np.float64): "doubleValue",
}
DTYPE_BY_FIELD = {field: dtype for dtype, field in FIELD_BY_DTYPE.items()}

#: numpy dtype -> pvData scalar type, as NDPluginCodec stores it in
#: ``codec.parameters`` to name the uncompressed data type.
SCALAR_TYPE_BY_DTYPE = {
    np.dtype(np.int8): pva.BYTE,
    np.dtype(np.uint8): pva.UBYTE,
    np.dtype(np.int16): pva.SHORT,
    np.dtype(np.uint16): pva.USHORT,
    np.dtype(np.int32): pva.INT,
    np.dtype(np.uint32): pva.UINT,
    np.dtype(np.int64): pva.LONG,
    np.dtype(np.uint64): pva.ULONG,
    np.dtype(np.float32): pva.FLOAT,
    np.dtype(np.float64): pva.DOUBLE,
}
DTYPE_BY_SCALAR_TYPE = {int(st): dt for dt, st in SCALAR_TYPE_BY_DTYPE.items()}

# Position of the colour axis in NTNDArray dimension order, per colour mode.
_COLOR_AXIS = {ColorMode.RGB1: 0, ColorMode.RGB2: 1, ColorMode.RGB3: 2}


def value_field_for(dtype):
    """Return the ``value`` union member that holds arrays of ``dtype``."""
    try:
        return FIELD_BY_DTYPE[np.dtype(dtype)]
    except (KeyError, TypeError) as exc:
        names = ", ".join(str(d) for d in FIELD_BY_DTYPE)
        raise FrameFormatError(
            f"data type {dtype} cannot travel in an NTNDArray; use one of: {names}"
        ) from exc


def color_mode_of(nt):
    """Return the frame's colour mode: the ``ColorMode`` attribute, else mono."""
    for attribute in nt["attribute"]:
        if attribute["name"] == "ColorMode":
            value = attribute["value"][0]
            return int(next(iter(value.values())))
    return int(ColorMode.MONO)


def shape_of(nt):
    """Return the numpy shape described by the NTNDArray ``dimension`` field."""
    return tuple(d["size"] for d in reversed(nt["dimension"]))


def _check_color_shape(shape, color_mode):
    """Raise FrameFormatError when ``shape`` (numpy order) does not fit the mode."""
    if color_mode in _COLOR_AXIS:
        if len(shape) != 3:
            raise FrameFormatError(
                f"colour mode {ColorMode(color_mode).name} needs 3 dimensions, got shape {shape}"
            )
        axis = len(shape) - 1 - _COLOR_AXIS[color_mode]
        if shape[axis] != 3:
            raise FrameFormatError(
                f"colour mode {ColorMode(color_mode).name} needs size 3 on numpy axis {axis},"
                f" got shape {shape}"
            )
    elif color_mode in (ColorMode.MONO, ColorMode.BAYER) and len(shape) > 2:
        raise FrameFormatError(
            f"a mono frame has at most 2 dimensions, got shape {shape};"
            " set the ColorMode attribute for colour frames"
        )


def image_view(nt):
    """Return the frame's pixels as a read-only numpy view (no copy).

    Raises FrameFormatError for compressed frames (decode them first), for
    an empty ``value`` and for dimensions that do not match the data size.
    """
    field = nt.getSelectedUnionFieldName("value")
    if not field:
        raise FrameFormatError("NTNDArray has no data: the value union is empty")
    codec = nt["codec.name"]
    if codec:
        raise FrameFormatError(
            f"NTNDArray is compressed with codec '{codec}'; decode it before reading pixels"
        )
    flat = nt["value"][0][field]
    shape = shape_of(nt)
    if not shape:
        return flat
    if math.prod(shape) != flat.size:
        raise FrameFormatError(
            f"NTNDArray dimensions {shape} hold {math.prod(shape)} elements"
            f" but the value has {flat.size}"
        )
    if len(shape) > 2:
        _check_color_shape(shape, color_mode_of(nt))
    return flat.reshape(shape)


def _dimensions(shape):
    return [
        {"size": int(n), "offset": 0, "fullSize": int(n), "binning": 1, "reverse": False}
        for n in reversed(shape)
    ]


def set_image(nt, image, color_mode=None):
    """Put ``image`` into ``nt`` (one copy), updating dimensions and sizes.

    ``color_mode`` (a :class:`ColorMode`) is checked against the shape and
    stored in the ``ColorMode`` attribute when given.
    """
    image = np.asarray(image)
    field = value_field_for(image.dtype)
    if color_mode is not None:
        _check_color_shape(image.shape, color_mode)
    # pvaccess reads the buffer as contiguous memory: strided views must be made
    # contiguous first (a copy only for such views).
    nt["value"] = {field: np.ascontiguousarray(image).reshape(-1)}
    if shape_of(nt) != image.shape:
        nt["dimension"] = _dimensions(image.shape)
    size = int(image.nbytes)
    nt.setLong("compressedSize", size)
    nt.setLong("uncompressedSize", size)
    if color_mode is not None:
        set_attributes(nt, {"ColorMode": int(color_mode)})
    return nt


def new_ntndarray(image, unique_id=0, timestamp=None, color_mode=None, attributes=None):
    """Build a new NTNDArray holding ``image`` (one copy of the pixels).

    ``timestamp`` (seconds since the epoch, float) sets both ``timeStamp``
    and ``dataTimeStamp``; ``attributes`` is a mapping name -> value.
    """
    image = np.asarray(image)
    if color_mode is None:
        color_mode = ColorMode.MONO if image.ndim <= 2 else None
        if color_mode is None:
            raise FrameFormatError(
                f"a {image.ndim}-dimensional image needs a colour mode (RGB1, RGB2 or RGB3)"
            )
    nt = pva.NtNdArray()
    set_image(nt, image, color_mode)
    nt.setInt("uniqueId", int(unique_id))
    if timestamp is not None:
        set_timestamps(nt, timestamp)
    if attributes:
        set_attributes(nt, attributes)
    return nt


def set_timestamps(nt, timestamp):
    """Set ``timeStamp`` and ``dataTimeStamp`` to ``timestamp`` (float seconds)."""
    seconds = int(timestamp)
    nanoseconds = int((timestamp - seconds) * 1e9)
    nt.setLong("timeStamp.secondsPastEpoch", seconds)
    nt.setInt("timeStamp.nanoseconds", nanoseconds)
    nt.setLong("dataTimeStamp.secondsPastEpoch", seconds)
    nt.setInt("dataTimeStamp.nanoseconds", nanoseconds)


def timestamp_of(nt, field="timeStamp"):
    """Return ``field`` (a time_t structure) as float seconds; 0.0 when unset."""
    return nt.getLong(f"{field}.secondsPastEpoch") + nt.getInt(f"{field}.nanoseconds") * 1e-9


def _attribute_value(value):
    if isinstance(value, bool):
        return pva.PvBoolean(value)
    if isinstance(value, (int, np.integer)):
        value = int(value)
        return pva.PvInt(value) if -(2**31) <= value < 2**31 else pva.PvLong(value)
    if isinstance(value, (float, np.floating)):
        return pva.PvDouble(float(value))
    if isinstance(value, str):
        return pva.PvString(value)
    raise FrameFormatError(
        f"attribute value {value!r} of type {type(value).__name__} is not supported;"
        " use bool, int, float or str"
    )


def attribute_value(attribute):
    """Return the value held by one attribute structure of ``nt['attribute']``."""
    value = attribute["value"]
    return next(iter(value[0].values())) if value and value[0] else None


def attributes_of(nt):
    """Return the NTNDArray attributes as a dict name -> value."""
    return {a["name"]: attribute_value(a) for a in nt["attribute"]}


def set_attributes(nt, attributes):
    """Add or replace attributes (name -> bool/int/float/str), keeping the others as they are."""
    kept = [a for a in nt["attribute"] if a["name"] not in attributes]
    added = [pva.NtAttribute(name, _attribute_value(value)) for name, value in attributes.items()]
    nt["attribute"] = kept + added


def codec_of(nt):
    """Return ``(codec_name, original_dtype)``; ``('', None)`` for raw frames."""
    codec = nt["codec"]
    name = codec["name"]
    if not name:
        return "", None
    parameters = codec["parameters"]
    original = None
    if parameters and parameters[0]:
        original = DTYPE_BY_SCALAR_TYPE.get(int(next(iter(parameters[0].values()))))
    return name, original


def set_codec(nt, name, original_dtype=None, uncompressed_size=None):
    """Mark ``nt`` as compressed with ``name``; store the original dtype and size.

    The compressed bytes themselves go in the ``ubyteValue`` member and are
    set by the caller; ``compressedSize`` is set from them.
    """
    if name:
        scalar_type = SCALAR_TYPE_BY_DTYPE[np.dtype(original_dtype)]
        nt.setCodec(pva.PvCodec(name, pva.PvInt(int(scalar_type))))
    else:
        nt.setCodec(pva.PvCodec("", pva.PvInt(0)))
    field = nt.getSelectedUnionFieldName("value")
    if field:
        data = nt["value"][0][field]
        nt.setLong("compressedSize", int(data.nbytes))
    if uncompressed_size is not None:
        nt.setLong("uncompressedSize", int(uncompressed_size))
