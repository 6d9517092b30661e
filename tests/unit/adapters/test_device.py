"""The trainer's device, dtype and learning-rate schedule, chosen without a GPU."""

from __future__ import annotations

import itertools
import math

import pytest

from adapters.config import AdapterTrainingConfig
from adapters.device import DeviceSetting, DtypeSetting, Probes, choose_device, choose_dtype
from adapters.schedule import lr_factor


def _machine(*, cuda: bool, bf16: bool = False) -> Probes:
    return Probes(cuda_available=lambda: cuda, bf16_supported=lambda: cuda and bf16)


@pytest.mark.parametrize(
    ("setting", "cuda", "expected"),
    [("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_auto_takes_cuda_when_present_and_cpu_otherwise(
    setting: DeviceSetting, cuda: bool, expected: str
) -> None:
    assert choose_device(setting, _machine(cuda=cuda)) == expected


def test_cuda_asked_for_without_a_gpu_is_refused_not_run_on_the_cpu() -> None:
    with pytest.raises(ValueError, match="no CUDA device"):
        choose_device("cuda", _machine(cuda=False))


@pytest.mark.parametrize(
    ("setting", "device", "bf16", "expected"),
    [
        ("auto", "cuda", True, "bfloat16"),
        ("auto", "cuda", False, "float32"),
        ("auto", "cpu", False, "float32"),  # the CPU path stays as measured
        ("float32", "cuda", True, "float32"),
        ("bfloat16", "cpu", False, "bfloat16"),
        ("bfloat16", "cuda", True, "bfloat16"),
    ],
)
def test_bfloat16_where_the_gpu_supports_it(
    setting: DtypeSetting, device: str, bf16: bool, expected: str
) -> None:
    machine = _machine(cuda=device == "cuda", bf16=bf16)
    assert choose_dtype(setting, "cuda" if device == "cuda" else "cpu", machine) == expected


def test_bfloat16_asked_for_on_a_gpu_without_it_is_refused() -> None:
    with pytest.raises(ValueError, match="does not support"):
        choose_dtype("bfloat16", "cuda", _machine(cuda=True, bf16=False))


def test_the_default_schedule_is_constant_as_measured() -> None:
    factors = [lr_factor(s, 10, warmup=0, schedule="constant") for s in range(10)]
    assert factors == [1.0] * 10


def test_warmup_rises_linearly_then_cosine_decays_to_zero() -> None:
    factors = [lr_factor(s, 12, warmup=2, schedule="cosine") for s in range(13)]
    assert factors[:2] == pytest.approx([1 / 3, 2 / 3])
    assert factors[2] == 1.0
    assert factors[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[12] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[2:]))


def test_accumulation_makes_a_step_see_more_examples() -> None:
    one = AdapterTrainingConfig(epochs=2, step_budget=100, batch_size=4)
    four = AdapterTrainingConfig(epochs=2, step_budget=100, batch_size=4, gradient_accumulation=4)
    assert one.total_steps(32) == 16
    assert four.total_steps(32) == 4


@pytest.mark.parametrize(
    "bad",
    [
        {"gradient_accumulation": 0},
        {"warmup_steps": -1},
        {"dpo_beta": 0.0},
        {"dpo_learning_rate": 0.0},
        {"dpo_steps": -1},
        {"dpo_batch_size": 0},
    ],
)
def test_invalid_training_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AdapterTrainingConfig(**bad)  # type: ignore[arg-type]
