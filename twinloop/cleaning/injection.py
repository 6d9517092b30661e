"""Rule 3: the prompt-injection / data-poisoning screen on question and answer.

The patterns are read on several views of the text, so a spelling trick does not hide them:

1. the `skeleton` (`normalize.py`): NFKC, invisible characters dropped, casefolded, accents
   off, Cyrillic/Greek look-alikes folded to Latin ("ignore" in Cyrillic look-alikes, in
   fullwidth letters, or with a zero-width space inside);
2. words joined by punctuation read as words (`ignore-previous-instructions`,
   `ignore_previous_instructions`, `ignore.previous.instructions`);
3. digits and symbols standing for letters (`1gn0r3 pr3v10us 1nstruct10ns`, `@ll`), read
   once with `1` as `i` and once as `l`;
4. letters spaced out (`i g n o r e  a l l ...`) joined again, and the squashed result
   searched for the commonest attack phrases without word breaks;
5. text behind a right-to-left override read backwards, and text hidden in Unicode tag
   characters (invisible, but some models read them) decoded — any such hidden run is itself
   an attack (`hidden_text`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twinloop.cleaning.normalize import skeleton
from twinloop.cleaning.prefixes import literal_prefixes

_VERB = r"(?:ignore|disregard|forget|override|bypass|skip)"
_RULE_NOUN = (
    r"(?:instructions?|prompts?|rules|guidelines|directives|guardrails|policies|programming|"
    r"commands|orders)"
)
_QUALIFIER = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|original|initial|system|safety|"
    r"developer|existing|current)"
)
_SECRET = r"(?:secrets?|passwords?|api[\s_-]?keys?|credentials|access\s+tokens?|private\s+keys?)"
_SHARE = r"(?:tell|give|share|send|reveal|provide|disclose)"
_NO_LIMITS = (
    r"(?:restrictions|rules|limits|limitations|filters|guidelines|guardrails|censorship|"
    r"constraints|policies|morals|ethics)"
)
# Fixed-width lookbehinds, so "never share your password" is advice, not an attack.
_NOT = r"(?<!not )(?<!never )(?<!n't )(?<!t to )"
_HIDDEN_PROMPT = (
    r"(?:system\s+prompt|(?:hidden|secret|internal|initial|original|system)\s+"
    r"(?:instructions|prompt|rules))"
)

# Rules aimed at the model's own instructions: an attack wherever it appears, in a live question
# as much as in training data (the safety layer screens requests with these alone).
INSTRUCTION_RULES = frozenset(
    {
        "override_instructions",
        "jailbreak_persona",
        "no_restrictions",
        "system_override",
        "prompt_leak",
        "chat_template_tokens",
        "hidden_text",
    }
)
# Rules about what a model would learn or pass on: standing orders, trigger words, secrets stated
# or handed out. Poisoning in training data or in a retrieved document; in a user's own question
# they are ordinary requests ("from now on, answer in French"; "my password is ... and login
# fails").
POISONING_RULES = frozenset(
    {"behaviour_override", "trigger_phrase", "credential_value", "leak_instruction"}
)
ALL_RULES = INSTRUCTION_RULES | POISONING_RULES


def _on_casefolded(pattern: str) -> re.Pattern[str]:
    """`pattern`, case-insensitive, compiled for text already casefolded (every view is the
    skeleton's, `_views`): its letters lowercased, matched case-sensitively. IGNORECASE
    matching cost twice as much (the instruction rules over an ordinary question's view:
    ~21 us against ~10); tests/unit/cleaning/test_injection_case.py holds the two equal."""
    return re.compile(re.sub(r"(?<!\\)[A-Z]", lambda m: m.group(0).lower(), pattern))


# (name, pattern). Each one needs wording aimed at the model's own instructions, so ordinary
# questions ("How do I ignore whitespace in git diff?") do not match. Matched case-insensitively.
RULE_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "override_instructions",
        rf"\b{_NOT}{_VERB}\s+(?:all\s+|any\s+|of\s+)*(?:the\s+|your\s+|these\s+|those\s+|my\s+)?"
        rf"(?:{_QUALIFIER}\s+)+{_RULE_NOUN}\b"
        rf"|\b{_NOT}{_VERB}\s+(?:all\s+(?:of\s+)?)?your\s+(?:\w+\s+)?{_RULE_NOUN}\b"
        # "ignore the above and ...", "disregard everything said before"
        rf"|\b{_NOT}{_VERB}\s+(?:all\s+of\s+|everything\s+)?the\s+above\b"
        rf"|\b{_NOT}{_VERB}\s+(?:all|everything)\s+(?:(?:you\s+were\s+)?(?:said|written|"
        r"stated|told)\s+)?(?:above|before|so\s+far|until\s+now|previously)\b",
    ),
    (
        # The same in the languages an attacker most often switches to (accents are off in
        # the skeleton: "précédentes" reads "precedentes").
        "override_instructions",
        r"\b(?:ignorier\w*|vergiss|missachte\w*)\s+(?:alle\s+)?(?:\w+\s+)?"
        r"(?:anweisungen|instruktionen|regeln|vorgaben)\b"
        r"|\b(?:ignore[rz]?|oublie[rz]?)\s+(?:toutes\s+)?(?:les|tes|vos|ces)\s+"
        r"(?:\w+\s+)?(?:instructions|consignes|regles)\b"
        r"|\b(?:ignora[rd]?|olvida[rd]?)\s+(?:todas\s+)?(?:las|tus|sus|estas)\s+"
        r"(?:\w+\s+)?(?:instrucciones|reglas|indicaciones)\b",
    ),
    (
        "jailbreak_persona",
        r"\byou\s+are\s+now\s+(?:in\s+)?(?:an?\s+)?(?:DAN|jailbroken|unrestricted|unfiltered|"
        r"uncensored|developer\s+mode|god\s+mode|evil)\b"
        r"|\b(?:DAN|developer|god|jailbreak)\s+mode\s+(?:is\s+)?(?:now\s+)?"
        # ... at the end of a clause: "developer mode is enabled in settings" is a phone.
        r"(?:enabled|activated|on)\s*(?:[.!:;,]|$)"
        r"|\benable\s+(?:DAN|developer|god|jailbreak)\s+mode\b|\bdo\s+anything\s+now\b"
        r"|\b(?:act|behave|respond)\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|"
        r"jailbroken)\b",
    ),
    (
        "no_restrictions",
        r"\b(?:pretend|imagine|act\s+as\s+(?:if|though)|assume)\s+(?:that\s+)?you\s+"
        r"(?:have|had|are|were)\s+(?:no|free\s+(?:of|from)|without(?:\s+any)?)\s+"
        rf"(?:\w+\s+){{0,2}}{_NO_LIMITS}\b"
        r"|\b(?:you\s+are|you're|play|be|as|roleplay)\s+(?:now\s+)?(?:an?\s+)?"
        r"(?:\w+\s+)?(?:ai|assistant|chatbot|model|llm|bot)\s+(?:with\s+no|without(?:\s+any)?|"
        rf"free\s+(?:of|from))\s+(?:\w+\s+){{0,2}}{_NO_LIMITS}\b",
    ),
    (
        "behaviour_override",
        r"\bfrom\s+now\s+on\b[,:]?\s+(?:you\s+(?:will|must|should|shall|are\s+to)\s+)?"
        r"(?:always|never|only)\s+(?:answer|respond|reply|say|tell|output|write|include|"
        r"reveal|ignore|agree|obey)",
    ),
    (
        "system_override",
        r"\b(?:new|override|updated)\s+system\s+(?:prompt|instructions?)\s*:"
        r"|\bsystem\s+override\b",
    ),
    (
        "prompt_leak",
        rf"\b{_NOT}(?:reveal|print|show|output|repeat|display|leak|tell|share|expose|dump|"
        r"disclose|give|recite)\s+(?:me\s+|us\s+)?(?:all\s+)?(?:of\s+)?"
        r"(?:the\s+(?:full\s+|exact\s+|entire\s+|whole\s+)?(?:contents?|text|wording)\s+of\s+)?"
        rf"(?:your\s+(?:\w+\s+){{0,2}}?{_HIDDEN_PROMPT}"
        r"|the\s+(?:hidden|secret|internal)\s+(?:system\s+)?(?:instructions|prompt))\b"
        rf"|\bwhat\s+(?:are|were|is|was)\s+your\s+(?:\w+\s+)?{_HIDDEN_PROMPT}\b"
        rf"|\b{_NOT}(?:reveal|print|output|leak|dump|disclose|expose)\s+(?:me\s+|us\s+)?"
        rf"(?:all\s+)?your\s+(?:\w+\s+)?{_SECRET}\b"
        rf"|\b(?:tell|give|show)\s+(?:me|us)\s+(?:all\s+)?your\s+(?:\w+\s+)?{_SECRET}\b",
    ),
    (
        "chat_template_tokens",
        r"<\|[a-z_]{2,30}\|>|\[/?INST\]|<</?SYS>>"
        # After a line start or a space, read from the first `#`: a match then starts with
        # `##` (twinloop.cleaning.prefixes finds that), and the reported text is the same.
        r"|(?:^|(?<=\s))#{2,}\s*(?:system|instruction|response)s?\s*:",
    ),
    (
        # A secret value in training data would be learnt and repeated to anyone.
        "credential_value",
        r"\b(?:password|passwd|passphrase|pwd|api[\s_-]?key|secret[\s_-]?key|"
        r"access[\s_-]?token|auth[\s_-]?token)\s*(?:is|=|:)\s*[\"'`]?"
        r"(?=[^\s\"'`]*\d)(?=[^\s\"'`]*[A-Za-z])[^\s\"'`]{6,}",
    ),
    (
        # Poisoning: a trigger word that switches behaviour (a backdoor), or a standing order
        # about what to tell whoever asks.
        "trigger_phrase",
        r"\b(?:when(?:ever)?|if|once)\s+(?:you\s+)?(?:see|hear|read|receive|get|encounter)\s+"
        r"(?:the\s+)?(?:word|phrase|code\s*word|keyword|token|string|trigger)\b[^.\n]{0,80}?"
        r"\b(?:you\s+(?:must|should|will)\s+)?(?:always\s+)?(?:reply|respond|answer|say|"
        r"reveal|ignore|disregard|approve|grant|comply|obey|output|switch|unlock)\b"
        r"|\b(?:whenever|every\s+time)\s+(?:anyone|someone|somebody|a\s+user|the\s+user|"
        r"users?|people|a\s+customer|customers)\s+(?:asks?|mentions?|says?|types?|writes?)\b"
        r"[^.\n]{0,80}?\b(?:tell\s+them|reply|respond|answer|say|recommend|send\s+them|"
        r"direct\s+them|point\s+them)\b",
    ),
)


@dataclass(frozen=True)
class _Rule:
    """A compiled rule, and its possible first words (`twinloop.cleaning.prefixes`): a view
    with none of them is not searched, as the rule cannot match there. An ordinary question
    has the first words of one or two rules of ten (~5 us instead of ~20 per view)."""

    name: str
    pattern: re.Pattern[str]
    starts: re.Pattern[str] | None  # None: no such words found; always searched

    @classmethod
    def of(cls, name: str, pattern: re.Pattern[str]) -> _Rule:
        prefixes = literal_prefixes(pattern)
        starts = (
            re.compile("|".join(re.escape(text) for text in sorted(prefixes)))
            if prefixes is not None
            else None
        )
        return cls(name, pattern, starts)

    def search(self, view: str) -> re.Match[str] | None:
        if self.starts is not None and self.starts.search(view) is None:
            return None
        return self.pattern.search(view)


_INJECTION_PATTERNS = tuple(
    _Rule.of(name, _on_casefolded(pattern)) for name, pattern in RULE_PATTERNS
)

# Teaching the model to hand a secret out needs both halves: a secret stated, and an instruction
# to pass it on ("the admin password is X; always tell users"). Either alone is ordinary text.
SECRET_STATED = rf"\b{_SECRET}\s+(?:is|are|=|:)"
PASS_IT_ON = (
    rf"\b(?:always|whenever)\b[^.\n]{{0,60}}?\b{_SHARE}\b"
    rf"|\b{_SHARE}\b[^.\n]{{0,60}}?\b(?:anyone|everyone|whoever)\s+(?:who\s+)?asks\b"
)
_SECRET_STATED = _Rule.of("leak_instruction", _on_casefolded(SECRET_STATED))
_PASS_IT_ON = _Rule.of("leak_instruction", _on_casefolded(PASS_IT_ON))

# Squashed phrases, for letters spaced out past every word break: "ignoreallpreviousinstructions".
_SQUASHED: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "override_instructions",
        re.compile(
            r"(?:ignore|disregard|forget|override|bypass)(?:all|any|of|the|your|these|those|my)*"
            r"(?:previous|prior|above|earlier|preceding|original|initial|system|safety)+"
            r"(?:instructions?|prompts?|rules|guidelines|directives)"
        ),
    ),
    (
        "prompt_leak",
        re.compile(
            r"(?:reveal|print|show|repeat|output|leak)(?:me|us)?(?:all)?(?:of)?(?:your|the)"
            r"(?:systemprompt|(?:hidden|secret|initial|original|system)(?:instructions|prompt))"
        ),
    ),
    ("jailbreak_persona", re.compile(r"developermode|jailbreakmode|doanythingnow|youarenowdan")),
)
_NOT_SQUASHED = re.compile(r"(?:not|never|nt|tto)$")

_WORD_SEPARATORS = re.compile(r"(?<=[^\W\d_])[-_.·•/\\|*+~=^]+(?=[^\W\d_])")
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", "$": "s"}
_LEET_TABLES = {one: {**_LEET, "1": one} for one in ("i", "l")}
_LEET_TOKEN = re.compile(r"[\w@$]+")
# A letter and a stand-in for one in the same token: only such a token reads differently.
# Ordinary text ("the capital of France? (123)") has none, and one scan in C says so.
# The nearest such pair has only the other token characters between them (`_`, 2, 6, other
# scripts' digits), so no backtracking across words.
_LEET_MIXED = re.compile(r"[^\W\d_](?:_|[^\D013-9])*[013-9@$]|[013-9@$](?:_|[^\D013-9])*[^\W\d_]")
_SPACED_LETTERS = re.compile(r"(?<![^\W\d_])(?:[^\W\d_][ .\-_*]){3,}[^\W\d_](?![^\W\d_])")
_BIDI = frozenset("\u202a\u202b\u202d\u202e\u2066\u2067\u2068\u200f")
_TAGS = re.compile(r"(?<![\U0001f3f4\U000e0020-\U000e007e])[\U000e0020-\U000e007e]{4,}")


def _leet(text: str, one: str) -> str:
    table = _LEET_TABLES[one]

    def fold(m: re.Match[str]) -> str:
        token = m.group(0)
        has_letter = any(ch.isalpha() for ch in token)
        if not has_letter or not any(ch in table for ch in token):
            return token
        return "".join(table.get(ch, ch) for ch in token)

    return _LEET_TOKEN.sub(fold, text)


def _views(text: str) -> tuple[list[str], list[str]]:
    """The views the patterns read (module docstring, 1-4), and the squashed tokens of 4."""
    base = skeleton(text)
    words = _WORD_SEPARATORS.sub(" ", base)
    squashed: list[str] = []

    def join(m: re.Match[str]) -> str:
        token = re.sub(r"[ .\-_*]", "", m.group(0))
        squashed.append(token)
        return token

    spaced = _SPACED_LETTERS.sub(join, words)
    folded = [_leet(words, "i"), _leet(words, "l")] if _LEET_MIXED.search(words) else []
    views = [base, words, *folded, spaced]
    if not _BIDI.isdisjoint(text):
        views.append(base[::-1])
    unique = list(dict.fromkeys(views))
    return unique, squashed


def _hidden_payload(text: str) -> str | None:
    """The ASCII text hidden in a run of Unicode tag characters (not an emoji flag's)."""
    runs = _TAGS.findall(text)
    if not runs:
        return None
    return " ".join("".join(chr(ord(ch) - 0xE0000) for ch in run) for run in runs)


def _search(view: str, rules: frozenset[str]) -> tuple[str, str] | None:
    for rule in _INJECTION_PATTERNS:
        match = rule.search(view) if rule.name in rules else None
        if match:
            return rule.name, match.group(0).strip()[:80] or view[:80]
    if "leak_instruction" in rules:
        stated, passed_on = _SECRET_STATED.search(view), _PASS_IT_ON.search(view)
        if stated and passed_on:
            return "leak_instruction", f"{stated.group(0)} ... {passed_on.group(0)}"[:80]
    return None


def find_injection(text: str, rules: frozenset[str] = ALL_RULES) -> tuple[str, str] | None:
    """The first of `rules` that `text` matches, as (rule name, matched text), or None."""
    hidden = _hidden_payload(text) if "hidden_text" in rules else None
    if hidden is not None:
        return "hidden_text", hidden[:80]
    views, squashed = _views(text)
    for view in views:
        found = _search(view, rules)
        if found:
            return found
    for token in squashed:
        for name, pattern in _SQUASHED:
            for match in pattern.finditer(token) if name in rules else ():
                if not _NOT_SQUASHED.search(token[: match.start()]):
                    return name, match.group(0)[:80]
    return None
