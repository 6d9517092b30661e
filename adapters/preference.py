"""Preference training (DPO) on (chosen, rejected) pairs, run on the adapter SFT just trained.

A correction is a pair: the user's answer is *chosen*, the answer they corrected *rejected*.
SFT teaches the chosen one; this stage then makes the rejected one less likely than the
chosen one, which SFT alone does not: it raises the chosen answer and leaves the rejected
one wherever it was.

**The loss** (Rafailov et al. 2023, "Direct Preference Optimization"), per pair:

    dpo = -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))

with `log pi(x)` the policy's summed log-probability of answer `x` to the pair's question,
`ref` the reference policy. `beta * (...)` is the pair's *reward margin*: positive when the
policy moved the chosen answer up relative to the rejected one. Each step minimises
`dpo + kl_weight * kl`, where `kl` is the same forgetting guard as in SFT (KL to the base
model over replay answers, `guard.py`), so the preference stage cannot spend what SFT kept.

**The reference is the SFT'd adapter, frozen.** Its summed log-probabilities of every pair
are computed once, before the first DPO step, with no gradients: a scalar per answer, so no
second copy of the model is held and no reference forward runs per step. The alternative,
the base model through `disable_adapter()`, would measure the margin from before SFT: the
chosen answer (which SFT just taught) then starts far ahead, the loss is near zero from the
first step, and the stage learns almost nothing from the pair — while its KL would pull
toward the base, which the guard already does where it should (replay, not the pairs).
SFT-then-DPO against the SFT model is also the recipe the DPO paper and TRL's docs use.

**Why not TRL's `DPOTrainer`.** The forgetting guard must be in the same loss as the DPO
term, on a different batch (replay) every step; `DPOTrainer` would need its `compute_loss`
overridden and a second dataset fed through its collator, and with PEFT its default
reference is the adapter-disabled base (see above). One loop, sharing the SFT loop's
device, dtype, accumulation and schedule, is shorter; TRL is not a dependency of this
project.

**What is reported** (`PreferenceReport`): pairs trained on and held out, the mean reward
margin and its accuracy (share of pairs with a positive margin) on the trained pairs after
the stage, and on held-out pairs — never trained on by this stage — the share where the
adapter prefers the chosen answer (higher mean log-probability per answer token, so a short
correction and a long rejected answer compare fairly), before (the SFT adapter) and after.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.config import AdapterTrainingConfig
from adapters.guard import Guarded, kl_to_base
from adapters.loading import model_and_tokenizer
from adapters.schedule import scheduler
from adapters.tokens import Encoded, answer_logits, batches, encode, pad_token_id

if TYPE_CHECKING:
    import torch

_SCORE_BATCH = 8  # pairs per forward pass when log-probabilities are only measured


@dataclass(frozen=True)
class PreferencePair:
    """A question with the answer to prefer and the answer to move away from."""

    question: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class PairScore:
    """An adapter's log-probabilities of a pair's two answers: summed over the answer's
    tokens (what DPO compares) and per token (what the held-out accuracy compares)."""

    chosen: float
    rejected: float
    chosen_per_token: float
    rejected_per_token: float

    @property
    def prefers_chosen(self) -> bool:
        return self.chosen_per_token > self.rejected_per_token


@dataclass(frozen=True)
class PreferenceReport:
    """How a preference stage went (see the module docstring for each figure); `loss` is
    the last step's, the DPO term plus the weighted KL guard."""

    pairs: int
    heldout_pairs: int
    steps: int
    loss: float
    reward_margin: float
    reward_accuracy: float
    heldout_accuracy: float | None
    heldout_accuracy_sft: float | None
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class _EncodedPair:
    chosen: Encoded
    rejected: Encoded


# (step, total, loss) after each optimizer step of the stage
StageStep = Callable[[int, int, float], None]


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean DPO loss of a batch of pairs, and each pair's reward margin (detached)."""
    import torch.nn.functional as F

    margins = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margins).mean(), margins.detach()


