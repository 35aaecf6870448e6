"""Finding and building the user's processor.

``--processor-file PATH --processor-class NAME`` loads NAME from a Python
file; ``--processor-class package.module.Class`` imports it. Any class with a
callable ``process`` method is accepted, which includes processors written
for pvapy's framework: their base class comes from pvapy and they run
unchanged (the framework sets the same attributes on them).
"""

import importlib
import importlib.util
import inspect
import json
import os
import sys

from .errors import ConfigurationError, ProcessorLoadError
from .processor import UserDataProcessor


def parse_json_object(text, what):
    """Parse ``text`` as a JSON object (dict); raise ConfigurationError otherwise."""
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{what} is not valid JSON ({exc.msg} at character {exc.pos}): {text!r};"
            " give an object like '{\"key\": 1}'") from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{what} must be a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def _load_from_file(path, class_name):
    if not os.path.isfile(path):
        raise ProcessorLoadError(f"processor file '{path}' does not exist; check --processor-file")
    module_name = "pvaflow_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ProcessorLoadError(f"processor file '{path}' is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report what it raised
        raise ProcessorLoadError(
            f"processor file '{path}' failed to load: {type(exc).__name__}: {exc}") from exc
    if not hasattr(module, class_name):
        raise ProcessorLoadError(f"processor file '{path}' has no class '{class_name}'")
    return getattr(module, class_name)


def _load_from_path(class_path):
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name:
        raise ProcessorLoadError(
            f"processor class '{class_path}' needs a module path (package.module.Class)"
            " or --processor-file")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProcessorLoadError(f"cannot import module '{module_name}' for processor class"
                                 f" '{class_path}': {exc}") from exc
    except Exception as exc:
        raise ProcessorLoadError(f"module '{module_name}' failed to load: {type(exc).__name__}: {exc}"
                                 ) from exc
    if not hasattr(module, class_name):
        raise ProcessorLoadError(f"module '{module_name}' has no class '{class_name}'")
    return getattr(module, class_name)


def load_processor_class(processor_file=None, processor_class=None):
    """Return the processor class named by the command-line options."""
    if processor_file and not processor_class:
        raise ProcessorLoadError("--processor-file needs --processor-class to name the class in it")
    if not processor_class:
        return UserDataProcessor
    cls = (_load_from_file(processor_file, processor_class) if processor_file
           else _load_from_path(processor_class))
    if not inspect.isclass(cls):
        raise ProcessorLoadError(f"'{processor_class}' is a {type(cls).__name__}, not a class")
    if not callable(getattr(cls, "process", None)):
        raise ProcessorLoadError(
            f"class '{processor_class}' is not a processor: it has no process(pvObject) method;"
            " derive it from pvaflow.hpc.UserDataProcessor")
    return cls


def create_processor(cls, config):
    """Instantiate ``cls(config)``; a raising constructor is a start-up error."""
    try:
        return cls(config)
    except Exception as exc:
        raise ProcessorLoadError(
            f"processor {cls.__name__} could not be created with args"
            f" {json.dumps({k: v for k, v in config.items() if k not in _FRAMEWORK_KEYS})}:"
            f" {type(exc).__name__}: {exc}") from exc


#: Keys the framework adds to the processor's config dict (pvapy compatible).
_FRAMEWORK_KEYS = (
    "processorId", "inputChannel", "inputMode", "inputArgs", "outputChannel", "outputMode",
    "outputArgs", "objectIdField", "skipInitialUpdates", "objectIdOffset", "nSequentialUpdates",
    "fieldRequest",
)
