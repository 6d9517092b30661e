"""What a screen reads: text as a person sees it, not as it is spelled in code points.

Every rule that looks for something (PII, injection wording) runs on a *view* of the text:

* `visible(text)`: each character NFKC-normalised on its own (the fullwidth at sign becomes
  `@`, fullwidth digits ASCII ones, the `fi` ligature `fi`), any Unicode decimal digit its
  ASCII digit, dash variants `-`, and invisible characters dropped: format characters
  (category Cf: zero-width space and joiners, soft hyphen, bidi controls, BOM, tag
  characters), combining marks (a card number with a combining underline under each digit is
  still one), variation selectors and the blank "filler" letters. It comes with, for each of
  its characters, the index of the original character it came from, so a redaction found in
  the view replaces exactly that stretch of the original and leaves the rest as sent (emoji
  joiners, ligatures, superscripts).
* `skeleton(text)`: for the injection screen only, `visible` further folded: casefolded,
  accents stripped, Cyrillic and Greek look-alikes mapped to the Latin letters they imitate
  ("ignore" spelled with Cyrillic i, o and e reads "ignore"), curly apostrophes straight,
  whitespace runs one space. Meaning can be lost here (Russian text becomes Latin gibberish),
  which is why nothing is ever stored from it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# Visible-blank letters (category Lo, so not caught as Cf): Hangul fillers, braille blank.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})


def _visible_char(ch: str) -> str:
    if ch in _DASHES:
        return "-"
    if ch in _BLANK_LETTERS or unicodedata.category(ch) in _DROPPED_CATEGORIES:
        return ""
    if ch.isdecimal() and not ch.isascii():
        return str(unicodedata.decimal(ch))
    return unicodedata.normalize("NFKC", ch)


def visible(text: str) -> tuple[str, Sequence[int]]:
    """`text` as displayed (see the module docstring) and, per character of it, the index of
    the character of `text` it came from."""
    if text.isascii():
        # Nothing to change, and a range is the identity without building a list: a streamed
        # answer reads its held text again at every chunk.
        return text, range(len(text))
    parts: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        shown = _visible_char(ch) if not ch.isascii() else ch
        parts.append(shown)
        origin.extend([index] * len(shown))
    return "".join(parts), origin


# A small explicit table of the look-alikes used to dodge keyword filters: Cyrillic and Greek
# letters whose glyphs match a Latin one (Unicode's confusables.txt has thousands; these are the
# ones that spell English words). Applied after casefolding, so lowercase suffices.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "\u0430": "a",  # cyrillic small letter a
        "\u0432": "b",  # cyrillic small letter ve
        "\u0435": "e",  # cyrillic small letter ie
        "\u0451": "e",  # cyrillic small letter io
        "\u0433": "r",  # cyrillic small letter ghe
        "\u04bb": "h",  # cyrillic small letter shha
        "\u0456": "i",  # cyrillic small letter byelorussian-ukrainian i
        "\u0457": "i",  # cyrillic small letter yi
        "\u0458": "j",  # cyrillic small letter je
        "\u043a": "k",  # cyrillic small letter ka
        "\u04cf": "l",  # cyrillic small letter palochka
        "\u043c": "m",  # cyrillic small letter em
        "\u043d": "h",  # cyrillic small letter en
        "\u043e": "o",  # cyrillic small letter o
        "\u043f": "n",  # cyrillic small letter pe
        "\u0440": "p",  # cyrillic small letter er
        "\u0441": "c",  # cyrillic small letter es
        "\u0455": "s",  # cyrillic small letter dze
        "\u0442": "t",  # cyrillic small letter te
        "\u0443": "y",  # cyrillic small letter u
        "\u0445": "x",  # cyrillic small letter ha
        "\u0501": "d",  # cyrillic small letter komi de
        "\u051b": "q",  # cyrillic small letter qa
        "\u051d": "w",  # cyrillic small letter we
        "\u044c": "b",  # cyrillic small letter soft sign
        "\u0446": "u",  # cyrillic small letter tse
        "\u04d5": "ae",  # cyrillic small ligature a ie
        # Greek
        "\u03b1": "a",  # greek small letter alpha
        "\u03b2": "b",  # greek small letter beta
        "\u03b3": "y",  # greek small letter gamma
        "\u03b5": "e",  # greek small letter epsilon
        "\u03b7": "n",  # greek small letter eta
        "\u03b9": "i",  # greek small letter iota
        "\u03ba": "k",  # greek small letter kappa
        "\u03bd": "v",  # greek small letter nu
        "\u03bf": "o",  # greek small letter omicron
        "\u03c1": "p",  # greek small letter rho
        "\u03c3": "o",  # greek small letter sigma
        "\u03c2": "c",  # greek small letter final sigma
        "\u03c4": "t",  # greek small letter tau
        "\u03c5": "u",  # greek small letter upsilon
        "\u03c7": "x",  # greek small letter chi
        "\u03c9": "w",  # greek small letter omega
        "\u03bc": "u",  # greek small letter mu
        "\u03f2": "c",  # greek lunate sigma symbol
        "\u03f3": "j",  # greek letter yot
        # Armenian, Latin small capitals and dotless letters
        "\u0585": "o",  # armenian small letter oh
        "\u057d": "u",  # armenian small letter seh
        "\u0570": "h",  # armenian small letter ho
        "\u0261": "g",  # latin small letter script g
        "\u0131": "i",  # latin small letter dotless i
        "\u0237": "j",  # latin small letter dotless j
        "\u029f": "l",  # latin letter small capital l
        "\u026a": "i",  # latin letter small capital i
        "\u0274": "n",  # latin letter small capital n
        "\u0280": "r",  # latin letter small capital r
        "\ua731": "s",  # latin letter small capital s
        "\u1d00": "a",  # latin letter small capital a
        "\u1d07": "e",  # latin letter small capital e
        "\u1d0f": "o",  # latin letter small capital o
        "\u1d1b": "t",  # latin letter small capital t
        "\u1d1c": "u",  # latin letter small capital u
        # Apostrophes, so "don\u2019t" reads as "don't"
        "\u2018": "'",  # left single quotation mark
        "\u2019": "'",  # right single quotation mark
        "\u02bc": "'",  # modifier letter apostrophe
        "\u2032": "'",  # prime
    }
)


_WHITESPACE_RUN = re.compile(r"\s+")


def skeleton(text: str) -> str:
    """The injection screen's view of `text` (see the module docstring)."""
    if text.isascii():  # most questions: no look-alike or accent to fold (the table has none)
        return _WHITESPACE_RUN.sub(" ", text.lower())
    shown, _ = visible(text)
    folded = shown.casefold().translate(_CONFUSABLES)
    if not folded.isascii():  # accents off: "ignóre" is "ignore"
        decomposed = unicodedata.normalize("NFKD", folded)
        folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _WHITESPACE_RUN.sub(" ", folded)
