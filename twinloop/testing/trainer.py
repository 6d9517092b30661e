"""A fake `AdapterTrainer`: writes a tiny adapter instantly and records what it was asked.

The real one (twinloop/training/peft_trainer.py) is exercised in tests/integration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinloop.testing.adapters import write_fake_adapter
from twinloop.training.overrides import TrainingOverrides
from twinloop.training.protocols import ProgressCallback, TrainedAdapter, TrainRequest
from twinloop.training.replay import ReplayItem


class Killed(BaseException):
    """Stands in for SIGKILL: not an `Exception`, so nothing records it on the cycle."""


@dataclass
class FakeAdapterTrainer:
    requests: list[TrainRequest] = field(default_factory=list)
    guards: list[list[ReplayItem]] = field(default_factory=list)  # one per train() call
    overrides: list[TrainingOverrides | None] = field(default_factory=list)  # one per call
    kill_next: int = 0  # this many coming train() calls die like a killed process
    fail_next: Exception | None = None
    extra_prompts: list[str] = field(default_factory=list)
    guard: list[ReplayItem] = field(
        default_factory=lambda: [ReplayItem("What is 2 + 2?", "2 + 2 is 4.")]
    )
    incompatible: str | None = None  # what cannot_grow_from answers
    grown_from_checked: list[Path] = field(default_factory=list)

    def cannot_grow_from(self, folder: Path) -> str | None:
        self.grown_from_checked.append(folder)
        return self.incompatible

    def general_replay(self, extra_prompts: Sequence[str] = ()) -> list[ReplayItem]:
        self.extra_prompts = list(extra_prompts)
        # Like the real one: the general set, then the extra prompts with the base's answers.
        return [*self.guard, *(ReplayItem(q, f"base answer to {q}") for q in extra_prompts)]

    def train(
        self,
        requests: Sequence[TrainRequest],
        guard: Sequence[ReplayItem],
        on_step: ProgressCallback,
        overrides: TrainingOverrides | None = None,
    ) -> dict[str, TrainedAdapter]:
        self.requests.extend(requests)
        self.guards.append(list(guard))
        self.overrides.append(overrides)
        if self.kill_next:
            self.kill_next -= 1
            raise Killed
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        trained = {}
        for request in requests:
            for step in (1, 2):
                on_step(request.domain, step, 2)
            text = "|".join(f"{e.question}={e.answer}" for e in request.examples)
            if request.grow_from is not None:  # a grown adapter differs from a fresh one
                text += f"|grown from {request.grow_from.sha256}"
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            write_fake_adapter(request.out_dir, seed=seed)
            trained[request.domain] = TrainedAdapter(
                path=request.out_dir,
                steps=2,
                seconds=0.01,
                final_loss=0.5,
                metrics={"steps": 2},
                preference=_fake_report(request) if request.pairs else None,
            )
        return trained


def _fake_report(request: TrainRequest) -> dict[str, Any]:
    """A DPO report of the real one's shape (`PreferenceReport.as_dict()`)."""
    return {
        "pairs": len(request.pairs),
        "heldout_pairs": len(request.heldout_pairs),
        "steps": 2,
        "loss": 0.6,
        "reward_margin": 0.25,
        "reward_accuracy": 1.0,
        "heldout_accuracy": 1.0 if request.heldout_pairs else None,
        "heldout_accuracy_sft": 0.5 if request.heldout_pairs else None,
        "seconds": 0.01,
    }
