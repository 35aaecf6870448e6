"""Streaming the compressed chunks of an HDF5 dataset as stored (``-hcm``).

Detector files written by areaDetector, Eiger/Dectris or hdf5plugin keep
each frame in one chunk compressed by an HDF5 filter plugin. With ``-hcm``
the simulator reads those chunks without decompressing them
(``read_direct_chunk``) and publishes them as compressed NTNDArrays, so a
consumer sees what a detector with NDPluginCodec would send and the
simulator spends no time decoding. The filters and the ``codec`` they
become:

=====================  ==========  =================================================
HDF5 filter            ``codec``   chunk format (read by :mod:`pvaflow.hpc.codecs`)
=====================  ==========  =================================================
32001 blosc            ``blosc``   one Blosc frame
32004 lz4              ``lz4``     HDF5 LZ4 filter chunk (sizes, then LZ4 blocks)
32008 bitshuffle+LZ4   ``bslz4``   12-byte header, then the bitshuffle/LZ4 stream
=====================  ==========  =================================================

The dataset must hold one frame per chunk (chunk shape ``(1, H, W)`` for a
stack, ``(H, W)`` for a single frame) compressed by exactly one of these
filters; anything else is a one-line
:class:`~pvaflow.hpc.errors.ConfigurationError` that says to drop ``-hcm``
(the frames are then decoded by h5py and streamed raw). A chunk the
filter left uncompressed (HDF5 marks it in the chunk's filter mask) is
published raw.
"""

import numpy as np

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.ntndarray import FIELD_BY_DTYPE
from pvaflow.sim.frames import CompressedFrame, FrameSource

BLOSC_FILTER = 32001
LZ4_FILTER = 32004
BITSHUFFLE_FILTER = 32008
_BITSHUFFLE_LZ4 = 2  # bitshuffle's cd_values[4]: 0 none, 2 LZ4, 3 zstd

CODEC_BY_FILTER = {BLOSC_FILTER: "blosc", LZ4_FILTER: "lz4", BITSHUFFLE_FILTER: "bslz4"}


def dataset_filters(dataset):
    """The filter pipeline of an h5py dataset: a list of ``(id, name, cd_values)``."""
    plist = dataset.id.get_create_plist()
    filters = []
    for index in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(index)
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        filters.append((int(code), name or str(code), tuple(int(v) for v in values)))
    return filters


def chunk_codec(dataset, name):
    """The codec of the dataset's chunks (ConfigurationError when -hcm cannot stream them)."""
    drop = "; drop -hcm to stream the frames decoded"
    filters = dataset_filters(dataset)
    if not filters:
        raise ConfigurationError(f"-hcm: {name} is not compressed{drop}")
    known = ", ".join(f"{codec} ({code})" for code, codec in CODEC_BY_FILTER.items())
    if len(filters) > 1 or filters[0][0] not in CODEC_BY_FILTER:
        pipeline = " + ".join(f"{n} ({c})" for c, n, _ in filters)
        raise ConfigurationError(
            f"-hcm: {name} is compressed with {pipeline}; chunks can be streamed as stored"
            f" only with one of {known}{drop}")
    code, _, values = filters[0]
    if code == BITSHUFFLE_FILTER and (len(values) < 5 or values[4] != _BITSHUFFLE_LZ4):
        kind = {0: "no compression", 3: "zstd"}.get(values[4] if len(values) > 4 else 0, "?")
        raise ConfigurationError(
            f"-hcm: {name} uses bitshuffle with {kind}; only bitshuffle with LZ4 (bslz4)"
            f" chunks can be streamed as stored{drop}")
    return CODEC_BY_FILTER[code]


class HdfChunkFrames(FrameSource):
    """The chunks of one HDF5 dataset, one compressed frame each."""

    def __init__(self, dataset, name, owner=None):
        shape = tuple(int(n) for n in dataset.shape)
        if len(shape) not in (2, 3) or 0 in shape:
            raise ConfigurationError(
                f"-hcm: {name} has shape {shape}; need one frame (2-D) or a stack (3-D)")
        dtype = np.dtype(dataset.dtype)
        if not dtype.isnative or dtype not in FIELD_BY_DTYPE:
            raise ConfigurationError(
                f"-hcm: {name} holds {dtype.str} data; chunks can be streamed as stored only"
                " for native-order integer or float types; drop -hcm")
        self.frame_shape = shape[-2:]
        expected = (1,) + self.frame_shape if len(shape) == 3 else self.frame_shape
        if dataset.chunks != expected:
            raise ConfigurationError(
                f"-hcm: {name} is stored in chunks of {dataset.chunks}; chunks can be streamed"
                f" as frames only when each holds one frame {expected}; drop -hcm")
        self.codec = chunk_codec(dataset, name)
        self.dataset = dataset
        self.owner = owner
        self.name = f"{name} ({self.codec} chunks)"
        self.dtype = dtype.newbyteorder("=")
        self.count = shape[0] if len(shape) == 3 else 1
        self._offset = (0,) * len(shape)

    def __len__(self):
        return self.count

    def __iter__(self):
        read = self.dataset.id.read_direct_chunk
        stacked = len(self._offset) == 3
        for index in range(self.count):
            mask, payload = read((index, 0, 0) if stacked else self._offset)
            if mask & 1:  # the filter was skipped: the chunk holds the raw frame
                yield np.frombuffer(payload, dtype=self.dtype).reshape(self.frame_shape)
            else:
                yield CompressedFrame(payload, self.codec, self.frame_shape, self.dtype)

    def close(self):
        if self.owner is not None:
            self.owner.close()
            self.owner = None
