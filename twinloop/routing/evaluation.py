"""How well a router sends labelled questions to their domains.

This gates rule proposals: a change to exemplars, thresholds or priorities is
scored on a labelled set before it can reach Shadow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Protocol

from twinloop.errors import InvalidRequestError
from twinloop.routing.router import RouteResult

DEFAULT_TESTSET_FILE = "routing_testset.jsonl"


class BatchRouter(Protocol):
    def route_many(self, questions: Sequence[str]) -> list[RouteResult]: ...


@dataclass(frozen=True, slots=True)
class LabelledQuestion:
    question: str
    domain: str


@dataclass(frozen=True, slots=True)
class Misroute:
    question: str
    expected: str
    got: str
    score: float


@dataclass(frozen=True, slots=True)
class RoutingReport:
    """What share of questions reached their labelled domain, overall and per domain."""

    total: int
    accuracy: float
    """Questions routed to their labelled domain / all questions."""
    per_domain_accuracy: Mapping[str, float]
    """Per labelled domain: its questions routed there / its questions (recall, not precision)."""
    confusion: Mapping[str, Mapping[str, int]]
    """confusion[expected][got]: how many questions labelled `expected` were routed to `got`."""
    misroutes: tuple[Misroute, ...]

    def describe(self) -> str:
        """A few lines for a person: per-domain accuracy and every misrouted question."""
        lines = [f"accuracy {self.accuracy:.3f} over {self.total} questions"]
        lines += [f"  {d}: {acc:.3f}" for d, acc in sorted(self.per_domain_accuracy.items())]
        lines += [
            f"  misrouted {m.expected} -> {m.got} ({m.score:.3f}): {m.question}"
            for m in self.misroutes
        ]
        return "\n".join(lines)


def evaluate(router: BatchRouter, labelled: Iterable[LabelledQuestion]) -> RoutingReport:
    items = list(labelled)
    if not items:
        raise InvalidRequestError("cannot evaluate a router on no questions")
    results = router.route_many([item.question for item in items])
    confusion: dict[str, dict[str, int]] = {}
    misroutes: list[Misroute] = []
    for item, result in zip(items, results, strict=True):
        row = confusion.setdefault(item.domain, {})
        row[result.domain] = row.get(result.domain, 0) + 1
        if result.domain != item.domain:
            misroutes.append(Misroute(item.question, item.domain, result.domain, result.score))
    per_domain = {
        domain: row.get(domain, 0) / sum(row.values()) for domain, row in confusion.items()
    }
    return RoutingReport(
        total=len(items),
        accuracy=(len(items) - len(misroutes)) / len(items),
        per_domain_accuracy=per_domain,
        confusion=confusion,
        misroutes=tuple(misroutes),
    )


def parse_labelled(text: str) -> list[LabelledQuestion]:
    """JSON lines of `{"question": ..., "domain": ...}`; blank lines are skipped."""
    items: list[LabelledQuestion] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            question, domain = record["question"], record["domain"]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidRequestError(f"labelled set line {number}: {e}") from e
        if not isinstance(question, str) or not isinstance(domain, str) or not question.strip():
            raise InvalidRequestError(f"labelled set line {number}: question and domain are text")
        items.append(LabelledQuestion(question.strip(), domain))
    return items


def default_testset() -> list[LabelledQuestion]:
    """The labelled questions shipped with the default rules (written apart from the exemplars)."""
    text = files("twinloop.routing").joinpath("data", DEFAULT_TESTSET_FILE).read_text("utf-8")
    return parse_labelled(text)
