"""Who may send what to /ingest: a credential always; a role's items only; its own answers only."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from tests.conftest import ApiKey, NewKey
from twinloop.db.models import Document, Feedback, Snapshot, TrainingExample
from twinloop.runtime import Runtime

HELDOUT = {"paraphrases": ["Who signed it?"], "accept": ["Zelmora"]}


def _doc(doc_id: str = "d1", domain: str = "law", **extra: object) -> dict[str, object]:
    return {"type": "document", "id": doc_id, "domain": domain, "text": "Moon rent is 12.", **extra}


def _example(example_id: str = "e1", domain: str = "law", **extra: object) -> dict[str, object]:
    return {"type": "example", "id": example_id, "domain": domain, "question": "Q?",
            "answer": "A.", **extra}  # fmt: skip


def _feedback(feedback_id: str, answer_id: object, **extra: object) -> dict[str, object]:
    return {"type": "feedback", "id": feedback_id, "answer_id": answer_id, "rating": "up", **extra}


async def _ingest(
    client: httpx.AsyncClient, headers: dict[str, str] | None, *items: dict[str, object]
) -> httpx.Response:
    return await client.post("/ingest", json={"items": list(items)}, headers=headers or {})


async def _answer(client: httpx.AsyncClient, key: ApiKey | None = None) -> Any:
    headers = key.headers if key is not None else {}
    response = await client.post("/answer", json={"question": "Q?", "domain": "law"},
                                 headers=headers)  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()["answer_id"]


async def _count(runtime: Runtime, model: type[Any]) -> int:
    async with runtime.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def _refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


async def test_ingest_needs_a_credential(client: httpx.AsyncClient, runtime: Runtime) -> None:
    missing = await _ingest(client, None, _doc())
    wrong = await _ingest(client, {"Authorization": "Bearer tl_guessed"}, _doc())

    _refused(missing, 401, "credential")
    _refused(wrong, 401, "not valid")
    assert missing.json()["error"] == "AuthenticationError"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert await _count(runtime, Document) == 0


async def test_a_client_key_sends_feedback_only(
    client: httpx.AsyncClient, new_key: NewKey, runtime: Runtime
) -> None:
    key = await new_key("client")
    own = await _answer(client, key)
    snapshots = await _count(runtime, Snapshot)

    document = await _ingest(client, key.headers, _doc())
    delete = await _ingest(client, key.headers, {"type": "document", "id": "d1", "deleted": True})
    example = await _ingest(client, key.headers, _example())
    heldout = await _ingest(
        client, key.headers,
        _feedback("f1", own, rating="down", correction="Zelmora.", heldout=HELDOUT),
    )  # fmt: skip

    _refused(document, 403, "'d1'", "document", "client")
    _refused(delete, 403, "'d1'", "document", "client")
    _refused(example, 403, "'e1'", "example", "client")
    _refused(heldout, 403, "'f1'", "held-out", "admin")
    assert document.json()["error"] == "PermissionDeniedError"
    assert await _count(runtime, Snapshot) == snapshots  # nothing staged
    assert await _count(runtime, Feedback) == 0
    assert await _count(runtime, TrainingExample) == 0
    accepted = await _ingest(client, key.headers, _feedback("f1", own))
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["items"][0]["status"] == "added"


async def test_feedback_only_on_answers_served_to_the_same_key(
    client: httpx.AsyncClient, new_key: NewKey
) -> None:
    mine, theirs = await new_key("client"), await new_key("client")
    anonymous = await _answer(client)
    foreign = await _answer(client, theirs)

    on_anonymous = await _ingest(client, mine.headers, _feedback("f1", anonymous))
    on_foreign = await _ingest(client, mine.headers, _feedback("f2", foreign))

    _refused(on_anonymous, 403, "'f1'", anonymous, "not served to this key")
    _refused(on_foreign, 403, "'f2'", foreign, "not served to this key")
    ingest = await new_key("ingest", domains=["law"])
    _refused(await _ingest(client, ingest.headers, _feedback("f3", foreign)), 403, "'f3'")


async def test_feedback_is_changed_or_deleted_only_by_its_own_key(
    client: httpx.AsyncClient, new_key: NewKey, runtime: Runtime
) -> None:
    owner, other = await new_key("client"), await new_key("client")
    theirs = await _answer(client, owner)
    mine = await _answer(client, other)
    assert (await _ingest(client, owner.headers, _feedback("f1", theirs))).status_code == 202

    delete = await _ingest(client, other.headers, {"type": "feedback", "id": "f1", "deleted": True})
    hijack = await _ingest(client, other.headers, _feedback("f1", mine, rating="down"))

    _refused(delete, 403, "'f1'", "another")
    _refused(hijack, 403, "'f1'", "another")
    async with runtime.sessionmaker() as session:
        stored = (await session.execute(select(Feedback))).scalar_one()
    assert (stored.deleted_at, stored.rating) == (None, "up")
    deleted = await _ingest(
        client, owner.headers, {"type": "feedback", "id": "f1", "deleted": True}
    )
    assert deleted.json()["items"][0]["status"] == "deleted"


async def test_an_ingest_key_writes_documents_and_examples_into_its_domains_only(
    client: httpx.AsyncClient, admin_headers: dict[str, str], new_key: NewKey, runtime: Runtime
) -> None:
    key = await new_key("ingest", domains=["law"])
    assert (await _ingest(client, admin_headers, _doc("m1", "med"))).status_code == 202

    law = await _ingest(client, key.headers, _doc("d1", "law"), _example("e1", "law"))
    med = await _ingest(client, key.headers, _doc("d2", "med"))
    moved = await _ingest(client, key.headers, _doc("d1", "med"))
    taken = await _ingest(client, key.headers, _doc("m1", "law"))
    delete = await _ingest(client, key.headers, {"type": "document", "id": "m1", "deleted": True})
    example = await _ingest(client, key.headers, _example("e2", "med"))
    heldout = await _ingest(client, key.headers, _example("e3", "law", heldout=HELDOUT))
    fact = await _ingest(client, key.headers, _doc("fact:f9", "law"))

    assert law.status_code == 202, law.text
    assert [i["status"] for i in law.json()["items"]] == ["added", "added"]
    _refused(med, 403, "'d2'", "med", "law")
    _refused(moved, 403, "'d1'", "med")
    _refused(taken, 403, "'m1'", "med")
    _refused(delete, 403, "'m1'", "med")
    _refused(example, 403, "'e2'", "med")
    _refused(heldout, 403, "'e3'", "held-out", "admin")
    _refused(fact, 403, "'fact:f9'", "admin")
    async with runtime.sessionmaker() as session:
        live = (await session.execute(select(Document.external_id, Document.domain))).all()
    assert sorted(live) == [("d1", "law"), ("m1", "med")]


async def test_what_carries_an_admins_held_out_cases_only_an_admin_changes(
    client: httpx.AsyncClient, admin_headers: dict[str, str], new_key: NewKey
) -> None:
    key = await new_key("ingest", domains=["law"])
    own = await _answer(client, key)
    taught = await _ingest(
        client, admin_headers, _example("e1", "law", heldout=HELDOUT),
        _feedback("f1", own, rating="down", correction="Zelmora.", heldout=HELDOUT),
    )  # fmt: skip
    assert taught.status_code == 202, taught.text

    overwrite = await _ingest(client, key.headers, _example("e1", "law"))
    delete = await _ingest(client, key.headers, {"type": "example", "id": "e1", "deleted": True})
    correct = await _ingest(client, key.headers, _feedback("f1", own))

    for refused, item_id in ((overwrite, "'e1'"), (delete, "'e1'"), (correct, "'f1'")):
        _refused(refused, 403, item_id, "held-out", "admin")


async def test_an_ingest_key_without_domains_writes_no_documents(
    client: httpx.AsyncClient, new_key: NewKey
) -> None:
    key = await new_key("ingest")

    _refused(await _ingest(client, key.headers, _doc()), 403, "'d1'", "no domains")


async def test_one_refused_item_refuses_the_whole_batch(
    client: httpx.AsyncClient, new_key: NewKey, runtime: Runtime
) -> None:
    key = await new_key("ingest", domains=["law"])

    response = await _ingest(client, key.headers, _doc("d1", "law"), _doc("d2", "fin"))

    _refused(response, 403, "'d2'")
    assert await _count(runtime, Document) == 0


async def test_the_admin_may_send_everything(
    client: httpx.AsyncClient, admin_headers: dict[str, str], new_key: NewKey
) -> None:
    key = await new_key("client")
    anonymous, keyed = await _answer(client), await _answer(client, key)
    admin_key = await new_key("admin")

    for headers in (admin_headers, admin_key.headers):
        response = await _ingest(
            client, headers, _doc("fact:x", "med"), _example("e1", "fin", heldout=HELDOUT),
            _feedback("f1", anonymous, rating="down", correction="C.", heldout=HELDOUT),
            _feedback("f2", keyed),
        )  # fmt: skip
        assert response.status_code == 202, response.text
