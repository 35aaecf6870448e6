"""Multi-stage topologies: tiles split and stitched, chains, a splitting stage.

System tests check that every stage is connected (its statistics show its input's initial
value) before the simulator's first frame, so counts can be exact; p4p monitors are opened
only once their channel exists (a p4p search for a missing channel backs off).
"""

import json
import os
import signal
import time

import numpy as np
import pvaccess as pva
import pytest
from p4p.client.thread import Context

from conftest import REPO, read, read_stats_lines, wait_for
from pvaflow.hpc import ntndarray
from pvaflow.hpc.errors import FrameFormatError
from pvaflow.processors.tiles import TILE_ATTRIBUTES, TileSplitter, TileStitcher, tile_bounds

RECORDER = ("-pf", os.path.join(REPO, "tests", "processors", "id_recorder.py"), "-pc", "IdRecorder")
SPLITTER = "pvaflow.processors.tiles.TileSplitter"
STITCHER = "pvaflow.processors.tiles.TileStitcher"


# helpers -----------------------------------------------------------------------
class Timeline:
    """The simulator of a test and the time its first frame is due."""

    def __init__(self, procs, tmp_path, channel, start_delay, fps=150, runtime=2, nx=16, ny=16,
                 dtype="uint8"):
        self.summary = tmp_path / "sim.json"
        self.first_frame = time.monotonic() + start_delay
        self.proc = procs.sim("-cn", channel, "-nx", nx, "-ny", ny, "-dt", dtype, "-cs", 400,
                              "-fps", fps, "-rt", runtime, "-std", start_delay, "-shd", 4, "-rp", 0,
                              "--summary-file", self.summary)
        self.procs = procs

    def wait_ready(self, what, predicate):
        """Wait until ``predicate()``; fail if that is not before the first frame."""
        left = self.first_frame - time.monotonic() - 0.3
        wait_for(predicate, max(left, 0.1), interval=0.1,
                 message=f"{what} connected before the simulator's first frame")

    def published(self):
        assert self.procs.wait(self.proc, 40)[0] == 0
        return json.loads(read(self.summary))["published"]


def stage(procs, tmp_path, name, *args, tool="consumer"):
    """Start a consumer, fleet or collector writing statistics every 0.5 s; return (proc, stats)."""
    stats = tmp_path / f"{name}.jsonl"
    return procs.start(f"pvaflow.cli.{tool}", *args, "-rp", 0.5, "--stats-file", stats, name=name), stats


def connected(stats, fleet=0):
    """The stage (each of the ``fleet`` children; each producer of a collector) has
    received the initial value of its input."""
    def check():
        lines = read_stats_lines(stats)
        last = lines[-1] if lines else {}
        if fleet:
            children = [c for c in last.get("children", {}).values() if c]
            return len(children) == fleet and all(c["receiverStats"]["nReceived"] for c in children)
        inputs = list(last.get("producerStats", {}).values()) or [last.get("receiverStats")]
        return all(i and i["nReceived"] for i in inputs)
    return check


def final_stats(procs, proc, stats, timeout=40):
    rc, out, err = procs.wait(proc, timeout)
    lines = read_stats_lines(stats)
    assert rc == 0 and lines and lines[-1]["final"], out[-2000:] + err[-2000:]
    return lines[-1]


def recorded_ids(path):
    return [int(line) for line in read(path).split()]


class FrameReader:
    """Keeps a copy of every frame (uniqueId > 0) published on some channels, via p4p."""

    def __init__(self):
        self.ctx = Context("pva", nt=False)
        self.frames, self.repeated = {}, {}
        # p4p closes a monitor when its Subscription object is garbage-collected: keep them.
        self.subscriptions = []

    def watch(self, channel):
        frames = self.frames.setdefault(channel, {})
        duplicates = self.repeated.setdefault(channel, [])

        def keep(value):
            uid = int(value.uniqueId)
            if uid <= 0:
                return  # the record's initial value
            shape = tuple(d.size for d in reversed(value.dimension))
            if uid in frames:
                duplicates.append(uid)
            frames[uid] = np.array(value.value).reshape(shape)
        self.subscriptions.append(self.ctx.monitor(channel, keep, request="record[queueSize=2000]",
                                                   notify_disconnect=False))


@pytest.fixture
def reader():
    r = FrameReader()
    yield r
    r.ctx.close()


