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
:class:`Encoder` (in :mod:`pvaflow.hpc.codec_encoder`, importable from here) writes
the same formats, also into a kept buffer. Every
problem with one frame raises :class:`CodecError` (a
:class:`~pvaflow.hpc.errors.FrameFormatError`) with a one-line message.

The codec library is imagecodecs (``pip install imagecodecs``), imported when
the first decoder or encoder is made.
"""

import threading

import numpy as np

from . import ntndarray
from .codec_encoder import Encoder, fill_compressed, new_compressed_ntndarray
from .codec_formats import (BLOSC_HEADER_BYTES, BSHUF_MULTIPLE, H5_HEADER_BYTES, BLOSC_COMPRESSORS,
                            CODECS, CodecError, ReusedBuffer, big_endian_int, bslz4_block_size,
                            bslz4_blocks, load_imagecodecs)

__all__ = ["CODECS", "BLOSC_COMPRESSORS", "CodecError", "Decoder", "Encoder", "bslz4_block_size",
           "fill_compressed", "new_compressed_ntndarray", "pixels"]


class Decoder:
    """Decode compressed NTNDArrays (or payloads) into a reused buffer.

    ``numthreads`` is passed to Blosc. Not thread-safe: use one decoder per
    thread.
    """

    def __init__(self, numthreads=1):
        self._ic = load_imagecodecs()
        self.numthreads = max(int(numthreads), 1)
        self._out = ReusedBuffer()
        self._scratch = ReusedBuffer()
        self._packed = ReusedBuffer()
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
        if len(view) >= H5_HEADER_BYTES and view[0] == 0 and big_endian_int(view, 0, 8) == nbytes:
            result = ic.lz4h5_decode(view, out=out)  # an HDF5 LZ4 filter chunk
        else:
            result = ic.lz4_decode(view, out=out)
        if len(result) != nbytes:
            raise CodecError(f"codec 'lz4': data decode to {len(result)} bytes, expected {nbytes}")

    def _blosc(self, view, itemsize, nbytes, out):
        if len(view) < BLOSC_HEADER_BYTES:
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
        if total > H5_HEADER_BYTES and big_endian_int(view, 0, 8) == nbytes and (
                nbytes >= BSHUF_MULTIPLE * itemsize or total == H5_HEADER_BYTES + nbytes):
            block_bytes = big_endian_int(view, 8, 4)  # an HDF5 bitshuffle filter chunk
            if block_bytes <= 0 or block_bytes % (itemsize * BSHUF_MULTIPLE):
                raise CodecError(f"codec 'bslz4': invalid block size {block_bytes} in header")
            block = block_bytes // itemsize
            view = view[H5_HEADER_BYTES:]
        shuffled = self._scratch.get(nbytes)
        sizes = bslz4_blocks(view, nbytes // itemsize, itemsize, block)
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
        packed = self._packed.get(H5_HEADER_BYTES + length, done + done // 64 + 4096)
        packed[:8] = np.frombuffer(done.to_bytes(8, "big"), np.uint8)
        packed[8:12] = np.frombuffer(block_bytes.to_bytes(4, "big"), np.uint8)
        packed[H5_HEADER_BYTES:] = np.frombuffer(view, np.uint8, length)
        result = ic.lz4h5_decode(memoryview(packed), out=shuffled[:done])
        if len(result) != done:
            raise CodecError(f"codec 'bslz4': blocks decode to {len(result)} bytes, expected {done}")


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
