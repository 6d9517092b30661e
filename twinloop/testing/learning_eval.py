"""The made-up facts and the general holdout, for bench/ and the learning tests alike.

`data/made_up_facts.jsonl`: 10 facts about a fictional system, each with three training
phrasings and two held-out paraphrases. `data/general_holdout.jsonl`: 54 general questions
the base model answers correctly (checked by hand on its greedy answers). An answer is right
when its lower-cased text contains one of the item's `accept` strings.
"""

from __future__ import annotations

from pathlib import Path

from twinloop.factsets import Fact, is_right, load_questions
from twinloop.factsets import Question as HoldoutItem
from twinloop.factsets import load_facts as _load_facts

__all__ = ["Fact", "HoldoutItem", "is_right", "load_facts", "load_holdout", "score"]

DATA = Path(__file__).resolve().parent / "data"


def load_facts(path: Path = DATA / "made_up_facts.jsonl") -> list[Fact]:
    return _load_facts(path)


def load_holdout(path: Path = DATA / "general_holdout.jsonl") -> list[HoldoutItem]:
    return load_questions(path)


def score(answers: list[str], accepts: list[list[str]]) -> int:
    """How many of `answers` are right, each checked against its own accept list."""
    return sum(is_right(a, accept) for a, accept in zip(answers, accepts, strict=True))
