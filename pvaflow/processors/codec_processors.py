"""Processors that decode and encode compressed NTNDArrays.

* :class:`DecodeProcessor` publishes the uncompressed version of each
  compressed frame (``lz4``, ``blosc``, ``bslz4``); raw frames pass through.
* :class:`EncodeProcessor` publishes each frame compressed with one codec.

Run them with ``--processor-class pvaflow.processors.codec_processors.DecodeProcessor``
(or ``EncodeProcessor``) and ``--processor-args '{"codec": "bslz4"}'``.

This module also holds the small helpers the pvaflow processors share:
rate counting, copying a frame's header fields and the rule that keys naming
files cannot be changed by a remote ``configure`` (:func:`refuse_remote_paths`).
"""

import time

import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc import codecs, ntndarray


# --------------------------------------------------------------- shared helpers
def refuse_remote_paths(config_dict, path_keys, allowed, owner):
    """Raise PermissionError when ``config_dict`` changes keys that name files.

    A ``configure`` command comes from the network; keys naming files or
    directories may change only when the processor was started with
    ``"allowRemotePaths": true``. ``allowRemotePaths`` itself never changes.
    """
    if "allowRemotePaths" in config_dict:
        raise PermissionError(f"{owner}: allowRemotePaths can only be set when the processor starts")
    keys = [key for key in path_keys if key in config_dict]
    if keys and not allowed:
        raise PermissionError(
            f"{owner}: {', '.join(keys)} name files and cannot be changed by a remote configure;"
            " start the processor with \"allowRemotePaths\": true to allow it")


class Throughput:
    """Counts of frames and bytes, with wall-clock and busy-time rates."""

    __slots__ = ("frames", "nbytes", "busy", "started")

    def __init__(self):
        self.reset()

    def reset(self):
        """Zero the counts; rates count from now."""
        self.frames = 0
        self.nbytes = 0
        self.busy = 0.0
        self.started = time.monotonic()

    def add(self, nbytes, seconds):
        """Count one frame of ``nbytes`` that took ``seconds`` of work."""
        self.frames += 1
        self.nbytes += nbytes
        self.busy += seconds

    def frame_rate(self):
        """Frames per second of wall-clock time since the start or reset."""
        elapsed = time.monotonic() - self.started
        return self.frames / elapsed if elapsed > 0 else 0.0

    def mb_rate(self):
        """Megabytes (1e6) per second of wall-clock time."""
        elapsed = time.monotonic() - self.started
        return self.nbytes / 1e6 / elapsed if elapsed > 0 else 0.0

    def busy_mb_rate(self):
        """Megabytes (1e6) per second of work time: the speed of the work itself."""
        return self.nbytes / 1e6 / self.busy if self.busy > 0 else 0.0


def copy_header(source, target):
    """Copy ``uniqueId``, both time stamps, the descriptor and the attributes."""
    target.setInt("uniqueId", source.getInt("uniqueId"))
    for field in ("timeStamp", "dataTimeStamp"):
        target.setLong(f"{field}.secondsPastEpoch", source.getLong(f"{field}.secondsPastEpoch"))
        target.setInt(f"{field}.nanoseconds", source.getInt(f"{field}.nanoseconds"))
        target.setInt(f"{field}.userTag", source.getInt(f"{field}.userTag"))
    target.setString("descriptor", source.getString("descriptor"))
    target["attribute"] = source["attribute"]


def int_arg(config, key, default, minimum=None, choices=None):
    """Read an integer argument; ValueError with the key's name when invalid."""
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{key} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {value}")
    if choices is not None and value not in choices:
        raise ValueError(f"{key} must be one of {sorted(choices)}, got {value}")
    return value


# ------------------------------------------------------------------ processors
class DecodeProcessor(UserDataProcessor):
    """Publish compressed frames decompressed; raw frames pass through.

    Args: ``numThreads`` (Blosc threads, default 1). A frame that cannot be
    decoded (unknown codec, corrupt data) is counted in ``nErrors`` and
    reported with a one-line message; the stream goes on.
    """

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.decoder = codecs.Decoder(int_arg(self.configDict, "numThreads", 1, minimum=1))
        self._output = pva.NtNdArray()
        self.decoded = Throughput()
        self.bytes_in = 0
        self.n_raw = 0
        self.n_errors = 0
        self.last_error = ""

    def configure(self, configDict):
        if "numThreads" in configDict:
            self.decoder.numthreads = int_arg(configDict, "numThreads", 1, minimum=1)

    def process(self, pvObject):
        if not pvObject.getString("codec.name"):
            self.n_raw += 1
            self.updateOutputChannel(pvObject)
            return pvObject
        started = time.perf_counter()
        try:
            image = self.decoder.decode(pvObject)
        except codecs.CodecError as exc:
            self.n_errors += 1
            self.last_error = f"frame {pvObject.getInt('uniqueId')}: {exc}"
            raise codecs.CodecError(self.last_error) from None
        output = self._output
        ntndarray.set_image(output, image)  # the one copy, into the output record
        if output.getString("codec.name"):
            ntndarray.set_codec(output, "")
        copy_header(pvObject, output)
        self.bytes_in += pvObject.getLong("compressedSize")
        self.decoded.add(image.nbytes, time.perf_counter() - started)
        self.updateOutputChannel(output)
        return output

    def getOutputPvObjectType(self, pvObject):
        return None if self.outputChannel is None else pva.NtNdArray()

    def resetStats(self):
        self.decoded.reset()
        self.bytes_in = 0
        self.n_raw = 0
        self.n_errors = 0
        self.last_error = ""

    def getStats(self):
        d = self.decoded
        return {
            "nDecoded": d.frames, "nRaw": self.n_raw, "nErrors": self.n_errors,
            "bytesIn": self.bytes_in, "bytesOut": d.nbytes,
            "compressionRatio": d.nbytes / self.bytes_in if self.bytes_in else 0.0,
            "decodedRate": d.frame_rate(), "decodeMBps": d.busy_mb_rate(),
            "lastError": self.last_error,
        }

    def getStatsPvaTypes(self):
        return {
            "nDecoded": pva.ULONG, "nRaw": pva.ULONG, "nErrors": pva.ULONG,
            "bytesIn": pva.ULONG, "bytesOut": pva.ULONG, "compressionRatio": pva.DOUBLE,
            "decodedRate": pva.DOUBLE, "decodeMBps": pva.DOUBLE, "lastError": pva.STRING,
        }


