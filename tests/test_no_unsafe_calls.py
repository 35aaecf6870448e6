"""No eval, exec or pickle on anything from the network or the command line."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pvaflow"


def test_package_never_evaluates_or_unpickles():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("eval", "exec", "compile"):
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}()")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve") for n in names):
                    offenders.append(f"{path.name}:{node.lineno} imports {names}")
    assert not offenders, offenders


def test_package_never_imports_pvapy_framework_code():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("pvapy.hpc", "pvapy.utility")), (path, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith(("pvapy.hpc", "pvapy.utility")), (path, alias.name)


def test_core_does_not_import_processors_or_cli():
    for path in (PACKAGE / "hpc").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.ImportFrom):
                modules = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            for m in modules:
                assert not m.startswith(("pvaflow.processors", "pvaflow.cli", "..processors", "..cli")), \
                    (path, m)
