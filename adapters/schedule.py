"""The learning-rate schedule: linear warmup, then constant or cosine decay to zero.

Constant without warmup is the default: it is what the CPU defaults (lr 1e-3, a few dozen
steps) were measured with, and a cosine decay over so few steps spends half of them at a
fraction of the rate. Warmup and cosine are for longer GPU runs with larger batches.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

LrSchedule = Literal["constant", "cosine"]


def lr_factor(step: int, total: int, *, warmup: int, schedule: LrSchedule) -> float:
    """The multiple of the peak learning rate used for optimizer step `step` (0-based) of
    `total`: rising linearly over `warmup` steps (never reaching 0), then held or decayed."""
    if warmup > 0 and step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    decay_steps = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def scheduler(
    optimizer: torch.optim.Optimizer, total: int, *, warmup: int, schedule: LrSchedule
) -> Any:
    """A `LambdaLR` over `lr_factor`; step it once per optimizer step."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup=warmup, schedule=schedule)
    )
