"""The demo's only way into twinloop: the gateway's public HTTP API, through httpx.

Every call is one method; a refused call (an HTTP error status) or a gateway that cannot be
reached becomes a `DemoError` whose message says which call, what the gateway said and, for
the usual causes, what to do — the CLI prints it and exits non-zero.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from twinloop.errors import TwinloopError

START_HINT = (
    "start the stack first — `make up` (or `twinloop up`) in another terminal, wait for "
    "'ready', then run `twinloop demo` again (`--gateway URL` for another address)"
)

BUSY_RETRIES = 10  # a call answered 503 (database busy) is asked again this many times
MAX_RETRY_AFTER_S = 5.0


class DemoError(TwinloopError):
    """The demo cannot go on; the message says what happened and what to do."""

    status_code = 1


class GatewayUnreachableError(DemoError):
    status_code = 2


class GatewayClient:
    """One bearer (the admin token, or a client app's key) on one gateway."""

    def __init__(
        self,
        *,
        base_url: str,
        bearer: str,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        self.base_url = base_url
        self._transport = transport
        self._timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {bearer}"},
            transport=transport,
            timeout=timeout_s,
        )

    def as_bearer(self, bearer: str) -> GatewayClient:
        """The same gateway with another credential (a client app's key for its users)."""
        return GatewayClient(
            base_url=self.base_url,
            bearer=bearer,
            transport=self._transport,
            timeout_s=self._timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------

    def healthz(self) -> None:
        self._call("GET", "/healthz")

    def status(self) -> dict[str, Any]:
        return self._json("GET", "/status")

    def answer(
        self,
        question: str,
        *,
        domain: str = "general",
        user_id: str | None = None,
        target: str = "active",
        max_tokens: int = 32,
        use_rag: bool = True,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"question": question, "domain": domain, "max_tokens": max_tokens}
        if user_id is not None:
            body["user_id"] = user_id
        if target != "active":
            body["target"] = target
        if not use_rag:
            body["use_rag"] = False
        # A 503 stored no answer (the write is what failed): asking again is safe.
        return self._json("POST", "/answer", body, repeatable=True)

    def ingest(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """`POST /ingest`: `items` (one result per item), `staging`, `shadow_snapshot_id`."""
        # Idempotent by item id: a batch sent again after a 503 is stored once.
        return self._json("POST", "/ingest", {"items": items}, repeatable=True)

    def train(self, overrides: dict[str, Any] | None = None, reason: str = "") -> dict[str, Any]:
        body = {"overrides": overrides, "reason": reason} if overrides else None
        return self._json("POST", "/train", body)

    def cycle(self, cycle_id: str) -> dict[str, Any]:
        return self._json("GET", f"/train/{cycle_id}")

    def qa_report(self, qa_run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/qa/{qa_run_id}")

    def stage_copy_of_active(self, reason: str) -> dict[str, Any]:
        """`POST /snapshots` changing no adapter: Active's snapshot (with Shadow's newer RAG
        versions) staged on Shadow."""
        return self._json("POST", "/snapshots", {"adapters": {}, "reason": reason})

    def swap(self, reason: str, *, force: bool = False) -> dict[str, Any]:
        """`POST /swap` of whatever Shadow holds now (`generation: latest`)."""
        body = {"reason": reason, "generation": "latest", "force": force}
        return self._json("POST", "/swap", body)

    def start_canary(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/canary", body)

    def try_start_canary(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`POST /canary` whose refusal is an answer, not an error: (status, body)."""
        response = self._call("POST", "/canary", body, check=False)
        payload: dict[str, Any] = response.json()
        return response.status_code, payload

    def abort_canary(self, reason: str) -> dict[str, Any]:
        return self._json("POST", "/canary/abort", {"reason": reason})

    def canary(self) -> dict[str, Any] | None:
        canary: dict[str, Any] | None = self._json("GET", "/canary")["canary"]
        return canary

    def create_key(self, name: str, *, role: str = "client") -> dict[str, Any]:
        body = {"name": name, "role": role, "rate_limit_per_minute": 1_000_000}
        return self._json("POST", "/keys", body)

    def revoke_key(self, key_id: str) -> None:
        self._call("DELETE", f"/keys/{key_id}")

    # -- plumbing ------------------------------------------------------------------------

    def _json(
        self, method: str, path: str, body: Any = None, *, repeatable: bool = False
    ) -> dict[str, Any]:
        payload: dict[str, Any] = self._call(method, path, body, repeatable=repeatable).json()
        return payload

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        check: bool = True,
        repeatable: bool = False,
    ) -> httpx.Response:
        """One call; a busy database's 503 (with Retry-After: the trainer's writes hold SQLite
        for a moment) is asked again when that is safe: a read, or a `repeatable` write. Any
        other write's 503 is its caller's."""
        response = self._send(method, path, body)
        for _ in range(BUSY_RETRIES):
            if response.status_code != 503 or not (repeatable or method == "GET"):
                break
            time.sleep(_retry_after(response))
            response = self._send(method, path, body)
        if check and response.status_code >= 400:
            raise DemoError(_refusal(method, path, response), status_code=response.status_code)
        return response

    def _send(self, method: str, path: str, body: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            if isinstance(e, httpx.ConnectError):
                raise GatewayUnreachableError(
                    f"no gateway answers at {self.base_url} ({e}); {START_HINT}"
                ) from e
            raise DemoError(f"{method} {path} failed on the way: {e!r}") from e


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.0, float(response.headers.get("retry-after", 1))))
    except ValueError:
        return 1.0


def _refusal(method: str, path: str, response: httpx.Response) -> str:
    try:
        payload = response.json()
        said = f"{payload.get('error')}: {payload.get('detail')}"
    except ValueError:
        said = response.text[:300]
    hint = ""
    if response.status_code == 401:
        hint = (
            "; the admin token is not this gateway's (TWINLOOP_ADMIN_TOKEN, else the data "
            "directory's admin_token that `twinloop up` wrote; `--token` to give one)"
        )
    return f"{method} {path} answered {response.status_code}: {said}{hint}"
