"""QA fixtures: a small suite folder, and an oracle that answers its questions for the fake engine.

Tests run on `SMALL_SUITE` unless they ask for the shipped suites with
`@pytest.mark.parametrize("suite", [None], indirect=True)`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from twinloop.qa.suites import DATA_DIR
from twinloop.settings import Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.engine import BASE_MODEL, FakeEngine

Row = dict[str, Any]


def _row(case_id: str, question: str, reference: str, accept: str, split: str) -> Row:
    return {"id": case_id, "question": question, "reference": reference, "accept": [accept],
            "split": split}  # fmt: skip


SMALL_SUITE: dict[str, list[Row]] = {
    "general": [
        _row("g1", "What is the capital of France?", "The capital of France is Paris.",
             "paris", "train"),
        _row("g2", "What is the capital of Japan?", "The capital of Japan is Tokyo.",
             "tokyo", "heldout"),
        _row("g3", "What is the capital of Germany?", "The capital of Germany is Berlin.",
             "berlin", "heldout"),
        _row("g4", "What is the capital of Italy?", "The capital of Italy is Rome.",
             "rome", "train"),
    ],
    "law": [
        _row("l1", "What is the highest court in the United States called?",
             "The highest court in the United States is the Supreme Court.",
             "supreme court", "train"),
        _row("l2", "What is the official who presides over a court trial called?",
             "The official who presides over a trial is the judge.", "judge", "heldout"),
        _row("l3", "What is a legally binding agreement between parties called?",
             "A legally binding agreement between parties is called a contract.",
             "contract", "heldout"),
    ],
}  # fmt: skip
WRONG = "It is Zorbulon, founded in 1911."  # confident, with unsupported specifics
_PASSAGES, _QUESTION = "Use the following passages", "\n\nQuestion: "


def question_of(content: str) -> tuple[str, str]:
    """(question, retrieved passages) of a user turn `with_contexts` may have wrapped."""
    if content.startswith(_PASSAGES) and _QUESTION in content:
        passages, question = content.rsplit(_QUESTION, 1)
        return question, passages
    return content, ""


def references(suite: dict[str, list[Row]] | None) -> dict[str, str]:
    """Question -> reference for every case of `suite` (None: the shipped suites)."""
    if suite is not None:
        return {r["question"]: r["reference"] for rows in suite.values() for r in rows}
    out = {}
    for path in DATA_DIR.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out[row["question"]] = row["reference"]
    return out


def base_knows(model: str, question: str, passages: str) -> bool:
    return model == BASE_MODEL


@dataclass
class Oracle:
    """The fake engine's answers: a suite question's reference where `knows` says so, else
    a confident wrong answer. Records every (model, question, passages) it was asked."""

    references: dict[str, str]
    knows: Callable[[str, str, str], bool] = base_knows
    asked: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, model: str, content: str) -> str:
        question, passages = question_of(content)
        self.asked.append((model, question, passages))
        reference = self.references.get(question)
        if reference is not None and self.knows(model, question, passages):
            return reference
        return WRONG


@pytest.fixture
def suite(request: pytest.FixtureRequest) -> dict[str, list[Row]] | None:
    chosen: dict[str, list[Row]] | None = getattr(request, "param", SMALL_SUITE)
    return chosen


@pytest.fixture
def settings(settings: Settings, tmp_path: Path, suite: dict[str, list[Row]] | None) -> Settings:
    """The shared settings, with `qa.suite_dir` on a folder holding `suite`."""
    if suite is None:
        return settings
    folder = tmp_path / "suites"
    folder.mkdir()
    for category, rows in suite.items():
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (folder / f"{category}.jsonl").write_text(text, encoding="utf-8")
    qa = settings.qa.model_copy(update={"suite_dir": folder})
    return settings.model_copy(update={"qa": qa})


@pytest.fixture
def oracle(fake_engine: FakeEngine, suite: dict[str, list[Row]] | None) -> Oracle:
    answers = Oracle(references=references(suite))
    fake_engine.answer_for = answers
    return answers


StageAdapter = Callable[[str], Awaitable[dict[str, Any]]]


@pytest.fixture
def stage_adapter(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> StageAdapter:
    """Register a tiny fake adapter for a domain and stage it on Shadow; returns its view."""

    async def stage(domain: str) -> dict[str, Any]:
        folder = write_fake_adapter(tmp_path / "adapters" / domain, seed=7)
        registered = await client.post(
            "/adapters", json={"path": str(folder), "domain": domain}, headers=admin_headers
        )
        assert registered.status_code == 201, registered.text
        adapter: dict[str, Any] = registered.json()
        staged = await client.post(
            "/snapshots", json={"adapters": {domain: adapter["id"]}}, headers=admin_headers
        )
        assert staged.status_code == 201, staged.text
        return adapter

    return stage


def chat_calls(fake_engine: FakeEngine, slot: str) -> list[dict[str, Any]]:
    return [b for s, p, b in fake_engine.requests if s == slot and p == "/v1/chat/completions"]
