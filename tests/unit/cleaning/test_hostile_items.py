"""The shipped hostile items through the screen: each is redacted or quarantined as it says."""

from __future__ import annotations

from collections import Counter

import pytest

from twinloop.cleaning.config import CleaningConfig
from twinloop.cleaning.examples import CandidateExample
from twinloop.cleaning.pipeline import clean, screen
from twinloop.testing.hostile import HostileItem, leaks, load_hostile_items

ITEMS = load_hostile_items()


def _candidate(item: HostileItem) -> CandidateExample:
    return CandidateExample(
        id=item.id,
        domain="fin",
        question=item.question,
        answer=item.answer,
        source=item.id,
        category=item.kind,
        extra=item.paraphrases,
    )


def _texts(example: CandidateExample) -> list[str]:
    return [example.question, example.answer, *example.extra]


def test_the_set_is_large_and_varied() -> None:
    kinds = Counter(item.kind for item in ITEMS)
    assert len(ITEMS) >= 40
    assert len({item.id for item in ITEMS}) == len(ITEMS)
    assert {"injection", "poisoning", "pii", "oversize", "unicode"} <= set(kinds)
    assert all(item.expect in ("redacted", "quarantined") for item in ITEMS)
    assert all(item.rule for item in ITEMS if item.expect == "quarantined")
    assert all(item.placeholders and item.absent for item in ITEMS if item.expect == "redacted")


@pytest.mark.parametrize("item", ITEMS, ids=[item.id for item in ITEMS])
def test_each_hostile_item_gets_what_it_must(item: HostileItem) -> None:
    screened = screen(_candidate(item))

    if item.expect == "quarantined":
        assert screened.rule == item.rule, (item.note, screened.reason)
    else:
        assert screened.rule is None, (item.note, screened.reason)
        text = " ".join(_texts(screened.example))
        for placeholder in item.placeholders:
            assert placeholder in text, (item.note, text)
    for absent in item.absent:
        for text in _texts(screened.example):
            assert not leaks(text, absent), (item.note, absent, text)


def test_the_whole_set_in_one_batch_keeps_only_the_redacted_ones() -> None:
    config = CleaningConfig(max_share_per_source=1.0, max_share_per_category=1.0)
    result = clean([_candidate(item) for item in ITEMS], config)

    by_id = {item.id: item for item in ITEMS}
    assert {ex.id for ex in result.accepted} <= {i.id for i in ITEMS if i.expect == "redacted"}
    rules = {q.example.id: q.rule for q in result.quarantined}
    for item in ITEMS:
        if item.expect == "quarantined":
            assert rules[item.id] == item.rule, item.id
        elif item.id in rules:  # many PII items read the same once redacted
            assert rules[item.id] == "duplicate", item.id
    for example in [*result.accepted, *(q.example for q in result.quarantined)]:
        for absent in by_id[example.id].absent:
            assert not any(leaks(text, absent) for text in _texts(example)), example.id
    assert result.counts["quarantine.injection"] == sum(item.rule == "injection" for item in ITEMS)
    for kind in ("email", "iban", "card", "ssn", "ip", "phone"):
        assert result.counts[f"redacted.{kind}"] > 0, kind
