"""A processor written for pvapy's framework that counts frames into a file.

Used to check pvaflow <-> pvapy interoperation of the push modes.
"""

import json

from pvapy.hpc.adImageProcessor import AdImageProcessor


class PvapyCounter(AdImageProcessor):
    def __init__(self, configDict={}):
        AdImageProcessor.__init__(self, configDict)
        self.path = configDict.get("path")
        self.ids = []

    def process(self, pvObject):
        self.ids.append(pvObject["uniqueId"])
        return pvObject

    def stop(self):
        with open(self.path, "w") as f:
            json.dump(self.ids, f)
