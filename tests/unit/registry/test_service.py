"""The adapter registry against a migrated SQLite database and fake adapter folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from adapters.artifacts import ArtifactStore, FilesystemStore, sync_adapter
from adapters.artifacts.s3 import S3Store
from adapters.artifacts.store import Check, StoredArtifact
from adapters.files import InvalidAdapterError, adapter_sha256
from twinloop.db.models import AdapterVersion, AuditEntry, TrainingRun
from twinloop.db.session import create_engine, create_sessionmaker
from twinloop.errors import InvalidRequestError, NotFoundError
from twinloop.registry import (
    AdapterConflictError,
    AdapterRegistry,
    AdapterView,
    base_model_aliases,
)
from twinloop.settings import ModelSettings, Settings
from twinloop.testing.adapters import SMOLLM2_HUB_ID, write_fake_adapter
from twinloop.testing.s3 import artifact_settings


@pytest.fixture
def registry(settings: Settings) -> AdapterRegistry:
    return AdapterRegistry.from_settings(settings)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_fake_adapter(tmp_path / "trained" / "law-1")


async def _count(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(AdapterVersion))).scalar_one()


async def test_register_records_the_row_and_copies_the_folder(
    registry: AdapterRegistry, session: AsyncSession, source: Path, settings: Settings
) -> None:
    sha = adapter_sha256(source)

    adapter = await registry.register(
        session, source=source, domain="law", metrics={"loss": 0.5, "steps": 10}
    )

    assert adapter.domain == "law"
    assert adapter.sha256 == sha
    assert adapter.name == f"law-{sha[:12]}"
    assert adapter.base_model == SMOLLM2_HUB_ID
    assert adapter.metrics == {"loss": 0.5, "steps": 10}
    assert adapter.parent_id is None and adapter.training_run_id is None
    assert not adapter.tainted
    stored = (settings.data_dir / "adapters" / sha).absolute()
    assert Path(adapter.path) == stored
    assert adapter_sha256(stored) == sha
    assert (stored / "adapter_model.safetensors").read_bytes() == (
        source / "adapter_model.safetensors"
    ).read_bytes()
    view = AdapterView.model_validate(adapter)
    assert (view.id, view.sha256, view.created_at) == (adapter.id, sha, adapter.created_at)


async def test_registering_the_same_files_again_returns_the_same_row(
    registry: AdapterRegistry, session: AsyncSession, source: Path, tmp_path: Path
) -> None:
    first = await registry.register(session, source=source, domain="law")
    copy = write_fake_adapter(tmp_path / "copy-of-law-1")  # same bytes, other folder

    again = await registry.register(session, source=copy, domain="law", metrics={"x": 1})

    assert again.id == first.id
    assert again.metrics == {}, "the first registration's record stands"
    assert await _count(session) == 1


async def test_the_same_files_in_another_domain_conflict(
    registry: AdapterRegistry, session: AsyncSession, source: Path
) -> None:
    await registry.register(session, source=source, domain="law")
    with pytest.raises(AdapterConflictError, match="already registered as law-") as e:
        await registry.register(session, source=source, domain="med")
    assert e.value.status_code == 409


async def test_actor_is_audited(
    registry: AdapterRegistry, session: AsyncSession, source: Path
) -> None:
    adapter = await registry.register(session, source=source, domain="law", actor="alice")
    entry = (await session.execute(select(AuditEntry))).scalar_one()
    assert (entry.actor, entry.action, entry.target) == ("alice", "adapter.register", adapter.id)


async def test_wrong_base_model_is_refused_and_nothing_is_copied(
    registry: AdapterRegistry, session: AsyncSession, tmp_path: Path, settings: Settings
) -> None:
    folder = write_fake_adapter(tmp_path / "other", base_model="meta-llama/Llama-3.2-1B")

    with pytest.raises(InvalidAdapterError) as e:
        await registry.register(session, source=folder, domain="law")

    assert e.value.status_code == 422
    assert "trained for base model 'meta-llama/Llama-3.2-1B'" in e.value.message
    assert "this service serves" in e.value.message and SMOLLM2_HUB_ID in e.value.message
    assert not (settings.data_dir / "adapters").exists()
    assert await _count(session) == 0


async def test_adapter_without_a_base_model_is_refused(
    registry: AdapterRegistry, session: AsyncSession, tmp_path: Path
) -> None:
    folder = write_fake_adapter(tmp_path / "anon", base_model=None)
    with pytest.raises(InvalidAdapterError, match="does not say which base model"):
        await registry.register(session, source=folder, domain="law")


@pytest.mark.parametrize(
    "declared",
    [
        "smollm2-135m-instruct",
        "/some/training/box/models/SmolLM2-135M-Instruct/",
        "BASE_DIR",
        "RELATIVE_BASE_DIR",
        "LINK_TO_BASE_DIR",
    ],
)
def test_base_model_matching_rules(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared: str
) -> None:
    base = settings.prepared_base_model_dir
    base.mkdir(parents=True)
    renamed = tmp_path / "link-named-otherwise"
    renamed.symlink_to(base)
    monkeypatch.chdir(tmp_path)
    declared = {
        "BASE_DIR": str(base),
        "RELATIVE_BASE_DIR": os.path.relpath(base, tmp_path),
        "LINK_TO_BASE_DIR": str(renamed),
    }.get(declared, declared)
    registry = AdapterRegistry.from_settings(settings)

    assert registry.trained_for_served_base(declared)


@pytest.mark.parametrize(
    "declared", ["HuggingFaceTB/SmolLM2-360M-Instruct", "/models/smollm2-135m", "model"]
)
def test_other_base_models_do_not_match(registry: AdapterRegistry, declared: str) -> None:
    assert not registry.trained_for_served_base(declared)


def test_aliases_of_the_default_and_of_a_configured_base_model(
    settings: Settings, tmp_path: Path
) -> None:
    assert base_model_aliases(settings) == {
        str(settings.prepared_base_model_dir.resolve()),
        "smollm2-135m-instruct",
        SMOLLM2_HUB_ID,
    }
    custom = settings.model_copy(
        update={"models": ModelSettings(base_model="Qwen/Qwen2.5-0.5B", served_name="qwen")}
    )
    assert base_model_aliases(custom) == {"Qwen/Qwen2.5-0.5B", "qwen"}


async def test_rank_above_the_engines_limit_is_refused(
    registry: AdapterRegistry, session: AsyncSession, tmp_path: Path
) -> None:
    folder = write_fake_adapter(tmp_path / "big", rank=32)
    with pytest.raises(InvalidAdapterError, match="rank 32; the engines accept at most rank 16"):
        await registry.register(session, source=folder, domain="law")


async def test_unknown_domain_is_refused(
    registry: AdapterRegistry, session: AsyncSession, source: Path
) -> None:
    with pytest.raises(InvalidRequestError, match="unknown domain 'tax'; known domains: law, med"):
        await registry.register(session, source=source, domain="tax")


async def test_missing_source_is_refused(
    registry: AdapterRegistry, session: AsyncSession, tmp_path: Path
) -> None:
    with pytest.raises(InvalidAdapterError, match="does not exist") as e:
        await registry.register(session, source=tmp_path / "nope", domain="law")
    assert e.value.status_code == 422


async def test_non_finite_metrics_are_refused(
    registry: AdapterRegistry, session: AsyncSession, source: Path
) -> None:
    with pytest.raises(InvalidRequestError, match="metrics must be JSON"):
        await registry.register(session, source=source, domain="law", metrics={"loss": 1e999})


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, settings: Settings) -> ArtifactStore:
    if request.param == "filesystem":
        return FilesystemStore(settings.data_dir / "adapters")
    url = f"s3://{request.getfixturevalue('s3_bucket')}/adapters"
    return S3Store.from_url(url, artifact_settings(request.getfixturevalue("s3_endpoint"), url))


class _WrappedStore:
    """An artifact store that hands everything to `inner`; subclasses change `put`."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.kind, self.location = inner.kind, inner.location

    def put(self, source: Path, check: Check | None = None) -> StoredArtifact:
        return self.inner.put(source, check)

    def fetch(self, sha256: str, dest: Path) -> None:
        self.inner.fetch(sha256, dest)

    def local_folder(self, sha256: str) -> Path | None:
        return self.inner.local_folder(sha256)

    def close(self) -> None:
        self.inner.close()


