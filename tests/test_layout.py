"""The house rules of the source tree, checked instead of hoped for (import-linter checks the layers).

- no private name (leading underscore) is imported or read across modules, tests included;
- no module of the package is longer than MAX_LINES;
- no function body exists twice (one home per helper).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "splicebench"
MAX_LINES = 600
PY_FILES = sorted([*PKG.rglob("*.py"), *(REPO / "tests").glob("*.py"), *(REPO / "bench").glob("*.py"),
                   REPO / "tasks.py"])


def _module_name(path: Path) -> str | None:
    if PKG in path.parents:
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return None


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The module an ImportFrom names, relative imports resolved against path's package."""
    if not node.level:
        return node.module or ""
    here = _module_name(path) or ""
    pkg = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    base = pkg[: len(pkg) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(path: Path) -> list[str]:
    """'file:line name' for each private name of another splicebench module used in path."""
    tree = ast.parse(path.read_text(), str(path))
    own = _module_name(path)
    shown = path.relative_to(REPO) if REPO in path.parents else path
    modules: dict[str, str] = {}  # local name -> splicebench module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = _absolute(node, path)
            if not mod.startswith("splicebench"):
                continue
            for a in node.names:
                target = f"{mod}.{a.name}"
                if a.name.startswith("_") and not a.name.startswith("__") and mod != own:
                    found.append(f"{shown}:{node.lineno} {target}")
                modules[a.asname or a.name] = target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("splicebench"):
                    modules[a.asname or a.name.split(".")[0]] = a.asname and a.name or "splicebench"
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith("_")
                and not node.attr.startswith("__") and modules[node.value.id] != own):
            found.append(f"{shown}:{node.lineno} {modules[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module_line():
    found = [u for p in PY_FILES for u in private_uses(p)]
    assert found == [], "make these public in their one home:\n" + "\n".join(found)


def test_the_private_name_check_finds_what_it_should(tmp_path):
    p = tmp_path / "t.py"
    p.write_text("from splicebench.hosts import base as b\nfrom splicebench.errors import _x\nb._y()\nb.z()\n"
                 "import os\nos._exit\n")
    assert [u.split(" ")[1] for u in private_uses(p)] == ["splicebench.errors._x", "splicebench.hosts.base._y"]


def test_no_module_is_overgrown():
    long = {str(p.relative_to(REPO)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these modules (at most {MAX_LINES} lines each): {long}"


def _bodies(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and len(node.body) >= 3:
            body = node.body[1:] if ast.get_docstring(node) else node.body
            yield ast.dump(ast.Module(body=body, type_ignores=[]), annotate_fields=False), node


def test_no_function_body_exists_twice():
    seen: dict[str, str] = {}
    twice = []
    for p in sorted(PKG.rglob("*.py")):
        for dump, node in _bodies(p):
            where = f"{p.relative_to(REPO)}:{node.lineno} {node.name}"
            if dump in seen:
                twice.append(f"{where} == {seen[dump]}")
            seen.setdefault(dump, where)
    assert twice == [], "one home per helper:\n" + "\n".join(twice)