def assert_same_frames(reader, source, result, published):
    originals, results = reader.frames[source], reader.frames[result]
    assert sorted(originals) == list(range(1, published + 1)), "the reader missed source frames"
    assert sorted(results) == list(range(1, published + 1)), \
        f"{len(results)} of {published} frames came out; missing {sorted(set(originals) - set(results))[:10]}"
    assert not reader.repeated[result]
    different = [uid for uid, image in results.items() if not np.array_equal(image, originals[uid])
                 or image.dtype != originals[uid].dtype]
    assert not different, f"frames differ from the originals: ids {different[:10]}"


# tiles: processors alone -------------------------------------------------------------
class _Sink:
    """Stands for the data publisher and the PVA server; keeps copies (processors reuse objects)."""

    def __init__(self):
        self.published, self.records, self.updates = [], {}, []

    def updateOutputChannel(self, pv):
        self.published.append(pv.copy())

    def addRecord(self, name, pv, _=None):
        self.records[name] = pv.copy()

    def update(self, name, pv):
        assert name in self.records
        self.updates.append((name, pv.copy()))


def _frame(shape, uid, dtype=np.uint16, t=1700000000.25):
    image = np.random.default_rng(uid).integers(0, 60000, shape).astype(dtype)
    return image, ntndarray.new_ntndarray(image, unique_id=uid, timestamp=t)


def _attached(cls, **args):
    processor = cls(dict(args, outputChannel="out"))
    processor.dataPublisher = processor.pvaServer = _Sink()
    return processor


@pytest.mark.parametrize("shape,rows,cols", [((21, 31), 2, 2), ((20, 30), 3, 4), ((7, 5), 7, 5),
                                             ((9, 1), 4, 1), ((8, 8), 1, 1)])
def test_split_and_stitch_in_process(shape, rows, cols):
    splitter, stitcher = _attached(TileSplitter, rows=rows, cols=cols), _attached(TileStitcher)
    originals = {}
    for uid in (1, 2, 3):
        originals[uid], frame = _frame(shape, uid)
        splitter.process(frame)
    tiles = splitter.dataPublisher.published
    assert len(tiles) == 3 * rows * cols
    ys, xs = tile_bounds(shape[0], rows), tile_bounds(shape[1], cols)
    for k, tile in enumerate(tiles[:rows * cols]):
        a = ntndarray.attributes_of(tile)
        r, c = divmod(k, cols)
        assert [a[n] for n in TILE_ATTRIBUTES] == [k, r, c, rows, cols, ys[r], xs[c], *shape]
        assert ntndarray.image_view(tile).shape == (ys[r + 1] - ys[r], xs[c + 1] - xs[c])
        assert tile["uniqueId"] == 1 and ntndarray.timestamp_of(tile, "dataTimeStamp") == 1700000000.25
    assert splitter.getStats() == {"nFramesSplit": 3, "nTilesPublished": 3 * rows * cols,
                                   "rows": rows, "cols": cols}
    for tile in reversed(tiles):  # tiles of an id in any order
        stitcher.process(tile)
    out = stitcher.dataPublisher.published
    assert [o["uniqueId"] for o in out] == [3, 2, 1]
    assert stitcher.getStats() == {"nStitched": 3, "nIncomplete": 0, "nTilesReceived": 3 * rows * cols,
                                   "nDuplicateTiles": 0, "nPending": 0}
    for o in out:
        assert np.array_equal(ntndarray.image_view(o), originals[o["uniqueId"]])
        assert ntndarray.timestamp_of(o) == 1700000000.25


def test_stitcher_counts_incomplete_duplicate_and_bounded():
    splitter, stitcher = _attached(TileSplitter), _attached(TileStitcher, maxPending=2)
    for uid in range(1, 7):
        splitter.process(_frame((6, 6), uid)[1])
    tiles = {(t["uniqueId"], ntndarray.attributes_of(t)["TileIndex"]): t
             for t in splitter.dataPublisher.published}
    stitcher.process(tiles[1, 0])
    stitcher.process(tiles[1, 0])                      # duplicate tile
    for k in range(4):
        stitcher.process(tiles[2, k])                  # 2 completes: 1 is dropped
    stitcher.process(tiles[3, 1])
    stitcher.process(tiles[4, 1])
    stitcher.process(tiles[5, 1])                      # bound 2 exceeded: 3 is dropped
    stats = stitcher.getStats()
    assert stats == {"nStitched": 1, "nIncomplete": 2, "nTilesReceived": 9, "nDuplicateTiles": 1,
                     "nPending": 2}
    stitcher.stop()                                    # 4 and 5 will never complete
    assert stitcher.getStats()["nIncomplete"] == 4 and stitcher.getStats()["nPending"] == 0
    for k in range(4):
        stitcher.process(tiles[6, k])                  # buffers are reused
    assert [o["uniqueId"] for o in stitcher.dataPublisher.published] == [2, 6]


