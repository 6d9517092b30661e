"""The LLM judge's endpoint: one OpenAI-compatible client from `qa.llm_judge_*` settings.

QA labels answers with it and the canary compares mirrored pairs with it; both open it here
so that the judge is configured once.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager

import httpx

from twinloop.engines.client import EngineClient, EngineTimeouts
from twinloop.settings import Settings

JUDGE_READ_TIMEOUT_S = 120.0


@asynccontextmanager
async def open_judge(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[EngineClient | None]:
    """The judge's client while the context lasts; None when no judge is configured."""
    cfg = settings.qa
    if not cfg.llm_judge_url:
        yield None
        return
    key = cfg.llm_judge_api_key.get_secret_value() if cfg.llm_judge_api_key else None
    timeouts = EngineTimeouts(
        connect_s=settings.engines.connect_timeout_s, read_s=JUDGE_READ_TIMEOUT_S
    )
    http = httpx.AsyncClient(
        transport=transport,
        timeout=timeouts.to_httpx(),
        headers={"Authorization": f"Bearer {key}"} if key else {},
    )
    try:
        yield EngineClient(name="judge", base_url=cfg.llm_judge_url, http=http, retries=1)
    finally:
        await http.aclose()


def read_choice(content: str, *, key: str, choices: Collection[str]) -> str | None:
    """A judge's choice among `choices` (lower case) in its reply: the JSON object's `key`,
    or failing that the one choice its words name (none, or two different: None)."""
    found = re.search(r"\{.*?\}", content, re.DOTALL)
    if found:
        try:
            value = json.loads(found.group(0)).get(key)
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
    named = {word for word in re.findall(r"[a-z]+", content.lower()) if word in choices}
    return named.pop() if len(named) == 1 else None
