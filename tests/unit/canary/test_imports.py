"""The canary core stays pure: the standard library, numpy/scipy and twinloop's core only.

The service around it (repository, service, watcher, state, schemas) may use the database and
the release controller; the core modules below may not."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import twinloop.canary

PURE = ("__init__", "assignment", "statistics", "pairs", "decision")
ALLOWED = {"numpy", "scipy", "twinloop.settings", "twinloop.errors"} | {
    f"twinloop.canary.{name}" for name in PURE[1:]
}


def test_the_canary_package_imports_nothing_else_of_twinloop() -> None:
    package = Path(twinloop.canary.__file__).parent
    imported = {
        name
        for path in (package / f"{name}.py" for name in PURE)
        for node in ast.walk(ast.parse(path.read_text()))
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import)
            else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        )
    }  # fmt: skip

    def allowed(name: str) -> bool:
        top = name.split(".")[0]
        return top in sys.stdlib_module_names or any(
            name == a or name.startswith(f"{a}.") for a in ALLOWED
        )

    assert {"scipy.stats", "twinloop.settings", "twinloop.errors"} <= imported
    assert sorted(n for n in imported if not allowed(n)) == []
