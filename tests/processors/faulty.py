"""Processors that misbehave on purpose, for the error-accounting tests."""

import time

import pvaccess as pva

from pvaflow.hpc import UserDataProcessor


class RaiseEveryTenth(UserDataProcessor):
    """Raises on every frame whose uniqueId is a multiple of 10."""

    def process(self, pvObject):
        if pvObject.getInt("uniqueId") % 10 == 0:
            raise RuntimeError(f"frame {pvObject.getInt('uniqueId')} rejected on purpose")
        self.updateOutputChannel(pvObject)


class ConfigureRaises(UserDataProcessor):
    def configure(self, configDict):
        raise ValueError("this processor refuses every configuration")


class Slow(UserDataProcessor):
    """Takes ``delay`` seconds per frame."""

    def __init__(self, configDict=None):
        super().__init__(configDict)
        self.delay = float(self.configDict.get("delay", 0.01))

    def process(self, pvObject):
        time.sleep(self.delay)


class ConstructorRaises(UserDataProcessor):
    def __init__(self, configDict=None):
        super().__init__(configDict)
        raise KeyError("threshold")


class NotAProcessor:
    """Has no process() method."""


class WrongOutput(UserDataProcessor):
    """Publishes objects of a structure other than its output record's."""

    def getOutputPvObjectType(self, pvObject):
        return pva.PvObject({"x": pva.INT})

    def process(self, pvObject):
        self.updateOutputChannel(pva.PvObject({"y": pva.STRING}, {"y": "wrong"}))
        return "not a PvObject"


class DiesInStart(UserDataProcessor):
    """Ends its process abruptly in start(), like a crash in native code."""

    def start(self):
        import os
        os._exit(3)


class LifecycleRaises(UserDataProcessor):
    """Raises in start(), stop() and configure(); processes frames normally."""

    def start(self):
        raise RuntimeError("start failed on purpose")

    def stop(self):
        raise RuntimeError("stop failed on purpose")

    def configure(self, configDict):
        raise ValueError("configure failed on purpose")


class ReturnsWrongTypes(UserDataProcessor):
    """Publishes nothing usable and returns odd values: a dict, a string, None."""

    def process(self, pvObject):
        uid = pvObject.getInt("uniqueId")
        if uid % 3 == 0:
            self.updateOutputChannel({"not": "a PvObject"})
        return [None, "text", {"x": 1}][uid % 3]
