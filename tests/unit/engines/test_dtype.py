"""CPU engines run float32 where the processor has no native bfloat16."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinloop.engines import dtype
from twinloop.engines.dtype import engine_dtype


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return path


@pytest.fixture
def cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtype, "_cpu_build_installed", lambda: True)


@pytest.mark.usefixtures("cpu_build")
def test_auto_is_float32_without_native_bfloat16(tmp_path: Path) -> None:
    assert engine_dtype("auto", cpuinfo=_cpuinfo(tmp_path, "fma")) == "float32"


@pytest.mark.usefixtures("cpu_build")
@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_leaves_vllm_s_default_with_native_bfloat16(tmp_path: Path, flag: str) -> None:
    assert engine_dtype("auto", cpuinfo=_cpuinfo(tmp_path, f"avx512f {flag}")) is None


def test_auto_leaves_a_gpu_build_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtype, "_cpu_build_installed", lambda: False)

    assert engine_dtype("auto", cpuinfo=_cpuinfo(tmp_path, "fma")) is None


def test_an_explicit_dtype_is_passed_as_set(tmp_path: Path) -> None:
    assert engine_dtype("bfloat16", cpuinfo=_cpuinfo(tmp_path, "fma")) == "bfloat16"
