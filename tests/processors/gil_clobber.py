"""Writes "locked" into pvaccess's process-wide GIL state inside process().

That is what a thread holding the GIL leaves there when it enters pvaccess's
Ensure/Release pair (e.g. starting a monitor on a connected channel that has a
connection callback) while a frame callback is in progress. The consumer's
per-frame callback must still end with the GIL released, or the process hangs."""

from pvaflow.hpc import thread_state
from pvaflow.hpc.processor import UserDataProcessor

LOCKED = 0  # PyGILState_LOCKED


class GilStateClobber(UserDataProcessor):
    def __init__(self, configDict={}):  # pvapy-style signature
        super().__init__(configDict)
        self.n_clobbered = 0

    def process(self, pv):
        thread_state.RELEASE_GUARD.value = LOCKED
        self.n_clobbered += 1
        return pv

    def getStats(self):
        return {"nClobbered": self.n_clobbered}

    def getStatsPvaTypes(self):
        import pvaccess as pva
        return {"nClobbered": pva.UINT}
