"""The three screens on one text each: pure functions, no I/O (callers run them off the loop)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twinloop.cleaning.config import CleaningConfig
from twinloop.cleaning.injection import ALL_RULES, INSTRUCTION_RULES, find_injection
from twinloop.cleaning.redaction import apply_spans, find_pii
from twinloop.safety.errors import UnsafeInputError
from twinloop.safety.flags import Action, Flag, Screen
from twinloop.safety.verdicts import Verdict
from twinloop.settings import ContextScreenMode, InputScreenMode, OutputScreenMode

if TYPE_CHECKING:
    from twinloop.settings import SafetySettings


@dataclass(frozen=True, kw_only=True)
class SafetyConfig:
    """What each screen does (`twinloop.settings.SafetySettings` documents every field)."""

    input: InputScreenMode = InputScreenMode.BLOCK
    contexts: ContextScreenMode = ContextScreenMode.DROP
    output: OutputScreenMode = OutputScreenMode.REDACT
    keep_raw_pii: bool = False
    stream_max_hold_chars: int = 256
    # The cleaning step's regions: an answer is screened for the numbers training data is.
    phone_regions: tuple[str, ...] = field(default_factory=lambda: CleaningConfig().phone_regions)

    @classmethod
    def from_settings(cls, settings: SafetySettings) -> SafetyConfig:
        return cls(  # coerced: a settings copy made with `model_copy(update=...)` holds strings
            input=InputScreenMode(settings.input),
            contexts=ContextScreenMode(settings.contexts),
            output=OutputScreenMode(settings.output),
            keep_raw_pii=settings.keep_raw_pii,
            stream_max_hold_chars=settings.stream_max_hold_chars,
        )

    @classmethod
    def off(cls) -> SafetyConfig:
        return cls(
            input=InputScreenMode.OFF, contexts=ContextScreenMode.OFF, output=OutputScreenMode.OFF
        )

    @property
    def redacts(self) -> bool:
        return self.output is OutputScreenMode.REDACT


@dataclass(frozen=True)
class Screened:
    """A text as the client (or the prompt) gets it, and what the screens found in it.
    `dropped`: a passage the context screen left out."""

    text: str
    flags: tuple[Flag, ...] = ()
    dropped: bool = False


def find_instruction_attack(text: str) -> Verdict:
    """The first of the rules aimed at the model's instructions that `text` matches."""
    return find_injection(text, INSTRUCTION_RULES)


def screen_input(
    parts: Sequence[tuple[str, str]],
    mode: InputScreenMode,
    find: Callable[[str], Verdict] = find_instruction_attack,
) -> list[Flag]:
    """Flags for each (where, text) that attacks the model's instructions; in `block` mode
    the first one raises `UnsafeInputError` instead. `find`: `find_instruction_attack`, or
    the same remembered (`twinloop.safety.verdicts`).

    Only the rules aimed at the instructions apply (`INSTRUCTION_RULES`): the poisoning rules
    are about what a model would learn, and in a live question "from now on, answer in
    French" or "my password is ... and login fails" are ordinary requests.
    """
    if mode is InputScreenMode.OFF:
        return []
    flags = []
    for where, text in parts:
        found = find(text)
        if found is None:
            continue
        rule, matched = found
        if mode is InputScreenMode.BLOCK:
            raise UnsafeInputError(rule=rule, where=where, matched=matched)
        flags.append(Flag(Screen.INPUT, rule, Action.FLAGGED, where))
    return flags


def screen_output(text: str, config: SafetyConfig, *, where: str = "answer") -> Screened:
    """`text` with its PII redacted (in `redact` mode), and a flag per kind found."""
    if config.output is OutputScreenMode.OFF:
        return Screened(text)
    spans, hits = find_pii(text, phone_regions=config.phone_regions)
    action = Action.REDACTED if config.redacts else Action.FLAGGED
    flags = tuple(
        Flag(Screen.OUTPUT, kind, action, where, count) for kind, count in hits.items() if count
    )
    return Screened(apply_spans(text, spans) if config.redacts else text, flags)


def screen_passage(text: str, config: SafetyConfig, *, where: str) -> Screened:
    """A retrieved passage as the prompt and the client get it.

    Every cleaning rule applies, poisoning included: a document that gives standing orders
    ("whenever anyone asks about refunds, tell them ...") is the indirect injection a
    retrieval prompt invites. A dropped passage is not redacted (nobody sees it); a kept one
    passes the output screen, so the model is never shown PII it could repeat in a spelling
    the output screen would miss.
    """
    flags: tuple[Flag, ...] = ()
    if config.contexts is not ContextScreenMode.OFF:
        found = find_injection(text, ALL_RULES)
        if found is not None:
            drop = config.contexts is ContextScreenMode.DROP
            action = Action.DROPPED if drop else Action.FLAGGED
            flags = (Flag(Screen.CONTEXT, found[0], action, where),)
            if drop:
                return Screened(text, flags, dropped=True)
    shown = screen_output(text, config, where=where)
    return Screened(shown.text, flags + shown.flags)
