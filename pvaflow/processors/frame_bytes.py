"""NTNDArray <-> bytes: every field written explicitly, typed (no pickle).

:func:`serialize_frame` returns two parts: the fields other than the pixels
(time stamps, value type, codec, sizes, descriptor, dimensions, attributes
with their pvData types) as big-endian binary, and the pixel bytes (a view,
not a copy). :func:`restore_frame` reads both back into an NTNDArray after
checking every length, so a short or inconsistent buffer raises
:class:`MalformedFrame` and changes nothing.

Layout of the first part::

    u32 length of what follows (the pixel bytes come after it)
    i64 i32 i32   dataTimeStamp seconds, nanoseconds, userTag
    u8            value member (index in FIELDS)
    i32           codec.parameters (scalar type; -1: none)
    i64 i64       compressedSize, uncompressedSize
    u8            number of dimensions
    str16 str16   codec.name, descriptor
    per dimension: i32 size, offset, fullSize, binning; u8 reverse
    u16           number of attributes
    per attribute: str16 name, descriptor, source; i32 sourceType;
                   u8 scalar type (255: undefined) and the value
                   (str32 for strings)

``strN`` is a UTF-8 string after its N-bit byte count. The encrypted
frames of :mod:`pvaflow.processors.encryption` carry this format.
"""

import struct

import numpy as np
import pvaccess as pva

from pvaflow.hpc import ntndarray


class MalformedFrame(ValueError):
    """Bytes that do not describe an NTNDArray in this format."""


FIELDS = tuple(ntndarray.FIELD_BY_DTYPE.values())
# Attribute value types, by pvData scalar type: (struct format, pvaccess class).
SCALARS = {int(pva.BOOLEAN): ("?", pva.PvBoolean), int(pva.BYTE): ("b", pva.PvByte),
           int(pva.UBYTE): ("B", pva.PvUByte), int(pva.SHORT): ("h", pva.PvShort),
           int(pva.USHORT): ("H", pva.PvUShort), int(pva.INT): ("i", pva.PvInt),
           int(pva.UINT): ("I", pva.PvUInt), int(pva.LONG): ("q", pva.PvLong),
           int(pva.ULONG): ("Q", pva.PvULong), int(pva.FLOAT): ("f", pva.PvFloat),
           int(pva.DOUBLE): ("d", pva.PvDouble)}
STRING, BYTE, UNDEFINED = int(pva.STRING), int(pva.BYTE), 255
FRAME = struct.Struct("!qiiBiqqB")  # dataTimeStamp, field, codec type, sizes, ndims
DIMENSION = struct.Struct("!iiiiB")


def _text(value, size="H"):
    data = str(value).encode()
    return struct.pack(f"!{size}", len(data)) + data


def serialize_frame(nt):
    """The NTNDArray's fields (all but the pixels) as bytes, and the pixel bytes."""
    field = nt.getSelectedUnionFieldName("value")
    if field not in FIELDS:
        raise ValueError("the NTNDArray has no data in its value union")
    data = nt["value"][0][field]
    codec = nt["codec"]
    parameters = codec["parameters"][0]
    parts = [FRAME.pack(nt.getLong("dataTimeStamp.secondsPastEpoch"),
                        nt.getInt("dataTimeStamp.nanoseconds"), nt.getInt("dataTimeStamp.userTag"),
                        FIELDS.index(field), int(parameters["value"]) if parameters else -1,
                        nt.getLong("compressedSize"), nt.getLong("uncompressedSize"),
                        len(nt["dimension"])),
             _text(codec["name"]), _text(nt.getString("descriptor"))]
    for d in nt["dimension"]:
        parts.append(DIMENSION.pack(d["size"], d["offset"], d["fullSize"], d["binning"], d["reverse"]))
    attributes = nt["attribute"]
    parts.append(struct.pack("!H", len(attributes)))
    for a in attributes:
        parts += [_text(a["name"]), _text(a["descriptor"]), _text(a["source"]),
                  struct.pack("!i", a["sourceType"])]
        value, kinds = a["value"]
        kind = int(kinds["value"]) if kinds else UNDEFINED
        if kind == STRING:
            parts += [b"\x0b", _text(value["value"], "I")]
        elif kind in SCALARS:
            number = value["value"]
            if isinstance(number, str):  # pvaccess gives BYTE values as one-character strings
                number = ord(number) if number else 0
            parts.append(struct.pack(f"!B{SCALARS[kind][0]}", kind, number))
        else:
            parts.append(bytes([UNDEFINED]))
    meta = b"".join(parts)
    return struct.pack("!I", len(meta)) + meta, memoryview(data).cast("B")


