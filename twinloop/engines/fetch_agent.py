"""The only code that speaks to an engine's fetch agent (`twinloop adapters fetch-agent`).

The agent runs beside one engine, on its node, and puts a verified copy of a stored adapter on
the disk the engine reads (`PUT /adapters/<sha256>`, idempotent). It answers with the path to
hand the engine, or with twinloop's JSON error: the integrity and store errors it reports are
raised here as the same types, so a tampered object in S3 is a 409 `AdapterIntegrityError` at
the gateway whichever process hashed it.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from twinloop.errors import (
    AdapterFetchError,
    AdapterIntegrityError,
    ArtifactStoreUnavailableError,
    TwinloopError,
)

# A status page asks every agent; it must not hang behind one.
_HEALTH_TIMEOUT_S = 5.0
# The agent's errors that keep their type across the hop.
_RELAYED: dict[str, type[TwinloopError]] = {
    "AdapterIntegrityError": AdapterIntegrityError,
    "ArtifactStoreUnavailableError": ArtifactStoreUnavailableError,
}


@dataclass(frozen=True, slots=True)
class FetchedAdapter:
    sha256: str
    path: str
    """The verified copy, as the engine sees it: what its load call gets."""
    fetched: bool
    """False when a verified copy was already there."""


class FetchAgentClient:
    def __init__(
        self, *, name: str, base_url: str, http: httpx.AsyncClient, timeout_s: float
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))

    async def fetch(self, sha256: str) -> FetchedAdapter:
        """Have the agent put a verified copy of `sha256` on the engine's disk."""
        url = f"{self.base_url}/adapters/{sha256}"
        where = f"the fetch agent of the {self.name} engine ({self.base_url})"
        try:
            response = await self._http.put(url, timeout=self._timeout)
        except httpx.TimeoutException as e:
            raise AdapterFetchError(f"{where} did not finish fetching {sha256} in time") from e
        except httpx.HTTPError as e:
            raise AdapterFetchError(f"{where} cannot be reached: {e}") from e
        body = _json(response)
        if response.status_code != 200:
            error, detail = str(body.get("error", "")), str(body.get("detail", response.text))
            relayed = _RELAYED.get(error)
            if relayed is not None:
                raise relayed(detail)
            raise AdapterFetchError(
                f"{where} failed to fetch {sha256} ({response.status_code} {error}): {detail}",
                status_code=502,
            )
        try:
            return FetchedAdapter(
                sha256=str(body["sha256"]), path=str(body["path"]), fetched=bool(body["fetched"])
            )
        except KeyError as e:
            raise AdapterFetchError(f"{where} answered without {e}", status_code=502) from e

    async def health(self) -> dict[str, object]:
        """The agent's view of its store and folders; AdapterFetchError when it does not answer."""
        try:
            response = await self._http.get(f"{self.base_url}/healthz", timeout=_HEALTH_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as e:
            raise AdapterFetchError(
                f"the fetch agent of the {self.name} engine ({self.base_url}) is not healthy: {e}"
            ) from e
        return _json(response)


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
