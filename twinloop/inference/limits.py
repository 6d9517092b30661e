"""The size limits of an answering request, checked before anything is routed or generated.

Each refusal names the limit and the setting that sets it, so a client can fix the request
and an operator can find the knob: too much to read (messages, characters) is a 413, a
length bound above the gateway's is a 422 on that field. The body's size in bytes is the
gateway's own check (api/limits.py), before the body is parsed at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from twinloop.errors import InvalidRequestError, PayloadTooLargeError
from twinloop.inference.schemas import AnswerRequest, ChatCompletionRequest
from twinloop.settings import GatewaySettings


@dataclass(frozen=True)
class RequestLimits:
    max_messages: int = 64
    max_request_chars: int = 32_000
    max_tokens: int = 2048

    @classmethod
    def from_settings(cls, gateway: GatewaySettings) -> RequestLimits:
        return cls(
            max_messages=gateway.max_messages,
            max_request_chars=gateway.max_request_chars,
            max_tokens=gateway.max_tokens,
        )

    def check_answer(self, request: AnswerRequest) -> None:
        self._check_tokens("max_tokens", request.max_tokens)

    def check_chat(self, request: ChatCompletionRequest) -> None:
        if len(request.messages) > self.max_messages:
            raise PayloadTooLargeError(
                f"messages: {len(request.messages)} is over the limit of {self.max_messages} "
                "messages (gateway.max_messages)"
            )
        chars = request.text_chars()
        if chars > self.max_request_chars:
            raise PayloadTooLargeError(
                f"messages: {chars} characters is over the limit of {self.max_request_chars} "
                "characters (gateway.max_request_chars)"
            )
        self._check_tokens("max_tokens", request.max_tokens)
        self._check_tokens("max_completion_tokens", request.max_completion_tokens)

    def _check_tokens(self, field: str, value: int | None) -> None:
        if value is not None and value > self.max_tokens:
            raise InvalidRequestError(
                f"{field}: {value} is above the gateway's limit of {self.max_tokens} "
                "(gateway.max_tokens)"
            )
