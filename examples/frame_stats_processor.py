"""Compute per-frame statistics and publish them as a small structure.

Each output object holds the frame's ``uniqueId``, its ``timeStamp`` and the
minimum, maximum, mean and sum of the pixels::

    pvapy-hpc-consumer -ic pvapy:image -oc stats:frame \
        -pf examples/frame_stats_processor.py -pc FrameStatsProcessor
"""

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc.ntndarray import image_view

OUTPUT_TYPE = {
    "uniqueId": pva.INT,
    "timeStamp": pva.PvTimeStamp(),
    "minimum": pva.DOUBLE,
    "maximum": pva.DOUBLE,
    "mean": pva.DOUBLE,
    "sum": pva.DOUBLE,
}


class FrameStatsProcessor(UserDataProcessor):
    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.output = pva.PvObject(OUTPUT_TYPE)  # reused for every frame
        self.n_frames = 0
        self.mean_of_means = 0.0

    def getOutputPvObjectType(self, pvObject):
        return pva.PvObject(OUTPUT_TYPE)

    def process(self, pvObject):
        image = image_view(pvObject)
        out = self.output
        out.setInt("uniqueId", pvObject.getInt("uniqueId"))
        out.setLong("timeStamp.secondsPastEpoch", pvObject.getLong("timeStamp.secondsPastEpoch"))
        out.setInt("timeStamp.nanoseconds", pvObject.getInt("timeStamp.nanoseconds"))
        mean = float(image.mean())
        out.setDouble("minimum", float(image.min()))
        out.setDouble("maximum", float(image.max()))
        out.setDouble("mean", mean)
        out.setDouble("sum", float(image.sum(dtype=np.float64)))
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
