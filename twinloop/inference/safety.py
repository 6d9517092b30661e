"""The safety layer on the request path: `twinloop.safety`'s screens, off the event loop,
counted and timed.

Each screen's findings come back as `Flag`s that the answer record (`answers.safety_flags`)
and the response (`safety`) carry; a blocked request is counted and raised.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twinloop.inference.schemas import (
    ChatMessage,
    Context,
    SafetyCount,
    SafetyFlag,
    SafetyStatus,
)
from twinloop.metrics import Metrics
from twinloop.safety.errors import UnsafeInputError
from twinloop.safety.flags import Action, Flag, Screen
from twinloop.safety.screens import (
    SafetyConfig,
    find_instruction_attack,
    screen_input,
    screen_output,
    screen_passage,
)
from twinloop.safety.stream import StreamRedactor
from twinloop.safety.verdicts import InputVerdicts
from twinloop.settings import OutputScreenMode

# The roles whose text the input screen reads: what users (or whoever replays a conversation)
# write. System and developer messages are the calling application's own instructions, the
# thing the screen protects.
_SCREENED_ROLES = ("user", "assistant")
# Text up to this long is screened on the event loop, longer text in a thread: a hop to a
# thread costs ~30 us of CPU on an idle 2-core box and several times that under load (the
# wake-up, the future's callback, the GIL handed back and forth), more than a screen of
# short text. Measured here per screen (one call, no load): the input screen ~35 us for a
# 40-character question and ~0.9 us per character beyond; the output screen ~10 us and
# ~0.3 us per character; a release of held stream text ~50 us for the default hold. Each
# limit keeps the loop blocked under ~150 us.
_INLINE_INPUT_CHARS = 160
_INLINE_OUTPUT_CHARS = 512
_INLINE_RELEASE_CHARS = 512

T = TypeVar("T")


async def _off_loop_if_long(size: int, limit: int, work: Callable[[], T]) -> T:
    """`work()` on the event loop when `size` is within `limit` characters, else in a thread."""
    if size <= limit:
        return work()
    return await asyncio.to_thread(work)


def flag_views(flags: Iterable[Flag]) -> list[SafetyFlag]:
    """The flags as a response carries them."""
    return [SafetyFlag.model_validate(flag.as_json()) for flag in flags]


def screened_contexts(
    contexts: Sequence[Context], config: SafetyConfig
) -> tuple[list[Context], list[Flag]]:
    """The passages a prompt may use, as the client is shown them (dropped ones left out,
    PII redacted per the output screen), and what the screens found. Blocking: run it off
    the event loop. QA's dry run screens its passages with it too."""
    kept: list[Context] = []
    flags: list[Flag] = []
    for context in contexts:
        screened = screen_passage(context.text, config, where=f"context:{context.doc_id}")
        flags += screened.flags
        if not screened.dropped:
            kept.append(context.model_copy(update={"text": screened.text}))
    return kept, flags


@dataclass(frozen=True)
class ScreenedAnswer:
    """An answer as the client gets it, what the output screen found, and the answer as
    generated when it is to be kept (changed, and `keep_raw_pii` on)."""

    text: str
    flags: tuple[Flag, ...]
    raw: str | None


