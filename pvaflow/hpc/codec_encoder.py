"""Writing compressed NTNDArrays: :class:`Encoder` (``lz4``, ``blosc``, ``bslz4``)
and :func:`fill_compressed` for bytes that are compressed already.

The formats are those :mod:`pvaflow.hpc.codecs` reads (areaDetector's
NDPluginCodec); the output goes into a buffer the encoder keeps.
"""

import numpy as np
import pvaccess as pva

from . import ntndarray
from .codec_formats import (BLOSC_HEADER_BYTES, BSHUF_MULTIPLE, H5_HEADER_BYTES, BLOSC_COMPRESSORS,
                            CODECS, CodecError, ReusedBuffer, bslz4_block_size, bslz4_blocks,
                            load_imagecodecs)
from .errors import ConfigurationError


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
        self._ic = load_imagecodecs()
        self.codec = codec
        self.level = 5 if level is None and codec == "blosc" else level
        self.blosc_compressor = blosc_compressor
        self.shuffle = shuffle
        self.numthreads = max(int(numthreads), 1)
        self._out = ReusedBuffer()
        self._scratch = ReusedBuffer()
        self._encode = {"lz4": self._lz4, "blosc": self._blosc, "bslz4": self._bslz4}[codec]

    def encode(self, image):
        """Return the compressed bytes of ``image`` (a uint8 view of the kept buffer)."""
        image = np.asarray(image)
        if image.dtype not in ntndarray.FIELD_BY_DTYPE:
            raise CodecError(f"codec '{self.codec}': cannot encode data type {image.dtype}")
        flat = np.ascontiguousarray(image).reshape(-1).view(np.uint8)
        bound = flat.size + flat.size // 200 + 1024 + BLOSC_HEADER_BYTES
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
        done = nbytes - (nbytes // itemsize) % BSHUF_MULTIPLE * itemsize  # whole groups of 8
        shuffled = self._scratch.get(nbytes)
        ic.bitshuffle_encode(memoryview(flat), itemsize=itemsize, blocksize=block, out=shuffled)
        start = end = 0
        if done:
            # All blocks in one call, laid out as an HDF5 LZ4 chunk after a 12-byte header.
            packed = ic.lz4h5_encode(memoryview(shuffled[:done]), blocksize=block * itemsize, out=out)
            start, end = H5_HEADER_BYTES, len(packed)
            sizes = bslz4_blocks(memoryview(out[start:end]), done // itemsize, itemsize, block)
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
