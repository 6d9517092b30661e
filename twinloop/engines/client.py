"""The only code that speaks vLLM's HTTP API.

The HTTP under it is an `EngineHttp` (`twinloop.engines.http`): the lean client of
`twinloop.engines.lean_http` by default, aiohttp, or httpx under tests' mock transport.
This module builds the requests, reads the replies into typed results and
turns failures into twinloop's errors. JSON goes through orjson both ways (a stream's
chunks are the gateway's most frequent parse).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import orjson

from twinloop.engines.http import (
    AiohttpEngineHttp,
    BrokenError,
    ByteStream,
    EngineHttp,
    EngineTimeouts,
    HttpxEngineHttp,
    NotSentError,
    Reply,
    SlowError,
)
from twinloop.engines.lean_http import LeanEngineHttp
from twinloop.engines.sse import DONE, SseData
from twinloop.errors import (
    EngineResponseError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    TwinloopError,
)

__all__ = ["ChatResult", "EngineClient", "EngineTimeouts", "Usage"]
T = TypeVar("T")
# The connections an engine client makes for itself (`twinloop.engines.http`,
# `twinloop.engines.lean_http`).
HttpLibrary = Literal["lean", "aiohttp"]


@dataclass(frozen=True)
class Usage:
    """The token counts an engine reports; None where it left one out."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def from_json(cls, usage: object) -> Usage:
        """Read OpenAI's `usage` object; anything that is not one counts as absent."""
        if not isinstance(usage, Mapping):
            return cls()
        return cls(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")))


@dataclass(frozen=True)
class ChatResult:
    """A non-streamed chat completion, read once from the engine's reply.

    `text` is the first choice's message content ("" when it has none).
    `has_message` is False when the reply carried no choice with a message at all,
    which a caller that needs an answer (the LLM judge) treats as a failure.
    """

    text: str
    finish_reason: str | None
    usage: Usage
    model: str | None
    has_message: bool
    # The reply as the engine sent it. Only the OpenAI-compatible `/v1/chat/completions`
    # route reads it: it relays the reply unchanged, including fields asked for through
    # pass-through request parameters (`n`, `logprobs`, `tools`) that this type does not name.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> ChatResult:
        choices = body.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        choice = first if isinstance(first, Mapping) else {}
        message = choice.get("message")
        content = message.get("content") if isinstance(message, Mapping) else None
        finish = choice.get("finish_reason")
        model = body.get("model")
        return cls(
            text=str(content or ""),
            finish_reason=str(finish) if finish is not None else None,
            usage=Usage.from_json(body.get("usage")),
            model=str(model) if model is not None else None,
            has_message=isinstance(message, Mapping),
            raw=body,
        )


class EngineModelNotFoundError(EngineResponseError):
    """The engine does not serve the model asked for (an adapter it lost on restart)."""


class EngineRejectedRequestError(InvalidRequestError):
    """The engine refused the request as invalid (context too long, bad parameter)."""

    status_code = 400


class EngineClient:
    """Async client for one vLLM OpenAI-compatible server (one slot).

    `http` (an `httpx.AsyncClient`, tests' mock transport under it) or `transport` (any
    `EngineHttp`) replaces the connections of its own, made on first use with `library`.
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        http: httpx.AsyncClient | None = None,
        transport: EngineHttp | None = None,
        timeouts: EngineTimeouts | None = None,
        retries: int = 2,
        library: HttpLibrary = "lean",
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts or EngineTimeouts()
        self._owns_http = transport is None
        if transport is not None:
            self._http: EngineHttp = transport
        elif http is not None:
            self._http = HttpxEngineHttp(timeouts=self._timeouts, client=http)
        elif library == "lean":
            self._http = LeanEngineHttp(timeouts=self._timeouts)
        else:
            self._http = AiohttpEngineHttp(timeouts=self._timeouts)
        self._retries = retries

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- generation -------------------------------------------------------------

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        """A non-streaming chat completion, its first choice read into a `ChatResult`."""
        reply = await self._send("POST", "/v1/chat/completions", {**body, "stream": False})
        return ChatResult.from_json(_json(reply, self.name))

    async def stream_chat(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the parsed chunks of a streamed chat completion, one by one (see
        `stream_chat_batches`)."""
        batches = self.stream_chat_batches(body)
        try:
            async for batch in batches:
                for chunk in batch:
                    yield chunk
        finally:
            await batches.aclose()

    async def stream_chat_batches(
        self, body: dict[str, Any]
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Yield the parsed chunks of a streamed chat completion, those that arrived
        together in one list (never an empty one).

        One engine writes one chunk per token; a gateway that falls behind finds several
        waiting, and relaying them as one write is what lets it catch up.

        Only opening the connection is retried; once the engine has the request,
        a failure is raised, never retried (it would generate a second answer).
        Closing this generator early closes the upstream connection, which
        makes vLLM abort the generation.
        """
        payload = orjson.dumps({**body, "stream": True})
        url = self._url("/v1/chat/completions")
        try:
            async with contextlib.AsyncExitStack() as stack:
                stream = await self._with_retries(
                    lambda: stack.enter_async_context(self._http.stream(url, payload))
                )
                async for batch in self._batches(stream):
                    yield batch
        except SlowError as e:
            raise EngineTimeoutError(f"engine {self.name} stopped sending for too long") from e
        except BrokenError as e:
            raise EngineUnavailableError(f"engine {self.name} broke off the stream: {e}") from e

    async def _batches(self, stream: ByteStream) -> AsyncGenerator[list[dict[str, Any]], None]:
        if stream.status >= 400:
            raise _status_error(Reply(stream.status, await stream.read(), ""), self.name)
        events = SseData()
        done = False
        async for data in stream.chunks():
            if done:
                continue  # read to the end, so that the connection is kept
            batch, done = self._parse(events.feed(data))
            if batch:
                yield batch
        if not done:
            batch, _ = self._parse(events.end())
            if batch:
                yield batch

    def _parse(self, fields: list[bytes]) -> tuple[list[dict[str, Any]], bool]:
        """The chunks among `fields`, and whether `[DONE]` was among them."""
        chunks: list[dict[str, Any]] = []
        for data in fields:
            if data == DONE:
                return chunks, True
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                raise EngineResponseError(
                    f"engine {self.name} streamed a chunk that is not JSON"
                ) from e
            if "error" in chunk:
                raise EngineResponseError(f"engine {self.name} failed mid-stream: {chunk['error']}")
            chunks.append(chunk)
        return chunks, False

    async def probe_generation(self, model: str) -> None:
        """Generate one token: proof the engine works, which `/health` alone is not."""
        reply = await self._send(
            "POST",
            "/v1/completions",
            {"model": model, "prompt": "Hi", "max_tokens": 1, "temperature": 0},
        )
        body = _json(reply, self.name)
        if not body.get("choices"):
            raise EngineResponseError(f"engine {self.name} generated nothing in the probe")

    # -- engine state -----------------------------------------------------------

    async def health(self) -> bool:
        try:
            reply = await self._http.send(
                "GET", self._url("/health"), None, timeout_s=self._timeouts.connect_s
            )
        except (NotSentError, SlowError, BrokenError):
            return False
        return reply.status == 200

    async def list_models(self) -> list[str]:
        body = _json(await self._send("GET", "/v1/models"), self.name)
        return [str(card["id"]) for card in body.get("data", [])]

    async def load_adapter(self, name: str, path: str) -> None:
        """Load a LoRA adapter under `name`; one the engine already serves under that name is
        loaded, not an error.

        Two processes may load the same adapter at once (the trainer staging it, a gateway
        reconciling the engine): vLLM answers the second with 400 "already loaded". Names are
        content-addressed (`<domain>-<sha256 prefix>`), so that is the same adapter; the
        caller's listing check (`ReleaseController._ensure_loaded`) confirms it is served.
        """
        reply = await self._send(
            "POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        if reply.status == 400 and _already_loaded(reply, name):
            return
        if reply.status >= 400:
            raise _status_error(reply, self.name)

    async def unload_adapter(self, name: str) -> None:
        reply = await self._send("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if reply.status >= 400:
            raise _status_error(reply, self.name)

    # -- plumbing ---------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _send(self, method: str, path: str, json: Any = None) -> Reply:
        body = orjson.dumps(json) if json is not None else None
        url = self._url(path)
        try:
            return await self._with_retries(lambda: self._http.send(method, url, body))
        except SlowError as e:
            raise EngineTimeoutError(f"engine {self.name} did not answer in time ({path})") from e
        except BrokenError as e:
            raise EngineUnavailableError(f"engine {self.name} failed during {path}: {e}") from e

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(self._retries + 1):
            try:
                return await call()
            except NotSentError as e:
                if attempt == self._retries:
                    raise EngineUnavailableError(
                        f"engine {self.name} at {self.base_url} is unreachable: {e}"
                    ) from e
        raise AssertionError("unreachable")  # pragma: no cover


def _json(reply: Reply, engine: str) -> dict[str, Any]:
    if reply.status >= 400:
        raise _status_error(reply, engine)
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError as e:
        raise EngineResponseError(f"engine {engine} sent a response that is not JSON") from e
    if not isinstance(body, dict):
        raise EngineResponseError(f"engine {engine} sent unexpected JSON")
    return body


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _status_error(reply: Reply, engine: str) -> TwinloopError:
    detail = _engine_message(reply)
    if reply.status in (400, 422):
        return EngineRejectedRequestError(f"engine {engine} rejected the request: {detail}")
    if reply.status == 404:
        return EngineModelNotFoundError(f"engine {engine} does not serve that model: {detail}")
    return EngineResponseError(f"engine {engine} answered HTTP {reply.status}: {detail}")


def _already_loaded(reply: Reply, name: str) -> bool:
    """Whether vLLM refused a load because `name` is loaded: its LoRA load endpoint answers
    "The lora adapter '<name>' has already been loaded. If you want to load the adapter in
    place, set 'load_inplace' to True." (vllm/entrypoints/openai/models/serving.py)."""
    return f"'{name}' has already been loaded" in _engine_message(reply)


def _engine_message(reply: Reply) -> str:
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        return reply.body[:500].decode("utf-8", "replace") or reply.reason
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(body.get("message", error))
    return str(body)[:500]
