"""Rotate every frame by a multiple of 90 degrees and publish the result.

Run it::

    pvapy-hpc-consumer -ic pvapy:image -oc rotated:image \
        -pf examples/rotation_processor.py -pc RotationProcessor -pa '{"quarterTurns": 1}'

Change the rotation while it runs::

    control: {"command": "configure", "args": "{\"quarterTurns\": 2}"}
"""

import numpy as np
import pvaccess as pva

from pvaflow.hpc import AdImageProcessor


class RotationProcessor(AdImageProcessor):
    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.quarter_turns = int(self.configDict.get("quarterTurns", 1)) % 4
        self.n_rotated = 0

    def configure(self, configDict):
        if "quarterTurns" in configDict:
            self.quarter_turns = int(configDict["quarterTurns"]) % 4

    def process_image(self, image, pvObject):
        self.n_rotated += 1
        # rot90 returns a view; the copy into the output NTNDArray is the only copy.
        return np.rot90(image, self.quarter_turns, axes=(0, 1))

    def resetStats(self):
        self.n_rotated = 0

    def getStats(self):
        return {"nRotated": self.n_rotated, "quarterTurns": self.quarter_turns}

    def getStatsPvaTypes(self):
        return {"nRotated": pva.ULONG, "quarterTurns": pva.INT}
