"""The cleaning pipeline: every rule in its order (see the package docstring), counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from twinloop.cleaning.caps import apply_cap, apply_mined_cap
from twinloop.cleaning.config import CleaningConfig
from twinloop.cleaning.dedup import bigram_repetition_ratio, drop_near_duplicates
from twinloop.cleaning.examples import (
    CATEGORY_CAP,
    EMPTY,
    INJECTION,
    REPETITION,
    RULES,
    SOURCE_CAP,
    TOO_LONG,
    TOO_SHORT,
    CandidateExample,
    CleaningResult,
    Quarantined,
)
from twinloop.cleaning.injection import find_injection
from twinloop.cleaning.normalize import visible
from twinloop.cleaning.redaction import PII_KINDS, redact_pii


def _rule(ex: CandidateExample, config: CleaningConfig) -> tuple[str, str] | None:
    """The first of rules 2-5 that `ex` breaks, as (rule, reason), or None."""
    if not visible(ex.question)[0].strip() or not visible(ex.answer)[0].strip():
        return EMPTY, "question or answer is blank (or invisible)"
    parts = [("question", ex.question), ("answer", ex.answer)]
    for part, text in [*parts, *(("held-out text", text) for text in ex.extra)]:
        found = find_injection(text)
        if found:
            return INJECTION, f"{found[0]} in {part}: {found[1]!r}"
    if len(ex.answer) < config.min_answer_chars:
        return TOO_SHORT, f"answer has {len(ex.answer)} chars, minimum {config.min_answer_chars}"
    if len(ex.answer) > config.max_answer_chars:
        return TOO_LONG, f"answer has {len(ex.answer)} chars, maximum {config.max_answer_chars}"
    if len(ex.question) > config.max_question_chars:
        return TOO_LONG, (
            f"question has {len(ex.question)} chars, maximum {config.max_question_chars}"
        )
    for part, text in parts:
        ratio = bigram_repetition_ratio(text)
        if ratio >= config.max_bigram_repetition:
            return REPETITION, (
                f"{part} bigram repetition ratio {ratio:.2f} >= {config.max_bigram_repetition:g}"
            )
    return None


@dataclass(frozen=True)
class Screened:
    """One example after the per-item rules 1-5: redacted, and the rule that stopped it, if any.

    `screen` is what `clean` does to each example before the rules that compare examples with
    each other (duplicates, caps); on its own it is the screen of the paths that take one item
    at a time: a correction becoming a RAG fact at /ingest, a QA case, a QA-made correction.
    """

    example: CandidateExample
    redactions: Counter[str]
    rule: str | None = None
    reason: str | None = None

    @property
    def quarantined(self) -> Quarantined | None:
        if self.rule is None:
            return None
        return Quarantined(self.example, self.rule, self.reason or "")


def screen(candidate: CandidateExample, config: CleaningConfig | None = None) -> Screened:
    """Redact `candidate` (question, answer, extra texts) and apply rules 2-5 to it."""
    config = config or CleaningConfig()
    regions = config.phone_regions
    redactions: Counter[str] = Counter()
    texts = []
    for text in (candidate.question, candidate.answer, *candidate.extra):
        redacted, hits = redact_pii(text, phone_regions=regions)
        redactions.update(hits)
        texts.append(redacted)
    ex = replace(candidate, question=texts[0], answer=texts[1], extra=tuple(texts[2:]))
    verdict = _rule(ex, config)
    return Screened(ex, +redactions, *(verdict or (None, None)))


def clean(
    candidates: Sequence[CandidateExample], config: CleaningConfig | None = None
) -> CleaningResult:
    """Redact, screen, deduplicate and cap `candidates` (rules and order: package docstring)."""
    config = config or CleaningConfig()
    counts: Counter[str] = Counter()
    quarantined: list[tuple[int, Quarantined]] = []
    kept: list[tuple[int, CandidateExample]] = []

    for index, original in enumerate(candidates):
        screened = screen(original, config)
        counts.update({f"redacted.{kind}": n for kind, n in screened.redactions.items()})
        counts["redacted.examples"] += bool(screened.redactions)
        if screened.quarantined is not None:
            quarantined.append((index, screened.quarantined))
        else:
            kept.append((index, screened.example))

    deduped = drop_near_duplicates(kept, config.near_duplicate_threshold, quarantined)
    deduped = apply_mined_cap(deduped, config.max_share_mined, config.min_cap_mined, quarantined)
    capped = apply_cap(
        deduped,
        lambda ex: ex.source,
        "source",
        SOURCE_CAP,
        config.max_share_per_source,
        config.min_cap_per_source,
        quarantined,
    )
    # Applied to what the source cap left; cutting a category can lift some source's share a
    # little again, which is accepted rather than iterating the two caps to a fixed point.
    capped = apply_cap(
        capped,
        lambda ex: ex.category,
        "category",
        CATEGORY_CAP,
        config.max_share_per_category,
        config.min_cap_per_category,
        quarantined,
    )

    quarantined.sort(key=lambda item: item[0])
    return CleaningResult(
        accepted=[ex for _, ex in capped],
        quarantined=[q for _, q in quarantined],
        counts=_all_counts(counts, quarantined, inputs=len(candidates), accepted=len(capped)),
    )


def _all_counts(
    counts: Counter[str], quarantined: list[tuple[int, Quarantined]], *, inputs: int, accepted: int
) -> dict[str, int]:
    for _, q in quarantined:
        counts[f"quarantine.{q.rule}"] += 1
    # Every rule and kind is listed, zero or not, so a dashboard sees the full set each cycle.
    result_counts = {f"redacted.{kind}": counts[f"redacted.{kind}"] for kind in PII_KINDS}
    result_counts["redacted.examples"] = counts["redacted.examples"]
    result_counts.update({f"quarantine.{rule}": counts[f"quarantine.{rule}"] for rule in RULES})
    result_counts.update(input=inputs, accepted=accepted, quarantined=len(quarantined))
    return result_counts
