"""One real vLLM engine per test session, and a real gateway over HTTP in front of it.

The prepared model and the engine's data live under `TWINLOOP_TEST_DATA_DIR`
(default `var/test`), so a second run reuses the converted model.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from rag.backends import load_onnx
from rag.server import ChromaServer
from twinloop.db import migrate
from twinloop.engines.process import EngineProcesses
from twinloop.routing.router import DomainRouter
from twinloop.routing.rules import default_rules
from twinloop.runtime import load_embedder
from twinloop.settings import EngineSettings, GatewaySettings, RagSettings, Settings, Slot
from twinloop.testing.engine import FakeEngine
from twinloop.testing.ports import free_port
from twinloop.weights.prepare import resolve_embedding_model

TEST_BLUE_PORT = int(os.environ.get("TWINLOOP_TEST_ENGINE_PORT", "18201"))
TEST_GREEN_PORT = TEST_BLUE_PORT + 1
POSTGRES_ADMIN_URL = os.environ.get(
    "TWINLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is an integration test, marker or not: `make test` runs the
    unmarked ones on parallel workers, where two engines on fixed ports cannot be shared."""
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A throwaway database on the local PostgreSQL, dropped afterwards (an async URL)."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"twinloop_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        message = f"PostgreSQL is unreachable at {POSTGRES_ADMIN_URL}: {e.orig}"
        if os.environ.get("CI"):  # CI has a PostgreSQL: a missing one is a failure, not a skip
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("+psycopg", "+asyncpg")
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


PG_ADMIN_TOKEN = "postgres-race-admin-token"
PG_ADMIN = {"Authorization": f"Bearer {PG_ADMIN_TOKEN}"}


@pytest.fixture
def pg_settings(postgres_database: str, tmp_path: Path) -> Settings:
    """Settings of gateways on one migrated PostgreSQL database, with fake engines' ports."""
    migrate.upgrade(postgres_database)
    return Settings(
        data_dir=tmp_path,
        database_url=postgres_database,
        admin_token=PG_ADMIN_TOKEN,
        engines=EngineSettings(blue_port=18101, green_port=18102, retries=1),
    )


@pytest.fixture
def pg_engines(pg_settings: Settings) -> FakeEngine:
    """Both slots' fake engines, shared by every gateway on `pg_settings`."""
    return FakeEngine(
        ports={pg_settings.engines.blue_port: "blue", pg_settings.engines.green_port: "green"}
    )


@pytest.fixture(scope="session")
def integration_data_dir() -> Path:
    path = Path(os.environ.get("TWINLOOP_TEST_DATA_DIR", "var/test")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def engine_settings(integration_data_dir: Path) -> Settings:
    """Settings for the shared engines, on test ports, one core each."""
    return Settings(
        data_dir=integration_data_dir,
        # There is no default admin token; every test gateway uses this one.
        admin_token="twinloop-integration-admin-token",
        engines=EngineSettings(
            blue_port=TEST_BLUE_PORT,
            green_port=TEST_GREEN_PORT,
            blue_cpus="0",
            green_cpus="1",
            start_timeout_s=600,
            retries=1,
        ),
        # A test swaps many times: poll fast so a second gateway follows at once.
        gateway=GatewaySettings(release_poll_s=0.1),
        rag=RagSettings(chroma_port=TEST_BLUE_PORT + 10),
    )


@pytest.fixture(scope="session")
def prepared_model(engine_settings: Settings) -> Path:
    from twinloop.weights.prepare import prepare_models

    prepare_models(engine_settings)
    return engine_settings.prepared_base_model_dir


@pytest.fixture(scope="session")
def engine_processes(engine_settings: Settings, prepared_model: Path) -> Iterator[EngineProcesses]:
    processes = EngineProcesses(engine_settings)
    yield processes
    for slot in Slot:
        processes.stop(slot)


def _ensure_running(processes: EngineProcesses, slot: Slot) -> None:
    if not processes.is_healthy(slot):
        processes.start(slot)
        processes.wait_healthy(slot)


@pytest.fixture
def real_engine(engine_processes: EngineProcesses) -> EngineProcesses:
    """The shared blue engine, (re)started if it is not serving. Green may be down."""
    _ensure_running(engine_processes, Slot.BLUE)
    return engine_processes


@pytest.fixture
def real_engines(engine_processes: EngineProcesses) -> EngineProcesses:
    """Both shared engines, started one after the other if they are not serving."""
    for slot in Slot:
        _ensure_running(engine_processes, slot)
    return engine_processes


@pytest.fixture(scope="session")
def chroma_server(engine_settings: Settings) -> Iterator[ChromaServer]:
    """One real Chroma server for the session's gateways, data under the test data dir."""
    server = ChromaServer(engine_settings)
    server.start()
    server.wait_healthy()
    yield server
    server.stop()


@pytest.fixture
def gateway_settings(
    engine_settings: Settings, tmp_path: Path, chroma_server: ChromaServer
) -> Settings:
    settings = engine_settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"}
    )
    migrate.upgrade(settings.sqlalchemy_url)
    return settings


@pytest.fixture(scope="session", autouse=True)
def _onnx_embedding_graph() -> None:
    """Export the embedding model's ONNX graph (and quantise it) once, before any test starts
    a gateway: every
    gateway (in-process or `twinloop serve`) shares it through TWINLOOP_EMBEDDINGS__ONNX_DIR
    (tests/conftest.py), and none has to export it within its start-up timeout."""
    settings = Settings()
    if settings.embeddings.backend != "torch":
        int8 = settings.embeddings.backend == "onnx-int8"
        model = resolve_embedding_model(settings.models.embedding_model)
        load_onnx(model, settings.onnx_dir, int8=int8)


@pytest.fixture(scope="session")
def real_router(engine_settings: Settings) -> DomainRouter:
    """The embedding router, loaded once for every gateway the tests start."""
    return DomainRouter(embedder=load_embedder(engine_settings), rules=default_rules())


@pytest.fixture
def gateway_url(
    gateway_settings: Settings, real_engine: EngineProcesses, real_router: DomainRouter
) -> Iterator[str]:
    """The real gateway app served by uvicorn on a loopback port, in a thread."""
    with serve_gateway(gateway_settings, real_router) as url:
        yield url


@pytest.fixture
def two_engine_gateway(
    gateway_settings: Settings, real_engines: EngineProcesses, real_router: DomainRouter
) -> Iterator[str]:
    """The real gateway over both real engines (blue/green tests)."""
    with serve_gateway(gateway_settings, real_router) as url:
        yield url


@contextmanager
def serve_gateway(settings: Settings, router: DomainRouter) -> Iterator[str]:
    from api.app import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(settings, router=router), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
