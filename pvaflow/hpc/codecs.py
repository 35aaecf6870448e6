"""Compressed NTNDArrays: the ``lz4``, ``blosc`` and ``bslz4`` codecs.

areaDetector's NDPluginCodec compresses a frame's bytes and NDPluginPva
publishes them in the ``ubyteValue`` member of ``value``, with:

* ``codec.name``: ``lz4``, ``blosc`` or ``bslz4``;
* ``codec.parameters``: an int holding the pvData scalar type of the
  *uncompressed* data (``pva.USHORT`` for uint16 frames, ...);
* ``uncompressedSize``: the byte count of the uncompressed data;
* ``dimension``: the uncompressed frame's dimensions.

The payload formats are those of NDPluginCodec:

* ``lz4``: one raw LZ4 block (``LZ4_compress_default``), no header;
* ``blosc``: one Blosc (version 1) frame, which carries its own header;
* ``bslz4``: a bitshuffle/LZ4 stream as ``bshuf_compress_lz4`` writes it
  with the default block size: per block, a big-endian 4-byte length then
  the LZ4-compressed bit-shuffled block; the last ``n % 8`` elements are
  copied as they are.

Frames read directly from HDF5 chunks (pvapy's simulator streams them that
way) carry the HDF5 filters' headers instead; the decoder recognises them:
``lz4`` chunks of the HDF5 LZ4 filter (8-byte size, 4-byte block size, then
sized blocks) and ``bslz4`` chunks of the HDF5 bitshuffle filter (8-byte
size and 4-byte block size before the stream).

:class:`Decoder` decodes into a buffer it keeps, so frames of the same size
need no new allocation; what it returns is valid until its next call.
:class:`Encoder` writes the same formats, also into a kept buffer. Every
problem with one frame raises :class:`CodecError` (a
:class:`~pvaflow.hpc.errors.FrameFormatError`) with a one-line message.

The codec library is imagecodecs (``pip install imagecodecs``), imported when
the first decoder or encoder is made.
"""

import threading

import numpy as np
import pvaccess as pva

from . import ntndarray
from .errors import ConfigurationError, FrameFormatError

#: Codec names this module reads and writes.
CODECS = ("lz4", "blosc", "bslz4")

#: Blosc compressors an :class:`Encoder` may use inside a blosc frame.
BLOSC_COMPRESSORS = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")

# bitshuffle's default block: 8 KiB of elements, a multiple of 8, at least 128.
_BSHUF_TARGET_BYTES = 8192
_BSHUF_MULTIPLE = 8
_BSHUF_MIN_BLOCK = 128
_HEADER_BYTES = 12  # HDF5 filter header: 8-byte size + 4-byte block size
_BLOSC_HEADER_BYTES = 16


class CodecError(FrameFormatError):
    """A compressed frame that cannot be decoded (or an image that cannot be encoded)."""


def _imagecodecs():
    try:
        import imagecodecs  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigurationError(
            "compressed frames need the imagecodecs package: pip install imagecodecs"
            " (or pip install 'pvaflow[codecs]')") from None
    return imagecodecs


def bslz4_block_size(itemsize):
    """bitshuffle's default block size, in elements, for ``itemsize``-byte elements."""
    block = _BSHUF_TARGET_BYTES // itemsize
    return max(block - block % _BSHUF_MULTIPLE, _BSHUF_MIN_BLOCK)


class _Buffer:
    """A byte buffer that grows when needed and is otherwise reused."""

    def __init__(self):
        self.array = np.empty(0, np.uint8)
        self.n_allocations = 0

    def get(self, nbytes, reserve=0):
        """Return a writable uint8 array of ``nbytes`` (a view of the kept buffer).

        When the buffer must grow, it grows to at least ``reserve`` bytes.
        """
        if nbytes > self.array.size:
            self.array = np.empty(max(nbytes, reserve), np.uint8)
            self.n_allocations += 1
        return self.array[:nbytes]


def _be(view, start, length):
    return int.from_bytes(view[start:start + length], "big")