class _RewrittenWhileStored(_WrappedStore):
    """The trainer saves the folder again after the registry's checks passed."""

    def put(self, source: Path, check: Check | None = None) -> StoredArtifact:
        write_fake_adapter(source, rank=4)
        return super().put(source, check)


async def test_source_rewritten_after_the_checks_is_refused(
    store: ArtifactStore, settings: Settings, session: AsyncSession, source: Path
) -> None:
    registry = AdapterRegistry.from_settings(settings, _RewrittenWhileStored(store))

    with pytest.raises(InvalidAdapterError, match="changed while it was being registered"):
        await registry.register(session, source=source, domain="law")
    assert await _count(session) == 0
    store.close()


async def test_registering_into_s3_records_where_the_bucket_keeps_it(
    settings: Settings, session: AsyncSession, source: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    url = f"s3://{s3_bucket}/adapters"
    store = S3Store.from_url(url, artifact_settings(s3_endpoint, url))
    registry = AdapterRegistry.from_settings(settings, store)

    adapter = await registry.register(session, source=source, domain="law")

    assert adapter.path == f"{url}/{adapter.sha256}"
    assert not (settings.data_dir / "adapters").exists()
    copy = sync_adapter(store, adapter.sha256, settings.data_dir / "engine")
    assert adapter_sha256(copy.path) == adapter.sha256 == adapter_sha256(source)
    store.close()


async def test_lineage_and_training_run_are_recorded(
    registry: AdapterRegistry, session: AsyncSession, source: Path, tmp_path: Path
) -> None:
    run = TrainingRun(state="training", trigger="manual")
    session.add(run)
    await session.flush()
    parent = await registry.register(session, source=source, domain="law")
    child_folder = write_fake_adapter(tmp_path / "law-2", seed=1)

    child = await registry.register(
        session, source=child_folder, domain="law", parent_id=parent.id, training_run_id=run.id
    )

    assert (child.parent_id, child.training_run_id) == (parent.id, run.id)


async def test_parent_in_another_domain_is_refused(
    registry: AdapterRegistry, session: AsyncSession, source: Path, tmp_path: Path
) -> None:
    parent = await registry.register(session, source=source, domain="law")
    child_folder = write_fake_adapter(tmp_path / "med-1", seed=1)

    with pytest.raises(InvalidRequestError, match="belongs to domain 'law', not 'med'") as e:
        await registry.register(session, source=child_folder, domain="med", parent_id=parent.id)
    assert e.value.status_code == 422


async def test_missing_parent_and_training_run_are_not_found(
    registry: AdapterRegistry, session: AsyncSession, source: Path
) -> None:
    with pytest.raises(NotFoundError, match="parent adapter version nope does not exist"):
        await registry.register(session, source=source, domain="law", parent_id="nope")
    with pytest.raises(NotFoundError, match="training run nope does not exist"):
        await registry.register(session, source=source, domain="law", training_run_id="nope")


async def test_get_and_list(
    registry: AdapterRegistry, session: AsyncSession, source: Path, tmp_path: Path
) -> None:
    law = await registry.register(session, source=source, domain="law")
    med = await registry.register(
        session, source=write_fake_adapter(tmp_path / "med", seed=2), domain="med"
    )

    assert await registry.get(session, law.id) is law
    assert {a.id for a in await registry.list(session)} == {law.id, med.id}
    assert [a.id for a in await registry.list(session, "med")] == [med.id]
    with pytest.raises(NotFoundError, match="adapter version missing does not exist") as e:
        await registry.get(session, "missing")
    assert e.value.status_code == 404


class _CountingCheckouts(_WrappedStore):
    """A store that notes how many database connections are checked out while it copies."""

    def __init__(self, inner: ArtifactStore, engine: AsyncEngine) -> None:
        super().__init__(inner)
        self.engine = engine
        self.checked_out: list[int] = []

    def put(self, source: Path, check: Check | None = None) -> StoredArtifact:
        self.checked_out.append(self.engine.sync_engine.pool.checkedout())
        return super().put(source, check)


async def test_files_are_copied_before_the_session_takes_a_connection(
    settings: Settings, source: Path, tmp_path: Path
) -> None:
    """A copy (an upload, under load: seconds) must not hold a pooled connection: the SQLite
    gateway has one, and every other request would wait for it."""
    engine = create_engine(settings.sqlalchemy_url)
    store = _CountingCheckouts(FilesystemStore(settings.data_dir / "adapters"), engine)
    registry = AdapterRegistry.from_settings(settings, store)
    try:
        async with create_sessionmaker(engine).begin() as session:
            parent = await registry.register(session, source=source, domain="law")
        child_folder = write_fake_adapter(tmp_path / "law-2", seed=1)
        # The lineage check reads the database: the old order read it before copying.
        async with create_sessionmaker(engine).begin() as session:
            child = await registry.register(
                session, source=child_folder, domain="law", parent_id=parent.id
            )
    finally:
        await engine.dispose()

    assert child.parent_id == parent.id
    assert store.checked_out == [0, 0]
