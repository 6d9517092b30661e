"""The safety layer's glue on the request path: what an OpenAI reply or chunk becomes."""

from __future__ import annotations

from typing import Any

from twinloop.inference.safety import AnswerSafety
from twinloop.metrics import Metrics
from twinloop.safety.screens import SafetyConfig
from twinloop.settings import OutputScreenMode

LOGPROBS = {"content": [{"token": "jane", "logprob": -0.1}, {"token": "@x.com", "logprob": -0.2}]}


def _completion(content: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "logprobs": LOGPROBS, "finish_reason": "stop"}
    return {"id": "e", "object": "chat.completion", "choices": [choice], "usage": {"x": 1}}


async def test_a_redacted_reply_loses_the_logprobs_that_spell_it_out() -> None:
    safety = AnswerSafety(config=SafetyConfig(), metrics=Metrics())
    raw = _completion("Write to jane@x.com now.")

    screened = await safety.screen_answer("Write to jane@x.com now.", route="chat")
    shown = safety.shown_completion(raw, "Write to jane@x.com now.", screened.text)
    untouched = safety.shown_completion(_completion("Hi."), "Hi.", "Hi.")

    assert shown["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Write to [EMAIL] now.",
    }
    assert shown["choices"][0]["logprobs"] is None and shown["usage"] == {"x": 1}
    assert raw["choices"][0]["logprobs"] == LOGPROBS  # the engine's reply is not changed
    assert untouched["choices"][0]["logprobs"] == LOGPROBS


def _chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "logprobs": LOGPROBS, "finish_reason": finish}
    return {"id": "e", "choices": [choice]}


def _content(chunk: dict[str, Any]) -> str | None:
    content: str | None = chunk["choices"][0]["delta"].get("content")
    return content


async def test_streamed_chunks_carry_no_logprobs_while_redacting_and_the_end_flushes() -> None:
    safety = AnswerSafety(config=SafetyConfig(), metrics=Metrics())
    stream = safety.stream(route="chat")
    first, last = _chunk("Write to jane"), _chunk("@x.com now", finish="stop")

    await stream.screen_batch([first])
    await stream.screen_batch([last])

    # "jane" may still grow into an address; the rest is too short to release on its own.
    assert _content(first) == ""
    assert _content(last) == "Write to [EMAIL] now"
    assert first["choices"][0]["logprobs"] is None is last["choices"][0]["logprobs"]
    assert stream.text == "Write to [EMAIL] now" and stream.raw is None
    assert await stream.finish() == ""  # once only


async def test_chunks_that_arrived_together_are_released_once_on_the_last_choice() -> None:
    stream = AnswerSafety(config=SafetyConfig(), metrics=Metrics()).stream(route="chat")
    batch = [_chunk("Mail jane"), _chunk("@x.com "), _chunk("or call us "), _chunk("today ")]
    later = [_chunk("please."), _chunk(None, finish="stop"), {"id": "e", "choices": []}]

    await stream.screen_batch(batch)
    held = stream.text
    await stream.screen_batch(later)

    # Released up to the last quiet cut ("us" | "today" is one; "today " may still grow).
    assert [_content(c) for c in batch] == ["", "", "", "Mail [EMAIL] or call us"]
    assert held == "Mail [EMAIL] or call us"
    # The finishing choice carries all that was held, though its delta had no content.
    assert [_content(c) for c in later[:2]] == ["", " today please."]
    assert stream.text == "Mail [EMAIL] or call us today please."
    assert [(f.rule, f.count) for f in stream.flags] == [("email", 1)]


async def test_flag_mode_streams_at_once_and_flags_at_the_end() -> None:
    config = SafetyConfig(output=OutputScreenMode.FLAG, keep_raw_pii=True)
    stream = AnswerSafety(config=config, metrics=Metrics()).stream(route="chat")
    first, last = _chunk("Write to jane"), _chunk("@x.com", finish="stop")

    await stream.screen_batch([first])
    await stream.screen_batch([last])

    assert (_content(first), _content(last)) == ("Write to jane", "@x.com")
    assert first["choices"][0]["logprobs"] == LOGPROBS  # nothing is held, nothing hidden
    assert await stream.finish() == ""
    assert [(f.rule, f.action.value) for f in stream.flags] == [("email", "flagged")]
    assert stream.raw is None  # nothing was changed, so there is no raw text to keep