class Decoder:
    """Decode compressed NTNDArrays (or payloads) into a reused buffer.

    ``numthreads`` is passed to Blosc. Not thread-safe: use one decoder per
    thread.
    """

    def __init__(self, numthreads=1):
        self._ic = _imagecodecs()
        self.numthreads = max(int(numthreads), 1)
        self._out = _Buffer()
        self._scratch = _Buffer()
        self._packed = _Buffer()
        self._decoders = {"lz4": self._lz4, "blosc": self._blosc, "bslz4": self._bslz4}

    @property
    def n_allocations(self):
        """How many times a buffer had to grow (for tests and statistics)."""
        return self._out.n_allocations + self._scratch.n_allocations + self._packed.n_allocations

    # ------------------------------------------------------------- NTNDArrays
    def pixels(self, nt):
        """Return the frame's pixels as numpy, raw or compressed.

        Raw frames give a read-only view of the received buffer (see
        :func:`~pvaflow.hpc.ntndarray.image_view`); compressed ones are
        decoded into this decoder's buffer, valid until its next call.
        """
        if not nt.getString("codec.name"):
            return ntndarray.image_view(nt)
        return self.decode(nt)

    def decode(self, nt):
        """Decode a compressed NTNDArray; return its image (numpy, numpy axis order)."""
        name, dtype = ntndarray.codec_of(nt)
        field = nt.getSelectedUnionFieldName("value")
        if not field:
            raise CodecError("compressed NTNDArray has no data: the value union is empty")
        if dtype is None:
            raise CodecError(
                f"codec '{name}': codec.parameters does not name the uncompressed data type")
        shape = ntndarray.shape_of(nt)
        count = 1
        for size in shape:
            count *= size
        nbytes = count * dtype.itemsize
        declared = nt.getLong("uncompressedSize")
        if declared != nbytes:
            raise CodecError(
                f"codec '{name}': uncompressedSize {declared} does not match dimensions"
                f" {shape} of {dtype.name} ({nbytes} bytes)")
        payload = nt["value"][0][field]
        if payload.dtype != np.uint8:
            payload = payload.view(np.uint8)
        compressed = nt.getLong("compressedSize")
        if 0 < compressed < payload.size:
            payload = payload[:compressed]
        flat = self.decode_bytes(name, payload, dtype, nbytes)
        return flat.view(dtype).reshape(shape)

    # ---------------------------------------------------------------- payloads
    def decode_bytes(self, name, payload, dtype, nbytes):
        """Decode ``payload`` (bytes-like) of codec ``name``; return ``nbytes`` uint8."""
        decoder = self._decoders.get(name)
        if decoder is None:
            raise CodecError(
                f"unknown codec '{name}': this decoder reads {', '.join(CODECS)}")
        view = memoryview(payload)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        out = self._out.get(nbytes)
        if nbytes == 0:
            return out
        try:
            decoder(view, np.dtype(dtype).itemsize, nbytes, out)
        except CodecError:
            raise
        except Exception as exc:  # the codec library's own error: a corrupt payload
            raise CodecError(f"codec '{name}': corrupt data ({type(exc).__name__}: {exc})") from None
        return out

    def _lz4(self, view, itemsize, nbytes, out):
        ic = self._ic
        if len(view) >= _HEADER_BYTES and view[0] == 0 and _be(view, 0, 8) == nbytes:
            result = ic.lz4h5_decode(view, out=out)  # an HDF5 LZ4 filter chunk
        else:
            result = ic.lz4_decode(view, out=out)
        if len(result) != nbytes:
            raise CodecError(f"codec 'lz4': data decode to {len(result)} bytes, expected {nbytes}")

    def _blosc(self, view, itemsize, nbytes, out):
        if len(view) < _BLOSC_HEADER_BYTES:
            raise CodecError(f"codec 'blosc': {len(view)} bytes cannot hold a blosc header")
        declared = int.from_bytes(view[4:8], "little")
        cbytes = int.from_bytes(view[12:16], "little")
        if declared != nbytes:
            raise CodecError(f"codec 'blosc': header says {declared} bytes, expected {nbytes}")
        if cbytes > len(view):
            raise CodecError(f"codec 'blosc': truncated data ({len(view)} of {cbytes} bytes)")
        result = self._ic.blosc_decode(view[:cbytes], numthreads=self.numthreads, out=out)
        if len(result) != nbytes:
            raise CodecError(f"codec 'blosc': data decode to {len(result)} bytes, expected {nbytes}")

    def _bslz4(self, view, itemsize, nbytes, out):
        if nbytes % itemsize:
            raise CodecError(f"codec 'bslz4': {nbytes} bytes is not a whole number of"
                             f" {itemsize}-byte elements")
        block = bslz4_block_size(itemsize)
        total = len(view)
        if total > _HEADER_BYTES and _be(view, 0, 8) == nbytes and (
                nbytes >= _BSHUF_MULTIPLE * itemsize or total == _HEADER_BYTES + nbytes):
            block_bytes = _be(view, 8, 4)  # an HDF5 bitshuffle filter chunk
            if block_bytes <= 0 or block_bytes % (itemsize * _BSHUF_MULTIPLE):
                raise CodecError(f"codec 'bslz4': invalid block size {block_bytes} in header")
            block = block_bytes // itemsize
            view = view[_HEADER_BYTES:]
        shuffled = self._scratch.get(nbytes)
        sizes = _bslz4_blocks(view, nbytes // itemsize, itemsize, block)
        done = sum(sizes[1::2])
        if done:
            self._unpack_blocks(view, sizes, shuffled, done, block * itemsize)
        rest = nbytes - done
        stream_end = sum(sizes[0::2]) + 4 * (len(sizes) // 2)
        if len(view) != stream_end + rest:
            raise CodecError(f"codec 'bslz4': stream has {len(view)} bytes, expected"
                             f" {stream_end + rest}")
        shuffled[done:] = np.frombuffer(view, np.uint8, rest, stream_end)
        self._ic.bitshuffle_decode(memoryview(shuffled), itemsize=itemsize, blocksize=block, out=out)

    def _unpack_blocks(self, view, sizes, shuffled, done, block_bytes):
        """LZ4-decode the blocks into ``shuffled[:done]``."""
        ic = self._ic
        # A block whose compressed size equals its size would be taken as stored
        # raw by the HDF5 LZ4 decoder: decode such streams block by block.
        if any(c == n for c, n in zip(sizes[0::2], sizes[1::2])):
            target = memoryview(shuffled)
            pos = offset = 0
            for clen, size in zip(sizes[0::2], sizes[1::2]):
                part = ic.lz4_decode(view[pos + 4:pos + 4 + clen], out=target[offset:offset + size])
                if len(part) != size:
                    raise CodecError("codec 'bslz4': a block decodes to the wrong size")
                pos += 4 + clen
                offset += size
            return
        # Otherwise one call: the blocks are laid out as in an HDF5 LZ4 chunk.
        length = sum(sizes[0::2]) + 4 * (len(sizes) // 2)
        # Room for any compressed size of this frame size, so same-size frames reuse it.
        packed = self._packed.get(_HEADER_BYTES + length, done + done // 64 + 4096)
        packed[:8] = np.frombuffer(done.to_bytes(8, "big"), np.uint8)
        packed[8:12] = np.frombuffer(block_bytes.to_bytes(4, "big"), np.uint8)
        packed[_HEADER_BYTES:] = np.frombuffer(view, np.uint8, length)
        result = ic.lz4h5_decode(memoryview(packed), out=shuffled[:done])
        if len(result) != done:
            raise CodecError(f"codec 'bslz4': blocks decode to {len(result)} bytes, expected {done}")


def _bslz4_blocks(view, n_elements, itemsize, block):
    """Walk a bslz4 stream; return [compressed, size, compressed, size, ...] per block.

    Checks every length against the data, so nothing reads past its end.
    """
    full, partial = divmod(n_elements, block)
    last = partial - partial % _BSHUF_MULTIPLE
    sizes = []
    total = len(view)
    pos = 0
    for index in range(full + (1 if last else 0)):
        if pos + 4 > total:
            raise CodecError(f"codec 'bslz4': truncated stream at block {index}")
        clen = int.from_bytes(view[pos:pos + 4], "big")
        pos += 4 + clen
        if clen == 0 or pos > total:
            raise CodecError(f"codec 'bslz4': block {index} length {clen} is invalid")
        sizes.append(clen)
        sizes.append((block if index < full else last) * itemsize)
    return sizes


class Encoder:
    """Compress images with one codec, into a reused buffer.

    ``level``: compression level (lz4: acceleration is fixed; blosc: 0-9,
    default 5). ``blosc_compressor``/``shuffle``/``numthreads`` apply to blosc
    (shuffle: 0 none, 1 byte, 2 bit).
    """

    def __init__(self, codec, level=None, blosc_compressor="lz4", shuffle=1, numthreads=1):
        if codec not in CODECS:
            raise ConfigurationError(f"unknown codec '{codec}'; use one of: {', '.join(CODECS)}")
        if blosc_compressor not in BLOSC_COMPRESSORS:
            raise ConfigurationError(f"unknown blosc compressor '{blosc_compressor}';"
                                     f" use one of: {', '.join(BLOSC_COMPRESSORS)}")
        if shuffle not in (0, 1, 2):
            raise ConfigurationError(f"blosc shuffle must be 0, 1 or 2, got {shuffle!r}")
        self._ic = _imagecodecs()
        self.codec = codec
        self.level = 5 if level is None and codec == "blosc" else level
        self.blosc_compressor = blosc_compressor
        self.shuffle = shuffle
        self.numthreads = max(int(numthreads), 1)
        self._out = _Buffer()
        self._scratch = _Buffer()
        self._encode = {"lz4": self._lz4, "blosc": self._blosc, "bslz4": self._bslz4}[codec]

    def encode(self, image):
        """Return the compressed bytes of ``image`` (a uint8 view of the kept buffer)."""
        image = np.asarray(image)
        if image.dtype not in ntndarray.FIELD_BY_DTYPE:
            raise CodecError(f"codec '{self.codec}': cannot encode data type {image.dtype}")
        flat = np.ascontiguousarray(image).reshape(-1).view(np.uint8)
        bound = flat.size + flat.size // 200 + 1024 + _BLOSC_HEADER_BYTES
        return self._encode(flat, image.dtype.itemsize, self._out.get(2 * bound))

    def _lz4(self, flat, itemsize, out):
        return self._ic.lz4_encode(memoryview(flat), out=out)

    def _blosc(self, flat, itemsize, out):
        # imagecodecs takes the type size from the array's items: give it typed elements.
        return self._ic.blosc_encode(flat.view(f"u{itemsize}"), self.level,
                                     compressor=self.blosc_compressor, shuffle=self.shuffle,
                                     typesize=itemsize, numthreads=self.numthreads, out=out)

    def _bslz4(self, flat, itemsize, out):
        ic = self._ic
        nbytes = flat.size
        block = bslz4_block_size(itemsize)
        done = nbytes - (nbytes // itemsize) % _BSHUF_MULTIPLE * itemsize  # whole groups of 8
        shuffled = self._scratch.get(nbytes)
        ic.bitshuffle_encode(memoryview(flat), itemsize=itemsize, blocksize=block, out=shuffled)
        start = end = 0
        if done:
            # All blocks in one call, laid out as an HDF5 LZ4 chunk after a 12-byte header.
            packed = ic.lz4h5_encode(memoryview(shuffled[:done]), blocksize=block * itemsize, out=out)
            start, end = _HEADER_BYTES, len(packed)
            sizes = _bslz4_blocks(memoryview(out[start:end]), done // itemsize, itemsize, block)
            if any(c == s for c, s in zip(sizes[0::2], sizes[1::2])):
                start, end = 0, self._bslz4_by_block(shuffled, done, block * itemsize, out)
        rest = nbytes - done
        out[end:end + rest] = shuffled[done:]
        return out[start:end + rest]

    def _bslz4_by_block(self, shuffled, done, block_bytes, out):
        """Encode block by block: bitshuffle LZ4-compresses every block, even one stored raw
        by the HDF5 LZ4 format because it did not shrink."""
        target = memoryview(out)
        source = memoryview(shuffled)
        pos = 0
        for first in range(0, done, block_bytes):
            part = self._ic.lz4_encode(source[first:min(first + block_bytes, done)],
                                       out=target[pos + 4:])
            target[pos:pos + 4] = len(part).to_bytes(4, "big")
            pos += 4 + len(part)
        return pos

    def fill(self, nt, image, color_mode=None):
        """Put ``image``, compressed, into NTNDArray ``nt`` with codec, sizes and dimensions."""
        image = np.asarray(image)
        return fill_compressed(nt, self.encode(image), self.codec, image.shape, image.dtype,
                               color_mode)


def fill_compressed(nt, payload, codec, shape, dtype, color_mode=None):
    """Put ``payload`` (uint8, already compressed with ``codec``) into NTNDArray ``nt``.

    ``shape`` (numpy axis order) and ``dtype`` describe the decoded image;
    the dimensions, codec, sizes and (when given) the ``ColorMode``
    attribute are set to match.
    """
    dtype = np.dtype(dtype)
    nt["value"] = {"ubyteValue": payload}
    if ntndarray.shape_of(nt) != tuple(shape):
        nt["dimension"] = [
            {"size": int(n), "offset": 0, "fullSize": int(n), "binning": 1, "reverse": False}
            for n in reversed(shape)]
    if nt.getString("codec.name") != codec or ntndarray.codec_of(nt)[1] != dtype:
        ntndarray.set_codec(nt, codec, dtype)
    count = 1
    for size in shape:
        count *= int(size)
    nt.setLong("compressedSize", int(len(payload)))
    nt.setLong("uncompressedSize", count * dtype.itemsize)
    if color_mode is not None:
        ntndarray.set_attributes(nt, {"ColorMode": int(color_mode)})
    return nt


def new_compressed_ntndarray(payload, codec, shape, dtype):
    """A new mono NTNDArray holding ``payload`` (bytes-like, compressed with ``codec``)."""
    if codec not in CODECS:
        raise CodecError(f"unknown codec '{codec}'; use one of: {', '.join(CODECS)}")
    data = np.frombuffer(payload, dtype=np.uint8)
    return fill_compressed(pva.NtNdArray(), data, codec, shape, dtype, ntndarray.ColorMode.MONO)


_local = threading.local()


def pixels(nt, decoder=None):
    """Return a frame's pixels as numpy whether raw or compressed.

    Raw frames: a read-only view of the received data. Compressed frames: a
    view of ``decoder``'s buffer (by default, one kept per thread), valid
    until that decoder's next call; copy what you keep.
    """
    if not nt.getString("codec.name"):
        return ntndarray.image_view(nt)
    if decoder is None:
        decoder = getattr(_local, "decoder", None)
        if decoder is None:
            decoder = _local.decoder = Decoder()
    return decoder.decode(nt)
