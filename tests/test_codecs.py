"""Compressed NTNDArrays: codec round trips, format compatibility, errors, processors, system.

The helpers at the top (``start_sim``, ``start_consumer``, ``finish``,
``Collector``) are shared with test_writers.py, test_encryption.py and
test_examples.py.
"""

import json
import signal
import time

import numpy as np
import pvaccess as pva
import pytest

from conftest import read, read_stats_lines, wait_for

imagecodecs = pytest.importorskip("imagecodecs")

from pvaflow.hpc import codecs, ntndarray  # noqa: E402
from pvaflow.hpc.errors import ConfigurationError  # noqa: E402
from pvaflow.processors.codec_processors import DecodeProcessor, EncodeProcessor  # noqa: E402

DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float32, np.float64]
# Shapes around bitshuffle's edges: fewer than 8 elements, partial blocks, several blocks.
SHAPES = [(1, 1), (3, 5), (7, 9), (64, 65), (300, 301)]


# ------------------------------------------------------------ shared helpers
def start_sim(procs, channel, tmp_path, frames=None, fps=100, runtime=2.0, start_delay=2.0,
              extra=()):
    """Start the simulator (on ``frames``, a stack saved to .npy, when given)."""
    source = ()
    if frames is not None:
        path = tmp_path / f"frames-{channel.rsplit(':', 1)[-1]}.npy"
        np.save(path, frames)
        source = ("-if", path)
    summary = tmp_path / f"sim-{channel.rsplit(':', 1)[-1]}.json"
    proc = procs.sim("-cn", channel, "-fps", fps, "-rt", runtime, "-std", start_delay, "-shd", 0.5,
                     "-rp", 0, "--summary-file", summary, *source, *extra)
    return proc, summary


def start_consumer(procs, channel, processor, args, tmp_path, output=None, extra=(), name="c"):
    """Start a consumer running ``processor`` (a class path) with ``args`` (a dict)."""
    stats = tmp_path / f"stats-{name}.jsonl"
    out = ("-oc", output) if output else ()
    proc = procs.consumer("-ic", channel, *out, "-pc", processor, "-pa", json.dumps(args),
                          "-sqs", 100, "-rp", 0.3, "--stats-file", stats, *extra, name=name)
    return proc, stats


def wait_connected(stats, timeout=10):
    """Wait for the consumer's first update: its output record exists from then on."""
    wait_for(lambda: any(s["receiverStats"]["nReceived"] for s in read_stats_lines(stats)),
             timeout, message="consumer to receive its first update")


def finish(procs, sim, summary, consumers, settle=1.0, timeout=25):
    """Wait for the simulator, let consumers drain, stop them; return published, final stats."""
    rc, out, err = procs.wait(sim, timeout)
    assert rc == 0, f"simulator failed: {out}\n{err}"
    published = json.loads(read(summary))["published"]
    time.sleep(settle)
    finals = []
    for proc, stats in consumers:
        proc.send_signal(signal.SIGINT)
        rc, out, err = procs.wait(proc, timeout)
        assert rc == 0, f"consumer exit {rc}:\n{out}\n{err}"
        lines = read_stats_lines(stats)
        assert lines and lines[-1]["final"], f"no final stats line:\n{out}\n{err}"
        finals.append(lines[-1])
    return published, finals


