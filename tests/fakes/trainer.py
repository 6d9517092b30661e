"""A fake `AdapterTrainer`: writes a tiny adapter instantly and records what it was asked.

The real one (twinloop/training/peft_trainer.py) is exercised in tests/integration.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.fakes.adapters import write_fake_adapter
from twinloop.training.replay import ReplayItem
from twinloop.training.runner import TrainedAdapter, TrainRequest


class Killed(BaseException):
    """Stands in for SIGKILL: not an `Exception`, so nothing records it on the cycle."""


@dataclass
class FakeAdapterTrainer:
    requests: list[TrainRequest] = field(default_factory=list)
    kill_next: int = 0  # this many coming train() calls die like a killed process
    fail_next: Exception | None = None
    extra_prompts: list[str] = field(default_factory=list)
    guard: list[ReplayItem] = field(
        default_factory=lambda: [ReplayItem("What is 2 + 2?", "2 + 2 is 4.")]
    )

    def general_replay(self, extra_prompts: Sequence[str] = ()) -> list[ReplayItem]:
        self.extra_prompts = list(extra_prompts)
        return list(self.guard)

    def train(self, request: TrainRequest, on_step: Callable[[int, int], None]) -> TrainedAdapter:
        self.requests.append(request)
        if self.kill_next:
            self.kill_next -= 1
            raise Killed
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        for step in (1, 2):
            on_step(step, 2)
        text = "|".join(f"{e.question}={e.answer}" for e in request.examples)
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        write_fake_adapter(request.out_dir, seed=seed)
        return TrainedAdapter(
            path=request.out_dir, steps=2, seconds=0.01, final_loss=0.5, metrics={"steps": 2}
        )
