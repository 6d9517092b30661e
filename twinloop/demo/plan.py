"""How big the demo is: the full story, or `--fast` (fewer facts, fewer steps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _over_trained(*, epochs: int, step_budget: int) -> dict[str, Any]:
    """The deliberately bad update: 10x the learning rate and the KL guard off, for many
    passes — a LoRA that memorises its few facts and forgets everything around them. One
    QA round: its corrections would not save it, and the demo need not wait for them."""
    return {
        "learning_rate": 1e-2,
        "kl_weight": 0.0,
        "epochs": epochs,
        "step_budget": step_budget,
        "max_rounds": 1,
    }


@dataclass(frozen=True)
class DemoPlan:
    """Sizes and pacing of one demo run."""

    good_facts: int = 6  # facts taught and promoted
    bad_facts: int = 2  # facts the over-trained update learns
    max_tokens: int = 32  # per answer: enough for every fact's answer sentence
    canary_percent: float = 50.0
    canary_min_requests: int = 100
    canary_max_duration_s: float = 900.0
    users: int = 4  # concurrent simulated users' request loops
    population: int = 200  # distinct user ids: arms are sticky per id
    user_max_tokens: int = 24
    good_overrides: dict[str, Any] = field(default_factory=dict)
    bad_overrides: dict[str, Any] = field(
        default_factory=lambda: _over_trained(epochs=30, step_budget=60)
    )
    poll_s: float = 3.0
    cycle_timeout_s: float = 3600.0
    # A trainer claims a requested cycle within its poll (2 s) unless it is still warming its
    # replay set after starting (minutes on 2 cores, the first time); longer: none runs.
    queued_timeout_s: float = 600.0

    @classmethod
    def full(cls) -> DemoPlan:
        return cls()

    @classmethod
    def fast(cls) -> DemoPlan:
        """Two facts (6 corrections: 2 steps a pass, 16 steps), one bad fact over-trained for
        12 steps (measured: Shadow's QA overall 0.20 against the gate's 0.70, its general
        holdout 0.10; 24 steps scored 0.00 and took 38 s longer), a shorter canary deadline."""
        return cls(
            good_facts=2,
            bad_facts=1,
            canary_max_duration_s=480.0,
            bad_overrides=_over_trained(epochs=12, step_budget=12),
            cycle_timeout_s=1800.0,
        )