def test_splitter_channel_per_tile_and_configure():
    splitter = _attached(TileSplitter, rows=1, cols=2, channelPerTile=True)
    server = splitter.pvaServer
    splitter.start()
    assert sorted(server.records) == ["out:1", "out:2"]
    assert splitter.getOutputPvObjectType(None) is None  # nothing on "out" itself
    splitter.process(_frame((4, 6), 1)[1])
    assert [name for name, _ in server.updates] == ["out:1", "out:2"] and not server.published
    splitter.configure({"rows": 2, "receiverQueueSize": 5})  # framework keys are ignored
    assert sorted(server.records) == ["out:1", "out:2", "out:3", "out:4"]
    image, frame = _frame((4, 6), 2)
    splitter.process(frame)
    last = dict(server.updates[2:])
    assert np.array_equal(ntndarray.image_view(last["out:4"]), image[2:, 3:])
    assert splitter.getStats()["nTilesPublished"] == 6


@pytest.mark.parametrize("cls,args,message", [
    (TileSplitter, {"rows": 0}, "'rows' must be an integer >= 1"), (TileSplitter, {"cols": "2"}, "'cols'"),
    (TileSplitter, {"rows": 1.5}, "'rows'"), (TileSplitter, {"cols": True}, "'cols'"),
    (TileSplitter, {"channelPerTile": 1}, "'channelPerTile' must be true or false"),
    (TileStitcher, {"maxPending": 0}, "'maxPending' must be an integer >= 1"),
])
def test_bad_processor_args(cls, args, message):
    with pytest.raises(ValueError, match=message):
        cls(dict(args, outputChannel="x"))
    with pytest.raises(ValueError, match="channelPerTile needs an output channel"):
        TileSplitter({"channelPerTile": True})


def test_bad_frames_and_tiles():
    splitter = _attached(TileSplitter, rows=2, cols=2)
    rgb = ntndarray.new_ntndarray(np.zeros((4, 4, 3), np.uint8), color_mode=ntndarray.ColorMode.RGB1)
    with pytest.raises(FrameFormatError, match="mono 2-D images only.*colour mode 2"):
        splitter.process(rgb)
    with pytest.raises(FrameFormatError, match="cannot cut a 1x8 image into 2 rows"):
        splitter.process(_frame((1, 8), 1)[1])
    with pytest.raises(ValueError, match="channelPerTile cannot change"):
        splitter.configure({"channelPerTile": True})
    with pytest.raises(FrameFormatError, match="not a tile: .* no attribute TileIndex"):
        _attached(TileStitcher).process(_frame((4, 4), 1)[1])


# tiles: a split/process/stitch workflow ----------------------------------------------------
def test_tiles_split_over_four_consumers_and_stitched(procs, prefix, tmp_path, reader):
    """sim -> splitter (2x2, one channel per tile) -> 4 consumers -> collector(stitcher)."""
    sim = Timeline(procs, tmp_path, f"{prefix}:img", start_delay=6, fps=100, nx=31, ny=21,
                   dtype="uint16")
    splitter, s_stats = stage(procs, tmp_path, "splitter", "-ic", f"{prefix}:img", "-oc", f"{prefix}:tile",
                              "-pc", SPLITTER, "-pa", '{"rows": 2, "cols": 2, "channelPerTile": true}',
                              "-sqs", 100, "-rt", 13)
    fleet, f_stats = stage(procs, tmp_path, "tiles", "-ic", f"{prefix}:tile:*", "-nc", 4,
                           "-oc", f"{prefix}:tp:*", "-sqs", 100, "-rt", 13)
    stitch, c_stats = stage(procs, tmp_path, "stitcher", "-ic", f"{prefix}:tp:*", "-pid", "1-4",
                            "--objects-per-id", 4, "-pc", STITCHER, "-oc", f"{prefix}:full",
                            "-sqs", 100, "-rt", 14, tool="collector")
    sim.wait_ready("splitter", connected(s_stats))
    reader.watch(f"{prefix}:img")
    sim.wait_ready("tile consumers", connected(f_stats, fleet=4))
    sim.wait_ready("stitching collector", connected(c_stats))
    reader.watch(f"{prefix}:full")
    published = sim.published()
    split = final_stats(procs, splitter, s_stats)
    assert split["userStats"] == {"nFramesSplit": published, "nTilesPublished": 4 * published,
                                  "rows": 2, "cols": 2}
    tiles = final_stats(procs, fleet, f_stats)
    assert [c["processed"] for c in tiles["consumers"].values()] == [published] * 4
    final = final_stats(procs, stitch, c_stats)
    assert final["userStats"]["nStitched"] == published, final
    assert final["userStats"]["nIncomplete"] == 0 and final["userStats"]["nTilesReceived"] == 4 * published
    assert final["collectorStats"]["nIncomplete"] == 0 and final["processorStats"]["nErrors"] == 0
    time.sleep(0.2)
    assert_same_frames(reader, f"{prefix}:img", f"{prefix}:full", published)


