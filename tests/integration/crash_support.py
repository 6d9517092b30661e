"""What the kill -9 tests share: processes they start and kill, and what they read back.

A `Service` is one process in a session of its own (`twinloop serve`, `twinloop trainer`,
the stub engines), so SIGKILL reaches it and nothing else. `Stores` reads the database and
Chroma directly, the way an operator would after a crash, and `consistency_problems`
compares them: every RAG version a snapshot may pin shows in Chroma exactly the chunks of
the documents the database says are live at it, and nothing else is in Chroma.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import chromadb
import httpx
from chromadb.api.models.Collection import Collection
from chromadb.api.types import Where
from chromadb.config import Settings as ChromaSettings
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session

from rag.chunking import chunk_text
from rag.server import ChromaServer
from rag.store import REMOVED_NEVER
from twinloop.db import migrate
from twinloop.db.models import Document, RagVersion, Release, Snapshot
from twinloop.settings import EngineSettings, RagSettings, Settings
from twinloop.states import OPEN_RAG_VERSIONS, USABLE_RAG_VERSIONS, RagVersionState
from twinloop.testing.ports import free_port

T = TypeVar("T")
ADMIN_TOKEN = "twinloop-crash-test-admin-token"
COLLECTION_PREFIX = "twinloop_"  # rag.store.KnowledgeStore's default, what the processes use


@dataclass
class Service:
    """One process the test starts, kills with SIGKILL and starts again."""

    name: str
    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} runs"
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} of {self.name} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL to the process group: no handler, no cleanup, nothing flushed."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def freeze(self) -> None:
        """SIGSTOP: it stands still where it is (a test looks, then kills or thaws it)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def running(*services: Service) -> Iterator[None]:
    """Stop (SIGTERM, then SIGKILL) whatever of `services` still runs on the way out."""
    try:
        yield
    finally:
        for service in reversed(services):
            service.stop()


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, *logs: Service) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` with the logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {s.name} log:\n{s.log_tail()}" for s in logs)
            raise AssertionError(f"{what} within {timeout_s:.0f} s\n{tails}")
        time.sleep(0.1)


def crash_settings(tmp_path: Path, database_url: str, **rag: Any) -> Settings:
    """Settings of one test's processes: its database (migrated), free ports for the stub
    engines and a Chroma server of its own (the processes' collection names are fixed)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        engines=EngineSettings(blue_port=free_port(), green_port=free_port()),
        rag=RagSettings(chroma_port=free_port(), **rag),
    )
    migrate.upgrade(settings.sqlalchemy_url)
    return settings


@contextmanager
def chroma_server(settings: Settings) -> Iterator[ChromaServer]:
    server = ChromaServer(settings)
    server.start()
    try:
        server.wait_healthy(60)
        yield server
    finally:
        server.stop()


def twinloop_command(*args: str) -> list[str]:
    """The `twinloop` console script next to this interpreter (the venv's)."""
    return [str(Path(sys.executable).parent / "twinloop"), *args]


def stub_engine_service(tmp_path: Path, blue_port: int, green_port: int) -> Service:
    ports = ["--port", str(blue_port), "--port", str(green_port)]
    return Service(
        name="stub engines",
        command=[sys.executable, "-m", "twinloop.testing.stub_engine", *ports],
        env=dict(os.environ),
        log=tmp_path / "stub-engines.log",
    )


def gateway_service(settings: Settings, port: int, log: Path) -> Service:
    """`twinloop serve` on `port` over `settings`' stores."""
    env = process_env(
        settings,
        TWINLOOP_GATEWAY__PORT=str(port),
        TWINLOOP_RAG__INGEST_LEASE_S=str(settings.rag.ingest_lease_s),
        TWINLOOP_RAG__REQUEST_TIMEOUT_S=str(settings.rag.request_timeout_s),
        # The canary loop has nothing to do here; keep it off the database.
        TWINLOOP_CANARY__EVALUATE_S="3600",
    )
    return Service(name="gateway", command=twinloop_command("serve"), env=env, log=log)


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes a `twinloop` process use `settings`' stores and ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINLOOP_")}
    env.update({
        "TWINLOOP_DATA_DIR": str(settings.data_dir),
        "TWINLOOP_DATABASE_URL": str(settings.database_url),
        "TWINLOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "TWINLOOP_ENGINES__BLUE_PORT": str(settings.engines.blue_port),
        "TWINLOOP_ENGINES__GREEN_PORT": str(settings.engines.green_port),
        "TWINLOOP_ENGINES__RETRIES": "0",
        "TWINLOOP_RAG__CHROMA_PORT": str(settings.rag.chroma_port),
        "TWINLOOP_LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **extra,
    })  # fmt: skip
    return env


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def sync_url(url: str) -> str:
    """The synchronous driver's URL for the processes' async one."""
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    index: int
    text: str
    added_in: int
    removed_in: int


@dataclass
class Stores:
    """The database and Chroma as they are on disk, read without any twinloop service."""

    database_url: str
    chroma_port: int
    domains: list[str]
    chunk_chars: int
    chunk_overlap: int
    _engine: Engine | None = field(default=None, init=False)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(sync_url(self.database_url))
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def read(self, query: Callable[[Session], T]) -> T:
        with Session(self.engine) as session:
            return query(session)

    def rag_versions(self) -> list[RagVersion]:
        return self.read(lambda s: list(s.scalars(select(RagVersion))))

    def has_rag_version_in(self, *states: RagVersionState) -> bool:
        query = select(RagVersion.version).where(RagVersion.state.in_(states)).limit(1)
        return self.read(lambda s: s.scalar(query)) is not None

    def documents(self) -> list[Document]:
        return self.read(lambda s: list(s.scalars(select(Document))))

    def snapshots(self) -> dict[str, Snapshot]:
        return self.read(lambda s: {x.id: x for x in s.scalars(select(Snapshot))})

    def latest_release(self) -> Release:
        release = self.read(
            lambda s: s.scalar(select(Release).order_by(Release.generation.desc()).limit(1))
        )
        assert release is not None
        return release

    def _collection(self, domain: str) -> Collection | None:
        client = chromadb.HttpClient(
            host="127.0.0.1",
            port=self.chroma_port,
            settings=ChromaSettings(anonymized_telemetry=False),
        )
        names = {c.name for c in client.list_collections()}
        if f"{COLLECTION_PREFIX}{domain}" not in names:
            return None
        return client.get_collection(f"{COLLECTION_PREFIX}{domain}")

    def reserved_and_written(self) -> bool:
        """Whether a batch holds a reserved version and has written to Chroma at it."""
        query = select(RagVersion).where(RagVersion.state == RagVersionState.RESERVED)
        for v in self.read(lambda s: list(s.scalars(query))):
            collection = self._collection(v.domain)
            at: Where = {"$or": [{"added_in": v.version}, {"removed_in": v.version}]}
            if collection is not None and collection.get(where=at, include=[], limit=1)["ids"]:
                return True
        return False

    def chunks(self, domain: str) -> list[Chunk]:
        collection = self._collection(domain)
        if collection is None:
            return []
        found = collection.get(include=["metadatas", "documents"])
        metadatas = found["metadatas"] or []
        texts = found["documents"] or []
        chunks = []
        for chunk_id, metadata, text in zip(found["ids"], metadatas, texts, strict=True):
            chunks.append(
                Chunk(
                    doc_id=str(metadata["doc_id"]),
                    index=int(chunk_id.rsplit(":", 1)[1]),
                    text=text,
                    added_in=int(str(metadata["added_in"])),
                    removed_in=int(str(metadata["removed_in"])),
                )
            )
        return chunks

    def consistency_problems(self, *, healed: bool) -> list[str]:
        """Where Chroma and the database disagree (empty: they agree).

        Always: at every version a snapshot may pin (committed or staged), Chroma shows
        exactly the live documents' chunks (the database's text, chunked as ingest does);
        no snapshot pins any other version; nothing is left of an abandoned version.
        `healed` (after an ingest into every domain): no version is open any more, so
        nothing in Chroma belongs to a version the database does not know as stored.
        """
        problems: list[str] = []
        versions = self.rag_versions()
        documents = self.documents()
        usable: dict[str, set[int]] = defaultdict(set)
        states: dict[tuple[str, int], str] = {}
        for v in versions:
            states[(v.domain, v.version)] = v.state
            if v.state in USABLE_RAG_VERSIONS:
                usable[v.domain].add(v.version)
        for domain in self.domains:
            chunks = self.chunks(domain)
            for version in sorted(usable[domain]):
                problems += self._visible_problems(domain, version, chunks, documents)
            for chunk in chunks:
                for what, version in (("added", chunk.added_in), ("removed", chunk.removed_in)):
                    if version == REMOVED_NEVER or version in usable[domain]:
                        continue
                    state = states.get((domain, version), "unknown to the database")
                    if healed or state not in OPEN_RAG_VERSIONS:
                        problems.append(
                            f"{domain}: chunk {chunk.doc_id}#{chunk.index} {what} in version "
                            f"{version}, which is {state}"
                        )
        for snapshot in self.snapshots().values():
            for domain, version in snapshot.rag_versions.items():
                if version not in usable[domain]:
                    state = states.get((domain, version), "unknown")
                    problems.append(
                        f"snapshot {snapshot.id} pins {domain}={version}, which is {state}"
                    )
        if healed:
            problems += [
                f"{v.domain}: version {v.version} is still {v.state}"
                for v in versions
                if v.state in OPEN_RAG_VERSIONS
            ]
        return problems

    def _visible_problems(
        self, domain: str, version: int, chunks: list[Chunk], documents: list[Document]
    ) -> list[str]:
        seen: dict[str, list[Chunk]] = defaultdict(list)
        for chunk in chunks:
            if chunk.added_in <= version < chunk.removed_in:
                seen[chunk.doc_id].append(chunk)
        expected = {
            d.external_id: d
            for d in documents
            if d.domain == domain
            and d.added_in_version <= version
            and (d.removed_in_version is None or d.removed_in_version > version)
        }
        problems = []
        for doc_id in sorted(set(seen) | set(expected)):
            document = expected.get(doc_id)
            got = [c.text for c in sorted(seen.get(doc_id, []), key=lambda c: c.index)]
            if document is None:
                problems.append(f"{domain}@{version}: {doc_id} is visible but not live")
                continue
            want = chunk_text(document.text, size=self.chunk_chars, overlap=self.chunk_overlap)
            if got != want or document.chunk_count != len(want):
                problems.append(
                    f"{domain}@{version}: {doc_id} shows {len(got)} chunk(s), the database "
                    f"has {document.chunk_count} ({len(want)} from its text)"
                    + ("" if len(got) != len(want) else ", with other text")
                )
        return problems

    def left_open(self) -> str:
        """What a kill left: versions still open (with their chunks in Chroma) or unstaged."""
        versions = self.rag_versions()
        opened = {(v.domain, v.version): v.state for v in versions if v.state in OPEN_RAG_VERSIONS}
        chunks = sum(
            1
            for domain in {d for d, _ in opened}
            for c in self.chunks(domain)
            if (domain, c.added_in) in opened
        )
        unstaged = sum(v.state == RagVersionState.COMMITTED for v in versions)
        return f"{len(opened)} version(s) open with {chunks} chunk(s), {unstaged} unstaged"

    def shadow_pins(self) -> dict[str, int]:
        """The RAG versions the snapshot on Shadow (the slot that is not active) pins."""
        release = self.latest_release()
        if release.active_slot == "blue":
            shadow = release.green_snapshot_id
        else:
            shadow = release.blue_snapshot_id
        return dict(self.snapshots()[str(shadow)].rag_versions)

    def newest_usable(self) -> dict[str, int]:
        newest: dict[str, int] = {}
        for v in self.rag_versions():
            if v.state in USABLE_RAG_VERSIONS:
                newest[v.domain] = max(newest.get(v.domain, 0), v.version)
        return newest


def describe(value: Any) -> str:
    """A short repr for assertion messages."""
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "…"
