"""Growing an adapter from an earlier one: its LoRA weights as the start, and a guard toward it.

A continual job (`AdapterJob.grow_from`) starts from the LoRA weights of a previous adapter of
its domain (the one Active serves) instead of PEFT's fresh initialisation (A random, B zero,
which is the base model exactly). The previous adapter's files are read only after their
sha256 is checked again here (`verify_adapter`), just before the weights are loaded: what the
new adapter grows from is exactly what was registered and served.

**The guard: KL to the base *and* to the previous adapter.** The loss of a continual job is

    sft + kl_weight * KL(new ‖ base) + grow_from.kl_weight * KL(new ‖ previous)

over the same replay answers. Why both, not the previous adapter instead of the base:

* KL to the previous adapter alone makes each cycle's reference the last cycle's model, so
  the drift from the base compounds over cycles with nothing pulling general answers back;
  the base term bounds it (as it does for an adapter trained from the base).
* KL to the base alone would pull the new adapter back from what the previous one learned
  wherever the replay prompts touch it (the QA suites' training questions are in the replay
  set, and the previous adapter changed its answers there on purpose); the previous term
  holds those answers where they were.

Both terms compare the same forward pass of the new model with two fixed distributions, and
`a·KL(p‖q₁) + b·KL(p‖q₂) = (a+b)·KL(p‖r) - (a+b)·log Z` with `r ∝ q₁^(a/(a+b)) · q₂^(b/(a+b))`
(Z does not depend on p). So the two reference distributions are merged once, before training,
into one normalised geometric mixture `r` that replaces the base log-probabilities of the
replay set, and the job trains with weight `a+b`: the gradients are those of the two terms,
at no extra cost per step and no extra memory. The loss it reports as `kl_loss` is KL to `r`.
The previous adapter's log-probabilities are computed like the base's (`training.
_with_base_log_probs`), once, with the previous weights loaded and before the first step.

torch, safetensors and PEFT are imported inside the functions, so importing this module is
cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.files import InvalidAdapterError, read_adapter_config, verify_adapter

if TYPE_CHECKING:
    import torch

    from adapters.config import AdapterTrainingConfig
    from adapters.guard import Guarded

WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class GrowFrom:
    """The adapter a job starts from: a local copy, the sha256 it must still hash to, and the
    weight of KL(new ‖ this adapter) over replay (0: start from it, guard toward the base
    only)."""

    path: Path
    sha256: str
    kl_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.kl_weight < 0:
            raise ValueError("grow_from.kl_weight must be >= 0")


def incompatibility(folder: Path, cfg: AdapterTrainingConfig) -> str | None:
    """Why a job with `cfg` cannot start from the adapter in `folder`, or None if it can.

    Its LoRA must have the shape `cfg` trains (rank, alpha, target modules): the weights are
    copied tensor for tensor, and a different alpha would rescale what they do.
    """
    try:
        config = read_adapter_config(folder)
    except InvalidAdapterError as e:
        return e.message
    if not (folder / WEIGHTS_FILE).is_file():
        return f"it has no {WEIGHTS_FILE} (only safetensors weights are read)"
    wanted = tuple(sorted(cfg.target_modules))
    targets = config.target_modules
    have = tuple(sorted(targets)) if isinstance(targets, tuple) else targets
    if config.rank_pattern or (config.r, config.lora_alpha, have) != (cfg.rank, cfg.alpha, wanted):
        return (
            f"its LoRA (r={config.r}, alpha={config.lora_alpha}, targets {have}, rank pattern "
            f"{dict(config.rank_pattern)}) differs from the one trained now (r={cfg.rank}, "
            f"alpha={cfg.alpha}, targets {wanted})"
        )
    return None


def load_grown_from(model: Any, start: GrowFrom, cfg: AdapterTrainingConfig) -> None:
    """Overwrite the fresh LoRA weights of the PEFT `model` with those of `start`, verified.

    Raises AdapterIntegrityError when the files no longer hash to `start.sha256`, and
    InvalidAdapterError when they do not fit `cfg` or do not cover every LoRA tensor.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    verify_adapter(start.path, start.sha256)
    reason = incompatibility(start.path, cfg)
    if reason is not None:
        raise InvalidAdapterError(f"cannot grow from the adapter at {start.path}: {reason}")
    weights = load_file(str(start.path / WEIGHTS_FILE))
    result: Any = set_peft_model_state_dict(model, weights)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing or not weights:
        raise InvalidAdapterError(
            f"the adapter at {start.path} does not match the model's LoRA layers: "
            f"{len(missing)} LoRA tensors missing, {len(result.unexpected_keys)} unexpected"
        )


def mix_log_probs(
    base: torch.Tensor, previous: torch.Tensor, base_weight: float, previous_weight: float
) -> torch.Tensor:
    """log r, r ∝ base^w · previous^(1-w), w = base_weight / (sum): the one reference whose
    KL, weighted by the sum, has the gradients of both weighted KL terms (module docstring)."""
    import torch.nn.functional as F

    total = base_weight + previous_weight
    if total <= 0:
        raise ValueError("at least one guard weight must be > 0")
    w = base_weight / total
    return F.log_softmax(w * base.float() + (1 - w) * previous.float(), dim=-1)


def guard_toward_previous(
    model: Any, guard: list[Guarded], start: GrowFrom, cfg: AdapterTrainingConfig, pad_id: int
) -> tuple[list[Guarded], float]:
    """The replay guard of a job grown from `start`, and the weight it trains with.

    Called with the previous weights loaded into `model`. Without a weight toward the
    previous adapter the base guard is kept as it is.
    """
    from dataclasses import replace

    import torch

    from adapters.guard import with_base_log_probs

    if start.kl_weight == 0 or not guard:
        return (guard if cfg.kl_weight > 0 else []), cfg.kl_weight
    previous = with_base_log_probs(model, [g.encoded for g in guard], pad_id)
    mixed = [
        replace(
            g,
            base_log_probs=mix_log_probs(
                g.base_log_probs, p.base_log_probs, cfg.kl_weight, start.kl_weight
            ).to(torch.float16),
        )
        for g, p in zip(guard, previous, strict=True)
    ]
    return mixed, cfg.kl_weight + start.kl_weight