class _Reader:
    """Reads typed fields from a buffer; MalformedFrame on any overrun."""

    def __init__(self, buffer, end):
        self.buffer, self.pos, self.end = buffer, 0, end

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > self.end:
            raise MalformedFrame("plaintext ends inside a field")
        values = struct.unpack_from(fmt, self.buffer, self.pos)
        self.pos += size
        return values

    def text(self, size="!H"):
        (length,) = self.take(size)
        if self.pos + length > self.end:
            raise MalformedFrame("plaintext ends inside a text field")
        value = bytes(self.buffer[self.pos:self.pos + length]).decode(errors="replace")
        self.pos += length
        return value


def restore_frame(plaintext, nt, cache):
    """Fill NTNDArray ``nt`` from ``plaintext``; ``cache`` keeps what did not change."""
    reader = _Reader(plaintext, len(plaintext))
    (length,) = reader.take("!I")
    reader.end = min(4 + length, len(plaintext))
    (seconds, nanoseconds, tag, field, codec_type, compressed, uncompressed,
     ndims) = reader.take(FRAME.format)
    codec, descriptor = reader.text(), reader.text()
    dims = tuple(reader.take(DIMENSION.format) for _ in range(ndims))
    attributes_start = reader.pos
    (count,) = reader.take("!H")
    attributes = []
    for _ in range(count):
        name, text, source = reader.text(), reader.text(), reader.text()
        (source_type, kind) = reader.take("!iB")
        if kind == STRING:
            value = pva.PvString(reader.text("!I"))
        elif kind == BYTE:  # pvaccess makes BYTE values from characters: 0-127 only
            (number,) = reader.take("!b")
            value = pva.PvByte(chr(number)) if number >= 0 else pva.PvShort(number)
        elif kind in SCALARS:
            value = SCALARS[kind][1](reader.take("!" + SCALARS[kind][0])[0])
        else:
            value = None
        attribute = pva.NtAttribute(name, value if value is not None else pva.PvInt(0))
        attribute["descriptor"], attribute["source"] = text, source
        attribute["sourceType"] = source_type
        attributes.append(attribute)
    if reader.pos != reader.end or field >= len(FIELDS):
        raise MalformedFrame("plaintext fields do not add up")
    dtype = ntndarray.DTYPE_BY_FIELD[FIELDS[field]]
    pixels = len(plaintext) - reader.end
    if pixels % dtype.itemsize:
        raise MalformedFrame("pixel bytes are not whole elements")
    nt["value"] = {FIELDS[field]: np.frombuffer(plaintext, dtype, pixels // dtype.itemsize, reader.end)}
    if cache.get("dims") != dims:
        nt["dimension"] = [{"size": s, "offset": o, "fullSize": f, "binning": b, "reverse": bool(r)}
                           for s, o, f, b, r in dims]
        cache["dims"] = dims
    if cache.get("codec") != (codec, codec_type):
        if codec_type < 0:
            nt["codec"] = {"name": codec, "parameters": ()}
        else:
            nt.setCodec(pva.PvCodec(codec, pva.PvInt(codec_type)))
        cache["codec"] = (codec, codec_type)
    block = bytes(plaintext[attributes_start:reader.end])
    if cache.get("attributes") != block:
        nt["attribute"] = attributes
        cache["attributes"] = block
    nt.setLong("compressedSize", compressed)
    nt.setLong("uncompressedSize", uncompressed)
    nt.setString("descriptor", descriptor)
    nt.setLong("dataTimeStamp.secondsPastEpoch", seconds)
    nt.setInt("dataTimeStamp.nanoseconds", nanoseconds)
    nt.setInt("dataTimeStamp.userTag", tag)
    return nt


