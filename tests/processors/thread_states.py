"""Counts the Python thread states its process() calls ran in.

A ``threading.local`` lives in the thread state: an attribute set in one
call is still there in the next only when that call ran in the same thread
state. ``nFreshStates`` is the number of calls that found it missing."""

import threading


class ThreadStateCounter:
    def __init__(self, configDict={}):  # pvapy-style signature
        self.local = threading.local()
        self.n_fresh = 0
        self.n_calls = 0

    def process(self, pv):
        self.n_calls += 1
        if not getattr(self.local, "seen", False):
            self.local.seen = True
            self.n_fresh += 1
        return pv

    def getStats(self):
        return {"nFreshStates": self.n_fresh, "nCalls": self.n_calls}

    def getStatsPvaTypes(self):
        import pvaccess as pva
        return {"nFreshStates": pva.UINT, "nCalls": pva.UINT}