class AnswerSafety:
    def __init__(
        self, *, config: SafetyConfig, metrics: Metrics, verdicts: InputVerdicts | None = None
    ) -> None:
        self.config = config
        self._metrics = metrics
        self.blocked = 0  # requests blocked since the gateway started, for /status
        # A conversation's earlier messages come again with every turn: read once each.
        self._verdicts = InputVerdicts(find_instruction_attack) if verdicts is None else verdicts

    # -- input ----------------------------------------------------------------------

    async def check_question(self, question: str, *, route: str) -> list[Flag]:
        return await self._check_input([("question", question)], route=route)

    async def check_messages(self, messages: Sequence[ChatMessage], *, route: str) -> list[Flag]:
        parts = [
            (f"messages[{i}]", message.text)
            for i, message in enumerate(messages)
            if message.role in _SCREENED_ROLES
        ]
        return await self._check_input(parts, route=route)

    async def _check_input(self, parts: list[tuple[str, str]], *, route: str) -> list[Flag]:
        started = time.perf_counter()
        try:
            verdicts = self._verdicts
            size = sum(len(text) for _, text in parts if not verdicts.known(text))
            flags = await _off_loop_if_long(
                size, _INLINE_INPUT_CHARS, lambda: screen_input(parts, self.config.input, verdicts)
            )
        except UnsafeInputError as e:
            self.blocked += 1
            self.count(route, [Flag(Screen.INPUT, e.rule, Action.BLOCKED, e.where)])
            raise
        finally:
            self.observe(Screen.INPUT, time.perf_counter() - started)
        self.count(route, flags)
        return flags

    # -- retrieved passages ---------------------------------------------------------

    async def screen_contexts(
        self, contexts: Sequence[Context], *, route: str
    ) -> tuple[list[Context], list[Flag]]:
        """The passages the prompt and the client get (dropped ones left out, PII redacted)."""
        if not contexts:
            return [], []
        started = time.perf_counter()
        kept, flags = await asyncio.to_thread(screened_contexts, contexts, self.config)
        self.observe(Screen.CONTEXT, time.perf_counter() - started)
        self.count(route, flags)
        return kept, flags

    # -- output ---------------------------------------------------------------------

    async def screen_answer(self, text: str, *, route: str) -> ScreenedAnswer:
        started = time.perf_counter()
        screened = await _off_loop_if_long(
            len(text), _INLINE_OUTPUT_CHARS, lambda: screen_output(text, self.config)
        )
        self.observe(Screen.OUTPUT, time.perf_counter() - started)
        self.count(route, screened.flags)
        return ScreenedAnswer(screened.text, screened.flags, self.kept_raw(text, screened.text))

    def shown_completion(
        self, completion: Mapping[str, Any], generated: str, shown: str
    ) -> dict[str, Any]:
        """An engine's chat completion as the client gets it: the first choice's content is
        the screened answer. When the screen changed it, that choice's token `logprobs` go
        too: they spell out the tokens as generated."""
        if shown == generated:
            return dict(completion)
        first, *others = completion["choices"]
        message = {**first["message"], "content": shown}
        choice = {
            **first,
            "message": message,
            **({"logprobs": None} if "logprobs" in first else {}),
        }
        return {**completion, "choices": [choice, *others]}

    def stream(self, *, route: str) -> AnswerStream:
        return AnswerStream(self, route)

    def kept_raw(self, generated: str, shown: str) -> str | None:
        """`generated`, when the screen changed it and raw PII is to be kept; else None."""
        return generated if self.config.keep_raw_pii and generated != shown else None

    # -- status ---------------------------------------------------------------------

    def status(
        self, recent: Sequence[Sequence[Mapping[str, Any]]], *, window_hours: int
    ) -> SafetyStatus:
        """The modes, and `recent` answers' stored flags summed by screen, rule and action."""
        totals: Counter[tuple[str, str, str]] = Counter()
        for flags in recent:
            for flag in flags:
                key = (str(flag["screen"]), str(flag["rule"]), str(flag["action"]))
                totals[key] += int(flag.get("count", 1))
        return SafetyStatus(
            input=self.config.input.value,
            contexts=self.config.contexts.value,
            output=self.config.output.value,
            keep_raw_pii=self.config.keep_raw_pii,
            window_hours=window_hours,
            answers_with_findings=len(recent),
            findings=[
                SafetyCount(screen=screen, rule=rule, action=action, count=count)
                for (screen, rule, action), count in totals.most_common()
            ],
            blocked_since_start=self.blocked,
        )

    # -- shared ---------------------------------------------------------------------

    def count(self, route: str, flags: Iterable[Flag]) -> None:
        for flag in flags:
            labels = (route, flag.screen.value, flag.rule, flag.action.value)
            self._metrics.safety_events.labels(*labels).inc(flag.count)

    def observe(self, screen: Screen, seconds: float) -> None:
        self._metrics.safety_seconds.labels(screen.value).observe(seconds)


