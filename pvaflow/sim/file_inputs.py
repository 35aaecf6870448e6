"""Input files of the simulated area detector (``-if``, ``-id``, ``-cfg``, ``-hcm``).

Each reader turns one file into frame sources (see
:mod:`pvaflow.sim.frames`); which reader is used follows the extension:

==========================  ===================================================
``.npy``                    numpy (memory-mapped with ``-mm``)
``.npz``                    numpy archive: every array, in archive order
``.h5 .hdf5 .hdf .nxs``     HDF5 dataset ``-hds`` (h5py); with ``-hcm`` its
                            compressed chunks as stored, see
                            :mod:`pvaflow.sim.hdf5_chunks`
``.tif .tiff``              tifffile: every page (memory-mapped with ``-mm``
                            where the file allows it)
:data:`FABIO_EXTENSIONS`    fabio (CBF, EDF, GE, MarCCD, Bruker, ...): every
                            frame of the file; ``.gz``/``.bz2`` variants too
``.raw .bin .dat``          raw binary laid out as the ``-cfg`` YAML says, see
                            :mod:`pvaflow.sim.raw_binary` (with ``-cfg``, an
                            ``-if`` file of any other extension is raw too)
==========================  ===================================================

``-id DIR`` streams every file of the directory that one of the readers
takes, in name order (plain string order, as ``ls`` sorts), then the ``-if``
file. Files of other types are skipped and named in a warning. The optional
libraries (h5py, tifffile, fabio, pyyaml) are imported only when a file
needs them; a missing one is a one-line error saying what to install.
"""

import importlib
import logging
import os

import numpy as np

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.sim.frames import ArrayFrames, FrameSource

log = logging.getLogger(__name__)

HDF5_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".nxs")
TIFF_EXTENSIONS = (".tif", ".tiff")
RAW_EXTENSIONS = (".raw", ".bin", ".dat")

#: Detector formats read through fabio (its own readers pick the format from
#: the file's content and name).
FABIO_EXTENSIONS = (
    ".cbf", ".edf", ".cor", ".ge", ".ge1", ".ge2", ".ge3", ".ge4", ".ge5", ".ge6",
    ".mccd", ".img", ".sfrm", ".spe", ".kcd", ".f2d", ".msk", ".dm3", ".mrc",
    ".esperanto", ".mar2300", ".mar1200", ".mar1600", ".mar2000", ".mar3450",
    ".mar3000", ".mar2400", ".mar1800", ".pnm", ".pgm", ".pbm", ".spr",
)

_COMPRESSED_SUFFIXES = (".gz", ".bz2")


def extension_of(path):
    """Lower-case extension of ``path``, looking through ``.gz``/``.bz2``."""
    root, extension = os.path.splitext(path.lower())
    if extension in _COMPRESSED_SUFFIXES:
        extension = os.path.splitext(root)[1]
    return extension


def _import(module, path, package):
    try:
        return __import__(module)
    except ImportError:
        raise ConfigurationError(
            f"reading {path} needs the {package} package: pip install {package}") from None


