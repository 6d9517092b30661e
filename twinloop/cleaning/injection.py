"""Rule 3: the prompt-injection / data-poisoning screen on question and answer."""

from __future__ import annotations

import re
import unicodedata

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
