"""What the demo's steps share: the gateway, the narrator, the plan, and what they found."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twinloop.demo.client import GatewayClient
from twinloop.demo.data import Fact, Question
from twinloop.demo.narrator import Narrator, SummaryRow
from twinloop.demo.plan import DemoPlan


@dataclass
class DemoContext:
    api: GatewayClient  # the admin token: the operator's side of the story
    narrator: Narrator
    plan: DemoPlan
    good: list[Fact]  # taught and promoted
    bad: list[Fact]  # what the over-trained update learns
    general: list[Question]
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # in every id it sends
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    users: GatewayClient | None = None  # a client app's key: the simulated users' side
    users_key_id: str | None = None
    rows: list[SummaryRow] = field(default_factory=list)
    answered: dict[str, dict[str, Any]] = field(default_factory=dict)  # question -> /answer
    right_before: int = 0
    good_cycle: dict[str, Any] | None = None
    promoted_snapshot: str | None = None

    @property
    def asked(self) -> list[str]:
        """The questions users asked first: each fact's first phrasing."""
        return [fact.train_questions[0] for fact in self.good]

    def row(self, step: str, before: str, after: str, seconds: float | None) -> None:
        self.rows.append(SummaryRow(step, before, after, seconds))
