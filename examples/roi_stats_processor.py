"""Statistics of a region of interest, published as a small structure.

Run it::

    pvapy-hpc-consumer -ic pvapy:image -oc roi:stats \\
        -pf examples/roi_stats_processor.py -pc RoiStatsProcessor \\
        -pa '{"x": 10, "y": 20, "width": 64, "height": 32}'

Move the region while it runs (with ``-cc roi:control``)::

    control: {"command": "configure", "args": "{\\"x\\": 100, \\"y\\": 50}"}

``x``/``y`` are the region's first column/row, ``width``/``height`` its size
in pixels (default: the whole frame). The region is clipped to each frame.
Each output object holds the frame's ``uniqueId`` and ``timeStamp``, the
clipped region and the total, mean, standard deviation, minimum, maximum
and intensity-weighted centroid (frame pixel coordinates) of its pixels.
Compressed frames (lz4, blosc, bslz4) are decoded first. Mono frames only.
"""

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc.codecs import Decoder

OUTPUT_TYPE = {
    "uniqueId": pva.INT, "timeStamp": pva.PvTimeStamp(),
    "x": pva.INT, "y": pva.INT, "width": pva.INT, "height": pva.INT,
    "total": pva.DOUBLE, "mean": pva.DOUBLE, "sigma": pva.DOUBLE,
    "minimum": pva.DOUBLE, "maximum": pva.DOUBLE, "centroidX": pva.DOUBLE, "centroidY": pva.DOUBLE,
}
HUGE = 2**31 - 1


class RoiStatsProcessor(UserDataProcessor):
    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.region = {"x": 0, "y": 0, "width": HUGE, "height": HUGE}
        self.configure(self.configDict)
        self.decoder = Decoder()
        self.output = pva.PvObject(OUTPUT_TYPE)  # reused for every frame
        self.n_frames = 0
        self.mean_of_means = 0.0

    def configure(self, configDict):
        region = dict(self.region)
        for key in region:
            if key in configDict:
                value = configDict[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{key} must be an integer number of pixels, got {value!r}")
                if value < (1 if key in ("width", "height") else 0):
                    raise ValueError(f"{key} must be {'>= 1' if key in ('width', 'height') else '>= 0'},"
                                     f" got {value}")
                region[key] = value
        self.region = region

    def getOutputPvObjectType(self, pvObject):
        return pva.PvObject(OUTPUT_TYPE)

    def process(self, pvObject):
        image = self.decoder.pixels(pvObject)
        if image.ndim != 2:
            raise ValueError(f"RoiStatsProcessor needs mono frames, got shape {image.shape}")
        r = self.region
        x0, y0 = min(r["x"], image.shape[1]), min(r["y"], image.shape[0])
        x1, y1 = min(x0 + r["width"], image.shape[1]), min(y0 + r["height"], image.shape[0])
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"region x={r['x']} y={r['y']} lies outside the"
                             f" {image.shape[1]}x{image.shape[0]} frame")
        roi = image[y0:y1, x0:x1]  # a view: no copy
        total = float(roi.sum(dtype=np.float64))
        mean = total / roi.size
        # Centroid from the row and column sums (small arrays, not a weighted copy of the region).
        columns = roi.sum(axis=0, dtype=np.float64)
        rows = roi.sum(axis=1, dtype=np.float64)
        out = self.output
        out.setInt("uniqueId", pvObject.getInt("uniqueId"))
        out.setLong("timeStamp.secondsPastEpoch", pvObject.getLong("timeStamp.secondsPastEpoch"))
        out.setInt("timeStamp.nanoseconds", pvObject.getInt("timeStamp.nanoseconds"))
        for key, value in (("x", x0), ("y", y0), ("width", x1 - x0), ("height", y1 - y0)):
            out.setInt(key, value)
        out.setDouble("total", total)
        out.setDouble("mean", mean)
        out.setDouble("sigma", float(roi.std(dtype=np.float64)))
        out.setDouble("minimum", float(roi.min()))
        out.setDouble("maximum", float(roi.max()))
        out.setDouble("centroidX", float(columns @ np.arange(x0, x1)) / total if total else np.nan)
        out.setDouble("centroidY", float(rows @ np.arange(y0, y1)) / total if total else np.nan)
        self.n_frames += 1
        self.mean_of_means += (mean - self.mean_of_means) / self.n_frames
        self.updateOutputChannel(out)
        return out

    def resetStats(self):
        self.n_frames = 0
        self.mean_of_means = 0.0

    def getStats(self):
        return {"nFrames": self.n_frames, "meanOfMeans": self.mean_of_means}

    def getStatsPvaTypes(self):
        return {"nFrames": pva.ULONG, "meanOfMeans": pva.DOUBLE}
