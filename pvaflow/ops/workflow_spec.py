"""Workflow files: loading YAML with line numbers and checking its structure.

A workflow file describes a topology of stages (see ``docs/sections/
operations.md`` for the format). This module reads it, remembers the line of
every key and list item, applies ``--set`` overrides and checks each key's
presence and type. Channel wiring and the stages' command-line flags are
checked by :mod:`pvaflow.ops.workflow_graph`. Every problem is reported as
``FILE:LINE: what is wrong``; all problems are collected, not just the first.
"""

import dataclasses
import re

from pvaflow.hpc.errors import ConfigurationError
from pvaflow.hpc.id_list import parse_id_list

KINDS = {
    "simulator": "pvaflow.cli.sim_server",
    "consumer": "pvaflow.cli.consumer",
    "writer": "pvaflow.cli.consumer",
    "collector": "pvaflow.cli.collector",
    "mirror": "pvaflow.cli.mirror_server",
}
TOP_KEYS = {"name", "description", "prefix", "report_period", "settle", "stop_timeout",
            "start_timeout", "runtime", "hosts", "external", "stages"}
COMMON_KEYS = {"name", "kind", "host", "args", "description"}
KIND_KEYS = {
    "simulator": {"output"},
    "consumer": {"input", "output", "count", "first_id", "ids", "processor", "distributor",
                 "status", "control", "report_period"},
    "collector": {"input", "output", "id", "producer_ids", "processor", "status", "control",
                  "report_period"},
    "mirror": {"input", "output", "protocol", "queue_size", "report_period"},
}
KIND_KEYS["writer"] = KIND_KEYS["consumer"]
PROCESSOR_KEYS = {"file", "class", "args"}
DISTRIBUTOR_KEYS = {"group", "set", "sets", "updates", "trigger", "plugin"}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class SpecError(ConfigurationError):
    """A workflow file with problems; ``problems`` lists ``(line, message)``."""

    def __init__(self, source, problems):
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p[0] or 0))
        first = self.lines()[0]
        more = len(self.problems) - 1
        super().__init__(first + (f" (and {more} more problem{'s' * (more > 1)}; "
                                  "'pvapy-hpc-workflow check' lists them all)" if more else ""))

    def lines(self):
        """One ``FILE:LINE: message`` text per problem."""
        return [f"{self.source}:{'--set' if line == 0 else line}: {message}" if line is not None
                else f"{self.source}: {message}" for line, message in self.problems]


