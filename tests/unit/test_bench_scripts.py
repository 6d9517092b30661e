"""`make bench` works from a fresh checkout: every benchmark script starts (`--help`) when
run as a script from anywhere, and none shadows a package when its folder is put first on
`sys.path` (bench/rag.py once hid the `rag` package, and the overhead bench's gateway did
not start)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if 'if __name__ == "__main__":' in p.read_text())
PACKAGES = {"twinloop", "api", "adapters", "rag", "bench", "tests"}


def test_no_benchmark_is_named_like_a_package() -> None:
    assert SCRIPTS
    assert not {p.stem for p in BENCH.glob("*.py")} & PACKAGES


def test_make_bench_runs_scripts_that_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    named = re.findall(r"bench/(\w+\.py)", recipe)
    assert named and all((BENCH / name) in SCRIPTS for name in named)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_a_benchmark_starts_as_a_script_from_another_folder(script: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script), "--help"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")


def test_the_overhead_bench_refuses_an_embedding_backend_the_gateway_does_not_have(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "gateway_overhead.py"), "--embedding-backend", "int4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "invalid choice: 'int4'" in done.stderr
    assert "onnx-int8" in done.stderr  # the choices are named