def test_tiles_on_one_channel_stitched_by_collector(procs, prefix, tmp_path, reader):
    """sim -> splitter (3x2 tiles, all on one channel) -> collector(stitcher) directly."""
    sim = Timeline(procs, tmp_path, f"{prefix}:img", start_delay=5, fps=100, nx=17, ny=10,
                   dtype="int32")
    splitter, s_stats = stage(procs, tmp_path, "splitter", "-ic", f"{prefix}:img", "-oc", f"{prefix}:tiles",
                              "-pc", SPLITTER, "-pa", '{"rows": 3, "cols": 2}', "-sqs", 100, "-rt", 11)
    stitch, c_stats = stage(procs, tmp_path, "stitcher", "-ic", f"{prefix}:tiles", "-pid", "1",
                            "--objects-per-id", 6, "-pc", STITCHER, "-oc", f"{prefix}:full",
                            "-sqs", 1000, "-rt", 12, tool="collector")
    sim.wait_ready("splitter", connected(s_stats))
    reader.watch(f"{prefix}:img")
    sim.wait_ready("stitching collector", connected(c_stats))
    reader.watch(f"{prefix}:full")
    published = sim.published()
    assert final_stats(procs, splitter, s_stats)["userStats"]["nTilesPublished"] == 6 * published
    final = final_stats(procs, stitch, c_stats)
    assert final["userStats"]["nStitched"] == published and final["userStats"]["nIncomplete"] == 0
    time.sleep(0.2)
    assert_same_frames(reader, f"{prefix}:img", f"{prefix}:full", published)


# chains and splitting stages ---------------------------------------------------------------
def test_fleet_collector_then_file_writing_consumer(procs, prefix, tmp_path):
    """sim -> 4 consumers (distributor) -> ordered collector -> consumer recording ids."""
    ids_file = tmp_path / "written.txt"
    sim = Timeline(procs, tmp_path, f"{prefix}:img", start_delay=6, fps=300)
    fleet, f_stats = stage(procs, tmp_path, "fleet", "-ic", f"{prefix}:img", "-nc", 4, "-dg", "g",
                           "-dt", "uniqueId", "-du", 1, "-sqs", 200, "-oc", f"{prefix}:out:*", "-rt", 12)
    merge, c_stats = stage(procs, tmp_path, "collector", "-ic", f"{prefix}:out:*", "-pid", "1-4",
                           "-oc", f"{prefix}:merged", "-sqs", 200, "-rt", 13, tool="collector")
    writer, w_stats = stage(procs, tmp_path, "writer", "-ic", f"{prefix}:merged", "-sqs", 1000,
                            *RECORDER, "-pa", json.dumps({"path": str(ids_file)}), "-rt", 14)
    sim.wait_ready("fleet", connected(f_stats, fleet=4))
    sim.wait_ready("collector", connected(c_stats))
    sim.wait_ready("file-writing consumer", connected(w_stats))
    published = sim.published()
    assert final_stats(procs, fleet, f_stats)["total"]["processed"] == published
    assert final_stats(procs, merge, c_stats)["processorStats"]["nProcessed"] == published
    final = final_stats(procs, writer, w_stats)
    assert final["userStats"]["nRecorded"] == published
    assert recorded_ids(ids_file) == list(range(1, published + 1))


