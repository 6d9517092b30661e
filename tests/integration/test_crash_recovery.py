"""kill -9 of the gateway during a stream of ingests (issue 14).

A real `twinloop serve` process, over a real Chroma server and a real database (SQLite
file, PostgreSQL), with the stub engines (`twinloop.testing.stub_engine`: /ingest needs no
engine, only the answers that feedback rates do). Four clients send concurrent /ingest
batches with Idempotency-Keys — documents of every domain added, changed (some into
another domain) and deleted, feedback with corrections (each a fact document), examples,
deletions; one client is an ingest API key, the others the admin — and the gateway is
killed with SIGKILL at a moment chosen per round: at a random time, while a batch holds a
reserved RAG version (its chunks half written to Chroma), or between a batch's commit and
its staging. After each restart:

* every item of every batch answered 202 is in the database as sent;
* a batch left unanswered is there whole or not at all, and its retry with the same
  Idempotency-Key answers 202 and converges to it;
* at every RAG version a snapshot may pin, Chroma shows exactly the chunks of the documents
  the database has live at it: orphans of the killed batch stay invisible, and are gone
  once the next ingest into their domain has run;
* staging left pending by the kill is completed: Shadow pins every stored version.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from rag.server import ChromaServer
from tests.integration.crash_support import (
    ADMIN_TOKEN,
    Service,
    Stores,
    chroma_server,
    crash_settings,
    describe,
    gateway_service,
    healthy,
    running,
    stub_engine_service,
    wait_for,
)
from twinloop.db.models import Document, Feedback, TrainingExample
from twinloop.ingest.learning import fact_text
from twinloop.settings import Settings
from twinloop.states import RagVersionState
from twinloop.testing.ports import free_port

pytestmark = pytest.mark.integration

DOMAINS = ["law", "med", "fin", "general"]
KEY_DOMAINS = ["law", "med"]  # the ingest key's
WORKERS = 4
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# A killed batch's reservation blocks its domains this long; the restarted gateway's first
# ingest there waits it out, then undoes what the dead one wrote.
LEASE_S, CHROMA_TIMEOUT_S = 12, 5


@dataclass(frozen=True)
class Round:
    seed: int
    moment: str
    """`random`: after a random delay; `writing`: while a batch holds a reserved RAG version
    and has written chunks at it; `staging`: while a version is committed, not yet staged."""


# --------------------------------------------------------------------------------------
# What the clients sent, as the database should hold it


ABSENT, DELETED = "absent", "deleted"
Key = tuple[str, str]  # (type, id); documents include correction facts `fact:<feedback id>`


@dataclass
class Model:
    """The state the answered batches make: (type, id) -> what the database must hold."""

    answers: dict[str, tuple[str, str]]  # answer id -> (domain, question)
    state: dict[Key, Any] = field(default_factory=dict)

    def get(self, key: Key) -> Any:
        return self.state.get(key, ABSENT)

    def after(self, items: list[dict[str, Any]]) -> dict[Key, Any]:
        """What `items` change, as (type, id) -> new state."""
        changes: dict[Key, Any] = {}
        for item in items:
            kind, item_id, deleted = item["type"], item["id"], item.get("deleted", False)
            if kind == "document":
                changes[(kind, item_id)] = ABSENT if deleted else (item["domain"], item["text"])
            elif kind == "example":
                changes[(kind, item_id)] = (
                    DELETED if deleted else (item["domain"], item["question"], item["answer"])
                )
            else:
                fact: Any = ABSENT
                if deleted:
                    changes[(kind, item_id)] = DELETED
                else:
                    changes[(kind, item_id)] = (item["answer_id"], item["correction"])
                    domain, question = self.answers[item["answer_id"]]
                    fact = (domain, fact_text(question, item["correction"]))
                changes[("document", f"fact:{item_id}")] = fact
        return changes

    def apply(self, items: list[dict[str, Any]]) -> None:
        self.state.update(self.after(items))


def database_state(stores: Stores, keys: set[Key]) -> dict[Key, Any]:
    """What the database holds for `keys`, in the model's terms."""

    def read(session: Any) -> dict[Key, Any]:
        found: dict[Key, Any] = {}
        for d in session.scalars(select(Document).where(Document.removed_in_version.is_(None))):
            found[("document", d.external_id)] = (d.domain, d.text)
        for f in session.scalars(select(Feedback)):
            value = DELETED if f.deleted_at else (f.answer_id, f.correction)
            found[("feedback", f.external_id)] = value
        examples = select(TrainingExample).where(TrainingExample.external_id.isnot(None))
        for e in session.scalars(examples):
            value = DELETED if e.deleted_at else (e.domain, e.question, e.answer)
            found[("example", str(e.external_id))] = value
        return found

    found = stores.read(read)
    return {key: found.get(key, ABSENT) for key in keys}


