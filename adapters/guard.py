"""The forgetting guard: KL(adapted ‖ base) over replay answers, against log-probabilities of
the base model computed once.

Both training stages (SFT in `training.py`, DPO in `preference.py`) add it to their loss, so
a preference stage cannot undo what the guard kept during SFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adapters.tokens import Encoded, answer_logits

if TYPE_CHECKING:
    import torch

_GUARD_BATCH = 8  # replay items per forward pass when the base log-probs are computed


@dataclass(frozen=True)
class Guarded:
    """A replay item and the base model's log-probabilities at its answer tokens."""

    encoded: Encoded
    base_log_probs: torch.Tensor  # [answer tokens, vocabulary], float16, on the CPU


def with_base_log_probs(model: Any, items: list[Encoded], pad_id: int) -> list[Guarded]:
    """The base model's next-token log-probabilities over each replay answer, computed once.

    The KL guard needs them at every step; computing them here, before any adapter exists,
    replaces one forward pass per step (and per adapter of the pass) with one pass over the
    replay set. Kept as float16 on the CPU (about 0.1 MB per answer token with a 49k
    vocabulary): the terms that matter are those where the adapted model puts its mass,
    whose log-probabilities are near 0 and keep their precision.
    """
    import torch
    import torch.nn.functional as F

    out: list[Guarded] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), _GUARD_BATCH):
            batch = items[start : start + _GUARD_BATCH]
            logits, _ = answer_logits(model, batch, pad_id)
            log_probs = F.log_softmax(logits, -1).to(device="cpu", dtype=torch.float16)
            counts = [e.answer_tokens for e in batch]
            for encoded, chunk in zip(batch, torch.split(log_probs, counts), strict=True):
                out.append(Guarded(encoded=encoded, base_log_probs=chunk))
    model.train()
    return out


def kl_to_base(model: Any, batch: list[Guarded], pad_id: int) -> torch.Tensor:
    """KL(adapted ‖ base), averaged over the positions that predict answer tokens.

    Measures how much the adapter changed the model's next-token distribution where the base
    model answered on its own; 0 means the adapter left those answers alone.
    """
    import torch
    import torch.nn.functional as F

    logits, _ = answer_logits(model, [g.encoded for g in batch], pad_id)
    adapted = F.log_softmax(logits, -1)
    base = torch.cat([g.base_log_probs for g in batch]).to(adapted.device).float()
    return (adapted.exp() * (adapted - base)).sum(-1).mean()
