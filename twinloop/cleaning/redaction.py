"""Rule 1: PII in question and answer becomes a placeholder (it never quarantines)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import phonenumbers

PII_KINDS = ("email", "iban", "card", "ssn", "ip", "phone")

_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b")
# Loose on purpose: the checksum decides, on the longest run of space-separated groups that passes.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not preceded or followed by another dotted number, so "1.2.3.4.5" is not an address.
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _longest_valid_window(
    text: str, split: str, join: str, valid: Callable[[str], bool], *, prefix_only: bool
) -> tuple[int, int] | None:
    """Character span of the longest run of `split`-separated groups whose joined form is valid.

    A greedy regex can swallow a neighbouring number ("card 4111 1111 1111 1111 12 items"), so
    the checksum is tried on every run of whole groups and the longest that passes wins.
    """
    groups = [(m.start(), m.end()) for m in re.finditer(rf"[^{split}]+", text)]
    best: tuple[int, int] | None = None
    for i in range(1 if prefix_only else len(groups)):
        for j in range(len(groups), i, -1):
            candidate = join.join(text[s:e] for s, e in groups[i:j])
            span = (groups[i][0], groups[j - 1][1])
            if valid(candidate) and (best is None or span[1] - span[0] > best[1] - best[0]):
                best = span
                break  # shorter runs from the same start cannot be longer
    return best


def _redact_checked(
    text: str,
    pattern: re.Pattern[str],
    placeholder: str,
    split: str,
    valid: Callable[[str], bool],
    *,
    prefix_only: bool,
) -> tuple[str, int]:
    hits = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal hits
        raw = m.group(0)
        span = _longest_valid_window(raw, split, "", valid, prefix_only=prefix_only)
        if span is None:
            return raw
        hits += 1
        return raw[: span[0]] + placeholder + raw[span[1] :]

    return pattern.sub(sub, text), hits


def _card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _redact_phones(text: str, regions: Sequence[str]) -> tuple[str, int]:
    if not any(ch.isdigit() for ch in text):
        return text, 0  # the matcher is the slow part of cleaning; no digit, no phone number
    spans: set[tuple[int, int]] = set()
    for region in regions:
        # Leniency VALID (the library's default): the number must be a real, assignable number.
        for match in phonenumbers.PhoneNumberMatcher(text, region):
            spans.add((match.start, match.end))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in reversed(merged):
        text = text[:start] + "[PHONE]" + text[end:]
    return text, len(merged)


def redact_pii(
    text: str, *, phone_regions: Sequence[str] = ("US", "GB", "DE", "FR")
) -> tuple[str, Counter[str]]:
    """`text` with PII replaced by placeholders, and how many of each kind were replaced.

    Order matters: emails first (their digits are not numbers), IBANs and cards before
    phones, because the phone matcher would otherwise claim parts of their digit runs.
    """
    hits: Counter[str] = Counter()
    text, hits["email"] = _EMAIL.subn("[EMAIL]", text)
    text, hits["iban"] = _redact_checked(text, _IBAN, "[IBAN]", " ", _iban_ok, prefix_only=True)
    text, hits["card"] = _redact_checked(text, _CARD, "[CARD]", " -", _card_ok, prefix_only=False)
    text, hits["ssn"] = _SSN.subn("[SSN]", text)
    text, hits["ip"] = _IPV4.subn("[IP]", text)
    text, hits["phone"] = _redact_phones(text, phone_regions)
    return text, hits
