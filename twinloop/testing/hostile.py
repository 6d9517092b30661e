"""The shipped hostile items: what the screen must catch, and how to tell that it did.

`data/hostile_items.jsonl` holds one item a line: a question and an answer (at /ingest, the
question asked and the correction sent for its answer), optional held-out paraphrases, and
what must happen:

* `"expect": "redacted"`: the item passes the screen, every `placeholders` entry appears in
  its text and no `absent` string can be read in it (see `readable`);
* `"expect": "quarantined"`: the screen stops it with `rule`; anything in `absent` must still
  not be readable in what it keeps.

Items are prompt injection in many spellings (look-alike letters, fullwidth, zero-width and
soft hyphens, accents, digits for letters, spaced or joined letters, reversed text behind a
bidi override, tag-character smuggling, other languages, chat-template tokens), poisoning
(standing orders, trigger words, secrets to pass on), PII in many spellings (zero-width,
fullwidth, dots and dashes, lowercase IBANs, IPv6, SSNs without dashes, spelled-out e-mail
addresses) and oversize or invisible text. `repeat` multiplies a field to make it oversize.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

DATA = Path(__file__).parent / "data" / "hostile_items.jsonl"


@dataclass(frozen=True)
class HostileItem:
    id: str
    kind: str  # injection | poisoning | pii | oversize | unicode
    note: str
    question: str
    answer: str
    expect: str  # redacted | quarantined
    rule: str | None = None
    placeholders: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    paraphrases: tuple[str, ...] = field(default=())


def load_hostile_items(path: Path = DATA) -> list[HostileItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        repeat = raw.get("repeat", {})
        items.append(
            HostileItem(
                id=raw["id"],
                kind=raw["kind"],
                note=raw["note"],
                question=raw["question"] * repeat.get("question", 1),
                answer=raw["answer"] * repeat.get("answer", 1),
                expect=raw["expect"],
                rule=raw.get("rule"),
                placeholders=tuple(raw.get("placeholders", ())),
                absent=tuple(raw.get("absent", ())),
                paraphrases=tuple(raw.get("heldout", {}).get("paraphrases", ())),
            )
        )
    return items


def readable(text: str) -> str:
    """`text` as a reader (or a model) would take it: NFKC, invisible characters gone, any
    script's digits in ASCII, casefolded. An `absent` string must not be in this."""
    shown = "".join(
        str(unicodedata.decimal(ch)) if ch.isdecimal() else ch
        for ch in unicodedata.normalize("NFKC", text)
        if unicodedata.category(ch) not in ("Cf", "Mn", "Me")
    )
    return shown.replace("\u2013", "-").casefold()


def leaks(text: str, absent: str) -> bool:
    """Whether `absent` can be read in `text`: as written, or (for a number) as its digits."""
    shown = readable(text)
    if absent.casefold() in shown:
        return True
    if re.fullmatch(r"[\d\s.\-/]+", absent):  # a number leaks whatever separates its digits
        return re.sub(r"\D", "", absent) in re.sub(r"\D", "", shown)
    compact = re.sub(r"[\s\-.]", "", absent.casefold())  # an IBAN, however grouped
    return bool(re.fullmatch(r"[a-z]{2}\d{2}[a-z0-9]+", compact)) and compact in re.sub(
        r"[\s\-.]", "", shown
    )
