"""The test suite's own layout (tests/README.md): folders mirror ``src/batchrl/``, every folder is a package,
and no test module imports another test module (shared helpers live in tests/support/ and tests/fakes/)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "src" / "batchrl"
#: Folders that hold helpers or data, not tests of a batchrl subpackage.
HELPERS = {"support", "fakes", "resources"}
#: Top-level test modules that test no single module of batchrl: repository artifacts and whole-package checks.
TOP_LEVEL = {"test_images.py", "test_manifests.py", "test_import_graph.py", "test_layout.py"}


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _imported(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names += [f"{base}.{alias.name}" if base else alias.name for alias in node.names]
    return names


def test_no_module_imports_a_test_module():
    offenders = [f"{path.relative_to(TESTS)}: {name}" for path in _modules()
                 for name in _imported(ast.parse(path.read_text(), str(path)))
                 if any(part.startswith("test_") or part == "conftest" for part in name.split("."))]
    assert offenders == [], "move shared helpers to tests/support/ (or a conftest fixture):\n" + "\n".join(offenders)


def test_folders_mirror_the_package_and_are_packages():
    folders = sorted({p.parent for p in _modules()} - {TESTS})
    assert folders, "no test folders found"
    for folder in folders:
        top = folder.relative_to(TESTS).parts[0]
        assert top in HELPERS or (PACKAGE / top / "__init__.py").exists(), \
            f"tests/{top}/ mirrors no subpackage of src/batchrl/ (see tests/README.md)"
        assert (folder / "__init__.py").exists(), f"{folder.relative_to(TESTS)} needs an __init__.py"
    assert not [p.name for p in (TESTS / "support").glob("test_*.py")] + \
        [p.name for p in (TESTS / "fakes").glob("test_*.py")], "helpers must not be named test_*.py"


def test_top_level_tests_are_of_top_level_modules():
    """``tests/test_<name>.py`` tests ``src/batchrl/<name>.py``; a subpackage's tests go in its folder."""
    misplaced = [p.name for p in TESTS.glob("test_*.py")
                 if p.name not in TOP_LEVEL and not (PACKAGE / f"{p.stem.removeprefix('test_')}.py").exists()]
    assert misplaced == [], f"move into the folder of the subpackage they test (tests/README.md): {misplaced}"


def test_the_check_sees_a_cross_import():
    tree = ast.parse("from tests.training.test_dqn import hand_batch\nimport test_timeline\n")
    assert _imported(tree) == ["tests.training.test_dqn.hand_batch", "test_timeline"]


def test_no_long_function_without_a_stated_reason():
    """Issue 18: no function in src/ over 80 lines unless its docstring says why ("Long because ...")."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > 80 and "Long because" not in (ast.get_docstring(node) or ""):
                    unexplained.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not unexplained, unexplained
