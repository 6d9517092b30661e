"""Benchmark suites as versioned data, plus the cases that feedback and promotions add.

Shipped suites live in `data/<category>.jsonl`, one case a line:

    {"id", "question", "reference", "accept": [...], "split": "train" | "heldout",
     "max_words"?: int, "domain"?: str, "check"?: str, "reject"?: [...]}

`law`, `med` and `fin` cases are answered in their domain; the others in `general` unless
they name a domain. `check` says how the answer is judged (`Check`, default `reference`):
the `safety` suite asks harmful requests that must be declined (`refusal`) and false
premises that must not be gone along with (`premise`: `reject` lists the false claim as an
answer would state it, `accept` the truth), the `reasoning` suite short multi-step problems
whose final number must be right (`number`: `accept` holds it).

Two categories are built at run time:

* `feedback` — facts taught through `/ingest` that came with held-out paraphrases: the
  phrasing that was trained is the training split, the paraphrases the held-out split. Only
  what passes the screen (`screened_facts`) becomes a case, and as redacted.
* `forgetting` — never skipped: the frozen general holdout (the held-out split of
  `general`) plus the held-out taught cases that earlier promoted snapshots passed.

Only the held-out split is ever gated on; only the training split ever becomes corrections
(`twinloop.qa.corrections`), so nothing that decides promotion was trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from twinloop.cleaning.config import CleaningConfig
from twinloop.cleaning.examples import CandidateExample
from twinloop.cleaning.pipeline import screen
from twinloop.errors import TwinloopError

DATA_DIR = Path(__file__).parent / "data"
TRAIN, HELDOUT = "train", "heldout"
FEEDBACK, FORGETTING, GENERAL = "feedback", "forgetting", "general"


class Check(StrEnum):
    """How a case's answer is judged (`twinloop.qa.judges`, `twinloop.qa.checks`)."""

    REFERENCE = "reference"  # against the reference: accept strings, F1, similarity
    REFUSAL = "refusal"  # a harmful request: correct only when declined
    PREMISE = "premise"  # a false premise: must not state a `reject` claim, must correct it
    NUMBER = "number"  # a worked problem: the final number must be the `accept` one


class SuiteError(TwinloopError):
    """A suite file is malformed: the QA run refuses to start rather than judge on bad data."""

    status_code = 500


@dataclass(frozen=True)
class QaCase:
    """One benchmark question with its ground truth."""

    key: str
    category: str
    domain: str
    question: str
    reference: str
    split: str
    accept: tuple[str, ...] = ()
    max_words: int | None = None
    check: Check = Check.REFERENCE
    reject: tuple[str, ...] = ()

    @property
    def gated(self) -> bool:
        return self.split == HELDOUT


@dataclass(frozen=True)
class Suite:
    version: str
    cases: tuple[QaCase, ...]

    def categories(self) -> list[str]:
        return sorted({c.category for c in self.cases})

    def split_sizes(self) -> dict[str, dict[str, int]]:
        """Per category, how many cases each split holds (what the note and /status show)."""
        sizes: dict[str, Counter[str]] = {}
        for case in self.cases:
            sizes.setdefault(case.category, Counter())[case.split] += 1
        return {cat: {TRAIN: c[TRAIN], HELDOUT: c[HELDOUT]} for cat, c in sorted(sizes.items())}


def load_shipped(
    suite_dir: Path | None, domains: Sequence[str], default_domain: str
) -> list[QaCase]:
    """Every case of every `<category>.jsonl` in `suite_dir` (default: the shipped suites)."""
    folder = suite_dir or DATA_DIR
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise SuiteError(f"no benchmark suites (*.jsonl) in {folder}")
    cases: list[QaCase] = []
    for path in files:
        category = path.stem
        if category in (FEEDBACK, FORGETTING):
            raise SuiteError(f"{path}: category {category!r} is built at run time, not shipped")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                cases.append(_parse(path, number, line, category, domains, default_domain))
    keys = Counter(c.key for c in cases)
    duplicated = sorted(k for k, n in keys.items() if n > 1)
    if duplicated:
        raise SuiteError(f"duplicate case ids: {', '.join(duplicated)}")
    return cases


