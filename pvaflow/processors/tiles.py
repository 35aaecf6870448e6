"""Split images into tiles and stitch them back together.

A tiled workflow spreads the pixels of every frame over several consumers::

    sim -> consumer(TileSplitter) -> R*C tile consumers -> collector(TileStitcher)

:class:`TileSplitter` cuts each mono 2-D frame into ``rows`` x ``cols``
tiles. Tile ``k`` (row-major, 0-based) is an NTNDArray with the frame's
``uniqueId`` and time stamps and these integer attributes, so that a
stitcher can place it without knowing the layout in advance:
``TileIndex``, ``TileRow``, ``TileCol``, ``TileRows``, ``TileCols``,
``TileY0``, ``TileX0`` (the tile's first pixel in the full image),
``FullHeight`` and ``FullWidth``. When the image size is not a multiple of
the tile count the last tiles of a row or column are one pixel smaller
(like ``numpy.array_split``).

By default all tiles of a frame are published, one after the other, on the
consumer's output channel. With ``{"channelPerTile": true}`` tile ``k`` is
published on ``<outputChannel>:<k+1>`` instead (records the splitter
creates on its own server), so ``R*C`` consumers started with
``-ic <outputChannel>:* -nc R*C`` each take one tile of every frame. (A
single channel cannot spread the tiles: they share their ``uniqueId``, so a
consumer that gets several drops all but the first as duplicates, and the
distributor passes on only the first update of each ``uniqueId``, so the
other tiles reach no consumer at all.)

:class:`TileStitcher` runs in a collector started with
``--objects-per-id R*C`` (the tiles of one id then arrive together) and
publishes each complete image. It is robust to other arrival orders too:
partial images are kept per ``uniqueId`` in a small bounded table; an image
still partial when a newer one completes, when the table overflows or at
stop is dropped and counted as incomplete.
"""

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc import ntndarray
from pvaflow.hpc.errors import FrameFormatError

#: Attributes a tile carries (all ints).
TILE_ATTRIBUTES = ("TileIndex", "TileRow", "TileCol", "TileRows", "TileCols", "TileY0", "TileX0",
                   "FullHeight", "FullWidth")

_TIME_FIELDS = ("timeStamp", "dataTimeStamp")


def _int_arg(config, name, default, minimum=1):
    """Return ``config[name]`` (or ``default``) checked to be an int >= ``minimum``."""
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"processor argument '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _bool_arg(config, name, default):
    value = config.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"processor argument '{name}' must be true or false, got {value!r}")
    return value


def tile_bounds(size, parts):
    """Split ``size`` pixels into ``parts`` spans; return the ``parts + 1`` boundaries.

    The first ``size % parts`` spans are one pixel longer than the others.
    """
    base, extra = divmod(size, parts)
    return [i * base + min(i, extra) for i in range(parts + 1)]


def _template():
    """A small NTNDArray with data: the structure of every record these processors serve.

    It has a value (not an empty union) so that a consumer connecting before
    the first frame skips it as the record's initial value.
    """
    return ntndarray.new_ntndarray(np.zeros((1, 1), np.uint8))


def _read_times(pv):
    return tuple((pv.getLong(f"{f}.secondsPastEpoch"), pv.getInt(f"{f}.nanoseconds"))
                 for f in _TIME_FIELDS)


def _write_times(nt, times):
    for field, (seconds, nanoseconds) in zip(_TIME_FIELDS, times):
        nt.setLong(f"{field}.secondsPastEpoch", seconds)
        nt.setInt(f"{field}.nanoseconds", nanoseconds)


