"""Count hot pixels in every frame and find the ones that stay hot.

Run it::

    pvapy-hpc-consumer -ic pvapy:image -oc hot:pixels \\
        -pf examples/hot_pixel_processor.py -pc HotPixelProcessor \\
        -pa '{"threshold": 60000}'

A pixel is hot in a frame when its value is above ``threshold``; without a
threshold, above the frame's mean plus ``nSigma`` (default 5) standard
deviations. Each output object holds the frame's ``uniqueId``,
``timeStamp``, the threshold used, the number of hot pixels and the
position and value of the hottest one. The processor also counts, for
every pixel, the frames it was hot in: ``nPersistentHotPixels`` in the
statistics is the number of pixels hot in at least ``persistentFraction``
(default 0.5) of the frames so far. Change the settings while it runs::

    control: {"command": "configure", "args": "{\\"nSigma\\": 8, \\"resetMap\\": true}"}
"""

import numpy as np
import pvaccess as pva

from pvaflow.hpc import UserDataProcessor
from pvaflow.hpc.codecs import Decoder

OUTPUT_TYPE = {
    "uniqueId": pva.INT, "timeStamp": pva.PvTimeStamp(), "threshold": pva.DOUBLE,
    "nHotPixels": pva.UINT, "hottestX": pva.INT, "hottestY": pva.INT, "hottestValue": pva.DOUBLE,
}


class HotPixelProcessor(UserDataProcessor):
    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.threshold = None
        self.n_sigma = 5.0
        self.persistent_fraction = 0.5
        self.configure(self.configDict)
        self.decoder = Decoder()
        self.output = pva.PvObject(OUTPUT_TYPE)
        self.mask = None  # bool per pixel, reused
        self.hits = None  # frames each pixel was hot in
        self.n_frames = self.n_map_frames = self.last_count = self.max_count = self.total_count = 0

    def configure(self, configDict):
        threshold = configDict.get("threshold", self.threshold)
        n_sigma = float(configDict.get("nSigma", self.n_sigma))
        fraction = float(configDict.get("persistentFraction", self.persistent_fraction))
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise ValueError(f"threshold must be a number or null, got {threshold!r}")
        if n_sigma <= 0 or not 0 < fraction <= 1:
            raise ValueError("nSigma must be > 0 and persistentFraction in (0, 1]")
        self.threshold, self.n_sigma, self.persistent_fraction = threshold, n_sigma, fraction
        if configDict.get("resetMap"):
            self.hits = None

    def getOutputPvObjectType(self, pvObject):
        return pva.PvObject(OUTPUT_TYPE)

    def process(self, pvObject):
        image = self.decoder.pixels(pvObject)
        threshold = self.threshold
        if threshold is None:
            threshold = float(image.mean(dtype=np.float64) + self.n_sigma * image.std(dtype=np.float64))
        if self.mask is None or self.mask.shape != image.shape:
            self.mask = np.empty(image.shape, bool)
        if self.hits is None or self.hits.shape != image.shape:
            self.hits = np.zeros(image.shape, np.uint32)
            self.n_map_frames = 0
        np.greater(image, threshold, out=self.mask)
        count = int(np.count_nonzero(self.mask))
        self.hits += self.mask
        self.n_map_frames += 1
        hottest = int(np.argmax(image))
        row, column = divmod(hottest, image.shape[-1]) if image.ndim == 2 else (-1, -1)
        out = self.output
        out.setInt("uniqueId", pvObject.getInt("uniqueId"))
        out.setLong("timeStamp.secondsPastEpoch", pvObject.getLong("timeStamp.secondsPastEpoch"))
        out.setInt("timeStamp.nanoseconds", pvObject.getInt("timeStamp.nanoseconds"))
        out.setDouble("threshold", float(threshold))
        out.setUInt("nHotPixels", count)
        out.setInt("hottestX", column)
        out.setInt("hottestY", row)
        out.setDouble("hottestValue", float(image.reshape(-1)[hottest]))
        self.n_frames += 1
        self.last_count = count
        self.total_count += count
        self.max_count = max(self.max_count, count)
        self.updateOutputChannel(out)
        return out

    def persistent_hot_pixels(self):
        """(rows, columns) of the pixels hot in at least persistentFraction of the frames."""
        if self.hits is None or not self.n_map_frames:
            return np.zeros(0, int), np.zeros(0, int)
        return np.nonzero(self.hits >= self.persistent_fraction * self.n_map_frames)

    def resetStats(self):
        self.n_frames = self.last_count = self.max_count = self.total_count = 0

    def getStats(self):
        return {
            "nFrames": self.n_frames, "hotPixelsLast": self.last_count, "hotPixelsMax": self.max_count,
            "hotPixelsMean": self.total_count / self.n_frames if self.n_frames else 0.0,
            "nPersistentHotPixels": int(len(self.persistent_hot_pixels()[0])),
        }

    def getStatsPvaTypes(self):
        return {"nFrames": pva.ULONG, "hotPixelsLast": pva.ULONG, "hotPixelsMax": pva.ULONG,
                "hotPixelsMean": pva.DOUBLE, "nPersistentHotPixels": pva.ULONG}
