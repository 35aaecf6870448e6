"""Simulator input sources: TIFF, fabio formats, raw binary (-cfg), HDF5 chunks as
stored (-hcm), directories of mixed files, and the start notification PV (-npv/-nvl).

The readers are checked in-process against the arrays the files were written
from; the network paths (one directory of mixed files, the three chunk
codecs, both notification protocols) run real simulators on loopback.
"""

import threading

import numpy as np
import pytest
import pvaccess as pva

from conftest import wait_for
from pvaflow.cli.sim_server import main
from pvaflow.hpc import codecs
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.sim.file_inputs import InputOptions, open_inputs
from pvaflow.sim.frames import CompressedFrame, FrameSet
from pvaflow.sim.raw_binary import load_layout, parse_layout
from test_sim_server import ERROR_PREFIX, Collector, assert_consecutive, finish, start_sim

h5py = pytest.importorskip("h5py")
hdf5plugin = pytest.importorskip("hdf5plugin")
tifffile = pytest.importorskip("tifffile")
fabio = pytest.importorskip("fabio")

RNG = np.random.default_rng(12)


def frames_of(sources):
    frame_set = FrameSet(sources)
    try:
        return [np.array(f) if not isinstance(f, CompressedFrame) else f for f in frame_set]
    finally:
        frame_set.close()


def write_raw(path, stack, header=0, gap=0, byteorder="<"):
    data = stack.astype(stack.dtype.newbyteorder(byteorder))
    with open(path, "wb") as handle:
        handle.write(b"H" * header)
        for index, frame in enumerate(data):
            handle.write(frame.tobytes())
            if index < len(data) - 1:
                handle.write(b"\xee" * gap)


def write_yaml(path, text):
    path.write_text(text)
    return path