# --------------------------------------------------------------------------------------
# The clients

WORDS = {
    "adj": [
        "amber",
        "brisk",
        "civic",
        "dormant",
        "eastern",
        "feral",
        "gilded",
        "hollow",
        "ivory",
        "jagged",
        "lunar",
        "molten",
        "northern",
        "opal",
        "quiet",
        "russet",
        "silent",
        "tidal",
        "umber",
        "violet",
    ],
    "noun": [
        "accord",
        "barge",
        "charter",
        "ditch",
        "edict",
        "ferry",
        "granary",
        "harbour",
        "inlet",
        "jetty",
        "kiln",
        "levy",
        "mill",
        "orchard",
        "pier",
        "quarry",
        "reservoir",
        "sluice",
        "tannery",
        "weir",
    ],
    "place": [
        "Quillmere",
        "Vexland",
        "Orrin",
        "Tasselby",
        "Brenmark",
        "Haldon",
        "Sefton",
        "Ulvik",
        "Marrow",
        "Penlow",
        "Caddis",
        "Rookmoor",
    ],
    "verb": ["sets", "limits", "raises", "lowers", "fixes", "caps", "doubles", "halves"],
    "unit": ["percent", "guilders", "tonnes", "leagues", "barrels", "days"],
}


def sentence(rng: random.Random) -> str:
    w = {k: rng.choice(v) for k, v in WORDS.items()}
    return (
        f"The {w['adj']} {w['noun']} of {w['place']} {w['verb']} the {w['noun']} toll at "
        f"{rng.randint(2, 999)} {w['unit']}."
    )


def text(rng: random.Random, chars: int) -> str:
    paragraphs, current = [], []
    while sum(len(p) for p in paragraphs) + sum(len(s) for s in current) < chars:
        current.append(sentence(rng))
        if rng.random() < 0.2:
            paragraphs.append(" ".join(current))
            current = []
    return "\n\n".join([*paragraphs, " ".join(current)] if current else paragraphs)


@dataclass
class Client:
    """One stream of batches over ids of its own, so its answered batches apply in order."""

    name: str
    headers: dict[str, str]
    domains: list[str]
    answers: list[str]  # answers it may rate
    rng: random.Random
    sent: int = 0

    def batch(self, model: Model) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        used: set[Key] = set()
        for _ in range(self.rng.randint(1, 4)):
            item = self._item(model)
            if item is not None and (item["type"], item["id"]) not in used:
                used.add((item["type"], item["id"]))
                items.append(item)
        return items or [self._new_document()]

    def _mine(self, model: Model, kind: str) -> list[str]:
        return sorted(
            item_id
            for (k, item_id), value in model.state.items()
            if k == kind and item_id.startswith(f"{self.name}-") and value not in (ABSENT, DELETED)
        )

    def _new_id(self, kind: str) -> str:
        self.sent += 1
        return f"{self.name}-{kind}-{self.sent}"

    def _new_document(self) -> dict[str, Any]:
        return {"type": "document", "id": self._new_id("doc"), **self._document_body()}

    def _document_body(self) -> dict[str, Any]:
        return {
            "domain": self.rng.choice(self.domains),
            "text": text(self.rng, self.rng.randint(80, 1800)),
            "source": "crash-test",
        }

    def _item(self, model: Model) -> dict[str, Any] | None:
        roll = self.rng.random()
        docs, feedback, examples = (
            self._mine(model, k) for k in ("document", "feedback", "example")
        )
        if roll < 0.3 or not docs:
            return self._new_document()
        if roll < 0.5:  # a new text, and now and then another domain
            return {"type": "document", "id": self.rng.choice(docs), **self._document_body()}
        if roll < 0.6:
            return {"type": "document", "id": self.rng.choice(docs), "deleted": True}
        if roll < 0.75 or (roll < 0.85 and not feedback):
            return self._feedback(self._new_id("fb"))
        if roll < 0.85:
            fid = self.rng.choice(feedback)
            if self.rng.random() < 0.5:
                return {"type": "feedback", "id": fid, "deleted": True}
            answer_id = model.get(("feedback", fid))[0]
            return self._feedback(fid, answer_id)
        if roll < 0.95 or not examples:
            return self._example(self._new_id("ex"))
        eid = self.rng.choice(examples)
        if self.rng.random() < 0.5:
            return {"type": "example", "id": eid, "deleted": True}
        return self._example(eid)

    def _feedback(self, fid: str, answer_id: str | None = None) -> dict[str, Any]:
        return {
            "type": "feedback",
            "id": fid,
            "answer_id": answer_id or self.rng.choice(self.answers),
            "rating": "down",
            "correction": sentence(self.rng),
        }

    def _example(self, eid: str) -> dict[str, Any]:
        return {
            "type": "example",
            "id": eid,
            "domain": self.rng.choice(self.domains),
            "question": f"What does the {self.rng.choice(WORDS['noun'])} of "
            f"{self.rng.choice(WORDS['place'])} charge?",
            "answer": sentence(self.rng),
        }