def train_preference(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    heldout: Sequence[PreferencePair],
    guard: list[Guarded],
    cfg: AdapterTrainingConfig,
    *,
    on_step: StageStep | None = None,
) -> PreferenceReport:
    """Run the DPO stage on `model` (a PEFT model fresh from SFT) in place."""
    import torch

    started = time.perf_counter()
    pad_id = pad_token_id(tokenizer)
    train = [_encode_pair(tokenizer, p, cfg.max_length) for p in pairs]
    held = [_encode_pair(tokenizer, p, cfg.max_length) for p in heldout]
    ref = _scores(model, train, pad_id)
    held_before = _scores(model, held, pad_id)
    ref_chosen = torch.tensor([s.chosen for s in ref])
    ref_rejected = torch.tensor([s.rejected for s in ref])

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.dpo_learning_rate)
    # No warmup: the stage starts from a trained adapter, not from B = 0.
    lr = scheduler(optimizer, cfg.dpo_steps, warmup=0, schedule=cfg.lr_schedule)
    order = random.Random(cfg.seed + 1)
    pair_batches: Iterator[list[int]] = batches(list(range(len(train))), cfg.dpo_batch_size, order)
    guard_batches = batches(guard, cfg.replay_batch_size, order) if guard else None
    loss_value = 0.0
    for step in range(1, cfg.dpo_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.gradient_accumulation):
            index = next(pair_batches)
            chosen, rejected = _summed_log_probs(model, [train[i] for i in index], pad_id)
            loss, _ = dpo_loss(
                chosen,
                rejected,
                ref_chosen[index].to(chosen.device),
                ref_rejected[index].to(chosen.device),
                cfg.dpo_beta,
            )
            if guard_batches is not None and cfg.kl_weight > 0:
                loss = loss + cfg.kl_weight * kl_to_base(model, next(guard_batches), pad_id)
            torch.autograd.backward(loss / cfg.gradient_accumulation)
            step_loss += float(loss.detach()) / cfg.gradient_accumulation
        optimizer.step()
        lr.step()
        loss_value = step_loss
        if on_step is not None:
            on_step(step, cfg.dpo_steps, loss_value)

    after = _scores(model, train, pad_id)
    margins = [
        cfg.dpo_beta * ((a.chosen - r.chosen) - (a.rejected - r.rejected))
        for a, r in zip(after, ref, strict=True)
    ]
    held_after = _scores(model, held, pad_id)
    model.train()
    return PreferenceReport(
        pairs=len(train),
        heldout_pairs=len(held),
        steps=cfg.dpo_steps,
        loss=loss_value,
        reward_margin=sum(margins) / len(margins) if margins else 0.0,
        reward_accuracy=sum(m > 0 for m in margins) / len(margins) if margins else 0.0,
        heldout_accuracy=_accuracy(held_after),
        heldout_accuracy_sft=_accuracy(held_before),
        seconds=time.perf_counter() - started,
    )


def score_pairs(
    model_dir_or_model: Path | str | Any,
    pairs: Sequence[PreferencePair],
    *,
    adapter_dir: Path | None = None,
    max_length: int = 256,
) -> list[PairScore]:
    """Each pair's log-probabilities under a model folder (float32, offline) or a loaded
    model, with the LoRA in `adapter_dir` applied first if given."""
    model, tokenizer = model_and_tokenizer(model_dir_or_model, adapter_dir)
    encoded = [_encode_pair(tokenizer, p, max_length) for p in pairs]
    return _scores(model, encoded, pad_token_id(tokenizer))


def _accuracy(scores: list[PairScore]) -> float | None:
    return sum(s.prefers_chosen for s in scores) / len(scores) if scores else None


def _encode_pair(tokenizer: Any, pair: PreferencePair, max_length: int) -> _EncodedPair:
    return _EncodedPair(
        chosen=encode(tokenizer, pair.question, pair.chosen, max_length),
        rejected=encode(tokenizer, pair.question, pair.rejected, max_length),
    )


def _summed_log_probs(
    model: Any, batch: list[_EncodedPair], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-probabilities of the batch's chosen and rejected answers, from one
    forward pass over both."""
    import torch

    sequences = [p.chosen for p in batch] + [p.rejected for p in batch]
    logits, targets = answer_logits(model, sequences, pad_id)
    token_log_probs = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    sums = torch.stack(
        [
            chunk.sum()
            for chunk in torch.split(token_log_probs, [e.answer_tokens for e in sequences])
        ]
    )
    return sums[: len(batch)], sums[len(batch) :]


def _scores(model: Any, pairs: list[_EncodedPair], pad_id: int) -> list[PairScore]:
    import torch

    was_training = bool(model.training)
    model.eval()
    out: list[PairScore] = []
    try:
        with torch.no_grad():
            for start in range(0, len(pairs), _SCORE_BATCH):
                batch = pairs[start : start + _SCORE_BATCH]
                chosen, rejected = _summed_log_probs(model, batch, pad_id)
                for pair, c, r in zip(batch, chosen.tolist(), rejected.tolist(), strict=True):
                    out.append(
                        PairScore(
                            chosen=c,
                            rejected=r,
                            chosen_per_token=c / max(1, pair.chosen.answer_tokens),
                            rejected_per_token=r / max(1, pair.rejected.answer_tokens),
                        )
                    )
    finally:
        model.train(was_training)
    return out