# ------------------------------------------------------------------- readers
@pytest.mark.parametrize("mmap", [False, True], ids=["pages", "mmap"])
def test_tiff_pages_exact(tmp_path, mmap):
    stack = RNG.integers(0, 65535, size=(4, 6, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    frames = frames_of(open_inputs(str(tmp_path / "stack.tif"), None, InputOptions(mmap)))
    assert len(frames) == 4
    for got, want in zip(frames, stack):
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, want)


def test_tiff_float_and_compressed_pages(tmp_path):
    stack = RNG.random((3, 5, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tiff", stack, photometric="minisblack", compression="zlib")
    frames = frames_of(open_inputs(str(tmp_path / "f.tiff"), None, InputOptions(mmap_mode=True)))
    np.testing.assert_array_equal(np.stack(frames), stack)


def test_fabio_cbf_and_multiframe_edf(tmp_path):
    from fabio.cbfimage import CbfImage
    from fabio.edfimage import EdfImage
    cbf = RNG.integers(-5, 100000, size=(9, 8), dtype=np.int32)
    CbfImage(data=cbf).write(str(tmp_path / "a.cbf"))
    edf = RNG.integers(0, 4000, size=(3, 9, 8), dtype=np.uint16)
    image = EdfImage(data=edf[0])
    for frame in edf[1:]:
        image.append_frame(data=frame)
    image.write(str(tmp_path / "b.edf"))
    frames = frames_of(open_inputs(str(tmp_path / "b.edf"), str(tmp_path)))
    expected = [cbf, *edf, *edf]  # the directory (a.cbf, b.edf), then -if b.edf
    assert len(frames) == len(expected)
    for got, want in zip(frames, expected):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("byteorder,endian", [("<", "little"), (">", "big")])
def test_raw_binary_header_gap_and_endian(tmp_path, byteorder, endian):
    stack = RNG.integers(0, 65535, size=(5, 4, 6), dtype=np.uint16)
    write_raw(tmp_path / "dump.raw", stack, header=100, gap=12, byteorder=byteorder)
    layout = load_layout(write_yaml(tmp_path / "layout.yaml", (
        "file_info:\n  header_offset: 100\n  between_frames: 12\n  width: 6\n  height: 4\n"
        f"  datatype: uint16\n  endian: {endian}\n")))
    frames = frames_of(open_inputs(str(tmp_path / "dump.raw"), None, InputOptions(raw_layout=layout)))
    assert len(frames) == 5
    for got, want in zip(frames, stack):
        assert got.dtype == np.uint16 and got.dtype.isnative
        np.testing.assert_array_equal(got, want)


def test_raw_binary_n_images_and_any_extension_with_cfg(tmp_path):
    stack = RNG.random((6, 3, 3)).astype(np.float32)
    write_raw(tmp_path / "detector.dump", stack)
    layout = parse_layout({"width": 3, "height": 3, "datatype": "float32", "n_images": 4})
    frames = frames_of(open_inputs(str(tmp_path / "detector.dump"), None,
                                   InputOptions(raw_layout=layout)))
    np.testing.assert_array_equal(np.stack(frames), stack[:4])


@pytest.mark.parametrize("text,needle", [
    ("width: 4\nheight: 4\n", "'datatype' is missing"),
    ("width: 4\ndatatype: uint16\n", "'height' is missing"),
    ("width: 0\nheight: 4\ndatatype: uint16\n", "'width' must be an integer >= 1"),
    ("width: 4\nheight: 4\ndatatype: complex64\n", "datatype 'complex64'"),
    ("width: 4\nheight: 4\ndatatype: uint16\nendian: middle\n", "endian 'middle'"),
    ("width: 4\nheight: 4\ndatatype: uint16\nheigth: 3\n", "unknown key(s) heigth"),
    ("width: [4\n", "is not valid YAML"),
    ("- 4\n- 4\n", "expected a mapping"),
])
def test_raw_layout_mistakes(tmp_path, text, needle):
    with pytest.raises(ConfigurationError, match=None) as caught:
        load_layout(write_yaml(tmp_path / "bad.yaml", text))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_raw_file_too_small_for_layout(tmp_path):
    write_raw(tmp_path / "small.bin", np.zeros((2, 4, 4), dtype=np.uint8))
    layout = parse_layout({"width": 4, "height": 4, "datatype": "uint8", "n_images": 3})
    with pytest.raises(ConfigurationError, match="has 32 bytes, but the -cfg layout needs 48"):
        open_inputs(str(tmp_path / "small.bin"), None, InputOptions(raw_layout=layout))


CHUNK_FILTERS = {
    "blosc": lambda: hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE),
    "lz4": lambda: hdf5plugin.LZ4(),
    "bslz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
}


def write_chunked(path, stack, compression, chunks=None):
    with h5py.File(path, "w") as handle:
        handle.create_dataset("entry/data", data=stack, chunks=chunks or (1,) + stack.shape[1:],
                              **(compression if isinstance(compression, dict) else compression))


def smooth_stack(count, shape, dtype):
    """Compressible frames (a ramp plus noise), so every chunk is stored compressed."""
    ramp = np.add.outer(np.arange(shape[0]), np.arange(shape[1]))
    return np.stack([(ramp + i + RNG.integers(0, 3, size=shape)) for i in range(count)]).astype(dtype)


@pytest.mark.parametrize("codec", sorted(CHUNK_FILTERS))
@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_hdf5_chunks_read_as_stored_decode_exactly(tmp_path, codec, dtype):
    stack = smooth_stack(3, (40, 33), dtype)
    write_chunked(tmp_path / "c.h5", stack, CHUNK_FILTERS[codec]())
    options = InputOptions(hdf_dataset="/entry/data", hdf_compressed_chunks=True)
    frames = frames_of(open_inputs(str(tmp_path / "c.h5"), None, options))
    decoder = codecs.Decoder()
    for frame, want in zip(frames, stack):
        assert isinstance(frame, CompressedFrame) and frame.codec == codec
        assert len(frame.payload) < want.nbytes  # as stored, not decompressed
        nt = codecs.new_compressed_ntndarray(frame.payload, frame.codec, frame.shape, frame.dtype)
        np.testing.assert_array_equal(decoder.decode(nt), want)


@pytest.mark.parametrize("case,needle", [
    ("gzip", "compressed with deflate (1)"),
    ("bitshuffle zstd", "bitshuffle with zstd"),
    ("plain", "is not compressed"),
    ("two frames per chunk", "chunks of (2, 8, 8)"),
])
def test_hdf5_chunk_mode_refuses_what_it_cannot_stream(tmp_path, case, needle):
    stack = smooth_stack(4, (8, 8), np.uint16)
    compression = {"gzip": {"compression": "gzip"},
                   "bitshuffle zstd": hdf5plugin.Bitshuffle(cname="zstd"),
                   "plain": {}, "two frames per chunk": hdf5plugin.LZ4()}[case]
    chunks = (2, 8, 8) if case == "two frames per chunk" else None
    write_chunked(tmp_path / "x.h5", stack, compression, chunks)
    options = InputOptions(hdf_dataset="/entry/data", hdf_compressed_chunks=True)
    with pytest.raises(ConfigurationError) as caught:
        open_inputs(str(tmp_path / "x.h5"), None, options)
    assert needle in str(caught.value) and "drop -hcm" in str(caught.value)


# ------------------------------------------------------------ over the network
def test_directory_of_mixed_formats_streams_in_name_order(procs, prefix, tmp_path):
    from fabio.edfimage import EdfImage
    folder = tmp_path / "run"
    folder.mkdir()
    shape = (6, 5)
    a = RNG.integers(0, 60000, size=(2,) + shape, dtype=np.uint16)
    b = RNG.integers(0, 60000, size=shape, dtype=np.uint16)
    c = RNG.integers(0, 60000, size=(2,) + shape, dtype=np.uint16)
    d = RNG.integers(0, 60000, size=shape, dtype=np.uint16)
    np.save(folder / "a_0001.npy", a)
    tifffile.imwrite(folder / "b_0002.tif", b)
    write_raw(folder / "c_0003.raw", c, header=16)
    EdfImage(data=d).write(str(folder / "d_0004.edf"))
    (folder / "readme.txt").write_text("notes")
    layout = write_yaml(tmp_path / "raw.yaml",
                        "header_offset: 16\nwidth: 5\nheight: 6\ndatatype: uint16\n")
    expected = [a[0], a[1], b, c[0], c[1], d]
    proc = start_sim(procs, prefix, "-id", folder, "-cfg", layout, fps=30, runtime=0.4)
    col = Collector(prefix)
    out = finish(procs, proc, col)
    assert "6 distinct frames" in out
    assert_consecutive(col.ids)
    assert len(col.ids) == 12
    for unique_id, image, _, _, _ in col.frames:
        np.testing.assert_array_equal(image, expected[(unique_id - 1) % 6])


class RawCollector:
    """Keep a copy of every published NTNDArray (for compressed frames)."""

    def __init__(self, channel):
        self.frames = []
        self._lock = threading.Lock()
        self._channel = pva.Channel(channel)
        self._channel.monitor(self._on_frame, "record[queueSize=100]field()")

    def _on_frame(self, pv):
        if pv.getInt("uniqueId") > 0:
            with self._lock:
                self.frames.append(pv.copy())

    def stop(self):
        self._channel.stopMonitor()


def test_hdf5_chunks_streamed_compressed(procs, prefix, tmp_path):
    stacks, runs = {}, {}
    for codec, make in CHUNK_FILTERS.items():
        stacks[codec] = smooth_stack(3, (32, 24), np.uint16)
        write_chunked(tmp_path / f"{codec}.h5", stacks[codec], make())
        channel = f"{prefix}:{codec}"
        summary = tmp_path / f"{codec}.json"
        proc = start_sim(procs, channel, "-if", tmp_path / f"{codec}.h5", "-hds", "/entry/data",
                         "-hcm", fps=30, runtime=0.3, summary=summary)
        runs[codec] = (proc, RawCollector(channel), summary)
    decoder = codecs.Decoder()
    for codec, (proc, col, summary) in runs.items():
        finish(procs, proc, col)
        assert col.frames, codec
        for nt in col.frames:
            assert nt.getString("codec.name") == codec
            assert nt.getLong("compressedSize") < nt.getLong("uncompressedSize") == 32 * 24 * 2
            want = stacks[codec][(nt.getInt("uniqueId") - 1) % 3]
            np.testing.assert_array_equal(decoder.decode(nt), want)
        assert (tmp_path / f"{codec}.json").read_text().count(f'"codec": "{codec}"') == 1


def test_notify_pv_over_pva_is_put_before_the_first_frame(procs, prefix):
    notify = f"{prefix}:acquire"
    server = pva.PvaServer(notify, pva.NtScalar(pva.INT))
    try:
        seen = []  # (notify value, frames received when it changed)
        col = None

        def on_notify(pv):
            seen.append((pv["value"], len(col.ids) if col else 0))

        watcher = pva.Channel(notify)
        watcher.monitor(on_notify, "field(value)")
        proc = start_sim(procs, prefix, "-nx", 4, "-ny", 4, "-npv", f"pva://{notify}",
                         "-nvl", "7", fps=20, runtime=0.3)
        col = Collector(prefix)
        out = finish(procs, proc, col)
        watcher.stopMonitor()
        assert f"put '7' to pva://{notify}" in out
        assert (7, 0) in seen, seen  # set while no frame had been received yet
        assert_consecutive(col.ids)
    finally:
        server.stop()


def test_notify_pv_over_ca_takes_enum_and_number(procs, prefix):
    # A first simulator serves CA records through its IOC and never publishes during the test.
    host = f"{prefix}:ioc"
    ioc = start_sim(procs, f"{prefix}:hostimg", "-nx", 2, "-ny", 2, "-mpv", f"ca://{host}",
                    "-std", 120, fps=1, runtime=60)
    channel = pva.Channel(host, pva.CA)
    wait_for(lambda: _connects(channel), 30, 0.2, "the CA record")
    proc = start_sim(procs, prefix, "-nx", 4, "-ny", 4, "-npv", host, "-nvl", "42.5",
                     fps=20, runtime=0.2)
    out = finish(procs, proc)
    assert f"put '42.5' to ca://{host}" in out
    assert channel.get()["value"] == 42.5
    ioc.kill()


def _connects(channel):
    try:
        channel.get()
        return True
    except pva.PvaException:
        return False


def test_notify_failure_stops_before_publishing(procs, prefix, tmp_path):
    summary = tmp_path / "s.json"
    proc = start_sim(procs, prefix, "-nx", 4, "-ny", 4, "-npv", f"pva://{prefix}:nobody",
                     "--notify-timeout", "1", fps=20, runtime=5, summary=summary)
    rc, out, err = procs.wait(proc, 20)
    assert rc == 1, out + err
    lines = [l for l in err.strip().splitlines() if " WARNING " not in l]
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), err
    assert f"notification PV pva://{prefix}:nobody" in lines[0]
    assert '"published": 0' in summary.read_text()


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("case", ["raw without cfg", "cfg without files", "hcm without files",
                                  "hcm with codec", "npv bad protocol", "empty nvl",
                                  "cfg missing", "unknown cbf"])
def test_bad_source_options_exit_2(case, tmp_path, capsys):
    (tmp_path / "d.raw").write_bytes(b"\0" * 64)
    (tmp_path / "x.cbf").write_bytes(b"not a cbf file at all")
    stack = smooth_stack(2, (8, 8), np.uint16)
    write_chunked(tmp_path / "c.h5", stack, hdf5plugin.LZ4())
    argv = {
        "raw without cfg": ["-if", tmp_path / "d.raw"],
        "cfg without files": ["-cfg", tmp_path / "layout.yaml"],
        "hcm without files": ["-hcm"],
        "hcm with codec": ["-if", tmp_path / "c.h5", "-hds", "/entry/data", "-hcm",
                           "--codec", "lz4"],
        "npv bad protocol": ["-npv", "http://x"],
        "empty nvl": ["-npv", "x:acquire", "-nvl", ""],
        "cfg missing": ["-if", tmp_path / "d.raw", "-cfg", tmp_path / "missing.yaml"],
        "unknown cbf": ["-if", tmp_path / "x.cbf"],
    }[case]
    assert main(["-std", "0", "-shd", "0", "-rt", "0.1", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(ERROR_PREFIX), err


def test_sample_files_match_their_generator(tmp_path):
    import importlib.util
    import os
    from conftest import REPO
    spec = importlib.util.spec_from_file_location(
        "make_sample_files", os.path.join(REPO, "examples", "data", "make_sample_files.py"))
    sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample)
    data = os.path.join(REPO, "examples", "data")
    layout = load_layout(os.path.join(data, "raw-layout.yaml"))
    got = frames_of(open_inputs(None, os.path.join(data, "mixed"), InputOptions(raw_layout=layout)))
    want = [*sample.frames(2, 1), *sample.frames(2, 2), sample.frames(1, 3)[0],
            *sample.frames(2, 4)]
    assert len(got) == len(want) == 7
    for frame, expected in zip(got, want):
        np.testing.assert_array_equal(frame, expected)
    options = InputOptions(hdf_dataset="/entry/data/data", hdf_compressed_chunks=True)
    chunks = frames_of(open_inputs(os.path.join(data, "frames-bslz4.h5"), None, options))
    decoder = codecs.Decoder()
    for chunk, expected in zip(chunks, sample.frames(8, 5)):
        nt = codecs.new_compressed_ntndarray(chunk.payload, chunk.codec, chunk.shape, chunk.dtype)
        np.testing.assert_array_equal(decoder.decode(nt), expected)
