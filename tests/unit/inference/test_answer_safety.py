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


async def test_streamed_chunks_carry_no_logprobs_while_redacting_and_the_end_flushes() -> None:
    safety = AnswerSafety(config=SafetyConfig(), metrics=Metrics())
    stream = safety.stream(route="chat")

    def chunk(content: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": content}, "logprobs": LOGPROBS,
                  "finish_reason": finish}  # fmt: skip
        return {"id": "e", "choices": [choice]}

    first = await stream.screen_chunk(chunk("Write to jane"))
    last = await stream.screen_chunk(chunk("@x.com now", finish="stop"))

    # "jane" may still grow into an address; the rest is too short to release on its own.
    assert first["choices"][0]["delta"]["content"] == ""
    assert last["choices"][0]["delta"]["content"] == "Write to [EMAIL] now"
    assert first["choices"][0]["logprobs"] is None is last["choices"][0]["logprobs"]
    assert stream.text == "Write to [EMAIL] now" and stream.raw is None
    assert await stream.finish() == ""  # once only


async def test_flag_mode_streams_at_once_and_flags_at_the_end() -> None:
    config = SafetyConfig(output=OutputScreenMode.FLAG, keep_raw_pii=True)
    stream = AnswerSafety(config=config, metrics=Metrics()).stream(route="chat")

    assert await stream.push("Write to jane") == "Write to jane"
    assert await stream.push("@x.com") == "@x.com"
    assert await stream.finish() == ""
    assert [(f.rule, f.action.value) for f in stream.flags] == [("email", "flagged")]
    assert stream.raw is None  # nothing was changed, so there is no raw text to keep