class LineDict(dict):
    """A mapping that knows its line and the line of each key (1-based; 0: --set)."""

    line = 0

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.key_lines = {}

    def line_of(self, key):
        """The line of ``key`` (that of the whole node when unknown)."""
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A sequence that knows its line and the line of each item."""

    line = 0

    def __init__(self, *args):
        super().__init__(*args)
        self.item_lines = []

    def line_of(self, index):
        """The line of ``index`` (that of the whole node when unknown)."""
        return self.item_lines[index] if index < len(self.item_lines) else self.line


def load_yaml(text, source):
    """Parse YAML text into LineDict/LineList trees; SpecError on syntax errors."""
    import yaml  # pylint: disable=import-outside-toplevel

    class Loader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
        """SafeLoader that records lines and refuses duplicate keys."""

    def mapping(loader, node):
        """Construct a LineDict, refusing duplicate and non-text keys."""
        loader.flatten_mapping(node)
        result = LineDict()
        result.line = node.start_mark.line + 1
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise SpecError(source, [(line, f"key {key!r} is not text")])
            if key in result:
                raise SpecError(source, [(line, f"key '{key}' appears twice (first on line "
                                                f"{result.key_lines[key]})")])
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_lines[key] = line
        return result

    def sequence(loader, node):
        """Construct a LineList."""
        result = LineList(loader.construct_object(n, deep=True) for n in node.value)
        result.line = node.start_mark.line + 1
        result.item_lines = [n.start_mark.line + 1 for n in node.value]
        return result

    Loader.add_constructor("tag:yaml.org,2002:map", mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", sequence)
    try:
        data = yaml.load(text, Loader=Loader)  # nosec B506: SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SpecError(source, [(mark.line + 1 if mark else 1,
                                  f"not valid YAML: {exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError(source, [(1, f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError(source, [(1, "the file must be a mapping with 'name' and 'stages'")])
    return data


def apply_overrides(data, overrides, source):
    """Apply ``--set PATH=VALUE`` texts: PATH is a top-level key or ``STAGE.key[.key]``."""
    import yaml  # pylint: disable=import-outside-toplevel
    stages = data.get("stages") if isinstance(data.get("stages"), list) else []
    for text in overrides:
        path, sep, value_text = text.partition("=")
        keys = [k for k in path.strip().split(".") if k]
        if not sep or not keys:
            raise SpecError(source, [(0, f"'{text}' is not PATH=VALUE,"
                                         " e.g. detector.args.runtime=5")])
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError:
            value = value_text
        node = data
        if keys[0] not in TOP_KEYS:
            match = [s for s in stages if isinstance(s, dict) and s.get("name") == keys[0]]
            if not match:
                raise SpecError(source, [(0, f"'{text}': '{keys[0]}' is neither a top-level key"
                                             " nor a stage name")])
            node, keys = match[0], keys[1:]
            if not keys:
                raise SpecError(source, [(0, f"'{text}': give a key of stage '{path}'")])
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = LineDict()
            node = node[key]
        node[keys[-1]] = value
        if isinstance(node, LineDict):
            node.key_lines[keys[-1]] = 0


@dataclasses.dataclass
class Stage:
    """One stage as written in the file (wiring is resolved later)."""

    name: str
    kind: str
    line: int
    raw: dict
    host: str = None
    ids: list = dataclasses.field(default_factory=lambda: [1])
    args: dict = dataclasses.field(default_factory=dict)
    report_period: float = 2.0
    # filled in by workflow_graph.resolve()
    upstream: list = dataclasses.field(default_factory=list)
    input_channel: str = None
    producer_ids: list = None
    output: str = None
    status: str = None
    control: str = None
    argv: list = dataclasses.field(default_factory=list)

    @property
    def module(self):
        """The module of the tool that runs this kind of stage."""
        return KINDS[self.kind]

    def line_of(self, key):
        """The line of ``key`` (that of the whole node when unknown)."""
        return self.raw.line_of(key) if isinstance(self.raw, LineDict) else self.line


@dataclasses.dataclass
class Workflow:
    """A checked workflow file."""

    name: str
    source: str
    stages: list
    prefix: str = ""
    external: list = dataclasses.field(default_factory=list)
    hosts: list = dataclasses.field(default_factory=list)
    report_period: float = 2.0
    settle: float = 1.0
    stop_timeout: float = 30.0
    start_timeout: float = 60.0
    runtime: float = 0.0
    problems: list = dataclasses.field(default_factory=list)  # (line, message), for resolve()

    def stage(self, name):
        """The stage called ``name``, or None."""
        return next((s for s in self.stages if s.name == name), None)


class Checker:
    """Collects problems with their lines."""

    def __init__(self, source):
        self.source = source
        self.problems = []

    def add(self, line, message):
        """Record a problem at ``line`` (None: no line; 0: a --set override)."""
        self.problems.append((line, message))

    def typed(self, mapping, key, kinds, what, default=None, minimum=None):
        """``mapping[key]`` if it has one of ``kinds`` (true/false is not a number)."""
        if key not in mapping:
            return default
        value = mapping[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            self.add(mapping.line_of(key), f"{what}: '{key}' must be {_kind_name(kinds)},"
                                           f" not {value!r}")
            return default
        if minimum is not None and value < minimum:
            self.add(mapping.line_of(key), f"{what}: '{key}' must be >= {minimum}, not {value!r}")
            return default
        return value

    def keys(self, mapping, allowed, what):
        """Record every key of ``mapping`` not in ``allowed``."""
        for key in mapping:
            if key not in allowed:
                self.add(mapping.line_of(key), f"{what}: unknown key '{key}'; known keys: "
                                               + ", ".join(sorted(allowed)))

    def raise_if_any(self):
        """Raise SpecError when problems were recorded."""
        if self.problems:
            raise SpecError(self.source, self.problems)


def _kind_name(kinds):
    names = {int: "an integer", float: "a number", str: "text", dict: "a mapping",
             list: "a list", bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(k, k.__name__) for k in kinds))


def parse_workflow(data, source):
    """Check the structure of loaded data; a :class:`Workflow` with its ``problems``."""
    check = Checker(source)
    check.keys(data, TOP_KEYS, "workflow")
    name = check.typed(data, "name", str, "workflow")
    if not name:
        check.add(data.line_of("name"), "workflow: 'name' is required (letters, digits, - and _)")
    elif not _NAME.match(name):
        check.add(data.line_of("name"), f"workflow: name '{name}' must start with a letter and"
                                        " hold only letters, digits, - and _")
    flow = Workflow(name=name or "workflow", source=source, stages=[])
    flow.prefix = check.typed(data, "prefix", str, "workflow", f"pvaflow:{flow.name}")
    for key in ("report_period", "settle", "stop_timeout", "start_timeout", "runtime"):
        setattr(flow, key, check.typed(data, key, (int, float), "workflow", getattr(flow, key), 0))
    for key in ("hosts", "external"):
        items = check.typed(data, key, list, "workflow", [])
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item:
                check.add(items.line_of(index), f"workflow: '{key}' items must be names (text),"
                                                f" not {item!r}")
            else:
                getattr(flow, key).append(item)
    stages = check.typed(data, "stages", list, "workflow", [])
    if not stages and "stages" not in data:
        check.add(data.line, "workflow: 'stages' is required (a list of stages)")
    for index, raw in enumerate(stages):
        stage = _parse_stage(check, raw, stages.line_of(index), flow)
        if stage is not None:
            if flow.stage(stage.name):
                check.add(stage.line, f"stage '{stage.name}': the name is used twice (first on"
                                      f" line {flow.stage(stage.name).line})")
            else:
                flow.stages.append(stage)
    if "stages" in data and not stages:
        check.add(data.line_of("stages"), "workflow: 'stages' is empty")
    flow.problems = check.problems  # raised by workflow_graph.resolve with the wiring problems
    return flow


def _parse_stage(check, raw, line, flow):
    if not isinstance(raw, LineDict):
        check.add(line, f"stage {raw!r} must be a mapping with 'name' and 'kind'")
        return None
    name = check.typed(raw, "name", str, "stage")
    if not name or not _NAME.match(name):
        check.add(raw.line_of("name"), "stage: 'name' is required: a letter, then letters,"
                                       f" digits, - or _ (got {raw.get('name')!r})")
        return None
    what = f"stage '{name}'"
    kind = check.typed(raw, "kind", str, what)
    if kind not in KINDS:
        check.add(raw.line_of("kind"), f"{what}: 'kind' must be one of {', '.join(KINDS)}"
                                       f" (got {raw.get('kind')!r})")
        return None
    stage = Stage(name=name, kind=kind, line=raw.line, raw=raw,
                  report_period=flow.report_period)
    check.keys(raw, COMMON_KEYS | KIND_KEYS[kind], f"{what} ({kind})")
    stage.host = check.typed(raw, "host", str, what)
    if stage.host and flow.hosts and stage.host not in flow.hosts:
        check.add(raw.line_of("host"), f"{what}: host '{stage.host}' is not in 'hosts'"
                                       f" ({', '.join(flow.hosts)})")
    stage.args = check.typed(raw, "args", dict, what, LineDict())
    stage.report_period = check.typed(raw, "report_period", (int, float), what,
                                      flow.report_period, 0)
    for key in ("output", "status", "control", "protocol"):
        check.typed(raw, key, str, what)
    check.typed(raw, "input", (str, list) if kind == "collector" else str, what)
    if kind in ("consumer", "writer", "collector", "mirror") and "input" not in raw:
        check.add(raw.line, f"{what}: 'input' is required: a stage name or a channel")
    _parse_ids(check, raw, stage, what)
    for key, allowed in (("processor", PROCESSOR_KEYS), ("distributor", DISTRIBUTOR_KEYS)):
        section = check.typed(raw, key, dict, what)
        if section is not None:
            check.keys(section, allowed, f"{what} {key}")
    processor = raw.get("processor") if isinstance(raw.get("processor"), dict) else None
    if processor is not None:
        check.typed(processor, "file", str, f"{what} processor")
        check.typed(processor, "args", dict, f"{what} processor")
        if not isinstance(processor.get("class"), str) or not processor.get("class"):
            check.add(processor.line, f"{what}: processor 'class' is required (a class name,"
                                      " or package.module.Class)")
    elif kind == "writer":
        check.add(raw.line, f"{what}: a writer needs a 'processor' (e.g. class"
                            " pvaflow.processors.hdf5_writer.Hdf5Writer)")
    distributor = raw.get("distributor") if isinstance(raw.get("distributor"), dict) else None
    if distributor is not None:
        if not isinstance(distributor.get("group"), str):
            check.add(distributor.line, f"{what}: distributor 'group' is required (text)")
        for key in ("sets", "updates"):
            check.typed(distributor, key, int, f"{what} distributor", minimum=1)
        for key in ("set", "trigger", "plugin"):
            check.typed(distributor, key, str, f"{what} distributor")
    if kind == "mirror":
        if raw.get("protocol", "pva") not in ("pva", "ca"):
            check.add(raw.line_of("protocol"), f"{what}: 'protocol' must be pva or ca")
        check.typed(raw, "queue_size", int, what, minimum=0)
    return stage


def _parse_ids(check, raw, stage, what):
    if stage.kind == "collector":
        stage.ids = [check.typed(raw, "id", int, what, 1, 0)]
        if "producer_ids" in raw:
            try:
                stage.producer_ids = parse_id_list(str(raw["producer_ids"]))
            except ConfigurationError as exc:
                check.add(raw.line_of("producer_ids"), f"{what}: {exc}")
        return
    if stage.kind not in ("consumer", "writer"):
        stage.ids = []
        return
    if "ids" in raw and ("count" in raw or "first_id" in raw):
        check.add(raw.line_of("ids"), f"{what}: give either 'ids' or 'count'/'first_id'")
    if "ids" in raw:
        value = raw["ids"]
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        try:
            stage.ids = parse_id_list(text)
        except ConfigurationError as exc:
            check.add(raw.line_of("ids"), f"{what}: {exc}")
        return
    count = check.typed(raw, "count", int, what, 1, 1)
    first = check.typed(raw, "first_id", int, what, 1, 0)
    stage.ids = list(range(first, first + count))


def load_workflow(path, overrides=()):
    """Read, override and check a workflow file (SpecError, a ConfigurationError, for bad
    YAML or overrides; other problems are in ``problems``, raised by ``resolve``)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read workflow file '{path}': {exc.strerror}") from None
    data = load_yaml(text, path)
    apply_overrides(data, overrides, path)
    return parse_workflow(data, path)
