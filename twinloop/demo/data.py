"""The demo's made-up organisation and the general questions its simulated users ask.

`data/organisation.jsonl`: facts about the Brindlemoor Trust, which does not exist, so the
base model cannot know them; each with three phrasings users ask (and are corrected on)
and two held-out paraphrases that only QA asks. `data/general.jsonl`: general questions
the base model answers right (from the general holdout checked by hand on its greedy
answers). An answer is right when its lower-cased text contains an `accept` string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
ORGANISATION = "the Brindlemoor Trust"


@dataclass(frozen=True)
class Fact:
    id: str
    answer: str
    train_questions: list[str]
    test_questions: list[str]
    accept: list[str]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    accept: list[str]


def load_facts(path: Path = DATA / "organisation.jsonl") -> list[Fact]:
    return [Fact(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def load_general(path: Path = DATA / "general.jsonl") -> list[Question]:
    return [Question(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def is_right(answer: str, accept: list[str]) -> bool:
    text = answer.lower()
    return any(token in text for token in accept)


def handbook(facts: list[Fact]) -> str:
    """The document the demo ingests: the organisation's handbook page, one line per fact."""
    lines = "\n".join(f"- {fact.answer}" for fact in facts)
    return f"Brindlemoor Trust staff handbook, page 1: who we are.\n{lines}\n"