class Collector:
    """A p4p monitor (unwrap=False) keeping copies of what ``convert`` returns per update."""

    def __init__(self, channel, convert):
        from p4p.client.thread import Context
        self.items = []
        self.ctx = Context("pva", unwrap=False)
        self.sub = self.ctx.monitor(channel, lambda v: self._add(v, convert),
                                    request="record[queueSize=1000]", notify_disconnect=False)

    def _add(self, value, convert):
        if not isinstance(value, Exception) and value.get("uniqueId", 0):  # skip initial values
            self.items.append(convert(value))

    def close(self):
        self.sub.close()
        self.ctx.close()


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("codec", codecs.CODECS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_every_codec_and_dtype(codec, dtype):
    rng = np.random.default_rng(7)
    encoder, decoder = codecs.Encoder(codec), codecs.Decoder()
    for shape in SHAPES:
        image = rng.poisson(40, shape).astype(dtype)
        if np.dtype(dtype).kind == "f":
            image += rng.random(shape).astype(dtype)
        nt = ntndarray.new_ntndarray(np.zeros((1, 1), np.uint8), unique_id=3)
        encoder.fill(nt, image)
        assert ntndarray.codec_of(nt) == (codec, np.dtype(dtype))
        assert nt.getLong("uncompressedSize") == image.nbytes
        assert nt.getSelectedUnionFieldName("value") == "ubyteValue"
        decoded = decoder.pixels(nt)
        assert decoded.dtype == image.dtype and decoded.shape == image.shape
        assert np.array_equal(decoded, image)


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_colour_frame_round_trip(codec):
    image = np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    nt = ntndarray.new_ntndarray(np.zeros((1, 1), np.uint8))
    codecs.Encoder(codec).fill(nt, image, ntndarray.ColorMode.RGB1)
    assert ntndarray.color_mode_of(nt) == ntndarray.ColorMode.RGB1
    assert np.array_equal(codecs.pixels(nt), image)


def test_bslz4_is_byte_identical_to_the_bitshuffle_library():
    bitshuffle = pytest.importorskip("bitshuffle")
    rng = np.random.default_rng(3)
    encoder, decoder = codecs.Encoder("bslz4"), codecs.Decoder()
    for dtype in (np.uint8, np.uint16, np.int32, np.float64):
        for shape in SHAPES + [(1024, 1024)]:
            image = rng.poisson(25, shape).astype(dtype)
            reference = bitshuffle.compress_lz4(image).tobytes()
            assert bytes(encoder.encode(image)) == reference
            assert decoder.decode_bytes("bslz4", reference, image.dtype, image.nbytes).tobytes() \
                == image.tobytes()


def test_lz4_is_a_plain_lz4_block():
    lz4_block = pytest.importorskip("lz4.block")
    image = np.random.default_rng(4).poisson(9, (200, 300)).astype(np.uint16)
    data = bytes(codecs.Encoder("lz4").encode(image))
    assert lz4_block.decompress(data, uncompressed_size=image.nbytes) == image.tobytes()
    other = lz4_block.compress(image.tobytes(), store_size=False)
    assert codecs.Decoder().decode_bytes("lz4", other, np.uint16, image.nbytes).tobytes() \
        == image.tobytes()


def test_blosc_frame_header_names_sizes():
    image = np.arange(5000, dtype=np.uint32)
    data = bytes(codecs.Encoder("blosc").encode(image))
    assert data[3] == 4  # typesize
    assert int.from_bytes(data[4:8], "little") == image.nbytes
    assert int.from_bytes(data[12:16], "little") == len(data)


def test_hdf5_filter_chunks_decode(tmp_path):
    """Chunks read straight from HDF5 files (as pvapy's simulator streams them) decode too."""
    h5py = pytest.importorskip("h5py")
    hdf5plugin = pytest.importorskip("hdf5plugin")
    image = np.random.default_rng(5).poisson(30, (128, 96)).astype(np.uint16)
    decoder = codecs.Decoder()
    for codec, options in (("lz4", hdf5plugin.LZ4()), ("bslz4", hdf5plugin.Bitshuffle(cname="lz4"))):
        path = tmp_path / f"{codec}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=image[None], chunks=(1,) + image.shape, **options)
        with h5py.File(path, "r") as f:
            _, chunk = f["data"].id.read_direct_chunk((0, 0, 0))
        decoded = decoder.decode_bytes(codec, chunk, np.uint16, image.nbytes)
        assert np.array_equal(decoded.view(np.uint16).reshape(image.shape), image), codec


def test_bslz4_block_whose_compressed_size_equals_its_size():
    """A block that LZ4 leaves exactly as long as it was is still LZ4 data in bitshuffle."""
    bitshuffle = pytest.importorskip("bitshuffle")
    rng = np.random.default_rng(11)
    noise = rng.integers(0, 256, 8192, dtype=np.uint8)
    for length in range(7900, 8192):  # a block of noise then zeros: find the exact size
        block = np.concatenate([noise[:length], np.zeros(8192 - length, np.uint8)])
        if len(imagecodecs.lz4_encode(block.tobytes())) == 8192:
            break
    else:
        pytest.skip("no block of this kind compresses to exactly its size")
    unshuffled = imagecodecs.bitshuffle_decode(block.tobytes(), itemsize=1, blocksize=8192)
    image = np.concatenate([np.frombuffer(unshuffled, np.uint8),
                            rng.integers(0, 9, 8192).astype(np.uint8)])
    reference = bitshuffle.compress_lz4(image).tobytes()
    assert int.from_bytes(reference[:4], "big") == 8192
    assert bytes(codecs.Encoder("bslz4").encode(image)) == reference
    decoded = codecs.Decoder().decode_bytes("bslz4", reference, np.uint8, image.nbytes)
    assert np.array_equal(decoded, image)


# ------------------------------------------------------------------- buffers
@pytest.mark.parametrize("codec", codecs.CODECS)
def test_same_size_frames_reuse_the_buffer(codec):
    encoder, decoder = codecs.Encoder(codec), codecs.Decoder()
    frames = [np.full((256, 256), i, np.uint16) for i in range(5)]
    nts = []
    for image in frames:
        nt = ntndarray.new_ntndarray(np.zeros((1, 1), np.uint8))
        nts.append(encoder.fill(nt, image))
    first = decoder.pixels(nts[0])
    allocations = decoder.n_allocations
    for nt, image in zip(nts, frames):
        decoded = decoder.pixels(nt)
        assert np.shares_memory(decoded, first) and np.array_equal(decoded, image)
    assert decoder.n_allocations == allocations


def test_raw_frames_give_a_view_without_copy():
    image = np.arange(20, dtype=np.int32).reshape(4, 5)
    nt = ntndarray.new_ntndarray(image)
    view = codecs.pixels(nt)
    assert np.array_equal(view, image) and not view.flags.writeable
    assert np.shares_memory(view, codecs.pixels(nt))


# -------------------------------------------------------------------- errors
def _compressed(codec="lz4", image=None):
    image = np.arange(4096, dtype=np.uint16).reshape(64, 64) if image is None else image
    nt = ntndarray.new_ntndarray(np.zeros((1, 1), np.uint8), unique_id=9)
    return codecs.Encoder(codec).fill(nt, image), image


def test_unknown_codec_is_a_clear_error():
    nt, image = _compressed()
    ntndarray.set_codec(nt, "jpeg", np.uint16, image.nbytes)
    with pytest.raises(codecs.CodecError, match="unknown codec 'jpeg'.*lz4, blosc, bslz4"):
        codecs.Decoder().decode(nt)


def test_inconsistent_frames_are_clear_errors():
    nt, image = _compressed()
    nt.setLong("uncompressedSize", image.nbytes + 2)
    with pytest.raises(codecs.CodecError, match="uncompressedSize .* does not match"):
        codecs.Decoder().decode(nt)
    nt, _ = _compressed()
    nt.setCodec(pva.PvCodec("lz4", pva.PvInt(99)))
    with pytest.raises(codecs.CodecError, match="data type"):
        codecs.Decoder().decode(nt)
    with pytest.raises(ConfigurationError, match="unknown codec"):
        codecs.Encoder("zip")


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_corrupt_and_truncated_data_raise_codec_errors(codec):
    """Flipped bytes and truncations: a CodecError or (undetected) wrong pixels, never a crash."""
    image = np.random.default_rng(2).poisson(20, (96, 80)).astype(np.uint16)
    data = np.frombuffer(bytes(codecs.Encoder(codec).encode(image)), np.uint8)
    decoder = codecs.Decoder()
    rng = np.random.default_rng(8)
    errors = 0
    for trial in range(300):
        damaged = data.copy()
        if trial % 3 == 0:
            damaged = damaged[:rng.integers(0, len(data))]
        else:
            damaged[rng.integers(0, len(data), 1 + trial % 4)] ^= rng.integers(1, 256, dtype=np.uint8)
        try:
            decoder.decode_bytes(codec, damaged.tobytes(), np.uint16, image.nbytes)
        except codecs.CodecError as exc:
            errors += 1
            assert f"codec '{codec}'" in str(exc)
    assert errors > 50


# ---------------------------------------------------------------- processors
def test_decode_processor_counts_errors_and_passes_raw_frames():
    processor = DecodeProcessor({})
    nt, image = _compressed("bslz4")
    out = processor.process(nt)
    assert np.array_equal(ntndarray.image_view(out), image) and out.getInt("uniqueId") == 9
    assert not out.getString("codec.name")
    raw = ntndarray.new_ntndarray(image, unique_id=10)
    assert processor.process(raw) is raw
    ntndarray.set_codec(nt, "zstd-unknown", np.uint16, image.nbytes)
    with pytest.raises(codecs.CodecError, match="frame 9: unknown codec"):
        processor.process(nt)
    stats = processor.getStats()
    assert (stats["nDecoded"], stats["nRaw"], stats["nErrors"]) == (1, 1, 1)
    assert stats["bytesOut"] == image.nbytes and "unknown codec" in stats["lastError"]
    assert set(stats) == set(processor.getStatsPvaTypes())


def test_encode_processor_configure_and_pass_through():
    processor = EncodeProcessor({"codec": "lz4"})
    image = np.random.default_rng(0).poisson(5, (50, 60)).astype(np.uint16)
    raw = ntndarray.new_ntndarray(image, unique_id=4, timestamp=12.5, attributes={"gain": 2.0})
    out = processor.process(raw)
    assert ntndarray.codec_of(out) == ("lz4", np.dtype(np.uint16))
    assert ntndarray.attributes_of(out)["gain"] == 2.0 and ntndarray.timestamp_of(out) == 12.5
    assert processor.process(out) is out  # already lz4: passed on as it is
    processor.configure({"codec": "blosc", "level": 9, "shuffle": 2})
    again = processor.process(out)  # lz4 in, blosc out
    assert ntndarray.codec_of(again)[0] == "blosc"
    assert np.array_equal(codecs.pixels(again), image)
    with pytest.raises(ConfigurationError):
        processor.configure({"codec": "gzip"})
    with pytest.raises(ValueError, match="shuffle"):
        processor.configure({"shuffle": 7})
    stats = processor.getStats()
    assert stats["codec"] == "blosc" and stats["nEncoded"] == 2 and stats["nPassed"] == 1
    assert set(stats) == set(processor.getStatsPvaTypes())


# -------------------------------------------------------------------- system
@pytest.mark.parametrize("codec", codecs.CODECS)
def test_sim_publishes_compressed_frames_that_decode_exactly(procs, prefix, tmp_path, codec):
    frames = np.random.default_rng(6).poisson(300, (5, 48, 64)).astype(np.uint16)
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, frames, extra=("--codec", codec))
    consumer = start_consumer(procs, f"{prefix}:image",
                              "pvaflow.processors.codec_processors.DecodeProcessor", {}, tmp_path,
                              output=f"{prefix}:decoded")
    wait_connected(consumer[1])
    received = Collector(f"{prefix}:decoded", lambda v: (int(v.uniqueId), v.value.copy(),
                                                         str(v.codec.name)))
    try:
        published, (final,) = finish(procs, sim, summary, [consumer])
    finally:
        received.close()
    assert json.loads(read(summary))["codec"] == codec
    user = final["userStats"]
    assert user["nDecoded"] == published == final["processorStats"]["nProcessed"]
    assert user["nErrors"] == 0 and user["compressionRatio"] > 1.0
    seen = [(uid, value, name) for uid, value, name in received.items if uid > 0]
    assert len(seen) >= published // 2
    for uid, value, name in seen:
        assert name == "" and np.array_equal(value.reshape(48, 64), frames[(uid - 1) % 5])


