"""The OpenAPI document is one a client can be generated from: its timestamps are RFC 3339
date-times, and every route declares the errors it answers with their real body."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI


async def test_timestamps_carry_their_zone(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.get("/snapshots", headers=admin_headers)

    assert response.status_code == 200, response.text
    created_at = response.json()[0]["created_at"]
    assert created_at.endswith("Z")
    assert datetime.fromisoformat(created_at).utcoffset() is not None


ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
# Operations anyone may call; every other one is an operator's, behind the admin token.
PUBLIC = {
    ("post", "/answer"),
    ("post", "/ingest"),
    ("get", "/v1/models"),
    ("post", "/v1/chat/completions"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    ]


def test_every_error_response_is_the_error_body(app: FastAPI) -> None:
    wrong = [
        f"{method} {path} {code}"
        for method, path, operation in _operations(app)
        for code, response in operation["responses"].items()
        if int(code) >= 400 and (method, path) != ("get", "/readyz")
        if response["content"]["application/json"]["schema"] != ERROR_BODY
    ]
    assert wrong == []
    # FastAPI's own 422 shape is not what the gateway answers.
    assert "HTTPValidationError" not in app.openapi()["components"]["schemas"]


def test_operator_routes_declare_401_403_and_a_busy_database(app: FastAPI) -> None:
    operator = [(m, p, o) for m, p, o in _operations(app) if (m, p) not in PUBLIC]

    assert len(operator) >= 15
    missing = [
        f"{m} {p}" for m, p, o in operator if not {"401", "403", "503"} <= set(o["responses"])
    ]
    assert missing == []
    assert "Retry-After" in operator[0][2]["responses"]["503"]["headers"]


def test_routes_with_a_body_declare_400_413_and_422(app: FastAPI) -> None:
    with_body = [(m, p, o) for m, p, o in _operations(app) if "requestBody" in o]

    assert len(with_body) >= 10
    missing = [
        f"{m} {p}" for m, p, o in with_body if not {"400", "413", "422"} <= set(o["responses"])
    ]
    assert missing == []


def test_routes_that_reach_an_engine_declare_its_failures(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for method, path in [("post", "/answer"), ("post", "/v1/chat/completions")]:
        assert {"502", "503", "504"} <= set(paths[path][method]["responses"]), path
    assert "404" in paths["/v1/chat/completions"]["post"]["responses"]  # an unknown model


def test_every_content_type_is_documented(app: FastAPI) -> None:
    paths = app.openapi()["paths"]

    chat = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    assert chat["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletion"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    readyz = paths["/readyz"]["get"]["responses"]
    assert (
        readyz["503"]["content"]["application/json"]["schema"]
        == readyz["200"]["content"]["application/json"]["schema"]
    )


async def test_the_error_body_is_what_errors_look_like(client: httpx.AsyncClient) -> None:
    from api.responses import ErrorBody

    invalid = await client.post("/answer", json={"question": ""})
    not_found = await client.post(
        "/v1/chat/completions", json={"model": "gpt-9", "messages": [{"role": "user"}]}
    )

    assert (invalid.status_code, not_found.status_code) == (422, 404)
    problem = ErrorBody.model_validate(invalid.json())
    assert problem.fields is not None and problem.fields[0].field == "question"
    assert ErrorBody.model_validate(not_found.json()).error == "NotFoundError"