EXPECTED_STATUS = {(False, False): "added", (False, True): "updated", (True, True): "deleted"}


def check_answer(response: httpx.Response, items: list[dict[str, Any]], model: Model) -> None:
    """A 202 whose every item did what was asked (nothing rejected, quarantined, unchanged)."""
    assert response.status_code == 202, response.text
    body = response.json()
    statuses = [r["status"] for r in body["items"]]
    live = [model.get((i["type"], i["id"])) not in (ABSENT, DELETED) for i in items]
    expected = [
        EXPECTED_STATUS[(i.get("deleted", False), x)] for i, x in zip(items, live, strict=True)
    ]
    assert statuses == expected, describe(body)
    assert body["staging"] in ("staged", None), describe(body)


@dataclass
class Stream:
    """The clients of one gateway life: what was answered, what the kill left unanswered."""

    url: str
    model: Model
    clients: list[Client]
    unanswered: dict[str, tuple[str, list[dict[str, Any]]]] = field(default_factory=dict)
    answered: int = 0

    async def run(self, round_: Round) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            await asyncio.gather(*(self._client(http, c, round_) for c in self.clients))

    async def _client(self, http: httpx.AsyncClient, client: Client, round_: Round) -> None:
        n = 0
        while True:
            n += 1
            items = client.batch(self.model)
            key = f"r{round_.seed}-{client.name}-{n}"
            try:
                response = await http.post(
                    "/ingest",
                    json={"items": items},
                    headers={**client.headers, "Idempotency-Key": key},
                )
            except httpx.TransportError:
                self.unanswered[client.name] = (key, items)
                return
            check_answer(response, items, self.model)
            self.model.apply(items)
            self.answered += 1


def kill_at(
    round_: Round, rng: random.Random, gateway: Service, stream: Stream, stores: Stores
) -> bool:
    """SIGKILL the gateway at the round's moment, once a few batches were answered (so there
    is something to lose); whether the moment was met (else it is killed at the deadline).

    For `writing` and `staging` the gateway is frozen (SIGSTOP) when the moment may have
    come, so that it cannot move on while the database and Chroma are looked at, and is
    killed frozen, or thawed to try again.
    """
    deadline = time.monotonic() + 300
    answered = rng.randint(2, 5)
    while stream.answered < answered and time.monotonic() < deadline:
        time.sleep(0.01)
    if round_.moment == "random":
        time.sleep(rng.uniform(0, 2))
        gateway.kill9()
        return True
    if round_.moment == "writing":
        maybe, reached = RagVersionState.RESERVED, stores.reserved_and_written
    else:
        state = RagVersionState.COMMITTED
        maybe, reached = state, lambda: stores.has_rag_version_in(state)
    while time.monotonic() < deadline:
        if stores.has_rag_version_in(maybe):
            gateway.freeze()
            if reached():
                gateway.kill9()
                return True
            gateway.thaw()
        time.sleep(0.002)
    gateway.kill9()
    return False


