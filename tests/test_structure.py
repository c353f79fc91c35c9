"""The package's structure rules, checked on its source (CI keeps them; see docs/architecture.rst).

- Imports sit at the top of modules: no ``import`` statement inside a function, and no dynamic
  import except the CLI's dispatch (which keeps ``samprompt --help`` fast).
- No function is longer than 60 lines.
- The import-linter contract in pyproject.toml (layers that point down, no cycles) is kept.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "samprompt"
#: (module, function) pairs allowed to import at run time: the CLI's dispatch to the command
#: implementations, and the package root's PEP 562 resolver of its public names (both keep
#: ``import samprompt`` and ``samprompt --help`` free of PyTorch).
LAZY_IMPORTS_ALLOWED = {("cli.py", "main"), ("__init__.py", "__getattr__")}
MAX_FUNCTION_LINES = 60


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _is_dynamic_import(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def function_level_imports(root: Path) -> list[str]:
    """``module:function:line`` of every import made inside a function under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = str(path.relative_to(root))
        for function in _functions(ast.parse(path.read_text())):
            if (module, function.name) in LAZY_IMPORTS_ALLOWED:
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import | ast.ImportFrom) or _is_dynamic_import(node):
                    found.append(f"{module}:{function.name}:{node.lineno}")
    return found


def long_functions(root: Path, limit: int) -> list[str]:
    """``module:function (lines)`` of every function longer than ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for function in _functions(ast.parse(path.read_text())):
            lines = (function.end_lineno or function.lineno) - function.lineno + 1
            if lines > limit:
                found.append(f"{path.relative_to(root)}:{function.name} ({lines})")
    return found


def test_no_module_imports_inside_a_function() -> None:
    assert function_level_imports(PACKAGE) == []


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        "import importlib\n\ndef f():\n    import os\n    return os\n\n"
        "def g():\n    return importlib.import_module('json')\n\n"
        "def h():\n" + "    x = 1\n" * 70
    )
    assert function_level_imports(tmp_path) == ["mod.py:f:4", "mod.py:g:8"]
    assert long_functions(tmp_path, MAX_FUNCTION_LINES) == ["mod.py:h (71)"]


def test_no_function_is_longer_than_a_screen() -> None:
    assert long_functions(PACKAGE, MAX_FUNCTION_LINES) == []


LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed")
def test_layers_point_down_and_no_cycles() -> None:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=PACKAGE.parents[1],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