class TileSplitter(UserDataProcessor):
    """Publish every mono 2-D frame as ``rows`` x ``cols`` tiles (see the module docstring).

    Arguments: ``rows`` and ``cols`` (ints >= 1, default 2; ``configure``
    may change them, and the collector's ``--objects-per-id`` must follow),
    ``channelPerTile`` (bool, default false; fixed). Tile channels a smaller
    layout no longer uses keep their last value.
    """

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.rows = _int_arg(self.configDict, "rows", 2)
        self.cols = _int_arg(self.configDict, "cols", 2)
        self.channel_per_tile = _bool_arg(self.configDict, "channelPerTile", False)
        if self.channel_per_tile and not self.outputChannel:
            raise ValueError("channelPerTile needs an output channel (-oc): tile k is published"
                             " on <outputChannel>:<k+1>")
        self._records = set()   # tile channels created on our server
        self._layout = None     # (shape, rows, cols) the tiles below were made for
        self._tiles = []        # (channel or None, NTNDArray, y0, y1, x0, x1) per tile
        self.resetStats()

    # life cycle ----------------------------------------------------------------
    def start(self):
        self._create_records()

    def configure(self, configDict):
        """Change ``rows``/``cols`` (both checked before either is applied)."""
        if "channelPerTile" in configDict and configDict["channelPerTile"] != self.channel_per_tile:
            raise ValueError("channelPerTile cannot change while the consumer runs")
        rows = _int_arg(configDict, "rows", self.rows)
        cols = _int_arg(configDict, "cols", self.cols)
        if (rows, cols) != (self.rows, self.cols):
            self.rows, self.cols = rows, cols
            self._layout = None
            self._create_records()

    def resetStats(self):
        self.nFramesSplit = 0
        self.nTilesPublished = 0

    def getStats(self):
        return {"nFramesSplit": self.nFramesSplit, "nTilesPublished": self.nTilesPublished,
                "rows": self.rows, "cols": self.cols}

    def getStatsPvaTypes(self):
        return {"nFramesSplit": pva.ULONG, "nTilesPublished": pva.ULONG, "rows": pva.UINT,
                "cols": pva.UINT}

    def getInputPvObjectType(self):
        return pva.NtNdArray()

    def getOutputPvObjectType(self, pvObject):
        if self.outputChannel is None or self.channel_per_tile:
            return None  # per-tile records are created in start()
        return _template()

    # tiles ---------------------------------------------------------------------
    def tile_channel(self, index):
        """The channel of tile ``index`` (0-based) in channel-per-tile mode."""
        return f"{self.outputChannel}:{index + 1}"

    def _create_records(self):
        if not self.channel_per_tile or self.pvaServer is None:
            return
        for index in range(self.rows * self.cols):
            channel = self.tile_channel(index)
            if channel not in self._records:
                self.pvaServer.addRecord(channel, _template(), None)
                self._records.add(channel)

    def _make_tiles(self, image):
        """Build one reusable NTNDArray per tile for this image shape and layout."""
        height, width = image.shape
        rows, cols = self.rows, self.cols
        if rows > height or cols > width:
            raise FrameFormatError(f"cannot cut a {height}x{width} image into {rows} rows and"
                                   f" {cols} columns of tiles; lower 'rows'/'cols'")
        ys, xs = tile_bounds(height, rows), tile_bounds(width, cols)
        tiles = []
        for r in range(rows):
            for c in range(cols):
                index = r * cols + c
                y0, y1, x0, x1 = ys[r], ys[r + 1], xs[c], xs[c + 1]
                nt = ntndarray.new_ntndarray(image[y0:y1, x0:x1], attributes={
                    "TileIndex": index, "TileRow": r, "TileCol": c, "TileRows": rows,
                    "TileCols": cols, "TileY0": y0, "TileX0": x0, "FullHeight": height,
                    "FullWidth": width})
                channel = self.tile_channel(index) if self.channel_per_tile else None
                tiles.append((channel, nt, y0, y1, x0, x1))
        self._tiles = tiles
        self._layout = (image.shape, rows, cols)

    def process(self, pvObject):
        image = ntndarray.image_view(pvObject)
        if image.ndim != 2:
            raise FrameFormatError(
                f"TileSplitter splits mono 2-D images only; got an image of shape {image.shape}"
                f" (colour mode {ntndarray.color_mode_of(pvObject)})")
        if self._layout is None or self._layout[0] != image.shape:
            self._make_tiles(image)
        uid = pvObject.getInt("uniqueId")
        times = _read_times(pvObject)
        server, publisher = self.pvaServer, self.dataPublisher
        for channel, nt, y0, y1, x0, x1 in self._tiles:
            ntndarray.set_image(nt, image[y0:y1, x0:x1])
            nt.setInt("uniqueId", uid)
            _write_times(nt, times)
            if channel is not None:
                server.update(channel, nt)
            elif publisher is not None:
                publisher.updateOutputChannel(nt)
            else:
                continue
            self.nTilesPublished += 1
        self.nFramesSplit += 1
        return None


class _Partial:
    """An image being stitched: its pixels and which tiles are in."""

    __slots__ = ("buffer", "mask", "count", "expected", "times", "layout")

    def __init__(self, shape, dtype):
        self.buffer = np.empty(shape, dtype)