# --------------------------------------------------------------------------------------
# The test


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_database")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'twinloop.db'}"
    return crash_settings(tmp_path, url, ingest_lease_s=LEASE_S, request_timeout_s=CHROMA_TIMEOUT_S)


@pytest.fixture
def chroma(settings: Settings) -> Iterator[ChromaServer]:
    with chroma_server(settings) as server:
        yield server


Answers = dict[str, tuple[str, str]]  # answer id -> (domain, question)


def setup_answers(url: str, key_headers: dict[str, str]) -> tuple[Answers, list[str], list[str]]:
    """Answers to rate: the admins' (anonymous) and the ingest key's own."""
    answers: Answers = {}
    mine: dict[str, list[str]] = {"admin": [], "key": []}
    for who, headers, domains in (("admin", {}, DOMAINS), ("key", key_headers, KEY_DOMAINS)):
        for domain in domains:
            question = f"What toll does the {domain} weir of Quillmere charge?"
            response = httpx.post(
                f"{url}/answer",
                json={"question": question, "domain": domain, "max_tokens": 8},
                headers=headers,
                timeout=30,
            )
            assert response.status_code == 200, response.text
            answers[response.json()["answer_id"]] = (domain, question)
            mine[who].append(response.json()["answer_id"])
    return answers, mine["admin"], mine["key"]


ROUNDS = {
    "sqlite": [Round(1, "random"), Round(2, "writing"), Round(3, "staging")],
    "postgresql": [Round(4, "writing")],
}


@pytest.mark.parametrize("settings", ["sqlite", "postgresql"], indirect=True)
def test_a_gateway_killed_during_ingests_loses_nothing_it_answered_and_chroma_agrees(
    settings: Settings, chroma: ChromaServer, tmp_path: Path
) -> None:
    backend = "sqlite" if str(settings.database_url).startswith("sqlite") else "postgresql"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engines = stub_engine_service(tmp_path, settings.engines.blue_port, settings.engines.green_port)
    gateway = gateway_service(settings, port, tmp_path / "gateway.log")
    stores = Stores(
        database_url=settings.sqlalchemy_url,
        chroma_port=settings.rag.chroma_port,
        domains=DOMAINS,
        chunk_chars=settings.rag.chunk_chars,
        chunk_overlap=settings.rag.chunk_overlap,
    )
    report = []
    with running(engines, gateway), closing(stores):
        engines.start()
        gateway.start()
        wait_for("the gateway was not healthy", lambda: healthy(url), 120, gateway, engines)
        created = httpx.post(
            f"{url}/keys",
            json={"name": "crash-ingest", "role": "ingest", "domains": KEY_DOMAINS},
            headers=ADMIN,
            timeout=30,
        )
        assert created.status_code == 201, created.text
        key_headers = {"Authorization": f"Bearer {created.json()['key']}"}
        answers, admin_answers, key_answers = setup_answers(url, key_headers)
        model = Model(answers=answers)
        for round_ in ROUNDS[backend]:
            rng = random.Random(round_.seed)
            # Names (and so ids) new in every round; one client sends with the ingest key.
            clients = [
                Client(f"a{i}r{round_.seed}", ADMIN, DOMAINS, admin_answers, rng_of(rng))
                for i in range(1, WORKERS)
            ]
            clients.append(
                Client(f"kr{round_.seed}", key_headers, KEY_DOMAINS, key_answers, rng_of(rng))
            )
            stream = Stream(url=url, model=model, clients=clients)
            started = time.monotonic()
            hit = asyncio.run(_stream_and_kill(stream, round_, rng, gateway, stores))
            killed_after = time.monotonic() - started
            assert hit, f"round {round_}: the gateway never reached the moment to kill it"

            gateway.start()
            wait_for("the restarted gateway was not healthy", lambda: healthy(url), 120, gateway)
            left = stores.left_open()
            outcome = check_after_restart(stores, model, stream)
            retried = asyncio.run(retry_unanswered(url, model, stream, clients))
            # The retries staged what the kill left unstaged.
            assert not stores.has_rag_version_in(RagVersionState.COMMITTED), stores.left_open()
            assert stores.shadow_pins() == stores.newest_usable()
            heal(url, model, round_)
            check_healed(stores, model)
            report.append(
                f"{backend} round {round_.seed} ({round_.moment}): killed after "
                f"{killed_after:.1f} s, {stream.answered} batches answered, "
                f"{len(stream.unanswered)} unanswered ({outcome}), left {left}, "
                f"retried in {retried:.1f} s"
            )
    print("\n".join(report))


