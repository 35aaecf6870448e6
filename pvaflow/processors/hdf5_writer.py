"""Write frames to HDF5 files, N frames per file, readable while being written.

Run it::

    pvapy-hpc-consumer -ic pvapy:image \\
        -pc pvaflow.processors.hdf5_writer.Hdf5Writer \\
        -pa '{"outputDirectory": "/data/run7", "framesPerFile": 1000, "compression": "bslz4"}'

Arguments (``-pa`` JSON):

``outputDirectory``
    where files go (required); created if missing.
``fileNameFormat``
    default ``{prefix}{fileIndex:05d}.h5``; fields ``prefix``,
    ``fileIndex`` (1, 2, ...), ``processorId``, ``firstId`` (uniqueId of the
    file's first frame). Must give a plain file name.
``prefix``
    default ``frames_``.
``framesPerFile``
    frames in one file before the next is started (default 1000).
``compression``
    ``none`` (default), ``gzip`` (level ``compressionLevel``, default 4), or
    with the hdf5plugin package: ``lz4``, ``bslz4`` (bitshuffle + LZ4),
    ``blosc`` (LZ4 inside blosc, level ``compressionLevel``).
``flushPeriod``
    seconds between flushes that make new frames visible to readers
    (default 0: after every frame).
``overwrite``
    replace existing files (default false: the frame is counted as an error).
``allowRemotePaths``
    let ``configure`` change ``outputDirectory``, ``fileNameFormat`` and
    ``prefix`` (default false).

Layout of each file (one chunk per frame; every dataset grows by one row per
frame written, so its length is the number of frames actually written)::

    /entry/data/data           frames (n, ...) in numpy axis order
    /entry/data/uniqueId       int32 (n,), in arrival order (gaps and reordering kept)
    /entry/data/timeStamp      float64 (n,), seconds since the epoch
    /entry/data/dataTimeStamp  float64 (n,)
    /entry/attributes/<name>   (n,) one dataset per NTNDArray attribute of the
                               file's first frame (numbers float64/int64, text strings)

Files are opened in SWMR mode: ``h5py.File(path, "r", libver="latest",
swmr=True)`` reads them while they are written. A frame of another shape or
data type than the file's closes the file and starts the next.
"""

import os
import time

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc import codecs, ntndarray
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.processors.codec_processors import Throughput, int_arg, refuse_remote_paths

COMPRESSIONS = ("none", "gzip", "lz4", "bslz4", "blosc")
PATH_KEYS = ("outputDirectory", "fileNameFormat", "prefix")
NAME_FIELDS = ("prefix", "fileIndex", "processorId", "firstId")


def _h5py():
    try:
        import h5py  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigurationError("Hdf5Writer needs h5py: pip install h5py") from None
    return h5py


def filter_options(compression, level):
    """``create_dataset`` keyword arguments for ``compression`` (ConfigurationError if unusable)."""
    if compression == "none":
        return {}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4 if level is None else min(level, 9)}
    try:
        import hdf5plugin  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ConfigurationError(f"compression '{compression}' needs the hdf5plugin package:"
                                 " pip install hdf5plugin (or use gzip)") from None
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    if compression == "bslz4":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5 if level is None else min(level, 9),
                                 shuffle=hdf5plugin.Blosc.SHUFFLE))


