"""How one LoRA adapter is trained: `AdapterTrainingConfig`, every field with its help.

Defaults are the values measured on SmolLM2-135M on two CPU cores; the preference (DPO)
fields' defaults come from `bench/preference.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from adapters.device import DeviceSetting, DtypeSetting
from adapters.schedule import LrSchedule


@dataclass(frozen=True)
class AdapterTrainingConfig:
    """How one LoRA adapter is trained. Defaults are the values measured on SmolLM2-135M."""

    rank: int = field(default=16, metadata={"help": "LoRA rank r of the A/B matrices."})
    alpha: int = field(
        default=32, metadata={"help": "LoRA alpha; the update is scaled by alpha / rank."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata={"help": "Linear layers that get a LoRA (default: every linear layer)."},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    epochs: int = field(
        default=8,
        metadata={
            "help": "Passes over the examples: a small set must be seen several times to be "
            "learned. Capped by step_budget, so a large set gets fewer passes (at least one)."
        },
    )
    batch_size: int = field(default=4, metadata={"help": "New examples per step."})
    replay_batch_size: int = field(
        default=4,
        metadata={"help": "Replay items per step in the KL term (more: a steadier guard)."},
    )
    max_length: int = field(
        default=256, metadata={"help": "Tokens per formatted example; longer ones are cut."}
    )
    kl_weight: float = field(
        default=10.0,
        metadata={
            "help": "Weight of KL(adapted || base) on replay answers; 0 disables the "
            "forgetting guard."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed for LoRA init and batch order (same seed, same run)."}
    )
    step_budget: int = field(
        default=120,
        metadata={
            "help": "Repeated passes stop at this many steps; the first pass always completes. "
            "So steps scale with the data: a handful of examples takes a handful of steps."
        },
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "If set, exactly this many steps (cycling through the examples), "
            "overriding epochs."
        },
    )

    gradient_accumulation: int = field(
        default=1,
        metadata={
            "help": "Micro-batches of batch_size whose gradients are summed into one optimizer "
            "step (a larger effective batch without the memory; 1 on CPU, as measured)."
        },
    )
    warmup_steps: int = field(
        default=0, metadata={"help": "Optimizer steps of linear learning-rate warmup."}
    )
    lr_schedule: LrSchedule = field(
        default="constant",
        metadata={"help": "After warmup: constant (the measured CPU default) or cosine to 0."},
    )
    device: DeviceSetting = field(
        default="auto", metadata={"help": "auto (CUDA when present, else CPU), cpu or cuda."}
    )
    dtype: DtypeSetting = field(
        default="auto",
        metadata={"help": "Base weights' dtype: auto (bfloat16 on a GPU with it, else float32)."},
    )
    dpo_learning_rate: float = field(
        default=1e-4,
        metadata={
            "help": "AdamW learning rate of the preference (DPO) stage after SFT "
            "(bench/preference.py: 1e-4 the highest that kept the general holdout)."
        },
    )
    dpo_beta: float = field(
        default=0.1,
        metadata={
            "help": "DPO beta: how strongly the implicit reward is scaled (a higher "
            "beta keeps the policy closer to the SFT reference)."
        },
    )
    dpo_steps: int = field(
        default=8, metadata={"help": "Optimizer steps of the preference stage (0: no DPO)."}
    )
    dpo_batch_size: int = field(default=4, metadata={"help": "Preference pairs per step."})

    def __post_init__(self) -> None:
        if min(self.rank, self.batch_size, self.replay_batch_size, self.epochs) < 1:
            raise ValueError("rank, batch sizes and epochs must be >= 1")
        if self.max_length < 2:
            raise ValueError("max_length must be >= 2")
        if self.kl_weight < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("kl_weight must be >= 0 and dropout in [0, 1)")
        if self.step_budget < 1:
            raise ValueError("step_budget must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 when set")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")
        if self.gradient_accumulation < 1 or self.warmup_steps < 0:
            raise ValueError("gradient_accumulation must be >= 1 and warmup_steps >= 0")
        if self.dpo_learning_rate <= 0 or self.dpo_beta <= 0:
            raise ValueError("dpo_learning_rate and dpo_beta must be > 0")
        if self.dpo_steps < 0 or self.dpo_batch_size < 1:
            raise ValueError("dpo_steps must be >= 0 and dpo_batch_size >= 1")

    def total_steps(self, examples: int) -> int:
        """Optimizer steps a run over `examples` takes: `max_steps` if set, else `epochs`
        passes but no more than `step_budget` steps, and never less than one whole pass (a
        step sees `batch_size * gradient_accumulation` examples)."""
        if self.max_steps is not None:
            return self.max_steps
        one_pass = math.ceil(examples / (self.batch_size * self.gradient_accumulation))
        return max(one_pass, min(self.epochs * one_pass, self.step_budget))
