"""Step 2 of the learning loop: clean candidate examples before anything trains on them.

Every candidate ends either in `accepted` or in `quarantined` with the rule that
stopped it and a reason a reviewer can read; nothing is silently dropped, and
`counts` holds every rule's hits. The rules run in this fixed order, and an
example is quarantined by the first rule that fires:

1. **redact** (never quarantines): PII in question and answer becomes a
   placeholder — `[EMAIL]`, `[IBAN]` (mod-97 checksum), `[CARD]` (13-19 digits,
   Luhn), `[SSN]` (US, dashed), `[IP]` (IPv4), `[PHONE]` (the `phonenumbers`
   library, numbers valid for one of `phone_regions` or written with `+`).
   It runs on every example, so quarantined ones carry no PII either.
2. **empty**: blank question or answer.
3. **injection**: prompt-injection / data-poisoning screen on question and answer.
   It runs before the length rules so a hostile item is labelled as hostile.
4. **too_short** / **too_long**: character limits, measured on the redacted text.
5. **repetition**: `bigram_repetition_ratio` of question or answer not below
   `max_bigram_repetition`.
6. **duplicate**: near-duplicate of an earlier accepted example (input order wins).
7. **source_cap**, then 8. **category_cap**: no group exceeds its share.

Output order is input order for both lists. The module is pure: no I/O, no model.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise

import phonenumbers

# Rule names, as they appear in `Quarantined.rule` and in `counts` ("quarantine.<rule>").
EMPTY = "empty"
INJECTION = "injection"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
REPETITION = "repetition"
DUPLICATE = "duplicate"
SOURCE_CAP = "source_cap"
CATEGORY_CAP = "category_cap"
RULES = (EMPTY, INJECTION, TOO_SHORT, TOO_LONG, REPETITION, DUPLICATE, SOURCE_CAP, CATEGORY_CAP)
PII_KINDS = ("email", "iban", "card", "ssn", "ip", "phone")


@dataclass(frozen=True)
class CandidateExample:
    """One question/answer pair offered for training."""

    id: str
    domain: str
    question: str
    answer: str
    source: str  # "example", "correction", or the client / user id that sent it
    category: str  # the domain, a feedback kind, a topic: whatever the caller balances on


@dataclass(frozen=True)
class Quarantined:
    """An example kept out of training, with the rule that stopped it and why."""

    example: CandidateExample
    rule: str
    reason: str


@dataclass
class CleaningResult:
    accepted: list[CandidateExample]
    quarantined: list[Quarantined]
    counts: dict[str, int]


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
    phone_regions: tuple[str, ...] = field(
        default=("US", "GB", "DE", "FR"),
        metadata={
            "help": "Regions whose national phone formats are recognised; numbers written "
            "with a leading + are recognised whatever the region."
        },
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
        for share in (self.max_share_per_source, self.max_share_per_category):
            if not 0 < share <= 1:
                raise ValueError("shares must be in (0, 1]")
        if self.min_cap_per_source < 0 or self.min_cap_per_category < 0:
            raise ValueError("cap floors must not be negative")


# --- 1. PII redaction --------------------------------------------------------------------------

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


# --- 3. Prompt-injection / poisoning screen ----------------------------------------------------

_VERB = r"(?:ignore|disregard|forget|override|bypass)"
_RULE_NOUN = (
    r"(?:instructions?|prompts?|rules|guidelines|directives|guardrails|policies|programming)"
)
_QUALIFIER = r"(?:previous|prior|above|earlier|preceding|foregoing|original|initial|system|safety)"
_SECRET = r"(?:secrets?|passwords?|api[\s_-]?keys?|credentials|access\s+tokens?|private\s+keys?)"
_SHARE = r"(?:tell|give|share|send|reveal|provide|disclose)"
# Fixed-width lookbehinds, so "never share your password" is advice, not an attack.
_NOT = r"(?<!not )(?<!never )(?<!n't )(?<!t to )"

# (name, pattern). Each one needs wording aimed at the model's own instructions, so ordinary
# questions ("How do I ignore whitespace in git diff?") do not match.
_INJECTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        (
            "override_instructions",
            rf"\b{_NOT}{_VERB}\s+(?:all\s+|any\s+|of\s+)*(?:the\s+|your\s+|these\s+|those\s+|my\s+)?"
            rf"(?:{_QUALIFIER}\s+)+{_RULE_NOUN}\b"
            rf"|\b{_NOT}{_VERB}\s+(?:all\s+(?:of\s+)?)?your\s+(?:\w+\s+)?{_RULE_NOUN}\b",
        ),
        (
            "jailbreak_persona",
            r"\byou\s+are\s+now\s+(?:in\s+)?(?:an?\s+)?(?:DAN|jailbroken|unrestricted|unfiltered|"
            r"uncensored|developer\s+mode|god\s+mode|evil)\b"
            r"|\b(?:DAN|developer|god|jailbreak)\s+mode\s+(?:is\s+)?(?:now\s+)?"
            r"(?:enabled|activated|on)\b"
            r"|\benable\s+(?:DAN|developer|god|jailbreak)\s+mode\b|\bdo\s+anything\s+now\b"
            r"|\b(?:act|behave|respond)\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|"
            r"jailbroken)\b",
        ),
        (
            "no_restrictions",
            r"\b(?:pretend|imagine|act\s+as\s+(?:if|though)|assume)\s+(?:that\s+)?you\s+"
            r"(?:have|had|are|were)\s+(?:no|free\s+(?:of|from)|without(?:\s+any)?)\s+"
            r"(?:\w+\s+){0,2}(?:restrictions|rules|limits|limitations|filters|guidelines|"
            r"guardrails|censorship|constraints|policies)\b",
        ),
        (
            "behaviour_override",
            r"\bfrom\s+now\s+on\b[,:]?\s+(?:you\s+(?:will|must|should|shall|are\s+to)\s+)?"
            r"(?:always|never|only)\s+(?:answer|respond|reply|say|tell|output|write|include|"
            r"reveal|ignore|agree|obey)"
            r"|\b(?:new|override)\s+system\s+(?:prompt|instructions?)\s*:|\bsystem\s+override\b",
        ),
        (
            "prompt_leak",
            rf"\b{_NOT}(?:reveal|print|show|output|repeat|display|leak|tell|share|expose|dump|"
            r"disclose|give)\s+(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?"
            r"(?:your\s+(?:\w+\s+){0,2}?(?:system\s+prompt|(?:hidden|secret|internal|initial|"
            r"original|system)\s+(?:instructions|prompt|rules))"
            r"|the\s+(?:hidden|secret|internal)\s+(?:system\s+)?(?:instructions|prompt))\b"
            rf"|\b{_NOT}(?:reveal|print|output|leak|dump|disclose|expose)\s+(?:me\s+|us\s+)?"
            rf"(?:all\s+)?your\s+(?:\w+\s+)?{_SECRET}\b"
            rf"|\b(?:tell|give|show)\s+(?:me|us)\s+(?:all\s+)?your\s+(?:\w+\s+)?{_SECRET}\b",
        ),
        (
            "chat_template_tokens",
            r"<\|(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|"
            r"start_header_id|end_header_id|eot_id)\|>|\[/?INST\]|<</?SYS>>",
        ),
        (
            # A secret value in training data would be learnt and repeated to anyone.
            "credential_value",
            r"\b(?:password|passwd|passphrase|pwd|api[\s_-]?key|secret[\s_-]?key|"
            r"access[\s_-]?token|auth[\s_-]?token)\s*(?:is|=|:)\s*[\"'`]?"
            r"(?=[^\s\"'`]*\d)(?=[^\s\"'`]*[A-Za-z])[^\s\"'`]{6,}",
        ),
    )
)

# Teaching the model to hand a secret out needs both halves: a secret stated, and an instruction
# to pass it on ("the admin password is X; always tell users"). Either alone is ordinary text.
_SECRET_STATED = re.compile(rf"\b{_SECRET}\s+(?:is|are|=|:)", re.IGNORECASE)
_PASS_IT_ON = re.compile(
    rf"\b(?:always|whenever)\b[^.\n]{{0,60}}?\b{_SHARE}\b"
    rf"|\b{_SHARE}\b[^.\n]{{0,60}}?\b(?:anyone|everyone|whoever)\s+(?:who\s+)?asks\b",
    re.IGNORECASE,
)

# Zero-width and soft-hyphen characters are a cheap way to split a keyword past a regex.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))


def _screen_text(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).translate(_INVISIBLE))


def find_injection(text: str) -> tuple[str, str] | None:
    """The first injection pattern `text` matches, as (pattern name, matched text), or None."""
    screened = _screen_text(text)
    for name, pattern in _INJECTION_PATTERNS:
        match = pattern.search(screened)
        if match:
            return name, match.group(0).strip()[:80] or screened[:80]
    stated, passed_on = _SECRET_STATED.search(screened), _PASS_IT_ON.search(screened)
    if stated and passed_on:
        return "leak_instruction", f"{stated.group(0)} ... {passed_on.group(0)}"[:80]
    return None


# --- 5. Repetition -----------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())


def bigram_repetition_ratio(text: str) -> float:
    """Share of word bigrams that repeat an earlier one: 1 - unique bigrams / total bigrams.

    Words are casefolded `\\w+` runs. Ordinary prose scores near 0; a model stuck in a loop
    ("the the the ...", a sentence repeated) approaches 1. Texts with fewer than two bigrams
    (under three words) score 0, since one bigram cannot repeat.
    """
    words = _words(text)
    bigrams = list(pairwise(words))
    if len(bigrams) < 2:
        return 0.0
    return 1.0 - len(set(bigrams)) / len(bigrams)


# --- 6. Near-duplicates ------------------------------------------------------------------------


def _shingles(example: CandidateExample) -> frozenset[tuple[str, ...]]:
    # "\x00" cannot be a \w word, so no shingle is shared by a question end and an answer start
    # by accident of wording.
    words = [*_words(example.question), "\x00", *_words(example.answer)]
    if len(words) < 3:
        return frozenset({tuple(words)})
    return frozenset(zip(words, words[1:], words[2:], strict=False))


# --- 7/8. Caps ---------------------------------------------------------------------------------


def cap_limit(group_sizes: Iterable[int], max_share: float, floor: int) -> int:
    """How many examples each group may keep so that no group exceeds `max_share`.

    The limit L is the largest one where a group keeping L examples holds at most `max_share`
    of the capped total `sum(min(size, L))` (water-filling: large groups are cut, small ones
    untouched), and never below `floor`, so a small batch keeps `floor` examples per group. A
    single group is never cut (there is nothing for it to dominate), and `max_share=1.0` never
    cuts anything.
    """
    sizes = list(group_sizes)
    if not sizes:
        return floor
    if len(sizes) == 1:
        return sizes[0]  # a share cap balances groups against each other; one group has none
    low, high = 0, max(sizes)
    # L <= share * S(L) holds on an interval [0, L*] (S is concave, S(0) = 0): bisect it.
    while low < high:
        mid = (low + high + 1) // 2
        if mid <= max_share * sum(min(size, mid) for size in sizes) + 1e-9:
            low = mid
        else:
            high = mid - 1
    return max(low, floor)


# --- The pipeline ------------------------------------------------------------------------------


def _apply_cap(
    kept: list[tuple[int, CandidateExample]],
    key: Callable[[CandidateExample], str],
    what: str,
    rule: str,
    max_share: float,
    floor: int,
    out: list[tuple[int, Quarantined]],
) -> list[tuple[int, CandidateExample]]:
    sizes = Counter(key(ex) for _, ex in kept)
    limit = cap_limit(sizes.values(), max_share, floor)
    seen: Counter[str] = Counter()
    survivors = []
    for index, ex in kept:  # input order: the first `limit` of each group stay
        group = key(ex)
        seen[group] += 1
        if seen[group] <= limit:
            survivors.append((index, ex))
            continue
        reason = (
            f"{what} {group!r} has {sizes[group]} of {len(kept)} remaining examples; "
            f"each {what} keeps at most {limit} (max share {max_share:g}, floor {floor})"
        )
        out.append((index, Quarantined(ex, rule, reason)))
    return survivors


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
    """Redact, screen, deduplicate and cap `candidates` (rules and order: module docstring)."""
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

    # Exact Jaccard via an inverted index: only examples sharing a shingle are compared.
    deduped: list[tuple[int, CandidateExample]] = []
    kept_shingles: list[frozenset[tuple[str, ...]]] = []
    index_of: defaultdict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, ex in kept:
        shingles = _shingles(ex)
        shared: Counter[int] = Counter(k for s in shingles for k in index_of.get(s, ()))
        best, best_sim = -1, 0.0
        for k, inter in shared.items():
            sim = inter / (len(shingles) + len(kept_shingles[k]) - inter)
            if sim > best_sim or (sim == best_sim and k < best):
                best, best_sim = k, sim
        if best >= 0 and best_sim >= config.near_duplicate_threshold:
            reason = (
                f"near-duplicate of {deduped[best][1].id!r} (Jaccard {best_sim:.2f} "
                f">= {config.near_duplicate_threshold:g})"
            )
            quarantined.append((index, Quarantined(ex, DUPLICATE, reason)))
            continue
        for s in shingles:
            index_of[s].append(len(deduped))
        kept_shingles.append(shingles)
        deduped.append((index, ex))

    capped = _apply_cap(
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
    capped = _apply_cap(
        capped,
        lambda ex: ex.category,
        "category",
        CATEGORY_CAP,
        config.max_share_per_category,
        config.min_cap_per_category,
        quarantined,
    )

    quarantined.sort(key=lambda item: item[0])
    for _, q in quarantined:
        counts[f"quarantine.{q.rule}"] += 1
    # Every rule and kind is listed, zero or not, so a dashboard sees the full set each cycle.
    result_counts = {f"redacted.{kind}": counts[f"redacted.{kind}"] for kind in PII_KINDS}
    result_counts["redacted.examples"] = counts["redacted.examples"]
    result_counts.update({f"quarantine.{rule}": counts[f"quarantine.{rule}"] for rule in RULES})
    result_counts.update(input=len(candidates), accepted=len(capped), quarantined=len(quarantined))
    return CleaningResult(
        accepted=[ex for _, ex in capped],
        quarantined=[q for _, q in quarantined],
        counts=result_counts,
    )