def test_splitting_stage_feeds_two_parallel_sets(procs, prefix, tmp_path):
    """sim -> 2 consumers taking blocks of 8 (split:1, split:2) -> set A on split:1 and
    set B on split:2, 2 consumers each with the distributor: every id once across A and B."""
    sim = Timeline(procs, tmp_path, f"{prefix}:img", start_delay=6, fps=200)
    split, s_stats = stage(procs, tmp_path, "split", "-ic", f"{prefix}:img", "-nc", 2, "-dg", "g",
                           "-dt", "uniqueId", "-du", 8, "-sqs", 200, "-oc", f"{prefix}:split:*", "-rt", 12)
    sets = {}
    for name, ids, channel in (("A", "1-2", "split:1"), ("B", "3-4", "split:2")):
        path = str(tmp_path / f"ids-{name}-{{processorId}}.txt")
        sets[name] = stage(procs, tmp_path, f"set{name}", "-ic", f"{prefix}:{channel}", "-cid", ids,
                           "-dg", "g", "-dt", "uniqueId", "-du", 1, "-sqs", 200, *RECORDER,
                           "-pa", json.dumps({"path": path}), "-rt", 13)
    sim.wait_ready("splitting stage", connected(s_stats, fleet=2))
    for name, (_, stats) in sets.items():
        sim.wait_ready(f"set {name}", connected(stats, fleet=2))
    published = sim.published()
    final = final_stats(procs, split, s_stats)
    assert final["total"]["processed"] == published
    per_split = [c["processed"] for c in final["consumers"].values()]
    assert all(n > 0 for n in per_split), per_split
    seen = []
    for name, (proc, stats) in sets.items():
        total = final_stats(procs, proc, stats)["total"]
        members = [recorded_ids(tmp_path / f"ids-{name}-{i}.txt") for i in
                   ((1, 2) if name == "A" else (3, 4))]
        assert all(members) and total["processed"] == sum(map(len, members))
        # set A saw only split:1's blocks of 8 ids, set B only split:2's
        blocks = {(uid - 1) // 8 % 2 for m in members for uid in m}
        assert len(blocks) == 1, (name, blocks)
        seen.extend(uid for m in members for uid in m)
    assert sorted(seen) == list(range(1, published + 1))


def test_consumer_reads_another_consumers_output(procs, prefix, tmp_path, reader):
    """sim -> consumer 1 (pass-through) -> consumer 2: same ids, same pixels."""
    ids_file = tmp_path / "stage2.txt"
    sim = Timeline(procs, tmp_path, f"{prefix}:img", start_delay=5, fps=200, nx=24, ny=12)
    first, s1 = stage(procs, tmp_path, "stage1", "-ic", f"{prefix}:img", "-oc", f"{prefix}:s1",
                      "-sqs", 200, "-rt", 11)
    second, s2 = stage(procs, tmp_path, "stage2", "-ic", f"{prefix}:s1", "-oc", f"{prefix}:s2",
                       "-sqs", 200, *RECORDER, "-pa", json.dumps({"path": str(ids_file)}), "-rt", 12)
    sim.wait_ready("stage 1", connected(s1))
    reader.watch(f"{prefix}:img")
    sim.wait_ready("stage 2", connected(s2))
    reader.watch(f"{prefix}:s2")
    published = sim.published()
    assert final_stats(procs, first, s1)["processorStats"]["nProcessed"] == published
    final = final_stats(procs, second, s2)
    assert final["processorStats"]["nProcessed"] == published
    assert final["receiverStats"]["nMissed"] == 0
    assert recorded_ids(ids_file) == list(range(1, published + 1))
    time.sleep(0.2)
    assert_same_frames(reader, f"{prefix}:img", f"{prefix}:s2", published)


# framework issues found here (fixed) -------------------------------------------------------
def test_empty_initial_value_does_not_cost_the_first_frame(procs, prefix, tmp_path):
    """A stage whose output record starts empty (e.g. created from pva.NtNdArray()): a
    consumer connected before the first frame must still process every frame."""
    channel = f"{prefix}:out"
    server = pva.PvaServer()
    server.addRecord(channel, pva.NtNdArray())  # the record's value before any frame: empty
    consumer, stats = stage(procs, tmp_path, "consumer", "-ic", channel, "-sqs", 100, "-rt", 20)
    try:
        wait_for(connected(stats), 15, message="consumer connected")
        for uid in range(1, 6):
            server.update(channel, ntndarray.new_ntndarray(np.full((2, 3), uid, np.uint8), unique_id=uid))
            time.sleep(0.02)
        time.sleep(0.5)
    finally:
        consumer.send_signal(signal.SIGINT)
        final = final_stats(procs, consumer, stats)
        server.stop()
    r = final["receiverStats"]
    # the empty initial value is the skipped initial update, not an empty frame
    assert (r["nSkipped"], r["nEmpty"], r["firstId"]) == (1, 0, 1), r
    assert final["processorStats"]["nProcessed"] == 5, r
