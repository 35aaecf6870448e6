"""Write every frame to an image file: TIFF, PNG or JPEG.

Run it::

    pvapy-hpc-consumer -ic pvapy:image \\
        -pc pvaflow.processors.image_writer.ImageFileWriter \\
        -pa '{"outputDirectory": "/data/run7", "format": "tiff"}'

Arguments (``-pa`` JSON):

``outputDirectory``
    where files go (required); created if missing.
``format``
    ``tiff`` (default; every data type kept as it is, tifffile), ``png``
    (8- or 16-bit mono, 8-bit RGB; pillow) or ``jpeg`` (8-bit; pillow).
``fileNameFormat``
    a Python format string, default ``{prefix}{uniqueId:06d}.{extension}``.
    Fields: ``uniqueId``, ``processorId``, ``frameIndex`` (frames written by
    this processor, from 0), ``prefix``, ``extension``, ``format``,
    ``timeStamp`` and ``dataTimeStamp`` (float seconds), ``dateTime``
    (``YYYYmmdd-HHMMSS.ffffff`` of ``timeStamp``, UTC). The result must be a
    plain file name (no directory part, not starting with a dot).
``prefix``
    default ``frame_``.
``overwrite``
    replace existing files (default false: a frame whose file exists is
    counted as an error and not written).
``jpegQuality``
    1-95, default 90.
``allowRemotePaths``
    let a ``configure`` command change ``outputDirectory``,
    ``fileNameFormat`` and ``prefix`` (default false).

Each file is written under a temporary name in the output directory, then
renamed, so a reader never sees a partial file. Without ``overwrite`` the
final name is taken with a hard link, which fails if the name exists.
"""

import datetime
import importlib.util
import os
import string
import time

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc import codecs, ntndarray
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.processors.codec_processors import Throughput, int_arg, refuse_remote_paths

FORMATS = {"tiff": "tif", "png": "png", "jpeg": "jpg"}
FIELDS = ("uniqueId", "processorId", "frameIndex", "prefix", "extension", "format",
          "timeStamp", "dataTimeStamp", "dateTime")
PATH_KEYS = ("outputDirectory", "fileNameFormat", "prefix")
DEFAULT_NAME = "{prefix}{uniqueId:06d}.{extension}"


