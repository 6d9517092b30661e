"""API keys through the admin API: made and revoked by an admin, hashed at rest, shown once."""

from __future__ import annotations

import hashlib

import httpx
from sqlalchemy import select

from tests.conftest import NewKey
from twinloop.db.models import Answer, ApiKey, AuditEntry
from twinloop.runtime import Runtime


async def test_keys_routes_need_the_admin_role(client: httpx.AsyncClient, new_key: NewKey) -> None:
    ingest = await new_key("ingest", domains=["law"])
    for method, path in [("POST", "/keys"), ("GET", "/keys"), ("DELETE", f"/keys/{ingest.id}")]:
        body = {"name": "x", "role": "client"} if method == "POST" else None
        missing = await client.request(method, path, json=body)
        wrong = await client.request(
            method, path, json=body, headers={"Authorization": "Bearer no"}
        )
        weak = await client.request(method, path, json=body, headers=ingest.headers)
        assert (missing.status_code, wrong.status_code, weak.status_code) == (401, 401, 403), path
        assert missing.json()["error"] == "AuthenticationError"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert weak.json()["error"] == "PermissionDeniedError"
        assert "admin" in weak.json()["detail"] and "ingest" in weak.json()["detail"]


async def test_the_secret_is_shown_once_and_only_its_hash_is_stored(
    client: httpx.AsyncClient, admin_headers: dict[str, str], runtime: Runtime
) -> None:
    created = await client.post(
        "/keys", json={"name": "shop", "role": "client"}, headers=admin_headers
    )

    assert created.status_code == 201, created.text
    view = created.json()
    secret = view["key"]
    assert secret.startswith("tl_") and len(secret) >= 40
    assert secret.startswith(view["prefix"]) and len(view["prefix"]) < 16
    assert (view["name"], view["role"], view["domains"], view["revoked_at"]) == (
        "shop", "client", [], None,
    )  # fmt: skip
    assert view["rate_limit_per_minute"] == runtime.settings.auth.default_rate_limit_per_minute
    listed = await client.get("/keys", headers=admin_headers)
    assert listed.status_code == 200
    assert [k["id"] for k in listed.json()] == [view["id"]]
    assert "key" not in listed.json()[0] and secret not in listed.text
    async with runtime.sessionmaker() as session:
        row = (await session.execute(select(ApiKey))).scalar_one()
    assert row.key_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    stored = " ".join(str(getattr(row, c.key)) for c in ApiKey.__table__.columns)
    assert secret not in stored
    assert row.created_by == "admin"


async def test_a_revoked_key_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], new_key: NewKey, runtime: Runtime
) -> None:
    key = await new_key("ingest", domains=["law"])
    doc = {"type": "document", "id": "d1", "domain": "law", "text": "Moon rent is 12."}
    assert (
        await client.post("/ingest", json={"items": [doc]}, headers=key.headers)
    ).status_code == 202

    revoked = await client.delete(f"/keys/{key.id}", headers=admin_headers)

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    refused = await client.post("/ingest", json={"items": [doc]}, headers=key.headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    # On /answer a revoked key is no credential: answered, as to an anonymous caller.
    answered = await client.post("/answer", json={"question": "Q?"}, headers=key.headers)
    assert answered.status_code == 200
    async with runtime.sessionmaker() as session:
        row = await session.get(Answer, answered.json()["answer_id"])
    assert row is not None and row.api_key_id is None
    again = await client.delete(f"/keys/{key.id}", headers=admin_headers)
    assert again.status_code == 200 and again.json()["revoked_at"] is not None
    async with runtime.sessionmaker() as session:
        keyed = AuditEntry.action.startswith("key.")
        audit = (
            await session.execute(select(AuditEntry.action, AuditEntry.target).where(keyed))
        ).all()
    assert sorted(audit) == [("key.create", key.id), ("key.revoke", key.id)]  # revoked once
    assert (await client.delete("/keys/nope", headers=admin_headers)).status_code == 404


async def test_a_key_needs_a_known_role_and_only_an_ingest_key_has_domains(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    async def create(**body: object) -> httpx.Response:
        return await client.post("/keys", json={"name": "k", **body}, headers=admin_headers)

    assert (await create(role="root")).status_code == 422
    unknown = await create(role="ingest", domains=["astrology"])
    assert unknown.status_code == 422 and "astrology" in unknown.json()["detail"]
    client_with_domains = await create(role="client", domains=["law"])
    assert client_with_domains.status_code == 422
    assert (await create(role="client", rate_limit_per_minute=0)).status_code == 422


async def test_an_admin_key_is_an_admin(client: httpx.AsyncClient, new_key: NewKey) -> None:
    admin = await new_key("admin")

    assert (await client.get("/status", headers=admin.headers)).status_code == 200
    made = await client.post("/keys", json={"name": "k", "role": "client"}, headers=admin.headers)
    assert made.status_code == 201
    assert made.json()["created_by"] == f"key:{admin.id}"


async def test_a_key_over_its_rate_limit_gets_429_with_retry_after(
    client: httpx.AsyncClient, new_key: NewKey, runtime: Runtime
) -> None:
    key = await new_key("client", rate_limit_per_minute=2)
    question = {"question": "Q?"}

    served = [await client.post("/answer", json=question, headers=key.headers) for _ in range(2)]
    limited = await client.post("/answer", json=question, headers=key.headers)
    chat = {"model": "auto", "messages": [{"role": "user", "content": "Q?"}]}
    limited_chat = await client.post("/v1/chat/completions", json=chat, headers=key.headers)

    assert [r.status_code for r in served] == [200, 200]
    assert (limited.status_code, limited_chat.status_code) == (429, 429)
    assert limited.json()["error"] == "RateLimitedError"
    assert 1 <= int(limited.headers["retry-after"]) <= 30
    assert "2 requests a minute" in limited.json()["detail"]
    # Anonymous callers are not this key: they are still answered.
    assert (await client.post("/answer", json=question)).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert 'twinloop_rate_limited_total{role="client"} 2.0' in metrics


async def test_auth_failures_are_counted_by_route_and_reason(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    doc = {"type": "document", "id": "d1", "domain": "law", "text": "x"}
    await client.post("/ingest", json={"items": [doc]})
    await client.get("/status", headers={"Authorization": "Bearer nope"})

    metrics = (await client.get("/metrics")).text

    assert 'twinloop_auth_failures_total{reason="missing",route="/ingest"} 1.0' in metrics
    assert 'twinloop_auth_failures_total{reason="invalid",route="/status"} 1.0' in metrics
