"""Write the small sample input files of the simulator examples (streamingFramework.md §6).

    python examples/data/make_sample_files.py [FOLDER]

writes into FOLDER (default: the folder of this script):

* ``mixed/``: one run of 64x48 uint16 frames in four formats, streamed in
  name order by ``-id``: ``frame_0001.npy`` (2 frames), ``frame_0002.tif``
  (2 pages), ``frame_0003.cbf`` (1), ``frame_0004.raw`` (2, after a 256-byte
  header; described by ``raw-layout.yaml``);
* ``raw-layout.yaml``: the ``-cfg`` layout of the raw files;
* ``frames-bslz4.h5``: 8 frames in dataset ``/entry/data/data``, one frame per
  chunk, compressed with the HDF5 bitshuffle/LZ4 filter, as a Dectris/Eiger or
  areaDetector HDF5 file stores them (stream them as stored with ``-hcm``).

The frames are a ramp plus noise (seeded, so the files are reproducible)
and 8 kB to 50 kB each. Needs numpy, tifffile, fabio, h5py and hdf5plugin.
"""

import os
import sys

import numpy as np

SHAPE = (48, 64)  # rows, columns
HEADER = 256


def frames(count, seed):
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(SHAPE[0]) * 40, np.arange(SHAPE[1]) * 20)
    return np.stack([ramp + 500 * i + rng.integers(0, 50, size=SHAPE)
                     for i in range(count)]).astype(np.uint16)


def main(folder):
    import fabio.cbfimage  # pylint: disable=import-outside-toplevel
    import h5py  # pylint: disable=import-outside-toplevel
    import hdf5plugin  # pylint: disable=import-outside-toplevel
    import tifffile  # pylint: disable=import-outside-toplevel

    mixed = os.path.join(folder, "mixed")
    os.makedirs(mixed, exist_ok=True)
    np.save(os.path.join(mixed, "frame_0001.npy"), frames(2, 1))
    tifffile.imwrite(os.path.join(mixed, "frame_0002.tif"), frames(2, 2),
                     photometric="minisblack")
    fabio.cbfimage.CbfImage(data=frames(1, 3)[0].astype(np.int32)).write(
        os.path.join(mixed, "frame_0003.cbf"))
    with open(os.path.join(mixed, "frame_0004.raw"), "wb") as handle:
        handle.write(b"\0" * HEADER)
        handle.write(frames(2, 4).tobytes())
    with open(os.path.join(folder, "raw-layout.yaml"), "w") as handle:
        handle.write("# Layout of the raw binary files of mixed/ (pvapy-ad-sim-server -cfg)\n"
                     "file_info:\n"
                     f"  header_offset: {HEADER}\n"
                     "  between_frames: 0\n"
                     f"  width: {SHAPE[1]}\n"
                     f"  height: {SHAPE[0]}\n"
                     "  datatype: uint16\n"
                     "  endian: little\n")
    with h5py.File(os.path.join(folder, "frames-bslz4.h5"), "w") as handle:
        handle.create_dataset("entry/data/data", data=frames(8, 5), chunks=(1,) + SHAPE,
                              **hdf5plugin.Bitshuffle(cname="lz4"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