class EncodeProcessor(UserDataProcessor):
    """Publish every frame compressed with one codec.

    Args (all can change through ``configure``): ``codec`` (``lz4``,
    ``blosc`` or ``bslz4``; default ``bslz4``), ``level`` (blosc 0-9,
    default 5), ``bloscCompressor`` (default ``lz4``), ``shuffle`` (blosc:
    0 none, 1 byte, 2 bit; default 1) and ``numThreads`` (blosc, default 1).
    Frames already compressed with the chosen codec pass through; frames
    compressed with another codec are decoded and encoded again.
    """

    _KEYS = ("codec", "level", "bloscCompressor", "shuffle", "numThreads")

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.settings = {"codec": "bslz4", "level": None, "bloscCompressor": "lz4",
                         "shuffle": 1, "numThreads": 1}
        self.encoder = self._new_encoder(self.configDict)
        self.decoder = codecs.Decoder()
        self._output = pva.NtNdArray()
        self.encoded = Throughput()
        self.bytes_out = 0
        self.n_passed = 0
        self.n_errors = 0
        self.last_error = ""

    def _new_encoder(self, config_dict):
        """Build the encoder for the settings updated by ``config_dict`` (nothing kept on error)."""
        settings = dict(self.settings)
        settings.update({key: config_dict[key] for key in self._KEYS if key in config_dict})
        level = int_arg(settings, "level", None, minimum=0)
        encoder = codecs.Encoder(settings["codec"], level, settings["bloscCompressor"],
                                 int_arg(settings, "shuffle", 1, choices=(0, 1, 2)),
                                 int_arg(settings, "numThreads", 1, minimum=1))
        self.settings = settings
        return encoder

    def configure(self, configDict):
        if any(key in configDict for key in self._KEYS):
            self.encoder = self._new_encoder(configDict)

    def process(self, pvObject):
        encoder = self.encoder
        if pvObject.getString("codec.name") == encoder.codec:
            self.n_passed += 1
            self.updateOutputChannel(pvObject)
            return pvObject
        started = time.perf_counter()
        try:
            image = self.decoder.pixels(pvObject)
            output = encoder.fill(self._output, image)
        except codecs.CodecError as exc:
            self.n_errors += 1
            self.last_error = f"frame {pvObject.getInt('uniqueId')}: {exc}"
            raise codecs.CodecError(self.last_error) from None
        copy_header(pvObject, output)
        self.bytes_out += output.getLong("compressedSize")
        self.encoded.add(image.nbytes, time.perf_counter() - started)
        self.updateOutputChannel(output)
        return output

    def getOutputPvObjectType(self, pvObject):
        return None if self.outputChannel is None else pva.NtNdArray()

    def resetStats(self):
        self.encoded.reset()
        self.bytes_out = 0
        self.n_passed = 0
        self.n_errors = 0
        self.last_error = ""

    def getStats(self):
        e = self.encoded
        return {
            "codec": self.encoder.codec, "nEncoded": e.frames, "nPassed": self.n_passed,
            "nErrors": self.n_errors, "bytesIn": e.nbytes, "bytesOut": self.bytes_out,
            "compressionRatio": e.nbytes / self.bytes_out if self.bytes_out else 0.0,
            "encodedRate": e.frame_rate(), "encodeMBps": e.busy_mb_rate(),
            "lastError": self.last_error,
        }

    def getStatsPvaTypes(self):
        return {
            "codec": pva.STRING, "nEncoded": pva.ULONG, "nPassed": pva.ULONG, "nErrors": pva.ULONG,
            "bytesIn": pva.ULONG, "bytesOut": pva.ULONG, "compressionRatio": pva.DOUBLE,
            "encodedRate": pva.DOUBLE, "encodeMBps": pva.DOUBLE, "lastError": pva.STRING,
        }