class TileStitcher(UserDataProcessor):
    """Put tiles made by :class:`TileSplitter` back into full images.

    Argument: ``maxPending`` (int >= 1, default 8), the number of partial
    images kept at a time; when it is exceeded the oldest is dropped.
    """

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.max_pending = _int_arg(self.configDict, "maxPending", 8)
        self._pending = {}   # uniqueId -> _Partial, oldest first
        self._free = []      # _Partial objects to reuse
        self._output = None
        self.resetStats()

    def configure(self, configDict):
        self.max_pending = _int_arg(configDict, "maxPending", self.max_pending)

    def resetStats(self):
        self.nStitched = 0
        self.nIncomplete = 0
        self.nTilesReceived = 0
        self.nDuplicateTiles = 0

    def getStats(self):
        return {"nStitched": self.nStitched, "nIncomplete": self.nIncomplete,
                "nTilesReceived": self.nTilesReceived, "nDuplicateTiles": self.nDuplicateTiles,
                "nPending": len(self._pending)}

    def getStatsPvaTypes(self):
        return {"nStitched": pva.ULONG, "nIncomplete": pva.ULONG, "nTilesReceived": pva.ULONG,
                "nDuplicateTiles": pva.ULONG, "nPending": pva.UINT}

    def getInputPvObjectType(self):
        return pva.NtNdArray()

    def getOutputPvObjectType(self, pvObject):
        return None if self.outputChannel is None else _template()

    def stop(self):
        """Images still partial now will never complete: count them."""
        for uid in list(self._pending):
            self._drop(uid)

    # stitching -----------------------------------------------------------------
    @staticmethod
    def _placement(pvObject):
        attributes = ntndarray.attributes_of(pvObject)
        try:
            return tuple(int(attributes[name]) for name in TILE_ATTRIBUTES)
        except KeyError as exc:
            raise FrameFormatError(f"not a tile: the NTNDArray has no attribute {exc.args[0]};"
                                   " TileStitcher takes the output of TileSplitter") from None

    def _new_partial(self, uid, tile, placement, times):
        shape = (placement[7], placement[8])
        for i, free in enumerate(self._free):
            if free.buffer.shape == shape and free.buffer.dtype == tile.dtype:
                partial = self._free.pop(i)
                break
        else:
            partial = _Partial(shape, tile.dtype)
        partial.mask = 0
        partial.count = 0
        partial.expected = placement[3] * placement[4]
        partial.layout = placement[3:5]
        partial.times = times
        self._pending[uid] = partial
        while len(self._pending) > self.max_pending:
            self._drop(next(iter(self._pending)))
        return partial

    def _drop(self, uid):
        self._release(self._pending.pop(uid))
        self.nIncomplete += 1

    def _release(self, partial):
        if len(self._free) < self.max_pending:
            self._free.append(partial)

    def process(self, pvObject):
        tile = ntndarray.image_view(pvObject)
        if tile.ndim != 2:
            raise FrameFormatError(f"a tile must be a mono 2-D image; got shape {tile.shape}")
        placement = self._placement(pvObject)
        index, _, _, rows, cols, y0, x0, height, width = placement
        h, w = tile.shape
        if not (0 <= index < rows * cols and 0 <= y0 and y0 + h <= height and 0 <= x0
                and x0 + w <= width):
            raise FrameFormatError(f"tile {index} ({h}x{w} at y={y0}, x={x0}) does not fit its"
                                   f" {height}x{width} image of {rows}x{cols} tiles")
        self.nTilesReceived += 1
        uid = pvObject.getInt("uniqueId")
        partial = self._pending.get(uid)
        if partial is None:
            partial = self._new_partial(uid, tile, placement, _read_times(pvObject))
        elif (partial.buffer.shape != (height, width) or partial.buffer.dtype != tile.dtype
              or partial.layout != (rows, cols)):
            raise FrameFormatError(f"tile {index} of id {uid} does not match the other tiles of"
                                   " that id (image size, data type or tile layout differ)")
        bit = 1 << index
        if partial.mask & bit:
            self.nDuplicateTiles += 1
            return None
        partial.buffer[y0:y0 + h, x0:x0 + w] = tile
        partial.mask |= bit
        partial.count += 1
        if partial.count < partial.expected:
            return None
        return self._complete(uid, partial)

    def _complete(self, uid, partial):
        del self._pending[uid]
        output = self._output
        if output is None:
            output = self._output = ntndarray.new_ntndarray(partial.buffer)
        else:
            ntndarray.set_image(output, partial.buffer)
        output.setInt("uniqueId", uid)
        _write_times(output, partial.times)
        self._release(partial)
        self.nStitched += 1
        if self._pending:  # older images can no longer complete
            for older in [u for u in self._pending if u < uid]:
                self._drop(older)
        self.updateOutputChannel(output)
        return output
