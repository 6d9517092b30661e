"""Shared fixtures. Unit tests never reach a real model or engine: real network
transports are blocked for every test not marked `integration`."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.db import migrate
from twinloop.db.session import SessionMaker, create_engine, create_sessionmaker
from twinloop.runtime import Runtime
from twinloop.settings import CanarySettings, EngineSettings, Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Every gateway a test starts (in-process or as a child, each with its own data directory)
# shares one export of the embedding model's ONNX graph instead of exporting it again.
os.environ.setdefault(
    "TWINLOOP_EMBEDDINGS__ONNX_DIR",
    str(Path(os.environ.get("TWINLOOP_TEST_DATA_DIR", "var/test")).resolve() / "onnx"),
)

ADMIN_TOKEN = "test-admin-token"
# What the admin sends; /ingest needs a credential, and helpers that ingest send this.
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(autouse=True)
def _block_real_engines(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> set[int]:
    """Refuse real network transports in unit tests.

    Returns the loopback ports a unit test may still connect to: only those that
    `closed_ports` holds closed, so a connection there can only be refused.
    """
    closed: set[int] = set()
    if request.node.get_closest_marker("integration"):
        return closed
    real = httpx.AsyncHTTPTransport.handle_async_request

    async def refuse(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1" and request.url.port in closed:
            return await real(self, request)
        raise RuntimeError(f"unit tests must not reach the network ({request.url}); use FakeEngine")

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", refuse)
    return closed


@pytest.fixture
def closed_ports(_block_real_engines: set[int]) -> Iterator[tuple[int, int]]:
    """Two loopback ports where nothing listens: connecting to them is refused.

    The sockets are bound but never listen, so no other process can take the
    ports while the test runs.
    """
    with socket.socket() as first, socket.socket() as second:
        for sock in (first, second):
            sock.bind(("127.0.0.1", 0))
        ports: tuple[int, int] = (first.getsockname()[1], second.getsockname()[1])
        _block_real_engines.update(ports)
        yield ports


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; each test gets a copy (migrating is slow)."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def settings(tmp_path: Path, migrated_sqlite_template: Path) -> Settings:
    db = tmp_path / "twinloop.db"
    shutil.copy(migrated_sqlite_template, db)
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{db}",
        admin_token=ADMIN_TOKEN,
        engines=EngineSettings(blue_port=18101, green_port=18102, retries=1),
        # A canary started here splits at once, as with one gateway; the tests of several
        # gateways on one database keep the delay that lets them all switch together.
        canary=CanarySettings(split_delay_s=0),
    )


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[SessionMaker]:
    """Transactions on the test's own database, for services that open their own."""
    engine = create_engine(settings.sqlalchemy_url)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def session(settings: Settings) -> AsyncIterator[AsyncSession]:
    """A database session on the test's own database, rolled back at the end."""
    engine = create_engine(settings.sqlalchemy_url)
    try:
        async with create_sessionmaker(engine)() as session:
            yield session
            await session.rollback()
    finally:
        await engine.dispose()


@pytest.fixture
def fake_knowledge() -> FakeKnowledge:
    return FakeKnowledge()


@pytest.fixture
def fake_engine(settings: Settings) -> FakeEngine:
    return FakeEngine(
        ports={settings.engines.blue_port: "blue", settings.engines.green_port: "green"}
    )


@pytest.fixture
async def app(
    settings: Settings, fake_engine: FakeEngine, fake_knowledge: FakeKnowledge
) -> AsyncIterator[FastAPI]:
    from api.app import create_app

    application = create_app(
        settings,
        engine_transport=fake_engine.transport(),
        router=FakeRouter(),
        knowledge=fake_knowledge,
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


@pytest.fixture
def admin_headers() -> Iterator[dict[str, str]]:
    yield dict(ADMIN_HEADERS)


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    runtime: Runtime = app.state.runtime
    return runtime


@dataclass(frozen=True)
class ApiKey:
    """An API key made through `POST /keys`: its id, its secret and the headers that send it."""

    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


NewKey = Callable[..., Awaitable[ApiKey]]


@pytest.fixture
def new_key(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> NewKey:
    """Make an API key through the admin API: `await new_key("ingest", domains=["law"])`."""

    async def create(
        role: str = "client",
        *,
        domains: list[str] | None = None,
        rate_limit_per_minute: int | None = None,
        name: str | None = None,
    ) -> ApiKey:
        body: dict[str, object] = {"name": name or f"{role} app", "role": role}
        if domains is not None:
            body["domains"] = domains
        if rate_limit_per_minute is not None:
            body["rate_limit_per_minute"] = rate_limit_per_minute
        response = await client.post("/keys", json=body, headers=admin_headers)
        assert response.status_code == 201, response.text
        created = response.json()
        return ApiKey(id=created["id"], key=created["key"])

    return create


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-compatible server (moto in server mode) for the session; its endpoint URL.

    Skipped where moto is not installed, but a failure under CI (`CI` set): the S3 backend
    must be tested there.
    """
    if importlib.util.find_spec("moto") is None:
        message = "moto[server] is not installed (the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must test the S3 backend")
        pytest.skip(f"{message}; CI is unset, so the S3 tests are skipped here")
    from twinloop.testing.s3 import moto_server

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the session's S3 server."""
    from adapters.artifacts.s3 import s3_client
    from twinloop.testing.s3 import artifact_settings

    name = f"twinloop-{uuid.uuid4().hex[:12]}"
    client = s3_client(artifact_settings(s3_endpoint, f"s3://{name}"))
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name
