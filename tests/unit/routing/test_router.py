"""The router's decision rule, the rules' validation and evaluate()'s arithmetic, with a fake
embedder: each keyword is one dimension, so cosine similarities are known exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from twinloop.errors import InvalidRequestError
from twinloop.routing import (
    DomainRouter,
    InvalidRouterRulesError,
    RouteResult,
    RouterRules,
    default_rules,
    evaluate,
)
from twinloop.routing.evaluation import LabelledQuestion, default_testset, parse_labelled

KEYWORDS = ("court", "contract", "fever", "pill", "stock", "bond", "weather", "moon", "other")


class KeywordEmbedder:
    """One dimension per keyword; a text is the sum of its keywords' unit vectors."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), len(KEYWORDS)), dtype=np.float32)
        for row, text in enumerate(texts):
            words = text.lower().split()
            hits = [KEYWORDS.index(w) for w in words if w in KEYWORDS]
            for col in hits or [KEYWORDS.index("other")]:
                out[row, col] += 1.0
        return out


def rules_doc(**domains: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "law": {"exemplars": ["court", "contract"], "threshold": 0.5, "priority": 3},
        "med": {"exemplars": ["fever", "pill"], "threshold": 0.5, "priority": 4},
        "general": {"exemplars": ["weather", "moon"], "threshold": 0.0, "priority": 1},
    }
    base.update(domains)
    return {"version": 1, "fallback": "general", "domains": base}


def make_router(doc: dict[str, Any] | None = None) -> DomainRouter:
    rules = RouterRules.from_json(json.dumps(doc or rules_doc()))
    return DomainRouter(embedder=KeywordEmbedder(), rules=rules)


def test_best_scoring_domain_above_threshold_wins() -> None:
    result = make_router().route("court")
    assert result.domain == "law"
    assert result.score == pytest.approx(1.0)
    assert not result.fallback


def test_score_is_max_cosine_over_exemplars() -> None:
    # The question is (e_court + e_fever + e_stock)/sqrt(3): cosine 1/sqrt(3) with "court" and
    # with "fever", 0 with anything of general; law's second exemplar does not lower its score.
    result = make_router().route("court fever stock")
    assert result.scores["law"] == pytest.approx(1 / np.sqrt(3))
    assert result.scores["med"] == pytest.approx(1 / np.sqrt(3))
    assert result.scores["general"] == pytest.approx(0.0)
    assert set(result.scores) == {"law", "med", "general"}


def test_domain_below_its_threshold_is_not_a_candidate() -> None:
    # law scores 0.577 against a threshold of 0.6, general 0.577 against 0.0: general wins.
    router = make_router(rules_doc(law={"exemplars": ["court"], "threshold": 0.6, "priority": 9}))
    result = router.route("court moon stock")
    assert result.scores["law"] == pytest.approx(result.scores["general"])
    assert result.domain == "general"
    assert not result.fallback


def test_no_candidate_falls_back_with_the_fallback_score() -> None:
    doc = rules_doc(general={"exemplars": ["moon"], "threshold": 0.9, "priority": 1})
    result = make_router(doc).route("court stock stock stock")  # law 1/sqrt(10) < 0.5
    assert result.fallback
    assert result.domain == "general"
    assert result.score == result.scores["general"] == pytest.approx(0.0)


def test_tie_is_broken_by_higher_priority() -> None:
    question = "court fever"  # law and med both 0.707
    assert make_router().route(question).domain == "med"  # med priority 4 > law 3
    swapped = rules_doc(law={"exemplars": ["court", "contract"], "threshold": 0.5, "priority": 5})
    assert make_router(swapped).route(question).domain == "law"


def test_tie_with_equal_priority_is_broken_by_name() -> None:
    doc = rules_doc(law={"exemplars": ["court"], "threshold": 0.5, "priority": 4})
    assert make_router(doc).route("court fever").domain == "law"


def test_clear_winner_beats_higher_priority() -> None:
    result = make_router().route("court court fever")
    assert result.domain == "law"


def test_exemplars_are_embedded_once_and_each_route_embeds_once() -> None:
    embedder = KeywordEmbedder()
    router = DomainRouter(embedder=embedder, rules=RouterRules.from_json(json.dumps(rules_doc())))
    assert len(embedder.calls) == 1
    assert embedder.calls[0] == ["court", "contract", "fever", "pill", "weather", "moon"]
    results = router.route_many(["court", "pill", "moon"])
    assert [r.domain for r in results] == ["law", "med", "general"]
    assert len(embedder.calls) == 2
    router.route("court")
    assert len(embedder.calls) == 3
    assert router.route_many([]) == []


