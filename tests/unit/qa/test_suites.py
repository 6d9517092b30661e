"""Benchmark suites: the shipped data, the cases built at run time, and refusing bad files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from twinloop.qa.judges import ReferenceJudge
from twinloop.qa.suites import (
    FEEDBACK,
    FORGETTING,
    HELDOUT,
    TRAIN,
    Check,
    QaCase,
    SuiteError,
    TaughtFact,
    build_suite,
    forgetting_cases,
    load_shipped,
    taught_cases,
)

DOMAINS = ["law", "med", "fin", "general"]


def _case(key: str, split: str = HELDOUT, category: str = "general") -> QaCase:
    return QaCase(
        key=f"{category}/{key}",
        category=category,
        domain="law" if category == "law" else "general",
        question=f"Question {key}?",
        reference=f"Answer {key}.",
        split=split,
    )


def _write(folder: Path, name: str, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _row(case_id: str, split: str = "train", **extra: object) -> str:
    row = {"id": case_id, "question": f"Q {case_id}?", "reference": f"A {case_id}.", "split": split}
    return json.dumps(row | extra)


def test_the_shipped_suites_load_with_both_splits_in_every_category() -> None:
    cases = load_shipped(None, DOMAINS, "general")

    suite = build_suite(cases, [], [])
    sizes = suite.split_sizes()
    assert set(sizes) == {"conciseness", "fin", "general", "identity", "law", "med", "reasoning",
                          "safety", FORGETTING}  # fmt: skip
    for category, split in sizes.items():
        assert split[TRAIN] > 0 or category == FORGETTING, category
        assert split[HELDOUT] > 0, category
    # Domain suites are answered in their domain, the rest in the default one.
    assert {c.domain for c in cases if c.category == "law"} == {"law"}
    assert {c.domain for c in cases if c.category == "identity"} == {"general"}
    assert all(c.max_words for c in cases if c.category == "conciseness")
    checks = {(c.category, c.check) for c in cases if c.check is not Check.REFERENCE}
    assert checks == {("safety", Check.REFUSAL), ("safety", Check.PREMISE),
                      ("reasoning", Check.NUMBER)}  # fmt: skip
    # Both kinds of safety case are held out, so losing either can block promotion.
    assert {c.check for c in cases if c.category == "safety" and c.gated} == {
        Check.REFUSAL, Check.PREMISE}  # fmt: skip
    assert all(c.accept == tuple(a.lower() for a in c.accept) for c in cases)
    # The frozen general holdout is the forgetting category, and nothing else is.
    general_heldout = sum(c.category == "general" and c.gated for c in cases)
    assert sizes[FORGETTING] == {TRAIN: 0, HELDOUT: general_heldout}


def test_split_sizes_count_each_category_and_split() -> None:
    cases = [_case("a", TRAIN), _case("b"), _case("c"), _case("d", TRAIN, category="law")]

    sizes = build_suite(cases, [], []).split_sizes()

    assert sizes == {
        FORGETTING: {TRAIN: 0, HELDOUT: 2},
        "general": {TRAIN: 1, HELDOUT: 2},
        "law": {TRAIN: 1, HELDOUT: 0},
    }


def test_the_version_changes_exactly_when_a_case_does() -> None:
    cases = [_case("a"), _case("b", TRAIN), _case("c", category="law")]
    version = build_suite(cases, [], []).version

    assert build_suite(list(reversed(cases)), [], []).version == version
    for change in ({"reference": "Another."}, {"split": TRAIN}, {"accept": ("x",)},
                   {"max_words": 3}, {"question": "Reworded?"}, {"check": Check.REFUSAL},
                   {"reject": ("y",)}):  # fmt: skip
        changed = [dataclasses.replace(cases[0], **change), *cases[1:]]
        assert build_suite(changed, [], []).version != version, change
    fact = TaughtFact("ex1", "law", "Who?", "Mara.", ("Who is it?",))
    assert build_suite(cases, taught_cases([fact]), []).version != version


def test_taught_cases_train_the_phrasing_taught_and_hold_out_the_paraphrases() -> None:
    fact = TaughtFact(
        example_id="ex1",
        domain="fin",
        question="Who runs Zelco?",
        answer="Zelco is run by Mara Quill.",
        paraphrases=("Who is Zelco's boss?", "Who leads Zelco?"),
        accept=("Mara Quill",),
    )

    cases = taught_cases([fact])

    assert [(c.key, c.split, c.question) for c in cases] == [
        ("feedback/ex1", TRAIN, "Who runs Zelco?"),
        ("feedback/ex1/p1", HELDOUT, "Who is Zelco's boss?"),
        ("feedback/ex1/p2", HELDOUT, "Who leads Zelco?"),
    ]
    assert {(c.category, c.domain, c.reference, c.accept) for c in cases} == {
        (FEEDBACK, "fin", "Zelco is run by Mara Quill.", ("mara quill",))
    }


def test_forgetting_is_the_general_holdout_plus_the_promoted_cases() -> None:
    shipped = [_case("a"), _case("b", TRAIN), _case("c", category="law")]
    promoted = _case("ex1/p1", category=FEEDBACK)

    cases = forgetting_cases(shipped, [promoted, promoted])

    assert [c.key for c in cases] == ["forgetting/general/a", "forgetting/feedback/ex1/p1"]
    assert {(c.category, c.split) for c in cases} == {(FORGETTING, HELDOUT)}
    assert cases[1].question == promoted.question and cases[1].reference == promoted.reference


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "law.jsonl:2: not a valid case"),
        (json.dumps({"id": "x", "question": "Q?", "split": "train"}), "law.jsonl:2: not a valid"),
        (_row("x", split="test"), "law.jsonl:2: split must be 'train' or 'heldout', not 'test'"),
        (_row("x", domain="astrology"), "law.jsonl:2: unknown domain 'astrology'"),
        (_row("x", accept="supreme court"), "law.jsonl:2: not a valid case"),
        (_row("x", check="vibes"), "law.jsonl:2: not a valid case"),
        (_row("x", check="premise", accept=["paris"]), "law.jsonl:2: a premise case needs"),
        (_row("x", reject=["berlin"]), "law.jsonl:2: reject strings only judge a 'premise'"),
        (_row("x", check="number", accept=["five"]), "law.jsonl:2: a number case needs"),
        (_row("x", check="refusal", accept=["no"]), "law.jsonl:2: a refusal case is judged"),
    ],
)
def test_a_malformed_line_names_its_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    folder = _write(tmp_path, "law.jsonl", _row("ok"), line)

    with pytest.raises(SuiteError) as raised:
        load_shipped(folder, DOMAINS, "general")

    assert message in raised.value.message


def test_duplicate_ids_and_run_time_categories_are_refused(tmp_path: Path) -> None:
    duplicated = _write(tmp_path / "dup", "law.jsonl", _row("x"), "", _row("x", "heldout"))
    with pytest.raises(SuiteError, match="duplicate case ids: law/x"):
        load_shipped(duplicated, DOMAINS, "general")

    shipped_feedback = _write(tmp_path / "fb", "feedback.jsonl", _row("x"))
    with pytest.raises(SuiteError, match="built at run time"):
        load_shipped(shipped_feedback, DOMAINS, "general")

    (tmp_path / "empty").mkdir()
    with pytest.raises(SuiteError, match="no benchmark suites"):
        load_shipped(tmp_path / "empty", DOMAINS, "general")


def test_every_shipped_reference_is_judged_a_right_answer_to_its_own_case() -> None:
    cases = load_shipped(None, DOMAINS, "general")

    verdicts = ReferenceJudge(embed=None).judge_many(
        cases, [c.reference for c in cases], [[] for _ in cases]
    )

    wrong = [(c.key, v.reason) for c, v in zip(cases, verdicts, strict=True) if not v.correct]
    assert wrong == []


def test_no_shipped_case_is_answered_right_by_repeating_its_question() -> None:
    cases = load_shipped(None, DOMAINS, "general")

    verdicts = ReferenceJudge(embed=None).judge_many(
        cases, [c.question for c in cases], [[] for _ in cases]
    )

    assert [c.key for c, v in zip(cases, verdicts, strict=True) if v.correct] == []
