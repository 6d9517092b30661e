"""The made-up facts and the general holdout, for bench/ and the learning tests alike.

`data/made_up_facts.jsonl`: 10 facts about a fictional system, each with three training
phrasings and two held-out paraphrases. `data/general_holdout.jsonl`: 54 general questions
the base model answers correctly (checked by hand on its greedy answers). An answer is right
when its lower-cased text contains one of the item's `accept` strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Fact:
    id: str
    answer: str
    train_questions: list[str]
    test_questions: list[str]
    accept: list[str]


@dataclass(frozen=True)
class HoldoutItem:
    id: str
    question: str
    accept: list[str]


def load_facts(path: Path = DATA / "made_up_facts.jsonl") -> list[Fact]:
    return [Fact(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def load_holdout(path: Path = DATA / "general_holdout.jsonl") -> list[HoldoutItem]:
    return [
        HoldoutItem(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()
    ]


def is_right(answer: str, accept: list[str]) -> bool:
    text = answer.lower()
    return any(token in text for token in accept)


def score(answers: list[str], accepts: list[list[str]]) -> int:
    """How many of `answers` are right, each checked against its own accept list."""
    return sum(is_right(a, accept) for a, accept in zip(answers, accepts, strict=True))
