"""Finding and building the user's processor (pvaflow.hpc.loader), channel naming."""

import sys
import textwrap
import uuid

import pytest

from pvaflow.hpc import loader, naming
from pvaflow.hpc.errors import ConfigurationError, ProcessorLoadError
from pvaflow.hpc.processor import AdImageProcessor, UserDataProcessor


@pytest.fixture(autouse=True)
def _restore_sys_modules():
    """The loader registers user modules in sys.modules: drop what a test added."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("pvaflow_user_") or name.startswith("pvaflowtestmod_"):
            del sys.modules[name]


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def unique_module(tmp_path, monkeypatch, source):
    """A module importable by a dotted path, with a name no other test uses."""
    name = f"pvaflowtestmod_{uuid.uuid4().hex[:10]}"
    write(tmp_path, f"{name}.py", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


PROCESSOR_SOURCE = """
    from pvaflow.hpc.processor import UserDataProcessor

    LOADED_FROM = __name__

    class Doubler(UserDataProcessor):
        def __init__(self, configDict=None):
            super().__init__(configDict)
            self.factor = self.configDict.get("factor", 2)

        def process(self, pvObject):
            return pvObject * self.factor

    class DuckTyped:
        def __init__(self, configDict):
            self.configDict = configDict

        def process(self, pvObject):
            return ("duck", pvObject)

    NOT_A_CLASS = 42

    def a_function(configDict):
        return None

    class NoProcess:
        def __init__(self, configDict):
            pass

    class ProcessNotCallable:
        process = "nope"

    class Exploding:
        def __init__(self, configDict):
            raise ValueError("bad threshold " + str(configDict.get("threshold")))

        def process(self, pvObject):
            pass
