"""/ingest for feedback and examples: durable, idempotent, per-item errors."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from tests.conftest import ADMIN_HEADERS
from twinloop.db.models import Feedback, TrainingExample
from twinloop.runtime import Runtime


async def _answer(client: httpx.AsyncClient, question: str = "Q?") -> dict[str, object]:
    response = await client.post("/answer", json={"question": question, "domain": "fin"})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _ingest(client: httpx.AsyncClient, *items: dict[str, object]) -> list[dict[str, object]]:
    response = await client.post("/ingest", json={"items": list(items)}, headers=ADMIN_HEADERS)
    assert response.status_code == 202, response.text
    results: list[dict[str, object]] = response.json()["items"]
    return results


async def _examples(runtime: Runtime) -> list[TrainingExample]:
    async with runtime.sessionmaker() as session:
        return list((await session.execute(select(TrainingExample))).scalars())


async def test_a_correction_becomes_a_preference_pair(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    served = await _answer(client)
    feedback = {"type": "feedback", "id": "f1", "answer_id": served["answer_id"],
                "rating": "down", "correction": "The right answer."}  # fmt: skip

    result = (await _ingest(client, feedback))[0]

    assert (result["status"], result["domain"]) == ("added", "fin")
    (example,) = await _examples(runtime)
    assert example.id == result["training_example_id"]
    assert (example.question, example.answer) == ("Q?", "The right answer.")
    assert example.rejected_answer == served["answer"]
    assert (example.source, example.status, example.domain) == ("correction", "pending", "fin")


async def test_thumbs_up_teaches_the_served_answer_thumbs_down_alone_teaches_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    up, down = await _answer(client, "A?"), await _answer(client, "B?")

    await _ingest(
        client,
        {"type": "feedback", "id": "u", "answer_id": up["answer_id"], "rating": "up"},
        {"type": "feedback", "id": "d", "answer_id": down["answer_id"], "rating": "down"},
    )

    examples = await _examples(runtime)
    assert [(e.question, e.source, e.rejected_answer) for e in examples] == [("A?", "upvote", None)]
    async with runtime.sessionmaker() as session:
        assert len(list((await session.execute(select(Feedback))).scalars())) == 2


async def test_unknown_answer_is_a_per_item_error_and_the_rest_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    served = await _answer(client)
    results = await _ingest(
        client,
        {"type": "feedback", "id": "bad", "answer_id": "nope", "rating": "up"},
        {"type": "feedback", "id": "good", "answer_id": served["answer_id"], "rating": "up"},
        {"type": "example", "id": "e1", "domain": "law", "question": "Q", "answer": "A"},
        {"type": "example", "id": "e2", "domain": "astrology", "question": "Q", "answer": "A"},
    )

    assert [r["status"] for r in results] == ["rejected", "added", "added", "rejected"]
    assert "unknown answer_id 'nope'" in str(results[0]["detail"])
    assert "astrology" in str(results[3]["detail"])


async def test_feedback_and_examples_are_idempotent_by_id(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    served = await _answer(client)
    feedback = {"type": "feedback", "id": "f1", "answer_id": served["answer_id"],
                "rating": "down", "correction": "First."}  # fmt: skip
    example = {"type": "example", "id": "e1", "domain": "law", "question": "Q", "answer": "A"}

    first = await _ingest(client, feedback, example)
    again = await _ingest(client, feedback, example)
    changed = await _ingest(
        client, {**feedback, "correction": "Second."}, {**example, "answer": "B"}
    )

    assert [r["status"] for r in first] == ["added", "added"]
    assert [r["status"] for r in again] == ["unchanged", "unchanged"]
    assert again[0]["training_example_id"] == first[0]["training_example_id"]
    assert [r["status"] for r in changed] == ["updated", "updated"]
    live = [e for e in await _examples(runtime) if e.deleted_at is None]
    assert sorted(e.answer for e in live) == ["B", "Second."]


async def test_deleting_excludes_the_item_and_what_it_became(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    served = await _answer(client)
    await _ingest(
        client,
        {"type": "feedback", "id": "f1", "answer_id": served["answer_id"], "rating": "up"},
        {"type": "example", "id": "e1", "domain": "law", "question": "Q", "answer": "A"},
    )

    results = await _ingest(
        client,
        {"type": "feedback", "id": "f1", "deleted": True},
        {"type": "example", "id": "e1", "deleted": True},
        {"type": "example", "id": "never", "deleted": True},
    )

    assert [r["status"] for r in results] == ["deleted", "deleted", "not_found"]
    examples = await _examples(runtime)
    assert sorted(e.source for e in examples) == ["example", "upvote"]
    assert all(e.deleted_at is not None for e in examples)


async def test_feedback_on_an_operator_preview_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    preview = await client.post(
        "/answer", json={"question": "Q?", "target": "shadow"}, headers=admin_headers
    )
    assert preview.status_code == 200, preview.text
    item = {"type": "feedback", "id": "f", "answer_id": preview.json()["answer_id"], "rating": "up"}

    result = (await _ingest(client, item))[0]

    assert result["status"] == "rejected"
    assert "preview" in str(result["detail"])


async def test_a_bad_rating_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    item = {"type": "feedback", "id": "f", "answer_id": "a", "rating": "meh"}
    response = await client.post("/ingest", json={"items": [item]}, headers=ADMIN_HEADERS)
    assert response.status_code == 422
    assert "rating" in response.json()["detail"]


async def test_an_example_hashes_as_it_always_has_so_resending_it_stays_unchanged(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    example = {
        "type": "example",
        "id": "e1",
        "domain": "law",
        "question": "Who signed the Quillmere accord?",
        "answer": "The harbour council.",
    }

    first = (await _ingest(client, example))[0]
    again = (await _ingest(client, example))[0]

    (stored,) = await _examples(runtime)
    # sha256 of "domain\x1fquestion\x1fanswer\x1f<held-out JSON>", the value stored since 0001.
    assert stored.content_sha256 == (
        "a6a759c3ef64c0fd58a6125b79db88283f62dd510119974eadc27e65d62593ac"
    )
    assert (first["status"], again["status"]) == ("added", "unchanged")
