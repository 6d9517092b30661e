"""Raw PII is not kept once redacted, unless `cleaning.keep_raw_pii` says so; what trains and
what RAG serves is redacted either way."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import ADMIN_HEADERS
from tests.unit.conftest import run_cycle
from twinloop.db.models import Feedback, TrainingExample
from twinloop.runtime import Runtime
from twinloop.settings import Settings
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.trainer import FakeAdapterTrainer
from twinloop.trainer.daemon import Trainer

RAW = "Refunds go to IBAN de89 3704 0044 0532 0130 00, ask jane\u200b@example.com."
REDACTED = "Refunds go to IBAN [IBAN], ask [EMAIL]."


@pytest.fixture(params=[False, True], ids=["default", "keep_raw_pii"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    cleaning = settings.cleaning.model_copy(update={"keep_raw_pii": request.param})
    return settings.model_copy(update={"cleaning": cleaning})


async def _examples(runtime: Runtime) -> list[TrainingExample]:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(select(TrainingExample).order_by(TrainingExample.created_at))
        return list(rows.scalars())


async def test_stored_text_is_redacted_unless_raw_pii_is_kept(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    settings: Settings,
    fake_knowledge: FakeKnowledge,
    fake_trainer: FakeAdapterTrainer,
    trainer: Trainer,
    runtime: Runtime,
) -> None:
    keep = settings.cleaning.keep_raw_pii
    served = await client.post("/answer", json={"question": "Refunds?", "domain": "fin"})
    item = {"type": "feedback", "id": "f1", "answer_id": served.json()["answer_id"],
            "rating": "down", "correction": RAW, "comment": "I am jane@example.com"}  # fmt: skip
    assert (
        await client.post("/ingest", json={"items": [item]}, headers=ADMIN_HEADERS)
    ).status_code == 202
    # A row stored before /ingest screened: the cycle redacts it where it lies.
    async with runtime.sessionmaker.begin() as session:
        session.add(TrainingExample(source="example", domain="law", question="Who?",
                                    answer="Call +44 20 7946 0958.", status="pending",
                                    content_sha256="x"))  # fmt: skip

    cycle = await run_cycle(client, admin_headers, trainer)

    assert cycle["state"] == "staged", cycle
    assert [str(row[2]) for row in fake_knowledge.rows] == [f"Refunds?\n{REDACTED}"]
    trained = sorted(e.answer for r in fake_trainer.requests for e in r.examples)
    assert trained == ["Call [PHONE].", REDACTED]
    correction, legacy = await _examples(runtime)
    async with runtime.sessionmaker() as session:
        (feedback,) = (await session.execute(select(Feedback))).scalars()
    if keep:
        assert (correction.answer, feedback.correction) == (RAW, RAW)
        assert feedback.comment == "I am jane@example.com"
        assert legacy.answer == "Call +44 20 7946 0958."
    else:
        assert (correction.answer, feedback.correction) == (REDACTED, REDACTED)
        assert feedback.comment == "I am [EMAIL]"
        assert legacy.answer == "Call [PHONE]."
    # Resending the same item is still recognised as unchanged.
    again = await client.post("/ingest", json={"items": [item]}, headers=ADMIN_HEADERS)
    assert again.json()["items"][0]["status"] == "unchanged"