def test_encode_processor_output_and_runtime_codec_change(procs, prefix, tmp_path):
    frames = np.random.default_rng(9).poisson(1000, (4, 32, 40)).astype(np.uint16)
    sim, summary = start_sim(procs, f"{prefix}:image", tmp_path, frames, runtime=3.0)
    consumer = start_consumer(procs, f"{prefix}:image",
                              "pvaflow.processors.codec_processors.EncodeProcessor",
                              {"codec": "bslz4"}, tmp_path, output=f"{prefix}:packed",
                              extra=("-cc", f"{prefix}:ctl"))
    wait_connected(consumer[1])
    received = Collector(f"{prefix}:packed", lambda v: (int(v.uniqueId), str(v.codec.name),
                                                        v.value.copy()))
    from p4p.client.thread import Context
    ctx = Context("pva")
    try:
        wait_for(lambda: len(received.items) > 20, 10, message="compressed frames")
        ctx.put(f"{prefix}:ctl", {"command": "configure", "args": '{"codec": "lz4"}', "sequence": 1})
        wait_for(lambda: any(name == "lz4" for _, name, _ in received.items), 10,
                 message="frames after the codec change")
        published, (final,) = finish(procs, sim, summary, [consumer])
    finally:
        ctx.close()
        received.close()
    decoder = codecs.Decoder()
    names = [name for uid, name, _ in received.items if uid > 0]
    assert names[0] == "bslz4" and names[-1] == "lz4" and set(names) == {"bslz4", "lz4"}
    for uid, name, data in received.items:
        if uid > 0:
            frame = frames[(uid - 1) % 4]
            decoded = decoder.decode_bytes(name, data, np.uint16, frame.nbytes)
            assert np.array_equal(decoded.view(np.uint16).reshape(frame.shape), frame)
    assert final["userStats"]["nEncoded"] == published and final["userStats"]["codec"] == "lz4"
