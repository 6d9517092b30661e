"""Rule 1: PII in question and answer becomes a typed placeholder (it never quarantines).

Every finder reads the `visible` view of the text (`normalize.py`: NFKC, invisible characters
dropped, any script's digits as ASCII), so an address with a zero-width space inside or a
fullwidth at sign, and a card number in fullwidth or Arabic-Indic digits, are found; the
placeholder replaces exactly the original stretch the finding came
from, zero-width characters inside it included, and nothing else is touched. What is found:

* `[EMAIL]`: `name@domain.tld` (spaces around `@` allowed), and the spelled-out forms
  `name [at] domain [dot] com` / `name (at) domain (dot) com` (any brackets, any TLD) and
  `name at domain dot com` (dots spelled too, and a common TLD, so "find us at zelco.com"
  stays);
* `[IBAN]`: two letters, two digits, 11-30 more letters or digits in any case, grouped by
  spaces, dots or dashes, valid by `stdnum.iban` (mod-97 and the country's format);
* `[CARD]`: 13-19 digits grouped by any of space, `-`, `.`, `/`, `_`, valid by Luhn
  (`stdnum.luhn`); the longest valid run of whole groups wins, so a neighbouring number stays;
* `[SSN]`: US social security numbers valid by `stdnum.us.ssn` (no area 000, 666 or 9xx, no
  group 00, no serial 0000). Written `AAA-GG-SSSS`, always; written without dashes
  (`AAAGGSSSS`, `AAA GG SSSS`, `AAA.GG.SSSS`) only when "SSN", "SS#", "social security" or
  "soc sec" comes shortly before — a bare nine-digit number is far more often an order,
  routing or account number than an SSN, and redacting every one would gut ordinary text;
* `[IP]`: IPv6 addresses valid by `ipaddress` with at least three groups written (so `::1`
  and a slice `[::2]` stay), then IPv4 dotted quads (not part of a longer dotted number);
* `[PHONE]`: the `phonenumbers` library (leniency VALID), numbers valid for one of
  `phone_regions` or written with `+`.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn as std_luhn
from stdnum.us import ssn as std_ssn

from twinloop.cleaning.normalize import visible

PII_KINDS = ("email", "iban", "card", "ssn", "ip", "phone")

Span = tuple[int, int]

# IBANs, cards, SSNs and phone numbers all have digits (any script's: the view has them as
# ASCII): `find_pii` looks for one once per view and tries none of those finders without it.
_DIGIT = re.compile(r"\d")

# --- e-mail ------------------------------------------------------------------------------------

_LOCAL = r"(?<![\w.+%-])[\w.%+-]+"
_EMAIL = re.compile(rf"{_LOCAL}\s?@\s?(?:[\w-]+\.)+[^\W\d_]{{2,}}\b")
_BRACKET_AT = r"\s*(?:\[\s*(?:at|@)\s*\]|\(\s*(?:at|@)\s*\)|\{\s*(?:at|@)\s*\}|<\s*(?:at|@)\s*>)\s*"
_BRACKET_DOT = r"\s*(?:\[\s*(?:dot|\.)\s*\]|\(\s*(?:dot|\.)\s*\)|\{\s*dot\s*\}|<\s*dot\s*>)\s*"
_SPELLED_DOT = rf"(?:{_BRACKET_DOT}|\s+dot\s+)"
_COMMON_TLD = (
    r"(?:com|org|net|edu|gov|mil|io|co|uk|us|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|cz|ru|cn|"
    r"jp|in|br|au|ca|info|biz|me|ai|app|dev|xyz|email|mail)"
)
_EMAIL_SPELLED = re.compile(
    # name [at] domain [dot] com: brackets say it is an address; any TLD, real dots allowed.
    rf"{_LOCAL}{_BRACKET_AT}[\w-]+(?:(?:{_SPELLED_DOT}|\.)[\w-]+)*(?:{_SPELLED_DOT}|\.)"
    r"[^\W\d_]{2,}\b"
    # name at domain dot com: plain words, so the dots must be spelled and the TLD common.
    rf"|{_LOCAL}\s+at\s+[\w-]+(?:{_SPELLED_DOT}[\w-]+)*{_SPELLED_DOT}{_COMMON_TLD}\b",
    re.IGNORECASE,
)


# What each spelled form cannot do without: a bracket around its "at", or the word "at".
_SPELLED_AT = re.compile(r"[\[({<]|\bat\b", re.IGNORECASE)


def _emails(view: str) -> list[Span]:
    # Both patterns try a match at every word; most text has no `@` and no spelled "at".
    spans = [m.span() for m in _EMAIL.finditer(view)] if "@" in view else []
    if _SPELLED_AT.search(view):
        spans += [m.span() for m in _EMAIL_SPELLED.finditer(view)]
    return _disjoint(spans)


# --- numbers checked by a checksum ---------------------------------------------------------------

# Loose on purpose: the checksum decides, on the longest run of separated groups that passes.
_IBAN = re.compile(r"\b[a-z]{2}\d{2}(?:[ .-]?[a-z0-9]){11,30}\b", re.IGNORECASE)
_CARD = re.compile(r"(?<![\d])\d(?:[ ./_-]{0,3}\d){12,18}(?!\d)")
_GROUP_SEPARATORS = " ./_-"


def _longest_valid_window(
    text: str, valid: Callable[[str], bool], *, prefix_only: bool
) -> Span | None:
    """Character span of the longest run of separator-delimited groups that is `valid` (which
    is given the run as written, separators included).

    A greedy regex can swallow a neighbouring number ("card 4111 1111 1111 1111 12 items"), so
    the checksum is tried on every run of whole groups and the longest that passes wins.
    """
    groups = [m.span() for m in re.finditer(rf"[^{re.escape(_GROUP_SEPARATORS)}]+", text)]
    best: Span | None = None
    for i in range(1 if prefix_only else len(groups)):
        for j in range(len(groups), i, -1):
            span = (groups[i][0], groups[j - 1][1])
            if valid(text[span[0] : span[1]]) and (
                best is None or span[1] - span[0] > best[1] - best[0]
            ):
                best = span
                break  # shorter runs from the same start cannot be longer
    return best


def _checked(
    view: str, pattern: re.Pattern[str], valid: Callable[[str], bool], *, prefix_only: bool
) -> list[Span]:
    spans = []
    for m in pattern.finditer(view):
        window = _longest_valid_window(m.group(0), valid, prefix_only=prefix_only)
        if window is not None:
            spans.append((m.start() + window[0], m.start() + window[1]))
    return spans


def _compact(written: str) -> str:
    return re.sub(rf"[{re.escape(_GROUP_SEPARATORS)}]", "", written)


def _iban_ok(written: str) -> bool:
    compact = _compact(written)
    return 15 <= len(compact) <= 34 and std_iban.is_valid(compact)


def _ibans(view: str) -> list[Span]:
    return _checked(view, _IBAN, _iban_ok, prefix_only=True)


def _cards(view: str) -> list[Span]:
    """13-19 digits that pass Luhn, written as one run or as groups of at least three digits
    with one separator throughout (so two IP addresses or a list of dates are not a card); the
    longest such run of whole groups in each match wins."""
    spans = []
    for m in _CARD.finditer(view):
        groups = [(g.start(), g.end()) for g in re.finditer(r"\d+", m.group(0))]
        seps = [m.group(0)[a[1] : b[0]] for a, b in itertools.pairwise(groups)]
        best: Span | None = None
        for i in range(len(groups)):
            digits = ""
            for j in range(i, len(groups)):
                if j > i and (seps[j - 1] != seps[i] or min(_len(groups[i]), _len(groups[j])) < 3):
                    break  # one separator throughout, no short group inside a grouped number
                digits += m.group(0)[groups[j][0] : groups[j][1]]
                if len(digits) > 19:
                    break
                span = (groups[i][0], groups[j][1])
                longer = best is None or _len(span) > _len(best)
                if len(digits) >= 13 and longer and std_luhn.is_valid(digits):
                    best = span
        if best is not None:
            spans.append((m.start() + best[0], m.start() + best[1]))
    return spans


def _len(span: Span) -> int:
    return span[1] - span[0]


# --- SSN -----------------------------------------------------------------------------------------

_SSN_DASHED = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
_SSN_UNDASHED = re.compile(r"(?<![\d.-])\d{3}([ .]?)\d{2}\1\d{4}(?![\d-]|\.\d)")
_SSN_CONTEXT = re.compile(
    r"(?:\bssn\b|\bss\s?#|\bsocial\s+security\b|\bsoc\.?\s*sec\b)[^\n\d]{0,30}$", re.IGNORECASE
)


def _ssns(view: str) -> list[Span]:
    spans = [m.span() for m in _SSN_DASHED.finditer(view) if std_ssn.is_valid(m.group(0))]
    for m in _SSN_UNDASHED.finditer(view):
        context = view[max(0, m.start() - 60) : m.start()]
        if _SSN_CONTEXT.search(context) and std_ssn.is_valid(re.sub(r"\D", "", m.group(0))):
            spans.append(m.span())
    return _disjoint(spans)


# --- IP addresses --------------------------------------------------------------------------------

_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9a-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9a-f]{0,4})"
    r"(?:%[\w.]+)?(?![\w:])",
    re.IGNORECASE,
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not preceded or followed by another dotted number, so "1.2.3.4.5" is not an address.
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?\d)")


def _ipv6_ok(candidate: str) -> bool:
    address = candidate.split("%", 1)[0]
    if sum(1 for group in re.split(r"[:.]", address) if group) < 3:
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _ips(view: str) -> list[Span]:
    # An IPv6 address has at least two colons; an IPv4 one, digits.
    spans = (
        [m.span() for m in _IPV6.finditer(view) if _ipv6_ok(m.group(0))]
        if view.count(":") >= 2
        else []
    )
    if _DIGIT.search(view):
        spans += [m.span() for m in _IPV4.finditer(view)]
    return _disjoint(spans)


# --- phones --------------------------------------------------------------------------------------


def _phones(view: str, regions: Sequence[str]) -> list[Span]:
    spans: set[Span] = set()
    for region in regions:
        # Leniency VALID (the library's default): the number must be a real, assignable number.
        for match in phonenumbers.PhoneNumberMatcher(view, region):
            spans.add((match.start, match.end))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def _disjoint(spans: list[Span]) -> list[Span]:
    """`spans` sorted, each overlapping one dropped (the earlier, then the longer, wins)."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s[0], -s[1])):
        if out and span[0] < out[-1][1]:
            continue
        out.append(span)
    return out


