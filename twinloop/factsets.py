"""Made-up facts and questions with accepted answers: the JSONL format that the demo
(`twinloop/demo/data/`), bench/ and the learning tests (`twinloop/testing/data/`) share.

A fact has the phrasings users are corrected on (`train_questions`) and held-out
paraphrases only QA asks (`test_questions`); a question is a general one the base model
answers right. An answer is right when its lower-cased text contains an `accept` string.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


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


def load_facts(path: Path) -> list[Fact]:
    return [Fact(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def load_questions(path: Path) -> list[Question]:
    return [Question(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def is_right(answer: str, accept: list[str]) -> bool:
    text = answer.lower()
    return any(token in text for token in accept)
