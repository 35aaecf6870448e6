"""A processor written for pvapy's framework, exactly as its users write them.

It subclasses pvapy's own base class; pvaflow must run it unchanged.
"""

import pvaccess as pva
from pvapy.hpc.userDataProcessor import UserDataProcessor


class PvapyStyleProcessor(UserDataProcessor):
    def __init__(self, configDict={}):
        UserDataProcessor.__init__(self, configDict)
        self.nProcessed = 0
        self.offset = configDict.get("offset", 0)
        self.configured = {}

    def process(self, pvObject):
        self.nProcessed += 1
        out = pva.PvObject({"uniqueId": pva.INT, "shifted": pva.INT})
        out["uniqueId"] = pvObject["uniqueId"]
        out["shifted"] = pvObject["uniqueId"] + self.offset
        self.updateOutputChannel(out)
        return out

    def getOutputPvObjectType(self, pvObject):
        return pva.PvObject({"uniqueId": pva.INT, "shifted": pva.INT})

    def configure(self, configDict):
        self.configured = configDict
        if "offset" in configDict:
            self.offset = configDict["offset"]

    def resetStats(self):
        self.nProcessed = 0

    def getStats(self):
        return {"nProcessed": self.nProcessed, "offset": self.offset}

    def getStatsPvaTypes(self):
        return {"nProcessed": pva.UINT, "offset": pva.INT}