@dataclass(frozen=True)
class PiiSpan:
    """One stretch of a text that redaction replaces: `text[start:end]` becomes `placeholder`."""

    start: int
    end: int
    kind: str
    placeholder: str


def _finders(
    phone_regions: Sequence[str],
) -> tuple[tuple[str, str, Callable[[str], list[Span]], bool], ...]:
    """(kind, placeholder, finder, whether it can only match where there is a digit). The
    phone matcher is the slow part of cleaning, and every finder tries its patterns at each
    word: most text has no digit at all. (IP addresses check their own: an IPv6 one may be
    written with hexadecimal letters only.)"""
    return (
        ("email", "[EMAIL]", _emails, False),
        ("iban", "[IBAN]", _ibans, True),
        ("card", "[CARD]", _cards, True),
        ("ssn", "[SSN]", _ssns, True),
        ("ip", "[IP]", _ips, False),
        ("phone", "[PHONE]", lambda view: _phones(view, phone_regions), True),
    )


_NO_HITS = {kind: 0 for kind, *_ in _finders(())}
# What every finder needs at least one of: a digit; an `@`, a bracket or the word "at" (an
# e-mail address, spelled or not); colons (an IPv6 address). Most answers are prose without
# any: the streamed redactor runs the finders at every release, ~9 us each even when nothing
# matches, against ~1.5 us for this one search.
_MAYBE_PII = re.compile(r"[\d@:\[({<]|\bat\b", re.IGNORECASE)


