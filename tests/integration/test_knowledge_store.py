"""The knowledge store against a real Chroma server and the real embedding model."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psutil
import pytest

from rag.embeddings import Embedder
from rag.errors import KnowledgeStoreError
from rag.server import ChromaServer
from rag.store import REMOVED_NEVER, KnowledgeStore, close_chroma, connect_chroma
from tests.conftest import ADMIN_HEADERS
from twinloop.settings import RagSettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.ports import free_port
from twinloop.testing.router import FakeRouter
from twinloop.weights.prepare import resolve_embedding_model

pytestmark = pytest.mark.integration

SIZE, OVERLAP = 400, 60

ZORBLATT = (
    "The Zorblatt Accord of 2091 fixes the quarterly tax on purple widgets at 17 percent. "
    "It was signed in the harbour town of Quillmere."
)
HERRING = "Court filings must be submitted on recycled paper in the Vexland district since 2088."
MED_NOTE = "Patients who take glimmerine must avoid grapefruit juice for two days after a dose."


@pytest.fixture(scope="session")
def chroma_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("rag"), rag=RagSettings(chroma_port=free_port())
    )


@pytest.fixture(scope="session")
def chroma_server(chroma_settings: Settings) -> Iterator[ChromaServer]:
    server = ChromaServer(chroma_settings)
    server.start()
    try:
        server.wait_healthy(60)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(resolve_embedding_model(None))


@pytest.fixture(scope="session")
async def store(
    chroma_server: ChromaServer, chroma_settings: Settings, embedder: Embedder
) -> AsyncIterator[KnowledgeStore]:
    client = await connect_chroma(chroma_settings.rag)
    try:
        yield KnowledgeStore(client=client, embedder=embedder, timeout_s=10.0)
    finally:
        await close_chroma(client)


async def _doc_ids(store: KnowledgeStore, domain: str, question: str, version: int) -> set[str]:
    hits = await store.query(domain=domain, question=question, version=version, top_k=5)
    return {hit.doc_id for hit in hits}


async def _add(store: KnowledgeStore, domain: str, doc_id: str, text: str, version: int) -> int:
    return await store.add_document(
        domain=domain,
        doc_id=doc_id,
        text=text,
        source=f"{doc_id}.txt",
        version=version,
        chunk_size=SIZE,
        chunk_overlap=OVERLAP,
    )


async def test_server_answers_its_heartbeat(
    chroma_server: ChromaServer, store: KnowledgeStore
) -> None:
    status = chroma_server.status()

    assert status.running and status.healthy and status.pid is not None
    assert status.data_path == chroma_server.data_path
    assert await store.heartbeat()


async def test_a_document_is_visible_from_the_version_that_added_it_until_its_removal(
    store: KnowledgeStore,
) -> None:
    question = "What is the tax on purple widgets under the Zorblatt Accord?"
    assert await _add(store, "vis", "zorblatt", ZORBLATT, version=2) == 1

    assert "zorblatt" not in await _doc_ids(store, "vis", question, version=1)
    assert "zorblatt" in await _doc_ids(store, "vis", question, version=2)
    assert "zorblatt" in await _doc_ids(store, "vis", question, version=3)

    assert await store.remove_document(domain="vis", doc_id="zorblatt", version=4) == 1

    assert "zorblatt" in await _doc_ids(store, "vis", question, version=3)
    assert "zorblatt" not in await _doc_ids(store, "vis", question, version=4)
    # Already removed: nothing live is left to remove.
    assert await store.remove_document(domain="vis", doc_id="zorblatt", version=4) == 0

    revised = ZORBLATT.replace("17 percent", "19 percent")
    await _add(store, "vis", "zorblatt", revised, version=5)

    async def texts(version: int) -> list[str]:
        hits = await store.query(domain="vis", question=question, version=version, top_k=5)
        return [hit.text for hit in hits]

    assert await texts(3) == [ZORBLATT]
    assert await texts(4) == []
    assert await texts(5) == [revised]
    assert await store.count("vis") == 2


async def test_adding_a_document_again_supersedes_its_older_content(
    store: KnowledgeStore, chroma_settings: Settings
) -> None:
    await _add(store, "sup", "policy", "The Brindle policy caps fees at 40 crowns.", version=2)
    await _add(store, "sup", "policy", "The Brindle policy caps fees at 55 crowns.", version=5)

    async def texts(version: int) -> list[str]:
        hits = await store.query(
            domain="sup",
            question="What does the Brindle policy cap fees at?",
            version=version,
            top_k=5,
        )
        return [hit.text for hit in hits]

    assert await texts(4) == ["The Brindle policy caps fees at 40 crowns."]
    assert await texts(5) == ["The Brindle policy caps fees at 55 crowns."]
    assert await texts(1) == []

    client = await connect_chroma(chroma_settings.rag)
    try:
        collection = await client.get_collection("twinloop_sup")
        stored = await collection.get(include=["metadatas"])
    finally:
        await close_chroma(client)
    by_id = dict(zip(stored["ids"], stored["metadatas"] or [], strict=True))
    assert by_id["policy:2:0"]["added_in"] == 2 and by_id["policy:2:0"]["removed_in"] == 5
    assert by_id["policy:5:0"]["added_in"] == 5
    assert by_id["policy:5:0"]["removed_in"] == REMOVED_NEVER
    assert by_id["policy:5:0"]["source"] == "policy.txt"

    # Adding the same version again (a retried ingestion) replaces, never duplicates.
    await _add(store, "sup", "policy", "The Brindle policy caps fees at 55 crowns.", version=5)
    assert await store.count("sup") == 2


async def test_undoing_a_version_takes_back_what_it_added_and_what_it_removed(
    store: KnowledgeStore,
) -> None:
    old, new = "The Brindle policy caps fees at 40 crowns.", "The Brindle policy caps fees at 55."
    await _add(store, "undo", "policy", old, version=1)
    await _add(store, "undo", "filings", HERRING, version=1)
    # Version 2 supersedes one document, removes another and adds a third ...
    await _add(store, "undo", "policy", new, version=2)
    await store.remove_document(domain="undo", doc_id="filings", version=2)
    await _add(store, "undo", "glimmerine", MED_NOTE, version=2)

    await store.undo_version(domain="undo", version=2)
    await store.undo_version(domain="undo", version=2)  # idempotent

    # ... and after the undo, no version shows any of it.
    for version in (1, 2, 3):
        hits = await store.query(domain="undo", question="fees?", version=version, top_k=5)
        assert sorted(hit.text for hit in hits) == sorted([old, HERRING])
    assert await store.count("undo") == 2


class _FailingSecondWrite:
    """The real store, whose second document write fails like a Chroma that went away."""

    def __init__(self, store: KnowledgeStore) -> None:
        self._store = store
        self.writes = 0
        self.fail = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def write_document(self, **kwargs: Any) -> int:
        self.writes += 1
        if self.fail and self.writes == 2:
            raise KnowledgeStoreError("Chroma went away (injected)")
        return await self._store.write_document(**kwargs)


async def test_an_ingest_that_fails_half_way_leaves_nothing_in_chroma_in_sight(
    chroma_settings: Settings,
    embedder: Embedder,
    settings: Settings,
    fake_engine: FakeEngine,
) -> None:
    from api.app import create_app

    client = await connect_chroma(chroma_settings.rag)
    store = KnowledgeStore(
        client=client, embedder=embedder, collection_prefix=f"t{uuid.uuid4().hex[:8]}_"
    )
    failing = _FailingSecondWrite(store)
    app = create_app(
        settings, engine_transport=fake_engine.transport(), router=FakeRouter(), knowledge=failing
    )
    revised = ZORBLATT.replace("17 percent", "19 percent")
    question = "What is the tax on purple widgets under the Zorblatt Accord?"

    def doc(doc_id: str, text: str) -> dict[str, str]:
        return {"type": "document", "id": doc_id, "domain": "law", "text": text, "source": "t"}

    async def visible(version: int) -> set[tuple[str, str]]:
        hits = await store.query(domain="law", question=question, version=version, top_k=10)
        return {(hit.doc_id, hit.text) for hit in hits}

    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gw", headers=ADMIN_HEADERS
            ) as gw:
                failing.fail = False
                first = await gw.post("/ingest", json={"items": [doc("zorblatt", ZORBLATT)]})
                assert first.status_code == 202, first.text
                failing.fail, failing.writes = True, 0

                failed = await gw.post(
                    "/ingest",
                    json={"items": [doc("zorblatt", revised), doc("filings", HERRING)]},
                )

                assert failed.status_code == 503, failed.text
                for version in (1, 2, 3):
                    assert await visible(version) == {("zorblatt", ZORBLATT)}
                assert await store.count("law") == 1  # the revision's chunk was deleted

                failing.fail = False
                again = await gw.post(
                    "/ingest",
                    json={"items": [doc("zorblatt", revised), doc("filings", HERRING)]},
                )

                assert again.status_code == 202, again.text
                assert [i["status"] for i in again.json()["items"]] == ["updated", "added"]
                assert again.json()["items"][0]["rag_version"] == 3
                assert await visible(3) == {("zorblatt", revised), ("filings", HERRING)}
                assert await visible(2) == await visible(1) == {("zorblatt", ZORBLATT)}
    finally:
        await close_chroma(client)


async def test_the_top_hit_for_a_made_up_fact_is_its_document(store: KnowledgeStore) -> None:
    await _add(store, "law", "zorblatt", ZORBLATT, version=1)
    await _add(store, "law", "filings", HERRING, version=1)
    filler = " ".join(f"Clause {i} of the harbour code regulates mooring fees." for i in range(40))
    assert await _add(store, "law", "harbour-code", filler, version=1) > 1

    hits = await store.query(
        domain="law", question="Where was the Zorblatt Accord signed?", version=1, top_k=3
    )

    assert hits[0].doc_id == "zorblatt"
    assert hits[0].source == "zorblatt.txt"
    assert "Quillmere" in hits[0].text
    assert 0 < hits[0].score <= 1
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


async def test_a_query_given_the_questions_embedding_finds_what_embedding_it_finds(
    store: KnowledgeStore, embedder: Embedder
) -> None:
    """The gateway embeds a question once, for routing and retrieval, and hands the vector
    over: the same chunks, the same scores as when the store embeds the question itself."""
    await _add(store, "law", "zorblatt", ZORBLATT, version=1)
    await _add(store, "law", "filings", HERRING, version=1)
    question = "Where was the Zorblatt Accord signed?"
    embedding = embedder.embed([question])[0]

    given = await store.query(
        domain="law", question=question, version=1, top_k=2, embedding=embedding
    )
    embedded = await store.query(domain="law", question=question, version=1, top_k=2)

    assert [(h.doc_id, h.text) for h in given] == [(h.doc_id, h.text) for h in embedded]
    assert [h.score for h in given] == pytest.approx([h.score for h in embedded], abs=1e-5)
    assert given[0].doc_id == "zorblatt"


async def test_each_domain_has_its_own_collection(store: KnowledgeStore) -> None:
    await _add(store, "law", "zorblatt", ZORBLATT, version=1)
    await _add(store, "med", "glimmerine", MED_NOTE, version=1)

    med_ids = await _doc_ids(store, "med", "What is the tax under the Zorblatt Accord?", 1)
    law_ids = await _doc_ids(store, "law", "What must patients on glimmerine avoid?", 1)

    assert med_ids == {"glimmerine"}
    assert "glimmerine" not in law_ids


async def test_an_empty_domain_returns_nothing(store: KnowledgeStore) -> None:
    assert await store.query(domain="fin", question="Anything?", version=9, top_k=3) == []
    assert await store.count("fin") == 0


async def test_an_external_server_is_never_started_or_stopped(
    chroma_server: ChromaServer, chroma_settings: Settings
) -> None:
    external = ChromaServer(
        chroma_settings.model_copy(
            update={"rag": chroma_settings.rag.model_copy(update={"external": True})}
        )
    )

    assert external.start() is None
    assert external.wait_healthy(5) < 5
    assert external.stop() is False
    assert chroma_server.is_healthy() and chroma_server.record() is not None


async def test_data_survives_a_restart_and_stop_leaves_no_process(
    chroma_server: ChromaServer, store: KnowledgeStore
) -> None:
    await _add(store, "keep", "zorblatt", ZORBLATT, version=1)
    before = await store.count("keep")
    record = chroma_server.record()
    assert record is not None

    assert chroma_server.stop() is True

    assert not _group_alive(record.pid)
    assert chroma_server.record() is None and not chroma_server.is_healthy()
    assert await store.heartbeat() is False
    with pytest.raises(KnowledgeStoreError) as raised:
        await store.count("keep")
    assert raised.value.status_code == 503
    assert chroma_server.stop() is False

    chroma_server.start()
    chroma_server.wait_healthy(60)

    assert await store.count("keep") == before
    assert "zorblatt" in await _doc_ids(store, "keep", "Zorblatt Accord widget tax?", 1)


def _group_alive(pgid: int) -> bool:
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False
