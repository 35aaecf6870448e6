"""Packaging for pvaflow."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "pvaflow" / "__init__.py").read_text()).group(1)

EXTRAS = {
    "codecs": ["imagecodecs>=2023.1.23"],
    "hdf5": ["h5py>=3.8", "hdf5plugin>=4.0"],
    "files": ["pillow>=9", "tifffile>=2023.1", "fabio>=2023.4", "pyyaml>=6"],
    "crypto": ["pycryptodome>=3.18"],
    "ssnet": ["torch>=2.1"],
    "ops": ["rich>=13", "pyyaml>=6", "matplotlib>=3.6"],
}
EXTRAS["test"] = [
    "pytest>=7",
    "pytest-timeout>=2.1",
    "pytest-xdist>=3",
    "p4p>=4.1",
    "psutil>=5.9",
    # independent implementations the codec tests compare against
    "lz4>=4",
    "bitshuffle>=0.5",
] + EXTRAS["hdf5"] + EXTRAS["codecs"] + EXTRAS["files"] + EXTRAS["crypto"] + EXTRAS["ops"]
EXTRAS["bench"] = EXTRAS["test"] + ["matplotlib>=3.6"]
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name != "ssnet" for req in reqs}
                       | set(EXTRAS["ssnet"]))

setup(
    name="pvaflow",
    version=VERSION,
    description="Stream EPICS PV Access area-detector data through fleets of processing consumers",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pvaflow", "pvaflow.*"]),
    package_data={"pvaflow": ["py.typed"],
                  "pvaflow.processors.ssnet": ["weights/*.pt", "weights/*.json"]},
    install_requires=["pvapy>=5.4", "numpy>=1.22"],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "pvapy-hpc-consumer = pvaflow.cli.consumer:main",
            "pvapy-ad-sim-server = pvaflow.cli.sim_server:main",
            "pvapy-hpc-collector = pvaflow.cli.collector:main",
            "pvapy-mirror-server = pvaflow.cli.mirror_server:main",
            "pvapy-hpc-monitor = pvaflow.cli.monitor:main",
            "pvapy-hpc-control = pvaflow.cli.control:main",
            "pvapy-hpc-workflow = pvaflow.cli.workflow:main",
            "pvapy-hpc-report = pvaflow.cli.report:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Physics",
    ],
)
