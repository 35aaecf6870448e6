"""Exceptions raised by the pvaflow framework core.

Every message says what was wrong and how to fix it, in one line, so the
command-line tools can print it as it is.
"""


class PvaflowError(Exception):
    """Base class of all pvaflow errors."""


class ConfigurationError(PvaflowError):
    """Bad user input found at start-up (flags, processor, arguments).

    The command-line tools turn it into one error line and exit code 2.
    """


class ProcessorLoadError(ConfigurationError):
    """The processor file, class or constructor could not be used."""


class FrameFormatError(PvaflowError):
    """An NTNDArray whose fields do not describe a usable image."""


class ControlCommandError(PvaflowError):
    """A control-channel request that cannot be carried out."""