@dataclass
class AnswerStream:
    """The output screen of one streamed answer: `push` each delta, `finish` at the end.

    In `redact` mode text is held back and released redacted (`twinloop.safety.stream`); in
    `flag` mode it passes at once and the whole answer is screened at the end; `off` passes.
    """

    safety: AnswerSafety
    route: str
    flags: tuple[Flag, ...] = ()
    _raw: list[str] = field(default_factory=list)
    _shown: list[str] = field(default_factory=list)
    _seconds: float = 0.0
    _finished: bool = False

    def __post_init__(self) -> None:
        config = self.safety.config
        self._redactor = (
            StreamRedactor(config.phone_regions, config.stream_max_hold_chars)
            if config.redacts
            else None
        )

    @property
    def text(self) -> str:
        """What the client was sent so far."""
        return "".join(self._shown)

    @property
    def raw(self) -> str | None:
        """The answer as generated, when it is to be kept (see `ScreenedAnswer`)."""
        return self.safety.kept_raw("".join(self._raw), self.text)

    async def screen_batch(self, chunks: Sequence[dict[str, Any]]) -> None:
        """Engine stream chunks that arrived together, screened in place for the client.

        In `redact` mode the deltas go to the redactor together and what it releases (the
        held text too when a choice finishes) is the content of the batch's last choice; the
        others' content is empty. One release per batch, not per chunk: a busy gateway reads
        several chunks at once and pays for one. Chunks carry no token `logprobs` then: they
        would spell out what is held or redacted. In `flag` and `off` modes chunks are not
        changed."""
        redactor = self._redactor
        last: dict[str, Any] | None = None  # the choice that carries what is released
        ended = False
        started = time.perf_counter()
        for chunk in chunks:
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                content = delta.get("content")
                if content:
                    self._raw.append(content)
                    if redactor is None:
                        self._shown.append(content)
                    else:
                        redactor.add(content)
                        delta["content"] = ""
                if redactor is not None and "logprobs" in choice:
                    choice["logprobs"] = None
                ended = ended or bool(choice.get("finish_reason"))
                last = choice
        if redactor is None:
            if ended:
                await self.finish()
            return
        if ended:  # everything held goes now: one release, by `finish`
            self._seconds += time.perf_counter() - started
            shown = await self.finish()
        else:
            shown = await self._run(redactor.release) if redactor.ready() else ""
            self._seconds += time.perf_counter() - started
            self._shown.append(shown)
        if last is not None and shown:
            last["delta"] = {**(last.get("delta") or {}), "content": shown}

    async def _run(self, release: Callable[[], str]) -> str:
        """A release of held text (the PII finders over it and 80 characters of context):
        on the loop while the held text is short, else off it; streamed chunks would pay a
        thread's hop every few words."""
        assert self._redactor is not None
        return await _off_loop_if_long(len(self._redactor.held), _INLINE_RELEASE_CHARS, release)

    def last_chunk(self, rest: str) -> dict[str, Any]:
        """A chunk of its own for text still held when the engine's stream ended without a
        finish_reason."""
        choice = {"index": 0, "delta": {"content": rest}, "finish_reason": None}
        return {"object": "chat.completion.chunk", "created": int(time.time()), "choices": [choice]}

    async def finish(self) -> str:
        """The rest of the answer; counts and records what the screen found (once: later
        calls return nothing)."""
        if self._finished:
            return ""
        self._finished = True
        config = self.safety.config
        started = time.perf_counter()
        rest = ""
        if self._redactor is not None:
            rest = await self._run(self._redactor.finish)
            self.flags = tuple(
                Flag(Screen.OUTPUT, kind, Action.REDACTED, "answer", n)
                for kind, n in self._redactor.hits.items()
            )
        elif config.output is OutputScreenMode.FLAG:
            whole = "".join(self._raw)
            screened = await _off_loop_if_long(
                len(whole), _INLINE_OUTPUT_CHARS, lambda: screen_output(whole, config)
            )
            self.flags = screened.flags
        self._seconds += time.perf_counter() - started
        self._shown.append(rest)
        self.safety.count(self.route, self.flags)
        self.safety.observe(Screen.OUTPUT, self._seconds)
        return rest
