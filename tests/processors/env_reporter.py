"""Reports the CUDA_VISIBLE_DEVICES its process was started with (in its stats)."""

import os

import pvaccess as pva

from pvaflow.hpc import UserDataProcessor


class EnvReporter(UserDataProcessor):
    def getStats(self):
        return {"cudaVisibleDevices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}

    def getStatsPvaTypes(self):
        return {"cudaVisibleDevices": pva.STRING}
