"""The shape the code keeps (ARCHITECTURE.md): small rooms, narrow doors.

These read the source with :mod:`ast`; they check the layout, not behaviour.
A function or class may be longer than the limit when its docstring's last
line starts with ``Long:`` and says why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "functions" / "pop3_ingest"
CLI = REPO_ROOT / "cli" / "pop3_ingest_cli"
FUNCTION_LIMIT = 60
CLASS_LIMIT = 200
HANDLER_MODULE_LIMIT = 120


def _sources() -> Iterator[Path]:
    for root in (PACKAGE, CLI):
        yield from sorted(root.rglob("*.py"))


def _excused(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    doc = ast.get_docstring(node) or ""
    lines = doc.strip().splitlines()
    return bool(lines) and lines[-1].strip().startswith("Long:")


def _too_long() -> list[str]:
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                limit = FUNCTION_LIMIT
            elif isinstance(node, ast.ClassDef):
                limit = CLASS_LIMIT
            else:
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit and not _excused(node):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name} ({length})")
    return found


def test_functions_and_classes_stay_small() -> None:
    assert _too_long() == []


def _private_reaches(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
            continue
        if isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super":
            continue
        yield f"{path.relative_to(REPO_ROOT)}:{node.lineno} {ast.unparse(node)}"


def test_no_code_reaches_into_another_objects_private_attributes() -> None:
    # poplib's internals are used in one module only, the one that owns its socket.
    allowed = {PACKAGE / "pop3" / "connection.py"}
    found = [hit for path in _sources() if path not in allowed for hit in _private_reaches(path)]
    assert found == []


def test_the_fetch_handler_is_thin() -> None:
    lines = (PACKAGE / "handlers" / "fetch.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= HANDLER_MODULE_LIMIT


def test_the_lambda_package_never_imports_the_cli() -> None:
    importers = [
        path.name
        for path in PACKAGE.rglob("*.py")
        if "pop3_ingest_cli" in path.read_text(encoding="utf-8")
    ]
    assert importers == []


def test_the_detector_sees_a_long_function(tmp_path: Path) -> None:
    """The size rule can fail: a made-up long function is caught, an excused one is not."""
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LIMIT))
    tree = ast.parse(f"def long():\n{body}\n")
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    assert (node.end_lineno or 0) - node.lineno + 1 > FUNCTION_LIMIT
    assert not _excused(node)
    excused = ast.parse(f'def long():\n    """Why.\n\n    Long: a table."""\n{body}\n').body[0]
    assert isinstance(excused, ast.FunctionDef)
    assert _excused(excused)
