"""Image file and HDF5 writers: files read back with independent readers, pixel for pixel."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import wait_for
from test_codecs import finish, start_consumer, start_sim, wait_connected

from pvaflow.hpc import codecs, ntndarray
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.processors.image_writer import ImageFileWriter

h5py = pytest.importorskip("h5py")
Image = pytest.importorskip("PIL.Image")
imagecodecs = pytest.importorskip("imagecodecs")


def frame(image, uid=1, color_mode=None, **kw):
    return ntndarray.new_ntndarray(image, unique_id=uid, color_mode=color_mode, **kw)


def noise(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


# ------------------------------------------------------------- image writer
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32,
                                   np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_tiff_keeps_every_data_type(tmp_path, dtype):
    writer = ImageFileWriter({"outputDirectory": str(tmp_path / "new" / "dir")})
    image = noise((37, 53), dtype)
    writer.process(frame(image, uid=12))
    path = tmp_path / "new" / "dir" / "frame_000012.tif"
    read = imagecodecs.tiff_decode(path.read_bytes())  # libtiff, not the writer's tifffile
    assert read.dtype == image.dtype and np.array_equal(read, image)
    if np.dtype(dtype) in (np.uint8, np.uint16, np.int32, np.float32):
        assert np.array_equal(np.asarray(Image.open(path)), image)  # and pillow agrees
    assert writer.getStats()["nFilesWritten"] == 1
    assert writer.getStats()["bytesWritten"] == path.stat().st_size


@pytest.mark.parametrize("mode", [ntndarray.ColorMode.RGB1, ntndarray.ColorMode.RGB2,
                                  ntndarray.ColorMode.RGB3], ids=lambda m: m.name)
@pytest.mark.parametrize("fmt", ["tiff", "png"])
def test_colour_frames_are_written_as_rgb(tmp_path, mode, fmt):
    rgb = noise((20, 30, 3), np.uint8, seed=3)  # rows, columns, colour
    layout = {ntndarray.ColorMode.RGB1: rgb, ntndarray.ColorMode.RGB2: rgb.transpose(0, 2, 1),
              ntndarray.ColorMode.RGB3: rgb.transpose(2, 0, 1)}[mode]
    writer = ImageFileWriter({"outputDirectory": str(tmp_path), "format": fmt})
    writer.process(frame(np.ascontiguousarray(layout), uid=5, color_mode=mode))
    data = (tmp_path / f"frame_000005.{'tif' if fmt == 'tiff' else 'png'}").read_bytes()
    read = imagecodecs.tiff_decode(data) if fmt == "tiff" else imagecodecs.png_decode(data)
    assert np.array_equal(read, rgb)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_is_exact_and_read_back_by_libpng(tmp_path, dtype):
    writer = ImageFileWriter({"outputDirectory": str(tmp_path), "format": "png", "prefix": "p"})
    image = noise((31, 17), dtype, seed=1)
    writer.process(frame(image, uid=3))
    read = imagecodecs.png_decode((tmp_path / "p000003.png").read_bytes())
    assert read.dtype == image.dtype and np.array_equal(read, image)


def test_jpeg_is_close_and_wrong_types_are_refused(tmp_path):
    writer = ImageFileWriter({"outputDirectory": str(tmp_path), "format": "jpeg", "jpegQuality": 95})
    image = np.tile(np.linspace(0, 250, 64).astype(np.uint8), (48, 1))
    writer.process(frame(image, uid=1))
    read = np.asarray(Image.open(tmp_path / "frame_000001.jpg"))
    assert read.shape == image.shape and np.abs(read.astype(int) - image).mean() < 2
    with pytest.raises(ValueError, match="JPEG cannot hold uint16"):
        writer.process(frame(image.astype(np.uint16), uid=2))
    png = ImageFileWriter({"outputDirectory": str(tmp_path), "format": "png"})
    with pytest.raises(ValueError, match="PNG cannot hold float32.*use format tiff"):
        png.process(frame(image.astype(np.float32), uid=3))
    assert writer.getStats()["nErrors"] == 1 and png.getStats()["nErrors"] == 1
    assert sorted(os.listdir(tmp_path)) == ["frame_000001.jpg"]  # no partial or temporary files


def test_never_overwrites_unless_told(tmp_path):
    writer = ImageFileWriter({"outputDirectory": str(tmp_path)})
    writer.process(frame(np.zeros((4, 4), np.uint16), uid=7))
    path = tmp_path / "frame_000007.tif"
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        writer.process(frame(np.ones((4, 4), np.uint16), uid=7))
    assert path.read_bytes() == before
    stats = writer.getStats()
    assert stats["nExisting"] == 1 and stats["nErrors"] == 1 and "exists" in stats["lastError"]
    replacing = ImageFileWriter({"outputDirectory": str(tmp_path), "overwrite": True})
    replacing.process(frame(np.ones((4, 4), np.uint16), uid=7))
    assert np.array_equal(imagecodecs.tiff_decode(path.read_bytes()), np.ones((4, 4)))
    assert os.listdir(tmp_path) == ["frame_000007.tif"]


def test_files_appear_only_when_complete(tmp_path):
    """While a file is written only its hidden temporary name exists."""
    seen = []

    class Watching(ImageFileWriter):
        def _save_tiff(self, handle, image):
            seen.append(sorted(os.listdir(tmp_path)))
            super()._save_tiff(handle, image)

    writer = Watching({"outputDirectory": str(tmp_path)})
    for uid in (1, 2):
        writer.process(frame(np.full((8, 8), uid, np.uint8), uid=uid))
    assert len(seen[0]) == 1 and seen[0][0].startswith(".frame_000001.tif.")
    assert seen[1][1] == "frame_000001.tif" and seen[1][0].startswith(".frame_000002.tif.")
    assert sorted(os.listdir(tmp_path)) == ["frame_000001.tif", "frame_000002.tif"]


def test_file_name_fields_and_bad_formats(tmp_path):
    writer = ImageFileWriter({"outputDirectory": str(tmp_path), "processorId": 4,
                              "fileNameFormat": "{processorId}-{frameIndex}-{uniqueId}-{dateTime}"
                                                "-{timeStamp:.1f}.{extension}"})
    writer.process(frame(np.zeros((2, 2), np.uint8), uid=9, timestamp=86400.25))
    assert os.listdir(tmp_path) == ["4-0-9-19700102-000000.250000-86400.2.tif"]
    for bad, message in (("{nope}.tif", "unknown fields"), ("{uniqueId:q}", "cannot be filled"),
                         ("{", "not a valid format")):
        with pytest.raises(ValueError, match=message):
            ImageFileWriter({"outputDirectory": str(tmp_path), "fileNameFormat": bad})
    with pytest.raises(ConfigurationError, match="outputDirectory"):
        ImageFileWriter({})
    escaping = ImageFileWriter({"outputDirectory": str(tmp_path), "prefix": "../x"})
    with pytest.raises(ValueError, match="not a plain file name"):
        escaping.process(frame(np.zeros((2, 2), np.uint8)))


def test_remote_configure_cannot_change_paths_unless_allowed(tmp_path):
    writer = ImageFileWriter({"outputDirectory": str(tmp_path / "a")})
    for key in ("outputDirectory", "fileNameFormat", "prefix"):
        with pytest.raises(PermissionError, match=f"{key} name files.*allowRemotePaths"):
            writer.configure({key: "x"})
    with pytest.raises(PermissionError, match="allowRemotePaths can only be set"):
        writer.configure({"allowRemotePaths": True})
    writer.configure({"format": "png"})  # not a path: allowed
    assert writer.settings["format"] == "png"
    with pytest.raises(ValueError, match="format must be one of"):
        writer.configure({"format": "gif"})
    assert writer.settings["format"] == "png"
    opted_in = ImageFileWriter({"outputDirectory": str(tmp_path / "a"), "allowRemotePaths": True})
    opted_in.configure({"outputDirectory": str(tmp_path / "b")})
    opted_in.process(frame(np.zeros((2, 2), np.uint8), uid=1))
    assert os.listdir(tmp_path / "b") == ["frame_000001.tif"]


def test_compressed_frames_are_written_decoded(tmp_path):
    image = noise((16, 24), np.uint16, seed=4)
    nt = codecs.Encoder("bslz4").fill(frame(np.zeros((1, 1), np.uint8), uid=2), image)
    ImageFileWriter({"outputDirectory": str(tmp_path)}).process(nt)
    assert np.array_equal(imagecodecs.tiff_decode((tmp_path / "frame_000002.tif").read_bytes()), image)


# -------------------------------------------------------------- HDF5 writer
def hdf5_writer(tmp_path, **args):
    from pvaflow.processors.hdf5_writer import Hdf5Writer
    return Hdf5Writer(dict({"outputDirectory": str(tmp_path)}, **args))


def read_files(directory, pattern="*.h5"):
    """{file name: (ids, frames, time stamps, attributes)} of the HDF5 files in ``directory``."""
    result = {}
    for path in sorted(glob.glob(os.path.join(directory, pattern))):
        with h5py.File(path, "r") as f:
            data = f["entry/data"]
            attributes = {k: v[()] for k, v in f["entry/attributes"].items()}
            result[os.path.basename(path)] = (data["uniqueId"][()], data["data"][()],
                                              data["timeStamp"][()], attributes)
    return result


def test_hdf5_rollover_gaps_and_order_are_recorded(tmp_path):
    writer = hdf5_writer(tmp_path, framesPerFile=4)
    ids = [1, 2, 3, 5, 4, 6, 9, 10, 11]
    images = {uid: noise((6, 7), np.int32, seed=uid) for uid in ids}
    for uid in ids:
        writer.process(frame(images[uid], uid=uid, timestamp=1000 + uid + 0.5,
                             attributes={"exposure": uid / 10, "sample": f"s{uid}", "n": uid}))
    writer.stop()
    files = read_files(tmp_path)
    assert list(files) == ["frames_00001.h5", "frames_00002.h5", "frames_00003.h5"]
    written = np.concatenate([ids_ for ids_, _, _, _ in files.values()])
    assert written.tolist() == ids  # arrival order kept, nothing padded
    for file_ids, data, stamps, attributes in files.values():
        assert data.shape == (len(file_ids), 6, 7)
        for k, uid in enumerate(file_ids):
            assert np.array_equal(data[k], images[uid]) and stamps[k] == 1000 + uid + 0.5
        assert attributes["exposure"].tolist() == [uid / 10 for uid in file_ids]
        assert attributes["n"].tolist() == list(file_ids)
        assert [s.decode() for s in attributes["sample"]] == [f"s{uid}" for uid in file_ids]
    stats = writer.getStats()
    assert (stats["nFramesWritten"], stats["nFiles"], stats["nGaps"], stats["nOutOfOrder"]) == (9, 3, 2, 1)
    assert stats["currentFile"] == "" and stats["nErrors"] == 0


@pytest.mark.parametrize("compression", ["gzip", "lz4", "bslz4", "blosc"])
def test_hdf5_compression(tmp_path, compression):
    if compression != "gzip":
        pytest.importorskip("hdf5plugin")
    writer = hdf5_writer(tmp_path, compression=compression)
    images = [np.random.default_rng(i).poisson(50, (40, 30)).astype(np.uint16) for i in range(3)]
    for uid, image in enumerate(images, 1):
        writer.process(frame(image, uid=uid))
    writer.stop()
    with h5py.File(tmp_path / "frames_00001.h5", "r") as f:
        data = f["entry/data/data"]
        assert data.chunks == (1, 40, 30) and data.id.get_create_plist().get_nfilters() == 1
        assert np.array_equal(data[()], np.stack(images))


def test_hdf5_readable_while_written_and_closed_on_stop(tmp_path):
    writer = hdf5_writer(tmp_path, framesPerFile=100)
    reader = ("import h5py, sys\n"
              "with h5py.File(sys.argv[1], 'r', libver='latest', swmr=True) as f:\n"
              "    print(f['entry/data/data'].shape[0], f['entry/data/uniqueId'][()].tolist())\n")
    for uid in range(1, 4):
        writer.process(frame(np.full((5, 5), uid, np.uint16), uid=uid))
    result = subprocess.run([sys.executable, "-c", reader, writer.current_path],
                            capture_output=True, text=True, errors="replace", timeout=20)
    assert result.stdout.split(None, 1) == ["3", "[1, 2, 3]\n"], result.stderr
    writer.process(frame(np.zeros((9, 9), np.uint16), uid=4))  # another shape: another file
    writer.stop()
    assert not writer.current_path
    files = read_files(tmp_path)
    assert [ids.tolist() for ids, _, _, _ in files.values()] == [[1, 2, 3], [4]]


def test_hdf5_never_overwrites_and_configure_rules(tmp_path):
    (tmp_path / "frames_00001.h5").write_bytes(b"keep")
    writer = hdf5_writer(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        writer.process(frame(np.zeros((2, 2), np.uint8)))
    assert (tmp_path / "frames_00001.h5").read_bytes() == b"keep"
    assert writer.getStats()["nErrors"] == 1
    with pytest.raises(PermissionError, match="allowRemotePaths"):
        writer.configure({"prefix": "other_"})
    writer.configure({"framesPerFile": 2, "compression": "gzip"})
    with pytest.raises(ValueError, match="compression must be one of"):
        writer.configure({"compression": "zip"})
    assert writer.settings["compression"] == "gzip"
    allowed = hdf5_writer(tmp_path, allowRemotePaths=True)
    allowed.configure({"prefix": "run2_"})
    for uid in range(1, 4):
        allowed.process(frame(np.full((2, 2), uid, np.uint8), uid=uid))
    allowed.stop()
    assert [ids.tolist() for ids, _, _, _ in read_files(tmp_path, "run2_*").values()] == [[1, 2, 3]]


# ------------------------------------------------------------------- system
def test_image_writer_system(procs, prefix, tmp_path):
    frames = np.random.default_rng(12).integers(0, 65535, (3, 24, 32), dtype=np.uint16)
    out = tmp_path / "images"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, frames, fps=50, runtime=2.0)
    consumer = start_consumer(procs, f"{prefix}:image", "pvaflow.processors.image_writer.ImageFileWriter",
                              {"outputDirectory": str(out)}, tmp_path, extra=("-cc", f"{prefix}:ctl"))
    wait_connected(consumer[1])
    from p4p.client.thread import Context
    ctx = Context("pva")
    try:
        ctx.put(f"{prefix}:ctl", {"command": "configure", "sequence": 1,
                                  "args": json.dumps({"outputDirectory": "/tmp"})})
        reply = wait_for(lambda: (lambda v: v if v.replySequence == 1 else None)(ctx.get(f"{prefix}:ctl")),
                         5, message="configure reply")
        assert reply.status == "error" and "allowRemotePaths" in reply.statusMessage
        published, (final,) = finish(procs, sim, summary, [consumer])
    finally:
        ctx.close()
    names = sorted(os.listdir(out))
    assert len(names) == published == final["userStats"]["nFilesWritten"]
    for name in names:
        uid = int(name[len("frame_"):-len(".tif")])
        assert np.array_equal(np.asarray(Image.open(out / name)), frames[(uid - 1) % 3])


def test_hdf5_writer_system(procs, prefix, tmp_path):
    pytest.importorskip("hdf5plugin")
    frames = np.random.default_rng(13).poisson(200, (4, 40, 50)).astype(np.uint16)
    out = tmp_path / "h5"
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, frames, fps=100, runtime=2.0,
                             extra=("--codec", "bslz4"))
    consumer = start_consumer(procs, f"{prefix}:image", "pvaflow.processors.hdf5_writer.Hdf5Writer",
                              {"outputDirectory": str(out), "framesPerFile": 60,
                               "compression": "bslz4"}, tmp_path)
    published, (final,) = finish(procs, sim, summary, [consumer])
    files = read_files(out)
    ids = np.concatenate([file_ids for file_ids, _, _, _ in files.values()])
    assert ids.tolist() == list(range(1, published + 1))
    assert len(files) == -(-published // 60) == final["userStats"]["nFiles"]
    for file_ids, data, stamps, _ in files.values():
        assert all(np.array_equal(data[k], frames[(uid - 1) % 4]) for k, uid in enumerate(file_ids))
        assert np.all(np.diff(stamps) > 0)
