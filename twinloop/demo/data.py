"""The demo's made-up organisation and the general questions its simulated users ask.

`data/organisation.jsonl`: facts about the Brindlemoor Trust, which does not exist, so the
base model cannot know them; each with three phrasings users ask (and are corrected on)
and two held-out paraphrases that only QA asks. `data/general.jsonl`: general questions
the base model answers right (from the general holdout checked by hand on its greedy
answers). An answer is right when its lower-cased text contains an `accept` string.
"""

from __future__ import annotations

from pathlib import Path

from twinloop.factsets import Fact, Question, is_right, load_questions
from twinloop.factsets import load_facts as _load_facts

__all__ = ["Fact", "Question", "handbook", "is_right", "load_facts", "load_general"]

DATA = Path(__file__).resolve().parent / "data"
ORGANISATION = "the Brindlemoor Trust"


def load_facts(path: Path = DATA / "organisation.jsonl") -> list[Fact]:
    return _load_facts(path)


def load_general(path: Path = DATA / "general.jsonl") -> list[Question]:
    return load_questions(path)


def handbook(facts: list[Fact]) -> str:
    """The document the demo ingests: the organisation's handbook page, one line per fact."""
    lines = "\n".join(f"- {fact.answer}" for fact in facts)
    return f"Brindlemoor Trust staff handbook, page 1: who we are.\n{lines}\n"