def _parse_name_format(text):
    """Return the set of fields ``text`` uses; ValueError when it is not usable."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"fileNameFormat must be a non-empty string, got {text!r}")
    try:
        used = {name.split(".")[0].split("[")[0]
                for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"fileNameFormat {text!r} is not a valid format string: {exc}") from None
    unknown = sorted(used - set(FIELDS))
    if unknown or "" in used:
        raise ValueError(f"fileNameFormat {text!r} uses unknown fields {unknown or ['{}']};"
                         f" use {', '.join(FIELDS)}")
    sample = dict.fromkeys(FIELDS, "")
    sample.update(uniqueId=1, processorId=1, frameIndex=0, timeStamp=0.0, dataTimeStamp=0.0)
    try:
        text.format_map(sample)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ValueError(f"fileNameFormat {text!r} cannot be filled: {exc}") from None
    return used


def _require(module, what):
    """ConfigurationError naming the package to install when ``module`` is missing."""
    if importlib.util.find_spec(module) is None:
        package = "pillow" if module == "PIL" else module
        raise ConfigurationError(f"writing {what} files needs the {package} package:"
                                 f" pip install {package} (or pip install 'pvaflow[files]')")


class ImageFileWriter(UserDataProcessor):
    """Write each frame to its own TIFF, PNG or JPEG file (see the module docstring)."""

    def __init__(self, configDict=None):
        super().__init__(configDict)
        config = self.configDict
        self.allow_remote_paths = bool(config.get("allowRemotePaths", False))
        if not config.get("outputDirectory"):
            raise ConfigurationError("ImageFileWriter needs \"outputDirectory\" in its arguments")
        self.settings = {"outputDirectory": None, "format": "tiff", "fileNameFormat": DEFAULT_NAME,
                         "prefix": "frame_", "overwrite": False, "jpegQuality": 90}
        self._apply(config)
        self.decoder = codecs.Decoder()
        self.written = Throughput()
        self.n_errors = 0
        self.n_existing = 0
        self.last_error = ""
        self.last_file = ""

    # ---------------------------------------------------------- configuration
    def _apply(self, config):
        """Validate every key given, then apply them together (nothing kept on error)."""
        settings = dict(self.settings)
        settings.update({key: config[key] for key in settings if key in config})
        if settings["format"] not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {settings['format']!r}")
        used = _parse_name_format(settings["fileNameFormat"])
        if not isinstance(settings["prefix"], str):
            raise ValueError(f"prefix must be a string, got {settings['prefix']!r}")
        quality = int_arg(settings, "jpegQuality", 90, minimum=1)
        if quality > 95:
            raise ValueError(f"jpegQuality must be 1-95, got {quality}")
        directory = os.path.abspath(str(settings["outputDirectory"]))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create output directory {directory}: {exc}") from None
        _require("tifffile" if settings["format"] == "tiff" else "PIL", settings["format"])
        settings["outputDirectory"] = directory
        settings["overwrite"] = bool(settings["overwrite"])
        self.settings = settings
        self._used = used
        self._fields = dict.fromkeys(FIELDS, "")
        self._fields.update(prefix=settings["prefix"], extension=FORMATS[settings["format"]],
                            format=settings["format"], processorId=self.processorId)
        self._save = {"tiff": self._save_tiff, "png": self._save_pillow,
                      "jpeg": self._save_pillow}[settings["format"]]
        self._pillow_format = {"png": "PNG", "jpeg": "JPEG"}.get(settings["format"])

    def start(self):
        self._fields["processorId"] = self.processorId

    def configure(self, configDict):
        refuse_remote_paths(configDict, PATH_KEYS, self.allow_remote_paths, "ImageFileWriter")
        if any(key in configDict for key in self.settings):
            self._apply(configDict)

    # ---------------------------------------------------------------- frames
    def file_name(self, pvObject):
        """The file name of this frame (no directory); ValueError if it is not a plain name."""
        fields = self._fields
        used = self._used
        fields["uniqueId"] = pvObject.getInt("uniqueId")
        fields["frameIndex"] = self.written.frames
        if "timeStamp" in used or "dateTime" in used:
            fields["timeStamp"] = ntndarray.timestamp_of(pvObject)
            if "dateTime" in used:
                fields["dateTime"] = datetime.datetime.fromtimestamp(
                    fields["timeStamp"], datetime.timezone.utc).strftime("%Y%m%d-%H%M%S.%f")
        if "dataTimeStamp" in used:
            fields["dataTimeStamp"] = ntndarray.timestamp_of(pvObject, "dataTimeStamp")
        name = self.settings["fileNameFormat"].format_map(fields)
        if not name or name.startswith(".") or "/" in name or os.sep in name or "\0" in name:
            raise ValueError(f"file name {name!r} is not a plain file name inside the output"
                             " directory; fix fileNameFormat or prefix")
        return name

    def process(self, pvObject):
        started = time.perf_counter()
        try:
            name = self.file_name(pvObject)
            image = self._image(pvObject)
            size = self._write(name, image)
        except Exception as exc:
            self.n_errors += 1
            self.last_error = f"frame {pvObject.getInt('uniqueId')}: {type(exc).__name__}: {exc}"
            raise
        self.last_file = name
        self.written.add(size, time.perf_counter() - started)
        return None

    def _image(self, pvObject):
        """The pixels as rows x columns (x 3 for colour, RGB last)."""
        image = self.decoder.pixels(pvObject)
        if image.ndim == 3:
            mode = ntndarray.color_mode_of(pvObject)
            if mode == ntndarray.ColorMode.RGB2:
                image = image.transpose(0, 2, 1)
            elif mode == ntndarray.ColorMode.RGB3:
                image = image.transpose(1, 2, 0)
        return image

    def _write(self, name, image):
        """Write under a temporary name, then move into place; return the file size."""
        directory = self.settings["outputDirectory"]
        final = os.path.join(directory, name)
        if not self.settings["overwrite"] and os.path.lexists(final):
            self.n_existing += 1
            raise FileExistsError(f"{final} exists; set \"overwrite\": true to replace files")
        temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                self._save(handle, image)
                size = handle.tell()
            if self.settings["overwrite"]:
                os.replace(temporary, final)
            else:
                self._link_new(temporary, final)
        finally:
            if os.path.lexists(temporary):
                os.unlink(temporary)
        return size

    def _link_new(self, temporary, final):
        """Give the file its final name unless that name exists (atomic with hard links)."""
        try:
            os.link(temporary, final)
        except FileExistsError:
            self.n_existing += 1
            raise FileExistsError(f"{final} exists; set \"overwrite\": true to replace files") from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(final):
                self.n_existing += 1
                raise FileExistsError(f"{final} exists; set \"overwrite\": true to replace files"
                                      ) from None
            os.rename(temporary, final)

    @staticmethod
    def _save_tiff(handle, image):
        import tifffile  # pylint: disable=import-outside-toplevel
        photometric = "rgb" if image.ndim == 3 else "minisblack"
        tifffile.imwrite(handle, np.ascontiguousarray(image), photometric=photometric)

    def _save_pillow(self, handle, image):
        from PIL import Image  # pylint: disable=import-outside-toplevel
        kind = self._pillow_format
        colour = image.ndim == 3
        if image.dtype != np.uint8 and not (kind == "PNG" and image.dtype == np.uint16 and not colour):
            allowed = "uint8 (mono or RGB) or uint16 mono" if kind == "PNG" else "uint8"
            raise ValueError(f"{kind} cannot hold {'RGB ' if colour else ''}{image.dtype.name}"
                             f" pixels; it holds {allowed}: use format tiff")
        picture = Image.fromarray(np.ascontiguousarray(image))
        if kind == "JPEG":
            picture.save(handle, format=kind, quality=self.settings["jpegQuality"])
        else:
            picture.save(handle, format=kind)

    def getOutputPvObjectType(self, pvObject):
        return None

    # ------------------------------------------------------------- statistics
    def resetStats(self):
        self.written.reset()
        self.n_errors = 0
        self.n_existing = 0
        self.last_error = ""

    def getStats(self):
        w = self.written
        return {
            "nFilesWritten": w.frames, "bytesWritten": w.nbytes, "nErrors": self.n_errors,
            "nExisting": self.n_existing, "filesPerSecond": w.frame_rate(),
            "writeMBps": w.mb_rate(), "busyMBps": w.busy_mb_rate(),
            "lastFile": self.last_file, "lastError": self.last_error,
        }

    def getStatsPvaTypes(self):
        return {
            "nFilesWritten": pva.ULONG, "bytesWritten": pva.ULONG, "nErrors": pva.ULONG,
            "nExisting": pva.ULONG, "filesPerSecond": pva.DOUBLE, "writeMBps": pva.DOUBLE,
            "busyMBps": pva.DOUBLE, "lastFile": pva.STRING, "lastError": pva.STRING,
        }