class _File:
    """One open output file and its growing datasets."""

    def __init__(self, h5py, path, mode, image, attributes, options, processor_id):
        self.path = path
        self.handle = handle = h5py.File(path, mode, libver="latest")
        try:
            handle.attrs["creator"] = "pvaflow Hdf5Writer"
            if processor_id is not None:
                handle.attrs["processorId"] = processor_id
            entry = handle.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            group = entry.create_group("data")
            group.attrs["NX_class"] = "NXdata"
            group.attrs["signal"] = "data"
            self.shape, self.dtype = image.shape, image.dtype
            self.data = group.create_dataset("data", (0,) + image.shape, image.dtype,
                                             maxshape=(None,) + image.shape,
                                             chunks=(1,) + image.shape, **options)
            self.ids = self._series(group, "uniqueId", np.int32)
            self.stamps = self._series(group, "timeStamp", np.float64)
            self.data_stamps = self._series(group, "dataTimeStamp", np.float64)
            self.attributes = {}
            attribute_group = entry.create_group("attributes")
            for name, value in attributes.items():
                dtype = self._attribute_dtype(h5py, value)
                if dtype is not None and "/" not in name and name not in (".", ".."):
                    self.attributes[name] = self._series(attribute_group, name, dtype)
            self.datasets = [self.data, self.ids, self.stamps, self.data_stamps,
                             *self.attributes.values()]
            handle.swmr_mode = True
        except BaseException:
            handle.close()
            raise
        self.count = 0

    @staticmethod
    def _series(group, name, dtype):
        return group.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(1024,))

    @staticmethod
    def _attribute_dtype(h5py, value):
        if isinstance(value, str):
            return h5py.string_dtype()
        if isinstance(value, (bool, int)):
            return np.int64
        if isinstance(value, float):
            return np.float64
        return None

    def append(self, image, unique_id, stamp, data_stamp, attributes):
        """Grow every dataset by one row and fill it; return the number of attribute misfits."""
        index = self.count
        size = index + 1
        for dataset in self.datasets:
            dataset.resize(size, axis=0)
        self.data[index] = image
        self.ids[index] = unique_id
        self.stamps[index] = stamp
        self.data_stamps[index] = data_stamp
        misfits = 0
        for name, dataset in self.attributes.items():
            value = attributes.get(name)
            try:
                dataset[index] = "" if value is None and dataset.dtype.kind == "O" else value
            except (TypeError, ValueError):
                misfits += 1
        self.count = size
        return misfits + sum(1 for name in attributes if name not in self.attributes)

    def flush(self):
        for dataset in self.datasets:
            dataset.flush()

    def close(self):
        self.handle.close()


