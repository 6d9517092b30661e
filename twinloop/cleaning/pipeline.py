"""The cleaning pipeline: every rule in its order (see the package docstring), counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from twinloop.cleaning.caps import apply_cap
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
from twinloop.cleaning.redaction import PII_KINDS, redact_pii


def _screen(ex: CandidateExample, config: CleaningConfig) -> tuple[str, str] | None:
    """The first of rules 2-5 that `ex` breaks, as (rule, reason), or None."""
    if not ex.question.strip() or not ex.answer.strip():
        return EMPTY, "question or answer is blank"
    for part, text in (("question", ex.question), ("answer", ex.answer)):
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
    for part, text in (("question", ex.question), ("answer", ex.answer)):
        ratio = bigram_repetition_ratio(text)
        if ratio >= config.max_bigram_repetition:
            return REPETITION, (
                f"{part} bigram repetition ratio {ratio:.2f} >= {config.max_bigram_repetition:g}"
            )
    return None


def clean(
    candidates: Sequence[CandidateExample], config: CleaningConfig | None = None
) -> CleaningResult:
    """Redact, screen, deduplicate and cap `candidates` (rules and order: package docstring)."""
    config = config or CleaningConfig()
    counts: Counter[str] = Counter()
    quarantined: list[tuple[int, Quarantined]] = []
    kept: list[tuple[int, CandidateExample]] = []

    for index, original in enumerate(candidates):
        question, q_hits = redact_pii(original.question, phone_regions=config.phone_regions)
        answer, a_hits = redact_pii(original.answer, phone_regions=config.phone_regions)
        hits = q_hits + a_hits
        counts.update({f"redacted.{kind}": n for kind, n in hits.items()})
        counts["redacted.examples"] += bool(hits)
        ex = replace(original, question=question, answer=answer)
        verdict = _screen(ex, config)
        if verdict:
            quarantined.append((index, Quarantined(ex, *verdict)))
        else:
            kept.append((index, ex))

    deduped = drop_near_duplicates(kept, config.near_duplicate_threshold, quarantined)
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
