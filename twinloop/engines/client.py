"""The only code that speaks vLLM's HTTP API.

httpx or aiohttp is this module's choice alone. bench/gateway_overhead.py
measures both as bare proxies in front of a stub engine: on this 2-core box
aiohttp costs ~0.3 ms of CPU per request against httpx's ~0.8 ms, and at 16
concurrent requests reaches ~2,000 req/s against ~570. A CPU engine serves
tens of requests per second and a generation takes 100 ms and up, so httpx
(and its `MockTransport` for unit tests) is kept for now; a GPU fleet that
pushes one gateway replica past a few hundred req/s is the point to switch.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from twinloop.errors import (
    EngineResponseError,
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    TwinloopError,
)

# Errors raised before the request reached the engine: retrying cannot generate twice.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(frozen=True)
class EngineTimeouts:
    connect_s: float = 5.0
    # Long generations stream for minutes; this bounds the silence between bytes.
    read_s: float = 300.0
    write_s: float = 30.0
    pool_s: float = 10.0

    def to_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_s, read=self.read_s, write=self.write_s, pool=self.pool_s
        )


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
    """Async client for one vLLM OpenAI-compatible server (one slot)."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        http: httpx.AsyncClient | None = None,
        timeouts: EngineTimeouts | None = None,
        retries: int = 2,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._timeouts = timeouts or EngineTimeouts()
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=self._timeouts.to_httpx(),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )
        self._retries = retries

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- generation -------------------------------------------------------------

    async def chat(self, body: dict[str, Any]) -> ChatResult:
        """A non-streaming chat completion, its first choice read into a `ChatResult`."""
        response = await self._send("POST", "/v1/chat/completions", json={**body, "stream": False})
        return ChatResult.from_json(_json(response, self.name))

    async def stream_chat(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Yield the parsed chunks of a streamed chat completion.

        Only opening the connection is retried; once the engine has the request,
        a failure is raised, never retried (it would generate a second answer).
        Closing this generator early closes the upstream connection, which
        makes vLLM abort the generation.
        """
        payload = {**body, "stream": True}
        request = self._http.build_request("POST", self._url("/v1/chat/completions"), json=payload)
        response = await self._with_retries(lambda: self._http.send(request, stream=True))
        try:
            if response.status_code >= 400:
                await response.aread()
                raise _status_error(response, self.name)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise EngineResponseError(
                        f"engine {self.name} failed mid-stream: {chunk['error']}"
                    )
                yield chunk
        except httpx.TimeoutException as e:
            raise EngineTimeoutError(f"engine {self.name} stopped sending for too long") from e
        except httpx.TransportError as e:
            raise EngineUnavailableError(f"engine {self.name} broke off the stream: {e}") from e
        finally:
            await response.aclose()

    async def probe_generation(self, model: str) -> None:
        """Generate one token: proof the engine works, which `/health` alone is not."""
        response = await self._send(
            "POST",
            "/v1/completions",
            json={"model": model, "prompt": "Hi", "max_tokens": 1, "temperature": 0},
        )
        body = _json(response, self.name)
        if not body.get("choices"):
            raise EngineResponseError(f"engine {self.name} generated nothing in the probe")

    # -- engine state -----------------------------------------------------------

    async def health(self) -> bool:
        try:
            response = await self._http.get(self._url("/health"), timeout=self._timeouts.connect_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

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
        response = await self._send(
            "POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}
        )
        if response.status_code == 400 and _already_loaded(response, name):
            return
        if response.status_code >= 400:
            raise _status_error(response, self.name)

    async def unload_adapter(self, name: str) -> None:
        response = await self._send("POST", "/v1/unload_lora_adapter", json={"lora_name": name})
        if response.status_code >= 400:
            raise _status_error(response, self.name)

    # -- plumbing ---------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _send(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        async def once() -> httpx.Response:
            return await self._http.request(method, self._url(path), json=json)

        try:
            return await self._with_retries(once)
        except httpx.TimeoutException as e:
            raise EngineTimeoutError(f"engine {self.name} did not answer in time ({path})") from e
        except httpx.TransportError as e:
            raise EngineUnavailableError(f"engine {self.name} failed during {path}: {e}") from e

    async def _with_retries(self, call: Any) -> httpx.Response:
        for attempt in range(self._retries + 1):
            try:
                response: httpx.Response = await call()
                return response
            except _NOT_SENT as e:
                if attempt == self._retries:
                    raise EngineUnavailableError(
                        f"engine {self.name} at {self.base_url} is unreachable: {e}"
                    ) from e
        raise AssertionError("unreachable")  # pragma: no cover


def _json(response: httpx.Response, engine: str) -> dict[str, Any]:
    if response.status_code >= 400:
        raise _status_error(response, engine)
    try:
        body = response.json()
    except ValueError as e:
        raise EngineResponseError(f"engine {engine} sent a response that is not JSON") from e
    if not isinstance(body, dict):
        raise EngineResponseError(f"engine {engine} sent unexpected JSON")
    return body


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _status_error(response: httpx.Response, engine: str) -> TwinloopError:
    detail = _engine_message(response)
    if response.status_code in (400, 422):
        return EngineRejectedRequestError(f"engine {engine} rejected the request: {detail}")
    if response.status_code == 404:
        return EngineModelNotFoundError(f"engine {engine} does not serve that model: {detail}")
    return EngineResponseError(f"engine {engine} answered HTTP {response.status_code}: {detail}")


def _already_loaded(response: httpx.Response, name: str) -> bool:
    """Whether vLLM refused a load because `name` is loaded: its LoRA load endpoint answers
    "The lora adapter '<name>' has already been loaded. If you want to load the adapter in
    place, set 'load_inplace' to True." (vllm/entrypoints/openai/models/serving.py)."""
    return f"'{name}' has already been loaded" in _engine_message(response)


def _engine_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(body.get("message", error))
    return str(body)[:500]
