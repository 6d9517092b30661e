"""The limits of the cleaning step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twinloop.settings import Settings


@dataclass(frozen=True, kw_only=True)
class CleaningConfig:
    """Limits of the cleaning step; the defaults are meant for production."""

    min_answer_chars: int = field(
        default=1, metadata={"help": "Shortest answer kept, in characters after redaction."}
    )
    max_answer_chars: int = field(
        default=2000, metadata={"help": "Longest answer kept, in characters after redaction."}
    )
    max_question_chars: int = field(
        default=2000, metadata={"help": "Longest question kept, in characters after redaction."}
    )
    max_bigram_repetition: float = field(
        default=0.4,
        metadata={
            "help": "Question and answer must have a bigram repetition ratio strictly below "
            "this (see `bigram_repetition_ratio`); degenerate loops score high."
        },
    )
    near_duplicate_threshold: float = field(
        default=0.9,
        metadata={
            "help": "Two examples are near-duplicates when the Jaccard similarity of the word "
            "3-shingles of their normalized question+answer is at least this. Normalized "
            "means NFKC, casefolded, punctuation dropped, so texts equal up to case and "
            "punctuation always score 1.0."
        },
    )
    max_share_per_source: float = field(
        default=0.5,
        metadata={
            "help": "Largest share of the accepted set one source may hold (1.0 disables). "
            "See `cap_limit` for the rule; `min_cap_per_source` is the floor."
        },
    )
    min_cap_per_source: int = field(
        default=5,
        metadata={"help": "A source may always keep this many, so tiny batches are not capped."},
    )
    max_share_per_category: float = field(
        default=0.5,
        metadata={
            "help": "Largest share of the accepted set one category may hold (1.0 disables)."
        },
    )
    min_cap_per_category: int = field(
        default=5,
        metadata={"help": "A category may always keep this many, so tiny batches are not capped."},
    )
    max_share_mined: float = field(
        default=0.25,
        metadata={
            "help": "Largest share of the accepted set mined items (weak labels from the "
            "answer log) may hold together (1.0 disables); `min_cap_mined` is the floor."
        },
    )
    min_cap_mined: int = field(
        default=5,
        metadata={"help": "Mined items a batch may always keep, so tiny batches are not capped."},
    )
    phone_regions: tuple[str, ...] = field(
        default=("US", "GB", "DE", "FR"),
        metadata={
            "help": "Regions whose national phone formats are recognised; numbers written "
            "with a leading + are recognised whatever the region."
        },
    )

    keep_raw_pii: bool = field(
        default=False,
        metadata={
            "help": "Keep what users sent as sent in the database (training examples, feedback "
            "corrections and comments) after redaction. Off: the stored text is the redacted "
            "text, so raw PII is never at rest; what trains and what RAG serves is redacted "
            "either way."
        },
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> CleaningConfig:
        return cls(
            keep_raw_pii=settings.cleaning.keep_raw_pii,
            max_share_mined=settings.mining.max_share,
            min_cap_mined=settings.mining.min_cap,
        )

    def __post_init__(self) -> None:
        # Bad limits would silently accept or reject everything; refuse them early.
        if not 0 <= self.min_answer_chars <= self.max_answer_chars:
            raise ValueError("need 0 <= min_answer_chars <= max_answer_chars")
        if self.max_question_chars < 1:
            raise ValueError("max_question_chars must be at least 1")
        if not 0 < self.max_bigram_repetition <= 1:
            raise ValueError("max_bigram_repetition must be in (0, 1]")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise ValueError("near_duplicate_threshold must be in (0, 1]")
        for share in (self.max_share_per_source, self.max_share_per_category, self.max_share_mined):
            if not 0 < share <= 1:
                raise ValueError("shares must be in (0, 1]")
        if min(self.min_cap_per_source, self.min_cap_per_category, self.min_cap_mined) < 0:
            raise ValueError("cap floors must not be negative")