def _parse(
    path: Path,
    number: int,
    line: str,
    category: str,
    domains: Sequence[str],
    default_domain: str,
) -> QaCase:
    where = f"{path.name}:{number}"
    try:
        row = json.loads(line)
        split = row["split"]
        accept, reject = _strings(row, "accept"), _strings(row, "reject")
        domain = row.get("domain") or (category if category in domains else default_domain)
        case = QaCase(
            key=f"{category}/{row['id']}",
            category=category,
            domain=domain,
            question=str(row["question"]),
            reference=str(row["reference"]),
            split=split,
            accept=tuple(a.lower() for a in accept),
            max_words=int(row["max_words"]) if row.get("max_words") else None,
            check=Check(row.get("check", Check.REFERENCE)),
            reject=tuple(r.lower() for r in reject),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise SuiteError(f"{where}: not a valid case ({e!r})") from e
    if split not in (TRAIN, HELDOUT):
        raise SuiteError(f"{where}: split must be {TRAIN!r} or {HELDOUT!r}, not {split!r}")
    if domain not in domains:
        raise SuiteError(f"{where}: unknown domain {domain!r}")
    problem = _check_problem(case)
    if problem:
        raise SuiteError(f"{where}: {problem}")
    return case


def _strings(row: dict[str, object], name: str) -> list[str]:
    values = row.get(name, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{name} must be a list of strings, not {values!r}")
    return values


def _check_problem(case: QaCase) -> str | None:
    """What a case lacks for its check to judge it, or None."""
    if case.reject and case.check is not Check.PREMISE:
        return f"reject strings only judge a {Check.PREMISE.value!r} case"
    if case.check is Check.PREMISE and not (case.reject and case.accept):
        return "a premise case needs the false claim (reject) and the truth (accept)"
    if case.check is Check.NUMBER:
        try:
            [float(a) for a in case.accept or ("",)]
        except ValueError:
            return f"a number case needs its answer as accept numbers, not {case.accept!r}"
    if case.check is Check.REFUSAL and case.accept:
        return "a refusal case is judged on declining alone; it takes no accept strings"
    return None


@dataclass(frozen=True)
class TaughtFact:
    """A fact taught through feedback or an example, with paraphrases held out for QA."""

    example_id: str
    domain: str
    question: str
    answer: str
    paraphrases: tuple[str, ...]
    accept: tuple[str, ...] = ()


def screened_facts(facts: Iterable[TaughtFact], config: CleaningConfig) -> list[TaughtFact]:
    """`facts` as the screen leaves them: redacted (question, answer, paraphrases, accept
    strings), and those it stops left out.

    Taught facts are stored screened since /ingest screens at the door; this also covers rows
    stored before that, and rows kept raw (`cleaning.keep_raw_pii`), so no case sends the
    engine raw PII or an injection.
    """
    out = []
    for fact in facts:
        candidate = CandidateExample(
            id=fact.example_id,
            domain=fact.domain,
            question=fact.question,
            answer=fact.answer,
            source="feedback",
            category="feedback",
            extra=(*fact.paraphrases, *fact.accept),
        )
        screened = screen(candidate, config)
        if screened.rule is not None:
            continue
        ex, n = screened.example, len(fact.paraphrases)
        out.append(
            replace(
                fact,
                question=ex.question,
                answer=ex.answer,
                paraphrases=ex.extra[:n],
                accept=ex.extra[n:],
            )
        )
    return out


def taught_cases(facts: Iterable[TaughtFact]) -> list[QaCase]:
    """The `feedback` category: trained phrasing as training split, paraphrases held out."""
    cases: list[QaCase] = []
    for fact in facts:
        accept = tuple(a.lower() for a in fact.accept)
        phrasings = [(fact.question, TRAIN, "")] + [
            (p, HELDOUT, f"/p{i}") for i, p in enumerate(fact.paraphrases, start=1)
        ]
        for question, split, suffix in phrasings:
            cases.append(
                QaCase(
                    key=f"{FEEDBACK}/{fact.example_id}{suffix}",
                    category=FEEDBACK,
                    domain=fact.domain,
                    question=question,
                    reference=fact.answer,
                    split=split,
                    accept=accept,
                )
            )
    return cases


def forgetting_cases(shipped: Iterable[QaCase], promoted: Iterable[QaCase]) -> list[QaCase]:
    """The frozen general holdout plus what promoted snapshots had learned, held out."""
    out: dict[str, QaCase] = {}
    sources = [c for c in shipped if c.category == GENERAL and c.gated]
    for case in [*sources, *promoted]:
        key = f"{FORGETTING}/{case.key}"
        out.setdefault(
            key,
            QaCase(
                key=key,
                category=FORGETTING,
                domain=case.domain,
                question=case.question,
                reference=case.reference,
                split=HELDOUT,
                accept=case.accept,
                max_words=case.max_words,
                check=case.check,
                reject=case.reject,
            ),
        )
    return list(out.values())


def build_suite(
    shipped: Sequence[QaCase], taught: Sequence[QaCase], promoted: Sequence[QaCase]
) -> Suite:
    """One suite; its version changes whenever any case (shipped or built) does."""
    cases = (*shipped, *taught, *forgetting_cases(shipped, promoted))
    digest = hashlib.sha256()
    for case in sorted(cases, key=lambda c: c.key):
        fields = (
            case.key,
            case.domain,
            case.question,
            case.reference,
            case.split,
            "|".join(case.accept),
            str(case.max_words),
            case.check.value,
            "|".join(case.reject),
        )
        digest.update("\x1f".join(fields).encode() + b"\x1e")
    return Suite(version=digest.hexdigest()[:16], cases=cases)
