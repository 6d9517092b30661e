"""The screen at the door: what /ingest takes to teach is cleaned as it arrives.

Every feedback item and example that becomes a training example passes `twinloop.cleaning`'s
per-item screen (`pipeline.screen`: redaction, then the empty / injection / length /
repetition rules) before anything stores it or turns it into a fact document:

* the example, the feedback's correction and comment and the answer it rejects are stored
  redacted (as sent only with `cleaning.keep_raw_pii`);
* an example a rule stops is stored `quarantined` with the rule and reason, is never a
  pending item (so hostile traffic cannot start training cycles either) and never a fact
  document; its item answers `quarantined`;
* a correction's fact document is always the redacted text;
* an operator's document is stored and indexed redacted too (its passages reach users as
  retrieved context, whatever `cleaning.keep_raw_pii` says), and one that carries an
  injection is refused whole (`rejected`, the rule named), since the safety layer's context
  screen would drop its passages from every prompt anyway.

The training cycle cleans again (duplicates and caps compare items with each other, and rows
kept raw are redacted there); QA screens the taught facts it builds cases from; the miner
(twinloop.mining) screens each proposal it finds in the answer log with `texts`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twinloop.cleaning.config import CleaningConfig
from twinloop.cleaning.examples import INJECTION, CandidateExample
from twinloop.cleaning.injection import find_injection
from twinloop.cleaning.pipeline import Screened, screen
from twinloop.cleaning.redaction import redact_pii
from twinloop.db.models import TrainingExample
from twinloop.states import ItemStatus


@dataclass(frozen=True)
class ScreenedDocument:
    """An operator's document after the screen: its text redacted, or the rule it breaks."""

    text: str
    redactions: Counter[str]
    rule: str | None = None
    reason: str | None = None


def _screen_document(text: str, config: CleaningConfig) -> ScreenedDocument:
    found = find_injection(text)
    if found is not None:
        return ScreenedDocument(text, Counter(), INJECTION, f"{found[0]}: {found[1]!r}")
    redacted, hits = redact_pii(text, phone_regions=config.phone_regions)
    return ScreenedDocument(redacted, +hits)


@dataclass
class IngestScreen:
    """The screen of one /ingest batch, with what it found (for the gateway's metrics)."""

    config: CleaningConfig
    redactions: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    _seen: dict[tuple[str, str, tuple[str, ...]], Screened] = field(default_factory=dict)
    _documents: dict[str, ScreenedDocument] = field(default_factory=dict)

    async def texts(self, question: str, answer: str, extra: tuple[str, ...] = ()) -> Screened:
        """The per-item screen of a question, an answer and other texts (redacted, and the
        rule that stops them, if any); what the miner's proposals pass too."""
        key = (question, answer, extra)
        if key not in self._seen:
            candidate = CandidateExample(
                id="", domain="", question=question, answer=answer, source="", category="",
                extra=extra,
            )  # fmt: skip
            screened = await asyncio.to_thread(screen, candidate, self.config)
            self._seen[key] = screened
            redacted = screened.example
            # Screening what it already redacted gives the same verdict; no need to ask twice.
            self._seen.setdefault((redacted.question, redacted.answer, redacted.extra), screened)
        return self._seen[key]

    def forget_counts(self) -> None:
        """Start counting afresh, keeping the verdicts: the batch's rules run again (ingest
        plans a batch, then commits it) and its metrics count one run."""
        self.redactions.clear()
        self.quarantined.clear()
        self.rejected.clear()

    async def document(self, text: str) -> ScreenedDocument:
        """A document's text as it may be stored and indexed, or the rule that refuses it."""
        if text not in self._documents:
            self._documents[text] = await asyncio.to_thread(_screen_document, text, self.config)
        screened = self._documents[text]
        self.redactions.update(screened.redactions)
        if screened.rule is not None:
            self.rejected[screened.rule] += 1
        return screened

    async def example(self, example: TrainingExample) -> Screened:
        """Screen `example`: store it redacted (unless raw PII is kept) and quarantine it when a
        rule stops it."""
        paraphrases, accept = _heldout_texts(example.heldout)
        screened = await self.texts(example.question, example.answer, (*paraphrases, *accept))
        if not self.config.keep_raw_pii:
            self.redactions.update(screened.redactions)
            redacted = screened.example
            example.question, example.answer = redacted.question, redacted.answer
            if example.heldout is not None:
                example.heldout = {
                    **example.heldout,
                    "paraphrases": list(redacted.extra[: len(paraphrases)]),
                    "accept": list(redacted.extra[len(paraphrases) :]),
                }
        if screened.rule is not None:
            self.quarantined[screened.rule] += 1
            example.status = ItemStatus.QUARANTINED
            example.reject_reason = f"screened at ingest: {screened.reason}"
        return screened

    async def fact(self, question: str, answer: str) -> tuple[str, str] | None:
        """Question and answer of a fact document, redacted; None when the screen stops them."""
        screened = await self.texts(question, answer)
        if screened.rule is not None:
            return None
        return screened.example.question, screened.example.answer

    async def stored(self, text: str | None) -> str | None:
        """`text` as it may be stored: redacted, unless raw PII is kept."""
        if text is None or self.config.keep_raw_pii:
            return text
        redacted, hits = await asyncio.to_thread(
            redact_pii, text, phone_regions=self.config.phone_regions
        )
        self.redactions.update(+hits)
        return redacted


def _heldout_texts(heldout: dict[str, Any] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    heldout = heldout or {}
    paraphrases = tuple(str(p) for p in heldout.get("paraphrases", ()))
    accept = tuple(str(a) for a in heldout.get("accept", ()))
    return paraphrases, accept