class Hdf5Writer(UserDataProcessor):
    """Write frames to HDF5 files (see the module docstring)."""

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.h5py = _h5py()
        config = self.configDict
        self.allow_remote_paths = bool(config.get("allowRemotePaths", False))
        if not config.get("outputDirectory"):
            raise ConfigurationError("Hdf5Writer needs \"outputDirectory\" in its arguments")
        self.settings = {"outputDirectory": None, "fileNameFormat": "{prefix}{fileIndex:05d}.h5",
                         "prefix": "frames_", "framesPerFile": 1000, "compression": "none",
                         "compressionLevel": None, "flushPeriod": 0.0, "overwrite": False}
        self._apply(config)
        self.decoder = codecs.Decoder()
        self.file = None
        self.file_index = 0
        self.last_id = None
        self.written = Throughput()
        self._flushed_at = 0.0
        self._reset_counters()

    def _reset_counters(self):
        self.n_files = 0
        self.n_errors = 0
        self.n_gaps = 0
        self.n_out_of_order = 0
        self.n_attribute_misfits = 0
        self.last_error = ""

    # ---------------------------------------------------------- configuration
    def _apply(self, config):
        """Validate every key given, then apply them together (nothing kept on error)."""
        settings = dict(self.settings)
        settings.update({key: config[key] for key in settings if key in config})
        int_arg(settings, "framesPerFile", 1000, minimum=1)
        level = int_arg(settings, "compressionLevel", None, minimum=0)
        if settings["compression"] not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)},"
                             f" got {settings['compression']!r}")
        options = filter_options(settings["compression"], level)
        period = settings["flushPeriod"]
        if isinstance(period, bool) or not isinstance(period, (int, float)) or period < 0:
            raise ValueError(f"flushPeriod must be a number of seconds >= 0, got {period!r}")
        text = settings["fileNameFormat"]
        try:
            sample = text.format(prefix=settings["prefix"], fileIndex=1, processorId=1, firstId=1)
        except (AttributeError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"fileNameFormat {text!r} cannot be filled from"
                             f" {', '.join(NAME_FIELDS)}: {exc}") from None
        if not sample or sample.startswith(".") or "/" in sample or os.sep in sample:
            raise ValueError(f"fileNameFormat {text!r} does not give a plain file name ({sample!r})")
        directory = os.path.abspath(str(settings["outputDirectory"]))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create output directory {directory}: {exc}") from None
        settings["outputDirectory"] = directory
        settings["overwrite"] = bool(settings["overwrite"])
        self.settings = settings
        self._options = options

    def configure(self, configDict):
        """Change settings; file-related ones apply from the next file."""
        refuse_remote_paths(configDict, PATH_KEYS, self.allow_remote_paths, "Hdf5Writer")
        if any(key in configDict for key in self.settings):
            self._apply(configDict)

    # ---------------------------------------------------------------- frames
    def process(self, pvObject):
        started = time.perf_counter()
        unique_id = pvObject.getInt("uniqueId")
        try:
            image = self.decoder.pixels(pvObject)
            attributes = ntndarray.attributes_of(pvObject)
            current = self.file
            if current is not None and (current.shape != image.shape or current.dtype != image.dtype):
                self._close_file()
            if self.file is None:
                self._open_file(image, attributes, unique_id)
            self.n_attribute_misfits += self.file.append(
                image, unique_id, ntndarray.timestamp_of(pvObject),
                ntndarray.timestamp_of(pvObject, "dataTimeStamp"), attributes)
        except Exception as exc:
            self.n_errors += 1
            self.last_error = f"frame {unique_id}: {type(exc).__name__}: {exc}"
            raise
        self._count_order(unique_id)
        now = time.monotonic()
        if now - self._flushed_at >= self.settings["flushPeriod"]:
            self.file.flush()
            self._flushed_at = now
        if self.file.count >= self.settings["framesPerFile"]:
            self._close_file()
        self.written.add(image.nbytes, time.perf_counter() - started)
        return None

    def _count_order(self, unique_id):
        last = self.last_id
        if last is not None:
            if unique_id <= last:
                self.n_out_of_order += 1
            elif unique_id > last + 1:
                self.n_gaps += 1
        self.last_id = unique_id if last is None else max(last, unique_id)

    def _open_file(self, image, attributes, first_id):
        s = self.settings
        index = self.file_index + 1
        name = s["fileNameFormat"].format(prefix=s["prefix"], fileIndex=index,
                                          processorId=self.processorId, firstId=first_id)
        if not name or name.startswith(".") or "/" in name or os.sep in name:
            raise ValueError(f"file name {name!r} is not a plain file name; fix fileNameFormat")
        path = os.path.join(s["outputDirectory"], name)
        if not s["overwrite"] and os.path.lexists(path):
            raise FileExistsError(f"{path} exists; set \"overwrite\": true or change prefix")
        self.file = _File(self.h5py, path, "w" if s["overwrite"] else "w-", image, attributes,
                          self._options, self.processorId)
        self.file_index = index
        self.n_files += 1

    def _close_file(self):
        current, self.file = self.file, None
        if current is not None:
            current.close()

    def stop(self):
        """Close the open file (its datasets already hold exactly the frames written)."""
        self._close_file()

    @property
    def current_path(self):
        """Path of the file being written, or ''."""
        return self.file.path if self.file is not None else ""

    def getOutputPvObjectType(self, pvObject):
        return None

    # ------------------------------------------------------------- statistics
    def resetStats(self):
        self.written.reset()
        self._reset_counters()

    def getStats(self):
        w = self.written
        return {
            "nFramesWritten": w.frames, "bytesWritten": w.nbytes, "nFiles": self.n_files,
            "nErrors": self.n_errors, "nGaps": self.n_gaps, "nOutOfOrder": self.n_out_of_order,
            "nAttributeMisfits": self.n_attribute_misfits, "framesPerSecond": w.frame_rate(),
            "writeMBps": w.mb_rate(), "busyMBps": w.busy_mb_rate(),
            "currentFile": self.current_path, "lastError": self.last_error,
        }

    def getStatsPvaTypes(self):
        return {
            "nFramesWritten": pva.ULONG, "bytesWritten": pva.ULONG, "nFiles": pva.ULONG,
            "nErrors": pva.ULONG, "nGaps": pva.ULONG, "nOutOfOrder": pva.ULONG,
            "nAttributeMisfits": pva.ULONG, "framesPerSecond": pva.DOUBLE, "writeMBps": pva.DOUBLE,
            "busyMBps": pva.DOUBLE, "currentFile": pva.STRING, "lastError": pva.STRING,
        }