"""


# --------------------------------------------------------------------------- success


def test_default_is_user_data_processor():
    assert loader.load_processor_class() is UserDataProcessor
    assert loader.load_processor_class(None, None) is UserDataProcessor
    assert loader.load_processor_class("", "") is UserDataProcessor


def test_load_from_file(tmp_path):
    path = write(tmp_path, "my-proc.py", PROCESSOR_SOURCE)
    cls = loader.load_processor_class(path, "Doubler")
    assert cls.__name__ == "Doubler" and issubclass(cls, UserDataProcessor)
    proc = loader.create_processor(cls, {"factor": 3, "processorId": 1})
    assert proc.process(5) == 15
    assert proc.processorId == 1
    module = sys.modules[cls.__module__]
    assert module.LOADED_FROM == cls.__module__


def test_load_duck_typed_class_from_file(tmp_path):
    path = write(tmp_path, "duck.py", PROCESSOR_SOURCE)
    cls = loader.load_processor_class(path, "DuckTyped")
    proc = loader.create_processor(cls, {"a": 1})
    assert proc.process(7) == ("duck", 7)
    assert proc.configDict == {"a": 1}


def test_load_from_file_twice_gets_fresh_code(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a", "p.py", "class P:\n    def process(self, o):\n        return 1\n")
    second = write(tmp_path / "b", "p.py", "class P:\n    def process(self, o):\n        return 2\n")
    cls1 = loader.load_processor_class(first, "P")
    cls2 = loader.load_processor_class(second, "P")
    assert cls1().process(None) == 1
    assert cls2().process(None) == 2


@pytest.mark.parametrize("path,cls", [
    ("pvaflow.hpc.processor.UserDataProcessor", UserDataProcessor),
    ("pvaflow.hpc.processor.AdImageProcessor", AdImageProcessor),
    ("pvaflow.hpc.UserDataProcessor", UserDataProcessor),
])
def test_load_from_dotted_path(path, cls):
    assert loader.load_processor_class(None, path) is cls


def test_load_pvapy_processor_from_dotted_path():
    pvapy_udp = pytest.importorskip("pvapy.hpc.userDataProcessor")
    cls = loader.load_processor_class(None, "pvapy.hpc.userDataProcessor.UserDataProcessor")
    assert cls is pvapy_udp.UserDataProcessor


def test_load_from_importable_module(tmp_path, monkeypatch):
    name = unique_module(tmp_path, monkeypatch, PROCESSOR_SOURCE)
    cls = loader.load_processor_class(None, f"{name}.Doubler")
    assert loader.create_processor(cls, {}).process(4) == 8


# ---------------------------------------------------------------------------- errors


def load_error(*args):
    with pytest.raises(ProcessorLoadError) as info:
        loader.load_processor_class(*args)
    assert isinstance(info.value, ConfigurationError)
    return str(info.value)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nowhere" / "proc.py")
    message = load_error(path, "Proc")
    assert path in message and "does not exist" in message


def test_directory_as_file(tmp_path):
    assert str(tmp_path) in load_error(str(tmp_path), "Proc")


def test_not_a_python_file(tmp_path):
    path = write(tmp_path, "proc.txt", "class Proc:\n    def process(self, o): pass\n")
    assert path in load_error(path, "Proc")


@pytest.mark.parametrize("source,error", [
    ("raise RuntimeError('no detector configured')\n", "RuntimeError: no detector configured"),
    ("x = 1 / 0\n", "ZeroDivisionError"),
    ("import pvaflow_no_such_dependency_xyz\n", "ModuleNotFoundError"),
    ("def broken(:\n", "SyntaxError"),
])
def test_file_raising_at_import(tmp_path, source, error):
    path = write(tmp_path, "failing_proc.py", source)
    message = load_error(path, "Proc")
    assert path in message and error in message


def test_class_missing_from_file(tmp_path):
    path = write(tmp_path, "proc_missing.py", PROCESSOR_SOURCE)
    message = load_error(path, "NoSuchClass")
    assert path in message and "NoSuchClass" in message


@pytest.mark.parametrize("name,kind", [("NOT_A_CLASS", "int"), ("a_function", "function")])
def test_not_a_class(tmp_path, name, kind):
    path = write(tmp_path, "proc_notclass.py", PROCESSOR_SOURCE)
    message = load_error(path, name)
    assert name in message and kind in message and "not a class" in message


@pytest.mark.parametrize("name", ["NoProcess", "ProcessNotCallable"])
def test_class_without_process_method(tmp_path, name):
    path = write(tmp_path, "proc_noprocess.py", PROCESSOR_SOURCE)
    message = load_error(path, name)
    assert name in message and "process" in message


def test_file_without_class(tmp_path):
    path = write(tmp_path, "proc_noclass.py", PROCESSOR_SOURCE)
    message = load_error(path, None)
    assert "--processor-class" in message
    assert load_error(path, "") == message


def test_module_not_importable():
    message = load_error(None, "pvaflow_no_such_module_xyz.sub.Proc")
    assert "pvaflow_no_such_module_xyz.sub" in message and "pvaflow_no_such_module_xyz.sub.Proc" in message


def test_class_without_module_path():
    message = load_error(None, "JustAClass")
    assert "JustAClass" in message and "--processor-file" in message


def test_class_missing_from_module():
    message = load_error(None, "pvaflow.hpc.processor.NoSuchProcessor")
    assert "pvaflow.hpc.processor" in message and "NoSuchProcessor" in message


def test_module_raising_at_import(tmp_path, monkeypatch):
    name = unique_module(tmp_path, monkeypatch, "raise KeyError('calibration')\n")
    message = load_error(None, f"{name}.Proc")
    assert name in message and "KeyError" in message and "calibration" in message


def test_module_with_missing_dependency(tmp_path, monkeypatch):
    name = unique_module(tmp_path, monkeypatch, "import pvaflow_absent_dep_xyz\n")
    message = load_error(None, f"{name}.Proc")
    assert name in message and "pvaflow_absent_dep_xyz" in message


@pytest.mark.parametrize("name,kind", [("NOT_A_CLASS", "int"), ("NoProcess", None)])
def test_dotted_path_not_a_processor(tmp_path, monkeypatch, name, kind):
    module = unique_module(tmp_path, monkeypatch, PROCESSOR_SOURCE)
    message = load_error(None, f"{module}.{name}")
    assert name in message
    if kind:
        assert kind in message


# -------------------------------------------------------------------- create_processor


def test_create_processor_with_raising_constructor(tmp_path):
    path = write(tmp_path, "proc_explode.py", PROCESSOR_SOURCE)
    cls = loader.load_processor_class(path, "Exploding")
    config = {"threshold": 7, "processorId": 3, "inputChannel": "in:chan", "outputChannel": None}
    with pytest.raises(ProcessorLoadError) as info:
        loader.create_processor(cls, config)
    message = str(info.value)
    assert "Exploding" in message
    assert "ValueError: bad threshold 7" in message
    assert '"threshold": 7' in message  # the user's arguments are shown
    assert "inputChannel" not in message and "processorId" not in message  # framework keys not
    assert isinstance(info.value.__cause__, ValueError)


def test_create_processor_passes_config():
    proc = loader.create_processor(UserDataProcessor, {"processorId": 9, "inputChannel": "a:b"})
    assert isinstance(proc, UserDataProcessor)
    assert proc.processorId == 9 and proc.inputChannel == "a:b"


# ------------------------------------------------------------------- parse_json_object


@pytest.mark.parametrize("text,expected", [
    (None, {}), ("", {}), ("{}", {}), ('{"a": 1, "b": [1, 2], "c": {"d": null}}',
                                       {"a": 1, "b": [1, 2], "c": {"d": None}}),
])
def test_parse_json_object(text, expected):
    assert loader.parse_json_object(text, "--processor-args") == expected


@pytest.mark.parametrize("text", ["{a: 1}", "{'a': 1}", '{"a": 1', "not json", "{} {}"])
def test_parse_json_object_bad_json(text):
    with pytest.raises(ConfigurationError) as info:
        loader.parse_json_object(text, "--processor-args")
    assert "--processor-args" in str(info.value) and "not valid JSON" in str(info.value)
    assert not isinstance(info.value, ProcessorLoadError)


@pytest.mark.parametrize("text", ["[1, 2]", "3", '"s"', "null", "true"])
def test_parse_json_object_not_an_object(text):
    with pytest.raises(ConfigurationError) as info:
        loader.parse_json_object(text, "--processor-args")
    assert "--processor-args" in str(info.value) and "JSON object" in str(info.value)


# ----------------------------------------------------------------------------- naming


def test_resolve_channel_none():
    assert naming.resolve_channel(None, "output", "consumer", 1) is None


@pytest.mark.parametrize("name,pid,spec,expected", [
    ("_", 1, None, "pvapy:consumer:1:output"),
    ("_", 7, "03d", "pvapy:consumer:007:output"),
    ("det:*:out", 12, None, "det:12:out"),
    ("det:*:out", 12, "03d", "det:012:out"),
    ("*:a:*", 5, "02d", "05:a:05"),
    ("plain:name", 3, "03d", "plain:name"),
    ("dev:cam1.value", 3, None, "dev:cam1.value"),
    ("a-b+c[0]<x>;y{z}/w#1%2=3@4^5~6!7|8&9$", 1, None, "a-b+c[0]<x>;y{z}/w#1%2=3@4^5~6!7|8&9$"),
])
def test_resolve_channel(name, pid, spec, expected):
    assert naming.resolve_channel(name, "output", "consumer", pid, spec) == expected


def test_resolve_channel_role_and_kind():
    assert naming.resolve_channel("_", "status", "producer", 2, "04d") == "pvapy:producer:0002:status"


@pytest.mark.parametrize("name", [
    "", "has space", "tab\there", "quote'd", 'double"quote', "comma,name", "paren(s)",
    "\n", "new\nline", " leading", "trailing ", "back\\slash", "caf\u00e9",
])
def test_resolve_channel_invalid_names(name):
    with pytest.raises(ConfigurationError) as info:
        naming.resolve_channel(name, "output", "consumer", 1, what="output channel")
    assert "output channel" in str(info.value)
    assert repr(name) in str(info.value)


def test_resolve_channel_rejects_trailing_newline():
    with pytest.raises(ConfigurationError):
        naming.resolve_channel("abc\n", "output", "consumer", 1)


@pytest.mark.parametrize("spec", ["q", "s", ".2f.x"])
def test_resolve_channel_bad_format_spec(spec):
    with pytest.raises(ConfigurationError) as info:
        naming.resolve_channel("x:*", "output", "consumer", 1, spec)
    assert spec in str(info.value)


def test_format_spec_producing_invalid_name():
    with pytest.raises(ConfigurationError):
        naming.resolve_channel("x:*", "output", "consumer", 7, ">5")  # 'x:    7'


def test_format_id():
    assert naming.format_id(3) == "3"
    assert naming.format_id(3, "") == "3"
    assert naming.format_id(3, "03d") == "003"
    assert naming.format_id(3, "x") == "3"
