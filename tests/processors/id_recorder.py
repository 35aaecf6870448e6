"""A pass-through test processor that records the id of every frame it processes.

Arguments: ``{"path": FILE}``; ``{processorId}`` in FILE becomes the
consumer's id, so every member of a fleet writes its own file. One id per
line, in processing order; lines are flushed as they are written (the test
processes run at a few hundred frames per second).
"""

import pvaccess as pva

from pvaflow.hpc import UserDataProcessor


class IdRecorder(UserDataProcessor):
    """Publishes its input unchanged and appends its object id to a file."""

    def __init__(self, configDict=None):
        super().__init__(configDict)
        path = self.configDict.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError("IdRecorder needs the argument 'path' (a file name)")
        self.path_pattern = path
        self.nRecorded = 0
        self._file = None

    def start(self):
        path = self.path_pattern.format(processorId=self.processorId)
        self._file = open(path, "a", buffering=1)  # line-buffered

    def process(self, pvObject):
        self._file.write(f"{pvObject.getInt(self.objectIdField)}\n")
        self.nRecorded += 1
        self.updateOutputChannel(pvObject)
        return pvObject

    def stop(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def resetStats(self):
        self.nRecorded = 0

    def getStats(self):
        return {"nRecorded": self.nRecorded}

    def getStatsPvaTypes(self):
        return {"nRecorded": pva.ULONG}
