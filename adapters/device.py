"""Where and in which precision training runs: the device and dtype a setting resolves to.

`auto` means CUDA when torch sees a GPU, else the CPU; and bfloat16 on a GPU that supports
it, else float32. The CPU path stays float32: it is what the defaults were measured on, and
bfloat16 matmuls on CPU are slower there, not faster. The probes are parameters so that the
choice is tested without a GPU; `torch_probes()` gives the real ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

DeviceSetting = Literal["auto", "cpu", "cuda"]
DtypeSetting = Literal["auto", "float32", "bfloat16"]
Device = Literal["cpu", "cuda"]
Dtype = Literal["float32", "bfloat16"]


@dataclass(frozen=True)
class Probes:
    """What the machine offers: a CUDA device, and bfloat16 support on it."""

    cuda_available: Callable[[], bool]
    bf16_supported: Callable[[], bool]


def torch_probes() -> Probes:
    import torch

    return Probes(
        cuda_available=torch.cuda.is_available,
        bf16_supported=lambda: bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
    )


def choose_device(setting: DeviceSetting, probes: Probes) -> Device:
    """The device to train on; `cuda` asked for on a machine without one is an error, not a
    silent fall back to a CPU run a hundred times slower."""
    if setting == "cpu":
        return "cpu"
    if probes.cuda_available():
        return "cuda"
    if setting == "cuda":
        raise ValueError("trainer.device is cuda but torch sees no CUDA device")
    return "cpu"


def choose_dtype(setting: DtypeSetting, device: Device, probes: Probes) -> Dtype:
    """The base model's weights' dtype (LoRA weights stay float32: PEFT upcasts them)."""
    if setting == "float32":
        return "float32"
    supported = device == "cuda" and probes.bf16_supported()
    if setting == "bfloat16":
        if device == "cpu":
            return "bfloat16"  # asked for explicitly: slow, but torch runs it
        if not supported:
            raise ValueError("trainer.dtype is bfloat16 but this GPU does not support it")
        return "bfloat16"
    return "bfloat16" if supported else "float32"