def _check_magic(path, magic, what):
    """Raise ConfigurationError unless the file starts with ``magic``."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(len(magic))
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    if start != magic:
        raise ConfigurationError(f"{path} is not {what}")


def open_npy(path, mmap_mode=False):
    """Open a ``.npy`` file (memory-mapped read-only with ``mmap_mode``)."""
    _check_magic(path, b"\x93NUMPY", "a .npy array file")
    try:
        array = np.load(path, mmap_mode="r" if mmap_mode else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read numpy file {path}: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise ConfigurationError(f"{path} is not a .npy array file")
    return [ArrayFrames(array, path)]


def open_npz(path):
    """Open a ``.npz`` archive: every array, in archive order, 2-D frame or 3-D stack."""
    _check_magic(path, b"PK", "a .npz archive")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("not a .npz archive")
        arrays = [(key, archive[key]) for key in archive.files]
        archive.close()
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read numpy archive {path}: {exc}") from None
    if not arrays:
        raise ConfigurationError(f"numpy archive {path} holds no array")
    return [ArrayFrames(array, f"{path}[{key}]") for key, array in arrays]


def open_hdf5(path, dataset, compressed_chunks=False):
    """Open ``dataset`` of an HDF5 file: decoded frames, or with ``compressed_chunks``
    the chunks as stored (:class:`~pvaflow.sim.hdf5_chunks.HdfChunkFrames`)."""
    if not dataset:
        raise ConfigurationError(
            f"{path} is an HDF5 file; name the dataset to stream with -hds/--hdf-dataset")
    h5py = _import("h5py", path, "h5py")
    try:  # registers the filter plugins (blosc, lz4, bitshuffle, ...) with h5py
        importlib.import_module("hdf5plugin")
    except ImportError:  # only needed to decode datasets written with plugin filters
        pass
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ConfigurationError(f"cannot open HDF5 file {path}: {exc}") from None
    try:
        data = handle.get(dataset)
        if not isinstance(data, h5py.Dataset):
            what = "is not a dataset" if data is not None else "does not exist"
            raise ConfigurationError(
                f"HDF5 dataset '{dataset}' {what} in {path}; check -hds/--hdf-dataset")
        name = f"{path}:{dataset}"
        if compressed_chunks:
            from pvaflow.sim.hdf5_chunks import HdfChunkFrames  # pylint: disable=import-outside-toplevel
            return [HdfChunkFrames(data, name, owner=handle)]
        return [ArrayFrames(data, name, owner=handle)]
    except BaseException:
        handle.close()
        raise


class TiffFrames(FrameSource):
    """The pages of a TIFF file (tifffile), one frame each, read when published."""

    def __init__(self, tiff, path):
        pages = tiff.pages
        if not len(pages):
            raise ConfigurationError(f"TIFF file {path} holds no image")
        first = pages.first if hasattr(pages, "first") else pages[0]
        if first.samplesperpixel != 1 or len(first.shape) != 2:
            raise ConfigurationError(
                f"TIFF file {path} holds {first.samplesperpixel}-sample images of shape"
                f" {first.shape}; only single-channel (mono) images can be streamed")
        self.tiff = tiff
        self.name = path
        self.frame_shape = tuple(int(n) for n in first.shape)
        self.dtype = np.dtype(first.dtype)
        self.count = len(pages)

    def __len__(self):
        return self.count

    def __iter__(self):
        for index in range(self.count):
            yield self.tiff.asarray(key=index)

    def close(self):
        if self.tiff is not None:
            self.tiff.close()
            self.tiff = None


def open_tiff(path, mmap_mode=False):
    """Open a TIFF file: every page is a frame (memory-mapped with ``mmap_mode`` when the
    pages are stored uncompressed and contiguous)."""
    tifffile = _import("tifffile", path, "tifffile")
    if mmap_mode:
        try:
            return [ArrayFrames(tifffile.memmap(path, mode="r"), path)]
        except (ValueError, OSError) as exc:
            log.info("%s cannot be memory-mapped (%s); reading its pages instead", path, exc)
    try:
        tiff = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read TIFF file {path}: {exc}") from None
    try:
        return [TiffFrames(tiff, path)]
    except BaseException:
        tiff.close()
        raise


class FabioFrames(FrameSource):
    """The frames of a detector file that fabio reads (CBF, EDF, GE, ...)."""

    def __init__(self, image, path):
        data = image.data
        if data is None or data.ndim != 2:
            raise ConfigurationError(
                f"{path}: fabio read no 2-D image from it; is it a detector image file?")
        self.image = image
        self.name = path
        self.count = max(int(image.nframes), 1)
        self.frame_shape = tuple(int(n) for n in data.shape)
        self.dtype = np.dtype(data.dtype).newbyteorder("=")

    def __len__(self):
        return self.count

    def __iter__(self):
        if self.count == 1:
            yield np.asarray(self.image.data, dtype=self.dtype)
            return
        for index in range(self.count):
            yield np.asarray(self.image.get_frame(index).data, dtype=self.dtype)

    def close(self):
        if self.image is not None:
            self.image.close()
            self.image = None


def open_fabio(path):
    """Open a detector image file through fabio."""
    fabio = _import("fabio", path, "fabio")
    try:
        image = fabio.open(path)
    except Exception as exc:  # fabio raises many types for files it cannot read
        raise ConfigurationError(
            f"fabio cannot read {path} ({type(exc).__name__}: {exc})") from None
    try:
        return [FabioFrames(image, path)]
    except BaseException:
        image.close()
        raise


class InputOptions:
    """The command-line input options that choose and shape the readers."""

    def __init__(self, mmap_mode=False, hdf_dataset=None, hdf_compressed_chunks=False,
                 raw_layout=None):
        self.mmap_mode = mmap_mode
        self.hdf_dataset = hdf_dataset
        self.hdf_compressed_chunks = hdf_compressed_chunks
        self.raw_layout = raw_layout  # a pvaflow.sim.raw_binary.RawLayout, from -cfg


def reader_kind(path, options, explicit=False):
    """Which reader takes ``path`` ('npy', 'npz', 'hdf5', 'tiff', 'fabio', 'raw'), or None.

    ``explicit``: the file was named by ``-if`` (with ``-cfg`` any extension
    not otherwise known is then read as raw binary).
    """
    extension = extension_of(path)
    if extension in (".npy", ".npz"):
        return extension[1:]
    if extension in HDF5_EXTENSIONS:
        return "hdf5"
    if extension in TIFF_EXTENSIONS:
        return "tiff"
    if extension in FABIO_EXTENSIONS:
        return "fabio"
    if extension in RAW_EXTENSIONS or (explicit and options.raw_layout is not None):
        return "raw"
    return None


def open_file(path, options, explicit=True):
    """Open one input file with the reader its extension calls for."""
    if not os.path.isfile(path):
        raise ConfigurationError(f"input file {path} does not exist or is not a file")
    kind = reader_kind(path, options, explicit)
    if kind == "npy":
        return open_npy(path, options.mmap_mode)
    if kind == "npz":
        return open_npz(path)
    if kind == "hdf5":
        return open_hdf5(path, options.hdf_dataset, options.hdf_compressed_chunks)
    if kind == "tiff":
        return open_tiff(path, options.mmap_mode)
    if kind == "fabio":
        return open_fabio(path)
    if kind == "raw":
        if options.raw_layout is None:
            raise ConfigurationError(
                f"{path} is raw binary; describe its layout in a YAML file and give it"
                " with -cfg/--config-file")
        from pvaflow.sim.raw_binary import open_raw  # pylint: disable=import-outside-toplevel
        return open_raw(path, options.raw_layout)
    raise ConfigurationError(
        f"input file {path} has an unknown type; use .npy, .npz, HDF5, TIFF, a detector"
        " format fabio reads (.cbf, .edf, .ge*, ...) or raw binary with -cfg")


def list_directory(directory, options):
    """The files of ``directory`` a reader takes, in name order."""
    if not os.path.isdir(directory):
        raise ConfigurationError(
            f"input directory {directory} does not exist or is not a directory")
    paths, skipped = [], []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and reader_kind(path, options, explicit=False):
            paths.append(path)
        elif not name.startswith("."):
            skipped.append(name)
    if skipped:
        shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        log.warning("input directory %s: skipping %d entries that are not image files: %s",
                    directory, len(skipped), shown)
    if not paths:
        raise ConfigurationError(
            f"input directory {directory} has no image file (.npy, .npz, HDF5, TIFF, fabio"
            " formats, or .raw/.bin/.dat with -cfg)")
    return paths


def open_inputs(input_file=None, input_directory=None, options=None):
    """Sources for the input options: directory files in name order, then the input file."""
    options = options or InputOptions()
    paths = [(p, False) for p in list_directory(input_directory, options)] if input_directory else []
    if input_file:
        paths.append((input_file, True))
    sources = []
    try:
        for path, explicit in paths:
            sources.extend(open_file(path, options, explicit))
    except BaseException:
        for source in sources:
            source.close()
        raise
    return sources
