"""A CPU-heavy per-frame job for the worker pool: repeated 3x3 box smoothing.

Run four worker processes behind one consumer::

    pvapy-hpc-consumer -ic demo:image -oc demo:smooth -sqs 1000 \
        -pc pvaflow.hpc.worker_pool.WorkerPoolProcessor \
        -pa '{"workerClass": "SmoothingWorker", "workerFile": "examples/smoothing_worker.py",
              "workers": 4, "workerArgs": {"passes": 20}}'
"""

import numpy as np


def smooth(image, passes):
    """``passes`` rounds of a 3x3 mean filter (edges clamped), in float32."""
    out = image.astype(np.float32)
    for _ in range(passes):
        padded = np.pad(out, 1, mode="edge")
        out = sum(padded[dy:dy + out.shape[0], dx:dx + out.shape[1]]
                  for dy in range(3) for dx in range(3)) / 9.0
    return out


class SmoothingWorker:
    """Method names as in pvapy's UserMpDataProcessor."""

    def __init__(self, config=None):
        config = config if isinstance(config, dict) else {}
        self.passes = int(config.get("passes", 10))
        self.n_frames = 0

    def start(self):
        pass

    def configure(self, configDict):
        self.passes = int(configDict.get("passes", self.passes))

    def process(self, image):
        self.n_frames += 1
        return smooth(image, self.passes)

    def stop(self):
        pass

    def resetStats(self):
        self.n_frames = 0

    def getStats(self):
        return {"nFrames": self.n_frames}