def find_pii(
    text: str, *, phone_regions: Sequence[str] = ("US", "GB", "DE", "FR")
) -> tuple[list[PiiSpan], Counter[str]]:
    """Where `redact_pii` replaces PII in `text` (disjoint spans of `text` itself, in order),
    and how many of each kind it found.

    Order matters: emails first (their digits are not numbers), IBANs and cards before
    phones, because the phone matcher would otherwise claim parts of their digit runs.
    Each kind reads a fresh view of the text with the placeholders of the kinds before it;
    `source` remembers, for each character of that text, the stretch of `text` it stands
    for and the span it belongs to (None: a character of `text` as sent), so the spans come
    back in `text`'s own coordinates: what a streamed answer needs to release a prefix.
    """
    current = text
    view, origin = visible(current)
    if _MAYBE_PII.search(view) is None:
        none: Counter[str] = Counter()
        dict.update(none, _NO_HITS)  # not Counter(mapping): its ABC check costs more than this
        return [], none
    source: list[tuple[int, int, int | None]] = []  # built at the first find: most texts have none
    placed: list[tuple[str, str]] = []
    hits: Counter[str] = Counter()
    has_digit = _DIGIT.search(view) is not None
    for kind, placeholder, find, needs_digit in _finders(phone_regions):
        if placed:  # the text changed: read it again (placeholders add no digit)
            view, origin = visible(current)
            has_digit = has_digit and _DIGIT.search(view) is not None
        spans = find(view) if has_digit or not needs_digit else []
        hits[kind] = len(spans)
        if spans and not placed:
            source = [(i, i + 1, None) for i in range(len(text))]
        for start, end in sorted(spans, reverse=True):
            first, last = origin[start], origin[end - 1] + 1
            # A match that takes part of an earlier placeholder takes all of it.
            while (
                first > 0
                and source[first][2] is not None
                and source[first - 1][2] == source[first][2]
            ):
                first -= 1
            while (
                last < len(source)
                and source[last - 1][2] is not None
                and source[last][2] == source[last - 1][2]
            ):
                last += 1
            stretch = (source[first][0], source[last - 1][1], len(placed))
            placed.append((kind, placeholder))
            current = current[:first] + placeholder + current[last:]
            source[first:last] = [stretch] * len(placeholder)
    found: list[PiiSpan] = []
    for (start, end, number), _ in itertools.groupby(source):
        if number is not None:
            found.append(PiiSpan(start, end, *placed[number]))
    return found, hits


def apply_spans(text: str, spans: Sequence[PiiSpan]) -> str:
    """`text` with each span (disjoint, in order) replaced by its placeholder."""
    parts: list[str] = []
    at = 0
    for span in spans:
        parts += [text[at : span.start], span.placeholder]
        at = span.end
    parts.append(text[at:])
    return "".join(parts)


def redact_pii(
    text: str, *, phone_regions: Sequence[str] = ("US", "GB", "DE", "FR")
) -> tuple[str, Counter[str]]:
    """`text` with PII replaced by placeholders, and how many of each kind were replaced
    (what is found, and in which order: `find_pii`)."""
    spans, hits = find_pii(text, phone_regions=phone_regions)
    return apply_spans(text, spans), hits
