"""Schemathesis against the gateway's own OpenAPI document, in-process.

Every operation gets `examples` generated requests of each mode (valid bodies and
parameters, then invalid ones) from a fixed seed; each response is checked: no 5xx,
its status code and content type are documented, its body matches the documented
schema. Failures are collected, not raised, so one run reports them all; the unit test
(tests/unit/api/test_openapi_fuzz.py) runs a small budget, bench/api_fuzz.py a longer one.

Hypothesis drives a synchronous test function, so the cases run in a worker thread and
each request is sent on the event loop that holds the gateway (its database connection
and engine clients belong to that loop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.generation.case import Case
from schemathesis.openapi import from_dict
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from twinloop.db import migrate
from twinloop.settings import EngineSettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.gateway import in_process_gateway

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

Send = Callable[[Mapping[str, Any]], httpx.Response]


@dataclass(frozen=True)
class FuzzFailure:
    """One check a response failed; the same check on the same operation counts once."""

    operation: str
    check: str
    status_code: int
    message: str
    request: str


@dataclass
class FuzzReport:
    operations: int = 0
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, str], FuzzFailure] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"{self.operations} operations, {self.cases} cases, {len(self.failures)} failures",
            "statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items())),
        ]
        for failure in self.failures.values():
            lines.append(
                f"- {failure.operation}: {failure.check} ({failure.status_code})\n"
                f"    {failure.message.strip()}\n    {failure.request}"
            )
        return "\n".join(lines)


def fuzz(
    openapi: dict[str, Any],
    send: Send,
    *,
    examples: int,
    seed_value: int = 0,
    headers: Mapping[str, str] | None = None,
) -> FuzzReport:
    """Run every operation of `openapi` through `send`, `examples` cases per mode."""
    schema = from_dict(openapi, config=SchemathesisConfig(seed=seed_value))
    report = FuzzReport()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the document itself is broken
        operation = result.ok()
        report.operations += 1
        for mode in MODES:
            _run_operation(
                operation.as_strategy(generation_mode=mode),
                send,
                report,
                examples=examples,
                seed_value=seed_value,
                headers=dict(headers or {}),
            )
    return report


def _run_operation(
    strategy: Any,
    send: Send,
    report: FuzzReport,
    *,
    examples: int,
    seed_value: int,
    headers: dict[str, str],
) -> None:
    @seed(seed_value)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Case[Any]) -> None:
        kwargs = case.as_transport_kwargs(base_url="http://gateway", headers=headers)
        report.cases += 1
        try:
            response = send(kwargs)
        except Exception as e:  # the app raised: a 500 to a real client
            report.statuses[500] += 1
            key = (case.operation.label, f"Unhandled {type(e).__name__}")
            report.failures.setdefault(
                key,
                FuzzFailure(case.operation.label, key[1], 500, str(e)[:400], _describe(kwargs)),
            )
            return
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                _record(report, case, response, failure)
        except Failure as failure:
            _record(report, case, response, failure)

    # Unsatisfiable: nothing to make invalid (an operation without parameters or body).
    with contextlib.suppress(Unsatisfiable):
        run()


def _describe(kwargs: Mapping[str, Any]) -> str:
    body = kwargs.get("json", kwargs.get("data"))
    return f"{kwargs['method']} {kwargs['url']} {str(body)[:300]}"


def _record(
    report: FuzzReport, case: Case[Any], response: httpx.Response, failure: Failure
) -> None:
    key = (case.operation.label, failure.title)
    if key in report.failures:
        return
    body = response.request.content[:300].decode(errors="replace")
    report.failures[key] = FuzzFailure(
        operation=case.operation.label,
        check=failure.title,
        status_code=response.status_code,
        message=f"{failure.message[:400]} | response: {response.text[:300]}",
        request=f"{response.request.method} {response.request.url} {body}",
    )


async def fuzz_client(
    client: httpx.AsyncClient,
    openapi: dict[str, Any],
    *,
    examples: int,
    seed_value: int = 0,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
) -> FuzzReport:
    """`fuzz` through an in-process client whose app runs on the current event loop."""
    loop = asyncio.get_running_loop()

    def send(kwargs: Mapping[str, Any]) -> httpx.Response:
        future = asyncio.run_coroutine_threadsafe(_request(client, kwargs), loop)
        return future.result(timeout=timeout_s)

    return await asyncio.to_thread(
        fuzz, openapi, send, examples=examples, seed_value=seed_value, headers=headers
    )


async def _request(client: httpx.AsyncClient, kwargs: Mapping[str, Any]) -> httpx.Response:
    """Send what schemathesis prepared for `requests` with httpx (raw bodies go as content)."""
    data = kwargs.get("data")
    if isinstance(data, str):
        data = data.encode()
    return await client.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        # Per-request cookies are deprecated in httpx; the gateway reads none.
        json=kwargs.get("json"),
        content=data if isinstance(data, bytes) else None,
    )


@contextlib.asynccontextmanager
async def fake_gateway(data_dir: Path, *, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway as the unit tests build it (fake engines, router and index), migrated
    SQLite in `data_dir`, and an in-process client; for bench/api_fuzz.py."""
    settings = Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'twinloop.db'}",
        admin_token=admin_token,
        engines=EngineSettings(retries=1),
    )
    await asyncio.to_thread(migrate.upgrade, settings.sqlalchemy_url)
    engine = FakeEngine(
        ports={settings.engines.blue_port: "blue", settings.engines.green_port: "green"}
    )
    async with in_process_gateway(settings, engine.transport()) as client:
        yield client