def rng_of(rng: random.Random) -> random.Random:
    return random.Random(rng.random())


async def _stream_and_kill(
    stream: Stream, round_: Round, rng: random.Random, gateway: Service, stores: Stores
) -> bool:
    hit, _ = await asyncio.gather(
        asyncio.to_thread(kill_at, round_, rng, gateway, stream, stores), stream.run(round_)
    )
    return bool(hit)


def check_after_restart(stores: Stores, model: Model, stream: Stream) -> str:
    """Before any retry: what was answered is there, what was not is whole or absent, and
    Chroma agrees with the database at every pinnable version."""
    touched: dict[Key, tuple[Any, Any]] = {}
    batches = []
    for key, items in stream.unanswered.values():
        changes = model.after(items)
        batches.append((key, changes))
        for k, after in changes.items():
            touched[k] = (model.get(k), after)
    keys = set(model.state) | set(touched)
    held = database_state(stores, keys)
    lost = {k: (model.get(k), held[k]) for k in keys - set(touched) if held[k] != model.get(k)}
    assert not lost, f"answered items lost or changed (expected, found): {describe(lost)}"
    landed = 0
    for key, changes in batches:
        after = all(held[k] == v for k, v in changes.items())
        before = all(held[k] == model.get(k) for k in changes)
        assert after or before, f"batch {key} is half stored: " + describe(
            {k: (model.get(k), v, held[k]) for k, v in changes.items()}
        )
        landed += after and not before
    problems = stores.consistency_problems(healed=False)
    assert not problems, "Chroma and the database disagree after the kill:\n" + "\n".join(problems)
    return f"{landed} stored before the kill"


async def retry_unanswered(url: str, model: Model, stream: Stream, clients: list[Client]) -> float:
    """Each unanswered batch again with its Idempotency-Key: 202, as if answered the first time."""
    headers = {c.name: c.headers for c in clients}
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        replies = await asyncio.gather(
            *(
                http.post(
                    "/ingest",
                    json={"items": items},
                    headers={**headers[name], "Idempotency-Key": key},
                )
                for name, (key, items) in stream.unanswered.items()
            )
        )
    for reply, (key, items) in zip(replies, stream.unanswered.values(), strict=True):
        assert reply.status_code == 202, f"retry of {key}: {reply.status_code} {reply.text}"
        assert reply.json()["staging"] in ("staged", None), describe(reply.json())
        model.apply(items)
    return time.monotonic() - started


def heal(url: str, model: Model, round_: Round) -> None:
    """One more ingest into every domain: it undoes what a dead batch left in any of them."""
    items = [
        {"type": "document", "id": f"heal-{round_.seed}-{d}", "domain": d, "text": f"Heal {d}."}
        for d in DOMAINS
    ]
    response = httpx.post(f"{url}/ingest", json={"items": items}, headers=ADMIN, timeout=120)
    assert response.status_code == 202, response.text
    assert response.json()["staging"] == "staged", describe(response.json())
    model.apply(items)


def check_healed(stores: Stores, model: Model) -> None:
    held = database_state(stores, set(model.state))
    wrong = {k: (v, held[k]) for k, v in model.state.items() if held[k] != v}
    assert not wrong, f"after the retries (expected, found): {describe(wrong)}"
    problems = stores.consistency_problems(healed=True)
    assert not problems, "Chroma and the database disagree after the retries:\n" + "\n".join(
        problems
    )
    assert not stores.has_rag_version_in(RagVersionState.COMMITTED), "a version is unstaged"
    assert stores.shadow_pins() == stores.newest_usable()
