"""Negative follow-ups: a short next message that says the answer was wrong.

"No, that's wrong", "that is incorrect", "das stimmt nicht", "non, c'est faux", "eso es
incorrecto": a phrase from `_NEGATIONS` at the very start of a short message (at most
`max_words` words). Anchored at the start so that a question about wrongness ("Is it wrong
to break a lease?") is not read as one. What follows the phrase, when it has at least
`min_correction_words` words, is the user's candidate correction ("No, that's wrong: Zelco is
run by Mara Quill." → "Zelco is run by Mara Quill.").

English, German, French and Spanish; a message in another language is simply not matched
(the retry rule may still see the question asked again).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_THAT = r"(?:that'?s|that is|this is|it'?s|it is|you'?re|you are)"
_BAD = r"(?:wrong|incorrect|false|not (?:right|true|correct|it)|a lie)"
_NEGATIONS = [
    # English
    rf"(?:no|nope|nah)\b[\s,.!]*(?:{_THAT}\s+)?{_BAD}",
    rf"{_THAT}\s+{_BAD}",
    r"(?:wrong|incorrect|not true|false)(?:\s+answer)?(?=\s*[.!,:;]|\s*$)",
    r"(?:no|nope)(?=\s*[.!,:;]|\s*$)",
    # German
    r"(?:nein\b[\s,.!]*)?(?:das|es)\s+(?:ist|war)\s+(?:falsch|nicht richtig|nicht korrekt)",
    r"(?:nein\b[\s,.!]*)?(?:das|es)\s+stimmt\s+nicht",
    r"(?:falsch|nein)(?=\s*[.!,:;]|\s*$)",
    # French
    r"(?:non\b[\s,.!]*)?(?:c'est|c'etait)\s+(?:faux|incorrect|pas (?:vrai|juste|correct))",
    r"(?:non\b[\s,.!]*)?ce n'est pas\s+(?:vrai|juste|correct)",
    r"(?:faux|non)(?=\s*[.!,:;]|\s*$)",
    # Spanish
    r"(?:no\b[\s,.!]*)?(?:eso|esto)?\s*(?:es|esta)\s+(?:incorrecto|falso|mal|equivocado)",
    r"(?:incorrecto|falso)(?=\s*[.!,:;]|\s*$)",
]
# Each on its own, so the longest match wins ("No, eso es incorrecto", not just "No").
_PATTERNS = [re.compile(rf"^\s*(?:{pattern})", re.IGNORECASE) for pattern in _NEGATIONS]
# Words that only lead into the correction ("No, that's wrong, actually it is ...").
_LEAD = re.compile(
    r"^(?:[\s,.!:;\-]|\b(?:actually|in fact|rather|instead|but|the (?:right|correct) answer "
    r"is|it'?s|it is|eigentlich|en fait|en realidad)\b)+",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Followup:
    phrase: str
    """The negation as the user wrote it (the evidence)."""
    correction: str | None
    """What the user says is right instead, if they said enough of it."""


def _plain(text: str) -> str:
    """Accents dropped and apostrophes straight, so one pattern matches every spelling."""
    folded = unicodedata.normalize("NFKD", text.replace("\u2019", "'").replace("\u2018", "'"))
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def negative_followup(text: str, *, max_words: int, min_correction_words: int) -> Followup | None:
    """The negation `text` starts with, and its candidate correction; None if it is no
    negative follow-up (no negation at its start, or longer than `max_words` words)."""
    plain = _plain(text)
    if len(_WORD.findall(plain)) > max_words:
        return None
    ends = [found.end() for pattern in _PATTERNS if (found := pattern.match(plain))]
    if not ends:
        return None
    # `_plain` keeps one character per original one (NFKD only splits off combining marks,
    # dropped again), except where it decomposed: map the end back by counting them.
    end = _original_index(text, max(ends))
    rest = _LEAD.sub("", text[end:]).strip()
    correction = rest if len(_WORD.findall(rest)) >= min_correction_words else None
    return Followup(phrase=text[:end].strip(), correction=correction)


def _original_index(text: str, plain_index: int) -> int:
    """The index in `text` of the character at `plain_index` of `_plain(text)`."""
    seen = 0
    for index, ch in enumerate(text):
        if seen >= plain_index:
            return index
        seen += len(_plain(ch))
    return len(text)
