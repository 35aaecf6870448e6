"""What the codec modules share: codec names, the bitshuffle block layout, errors,
the reused byte buffer and the lazily imported imagecodecs library.

See :mod:`pvaflow.hpc.codecs` for the formats themselves.
"""

import numpy as np

from .errors import ConfigurationError, FrameFormatError

#: Codec names pvaflow reads and writes.
CODECS = ("lz4", "blosc", "bslz4")

#: Blosc compressors an :class:`Encoder` may use inside a blosc frame.
BLOSC_COMPRESSORS = ("blosclz", "lz4", "lz4hc", "zlib", "zstd")

# bitshuffle's default block: 8 KiB of elements, a multiple of 8, at least 128.
_BSHUF_TARGET_BYTES = 8192
BSHUF_MULTIPLE = 8
_BSHUF_MIN_BLOCK = 128
H5_HEADER_BYTES = 12  # HDF5 filter header: 8-byte size + 4-byte block size
BLOSC_HEADER_BYTES = 16


class CodecError(FrameFormatError):
    """A compressed frame that cannot be decoded (or an image that cannot be encoded)."""


def load_imagecodecs():
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
    return max(block - block % BSHUF_MULTIPLE, _BSHUF_MIN_BLOCK)


class ReusedBuffer:
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


def big_endian_int(view, start, length):
    return int.from_bytes(view[start:start + length], "big")


def bslz4_blocks(view, n_elements, itemsize, block):
    """Walk a bslz4 stream; return [compressed, size, compressed, size, ...] per block.

    Checks every length against the data, so nothing reads past its end.
    """
    full, partial = divmod(n_elements, block)
    last = partial - partial % BSHUF_MULTIPLE
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