def test_route_result_scores_are_read_only() -> None:
    result = make_router().route("court")
    with pytest.raises(TypeError):
        result.scores["law"] = 0.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**rules_doc(), "fallback": "fin"}, "fallback 'fin' is not one of the domains"),
        (rules_doc(law={"exemplars": [], "threshold": 0.5}), "domains.law.exemplars"),
        (rules_doc(law={"exemplars": ["   "], "threshold": 0.5}), "domains.law.exemplars.0"),
        (rules_doc(law={"exemplars": ["court"], "threshold": 1.5}), "domains.law.threshold"),
        (rules_doc(law={"exemplars": ["court"], "threshold": -1.01}), "domains.law.threshold"),
        (rules_doc(law={"exemplars": ["court"]}), "domains.law.threshold: Field required"),
        (rules_doc(law={"exemplars": ["Moon"], "threshold": 0.5}), "listed under both"),
        (rules_doc(Law={"exemplars": ["x"], "threshold": 0.5}), "domains.Law.[key]"),
        ({"version": 1, "domains": {}}, "domains"),
        ({**rules_doc(), "version": 0}, "version"),
        ({**rules_doc(), "extra": True}, "extra: Extra inputs are not permitted"),
    ],
)
def test_invalid_rules_are_refused_with_a_clear_message(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRouterRulesError, match="invalid router rules") as info:
        RouterRules.from_json(json.dumps(doc))
    assert message in info.value.message
    assert info.value.status_code == 422
    assert isinstance(info.value.__cause__, ValidationError)


def test_malformed_json_is_refused() -> None:
    with pytest.raises(InvalidRouterRulesError, match="invalid router rules"):
        RouterRules.from_json("{not json")


def test_load_reads_a_file_and_reports_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules_doc()), encoding="utf-8")
    assert RouterRules.load(path).fallback == "general"
    with pytest.raises(InvalidRouterRulesError, match="cannot read router rules"):
        RouterRules.load(tmp_path / "missing.json")


def test_rules_are_immutable_and_round_trip() -> None:
    rules = RouterRules.from_json(json.dumps(rules_doc()))
    with pytest.raises(ValidationError):
        rules.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        rules.domains["fin"] = rules.domains["law"]  # type: ignore[index]
    assert isinstance(rules.domains["law"].exemplars, tuple)
    assert RouterRules.from_json(rules.to_json()) == rules
    assert list(rules.domains) == ["law", "med", "general"]


def test_default_rules_ship_four_domains() -> None:
    rules = default_rules()
    assert set(rules.domains) == {"law", "med", "fin", "general"}
    assert rules.fallback == "general"
    for name, rule in rules.domains.items():
        assert 12 <= len(rule.exemplars) <= 25, name


def test_shipped_testset_is_large_enough_and_apart_from_the_exemplars() -> None:
    items = default_testset()
    assert len(items) >= 80
    for domain in ("law", "med", "fin", "general"):
        assert sum(item.domain == domain for item in items) >= 20, domain
    exemplars = {e.casefold() for rule in default_rules().domains.values() for e in rule.exemplars}
    assert not [item.question for item in items if item.question.casefold() in exemplars]


class ScriptedRouter:
    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def route_many(self, questions: Sequence[str]) -> list[RouteResult]:
        return [RouteResult(self.answers[q], 0.5, {}) for q in questions]


def test_evaluate_counts_accuracy_per_domain_and_confusion() -> None:
    labelled = [
        LabelledQuestion("a", "law"),
        LabelledQuestion("b", "law"),
        LabelledQuestion("c", "law"),
        LabelledQuestion("d", "law"),
        LabelledQuestion("e", "med"),
        LabelledQuestion("f", "med"),
    ]
    router = ScriptedRouter(
        {"a": "law", "b": "law", "c": "law", "d": "general", "e": "law", "f": "med"}
    )
    report = evaluate(router, labelled)
    assert report.total == 6
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.per_domain_accuracy == {"law": 0.75, "med": 0.5}
    assert report.confusion == {"law": {"law": 3, "general": 1}, "med": {"law": 1, "med": 1}}
    assert [(m.question, m.expected, m.got) for m in report.misroutes] == [
        ("d", "law", "general"),
        ("e", "med", "law"),
    ]
    assert "misrouted med -> law (0.500): e" in report.describe()


def test_evaluate_with_the_keyword_router() -> None:
    labelled = [LabelledQuestion("court", "law"), LabelledQuestion("fever", "law")]
    report = evaluate(make_router(), labelled)
    assert report.accuracy == 0.5
    assert report.confusion == {"law": {"law": 1, "med": 1}}


def test_evaluate_refuses_an_empty_set() -> None:
    with pytest.raises(InvalidRequestError, match="no questions"):
        evaluate(ScriptedRouter({}), [])


def test_parse_labelled_reads_lines_and_names_the_bad_one() -> None:
    text = '{"question": " Q1 ", "domain": "law"}\n\n{"question": "Q2", "domain": "med"}\n'
    assert parse_labelled(text) == [LabelledQuestion("Q1", "law"), LabelledQuestion("Q2", "med")]
    with pytest.raises(InvalidRequestError, match="line 2"):
        parse_labelled('{"question": "Q", "domain": "law"}\n{"question": "Q"}\n')
    with pytest.raises(InvalidRequestError, match="line 1"):
        parse_labelled('{"question": "", "domain": "law"}')
