"""pvaflow framework core: processors, consumers, NTNDArray conversion.

Processors import their base classes from here::

    from pvaflow.hpc import UserDataProcessor, AdImageProcessor
"""

from .errors import ConfigurationError, FrameFormatError, PvaflowError, ProcessorLoadError
from .processor import AdImageProcessor, UserDataProcessor

__all__ = [
    "AdImageProcessor", "ConfigurationError", "FrameFormatError", "ProcessorLoadError",
    "PvaflowError", "UserDataProcessor",
]
