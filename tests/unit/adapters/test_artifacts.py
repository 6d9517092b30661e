"""The adapter store (folder and S3 backends) and the fetch step that verifies every read.

The S3 backend runs against a real S3-compatible server (moto in server mode, started by the
session's `s3_endpoint` fixture), over HTTP as it would against MinIO or S3.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from adapters.artifacts import (
    ArtifactStore,
    FilesystemStore,
    engine_folder,
    open_store,
    sync_adapter,
)
from adapters.artifacts.s3 import S3Store, s3_client
from adapters.artifacts.store import Check, StoredArtifact
from adapters.artifacts.sync import remove_stale_staging
from adapters.files import adapter_sha256
from twinloop.errors import (
    AdapterIntegrityError,
    ArtifactStoreUnavailableError,
    InvalidRequestError,
)
from twinloop.settings import Settings
from twinloop.testing.adapters import write_fake_adapter
from twinloop.testing.s3 import artifact_settings

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return write_fake_adapter(tmp_path / "source")


@pytest.fixture
def s3_store(s3_endpoint: str, s3_bucket: str) -> Iterator[S3Store]:
    url = f"s3://{s3_bucket}/team/adapters"
    store = S3Store.from_url(url, artifact_settings(s3_endpoint, url))
    yield store
    store.close()


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "store")
    s3: S3Store = request.getfixturevalue("s3_store")
    return s3


def _objects(store: S3Store) -> dict[str, bytes]:
    client = store._client
    listed = client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=store.bucket, Key=item["Key"])["Body"].read()
        for item in listed
    }


def _put_object(store: S3Store, key: str, body: bytes) -> None:
    store._client.put_object(Bucket=store.bucket, Key=key, Body=body)


class _Counting:
    """A store that counts reads, so a test can tell a cached copy from a fetched one."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.fetches = 0

    @property
    def kind(self) -> str:
        return self.inner.kind

    @property
    def location(self) -> str:
        return self.inner.location

    def put(self, source: Path, check: Check | None = None) -> StoredArtifact:
        return self.inner.put(source, check)

    def fetch(self, sha256: str, dest: Path) -> None:
        self.fetches += 1
        self.inner.fetch(sha256, dest)

    def local_folder(self, sha256: str) -> Path | None:
        return self.inner.local_folder(sha256)

    def close(self) -> None:
        self.inner.close()


# --- the store interface, on both backends ---------------------------------------------


def test_round_trip_gives_back_the_same_files(
    store: ArtifactStore, adapter: Path, tmp_path: Path
) -> None:
    stored = store.put(adapter)

    assert stored.sha256 == adapter_sha256(adapter)
    assert stored.location.startswith(store.location) and stored.location.endswith(stored.sha256)
    synced = sync_adapter(store, stored.sha256, tmp_path / "engine")
    assert synced.path == tmp_path / "engine" / stored.sha256
    assert adapter_sha256(synced.path) == stored.sha256
    assert (synced.path / WEIGHTS).read_bytes() == (adapter / WEIGHTS).read_bytes()
    # The model card PEFT rewrites is not part of the adapter, so it is not stored either.
    assert not (synced.path / "README.md").exists()


def test_storing_the_same_files_twice_is_one_artifact(
    store: ArtifactStore, adapter: Path, tmp_path: Path
) -> None:
    first = store.put(adapter)
    copy = write_fake_adapter(tmp_path / "elsewhere")
    assert store.put(copy) == first


def test_the_check_sees_the_stored_bytes_and_can_refuse_them(
    store: ArtifactStore, adapter: Path
) -> None:
    seen: list[str] = []

    def check(folder: Path) -> None:
        seen.append(adapter_sha256(folder))
        raise InvalidRequestError("not this one")

    with pytest.raises(InvalidRequestError, match="not this one"):
        store.put(adapter, check=check)
    assert seen == [adapter_sha256(adapter)]


def test_an_adapter_the_store_does_not_hold_is_refused(
    store: ArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(AdapterIntegrityError, match="missing from the store"):
        sync_adapter(store, "a" * 64, tmp_path / "engine")
    assert not (tmp_path / "engine" / ("a" * 64)).exists()


def test_a_name_that_is_no_sha256_is_refused_before_any_path_is_built(
    store: ArtifactStore, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError, match="not a sha256"):
        sync_adapter(store, "../../etc", tmp_path / "engine")


# --- the fetch step: idempotent, atomic, verified ---------------------------------------


def test_a_verified_copy_in_place_is_not_fetched_again(
    store: ArtifactStore, adapter: Path, tmp_path: Path
) -> None:
    sha256 = store.put(adapter).sha256
    counting = _Counting(store)

    first = sync_adapter(counting, sha256, tmp_path / "engine")
    again = sync_adapter(counting, sha256, tmp_path / "engine")

    assert (first.fetched, again.fetched) == (True, False)
    assert first.path == again.path and counting.fetches == 1


def test_a_broken_copy_in_place_is_replaced_by_a_verified_one(
    store: ArtifactStore, adapter: Path, tmp_path: Path
) -> None:
    sha256 = store.put(adapter).sha256
    # What a copy written without the staging rename would leave when cut short.
    half = tmp_path / "engine" / sha256
    half.mkdir(parents=True)
    (half / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())

    synced = sync_adapter(store, sha256, tmp_path / "engine")

    assert synced.fetched and adapter_sha256(synced.path) == sha256


def test_a_fetch_that_fails_halfway_leaves_nothing_under_the_hash(
    store: ArtifactStore, adapter: Path, tmp_path: Path
) -> None:
    sha256 = store.put(adapter).sha256
    cache = tmp_path / "engine"

    class CutShort(_Counting):
        def fetch(self, sha256: str, dest: Path) -> None:
            (dest / "adapter_config.json").write_text("{}")
            raise ArtifactStoreUnavailableError("connection reset")

    with pytest.raises(ArtifactStoreUnavailableError):
        sync_adapter(CutShort(store), sha256, cache)

    assert list(cache.iterdir()) == []  # no folder under the hash, no staging left behind
    assert sync_adapter(store, sha256, cache).fetched  # and the next fetch completes


def test_stale_staging_folders_are_removed_but_copies_are_kept(
    store: ArtifactStore, adapter: Path, tmp_path: Path
) -> None:
    sha256 = store.put(adapter).sha256
    cache = tmp_path / "engine"
    sync_adapter(store, sha256, cache)
    stale = cache / f".{sha256}.fetch-killed"
    stale.mkdir()

    assert remove_stale_staging(cache) == [stale]
    assert [p.name for p in cache.iterdir()] == [sha256]


def test_a_folder_store_read_by_the_engines_in_place_is_hashed_not_copied(
    adapter: Path, tmp_path: Path
) -> None:
    store = _Counting(FilesystemStore(tmp_path / "store"))
    sha256 = store.put(adapter).sha256

    synced = sync_adapter(store, sha256, tmp_path / "store")

    assert (synced.path, synced.fetched, store.fetches) == (tmp_path / "store" / sha256, False, 0)
    weights = synced.path / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(AdapterIntegrityError, match="will not be loaded"):
        sync_adapter(store, sha256, tmp_path / "store")


def test_a_changed_file_in_a_folder_store_is_refused_on_read(adapter: Path, tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "store")
    sha256 = store.put(adapter).sha256
    weights = tmp_path / "store" / sha256 / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")

    with pytest.raises(AdapterIntegrityError, match=f"{sha256} fetched from .* hashes to"):
        sync_adapter(store, sha256, tmp_path / "engine")
    assert list((tmp_path / "engine").iterdir()) == []


# --- S3: what a tampering hand can do to the bucket --------------------------------------


def test_s3_keeps_one_object_per_file_under_the_prefix(s3_store: S3Store, adapter: Path) -> None:
    stored = s3_store.put(adapter)

    assert stored.location == f"s3://{s3_store.bucket}/team/adapters/{stored.sha256}"
    assert set(_objects(s3_store)) == {
        f"team/adapters/{stored.sha256}/adapter_config.json",
        f"team/adapters/{stored.sha256}/{WEIGHTS}",
    }


def test_s3_object_changed_in_the_bucket_is_refused_on_read(
    s3_store: S3Store, adapter: Path, tmp_path: Path
) -> None:
    sha256 = s3_store.put(adapter).sha256
    key = f"team/adapters/{sha256}/{WEIGHTS}"
    body = _objects(s3_store)[key]
    _put_object(s3_store, key, body[:-1] + bytes([body[-1] ^ 1]))

    with pytest.raises(AdapterIntegrityError, match=r"hashes to .*will not be loaded"):
        sync_adapter(s3_store, sha256, tmp_path / "engine")
    assert not (tmp_path / "engine").exists() or list((tmp_path / "engine").iterdir()) == []


@pytest.mark.parametrize("change", ["added", "removed"])
def test_s3_object_added_or_removed_is_refused_on_read(
    s3_store: S3Store, adapter: Path, tmp_path: Path, change: str
) -> None:
    sha256 = s3_store.put(adapter).sha256
    if change == "added":
        _put_object(s3_store, f"team/adapters/{sha256}/extra.safetensors", b"weights")
    else:
        s3_store._client.delete_object(
            Bucket=s3_store.bucket, Key=f"team/adapters/{sha256}/adapter_config.json"
        )

    with pytest.raises(AdapterIntegrityError):
        sync_adapter(s3_store, sha256, tmp_path / "engine")
    assert not (tmp_path / "engine" / sha256).exists()


def test_s3_object_named_to_escape_the_folder_is_refused(
    s3_store: S3Store, adapter: Path, tmp_path: Path
) -> None:
    sha256 = s3_store.put(adapter).sha256
    _put_object(s3_store, f"team/adapters/{sha256}/../../escaped.txt", b"x")

    with pytest.raises(AdapterIntegrityError, match="no file inside an adapter folder"):
        sync_adapter(s3_store, sha256, tmp_path / "engine" / "cache")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_storing_again_repairs_a_tampered_adapter_in_s3(
    s3_store: S3Store, adapter: Path, tmp_path: Path
) -> None:
    sha256 = s3_store.put(adapter).sha256
    _put_object(s3_store, f"team/adapters/{sha256}/extra.safetensors", b"weights")
    _put_object(s3_store, f"team/adapters/{sha256}/{WEIGHTS}", b"not the weights")

    s3_store.put(adapter)

    assert adapter_sha256(sync_adapter(s3_store, sha256, tmp_path / "engine").path) == sha256


def test_an_unreachable_s3_server_is_unavailable_not_a_crash(
    adapter: Path, tmp_path: Path, closed_ports: tuple[int, int]
) -> None:
    url = "s3://bucket/adapters"
    settings = artifact_settings(f"http://127.0.0.1:{closed_ports[0]}", url, s3_timeout_s=2.0)
    store = S3Store.from_url(url, settings)

    with pytest.raises(ArtifactStoreUnavailableError, match="s3://bucket/adapters failed to"):
        store.put(adapter)
    with pytest.raises(ArtifactStoreUnavailableError):
        sync_adapter(store, adapter_sha256(adapter), tmp_path / "engine")
    store.close()


def test_a_bucket_that_does_not_exist_is_unavailable(s3_endpoint: str, adapter: Path) -> None:
    url = "s3://no-such-bucket-for-twinloop"
    store = S3Store.from_url(url, artifact_settings(s3_endpoint, url))
    with pytest.raises(ArtifactStoreUnavailableError, match="NoSuchBucket"):
        store.put(adapter)
    store.close()


# --- which store and folders the settings name --------------------------------------------


def _settings(tmp_path: Path, **artifacts: Any) -> Settings:
    return Settings(data_dir=tmp_path, artifacts=artifacts)


def test_the_default_store_is_the_data_directory_read_in_place(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = open_store(settings)
    folder = engine_folder(settings, store)

    assert isinstance(store, FilesystemStore) and store.root == tmp_path / "adapters"
    assert folder.cache_dir == store.root
    assert folder.engine_path("b" * 64) == f"{tmp_path}/adapters/{'b' * 64}"


def test_a_folder_store_by_url_and_an_engine_view_of_its_own(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store=f"file://{tmp_path}/shared", engine_dir="/mnt/adapters")
    store = open_store(settings)
    folder = engine_folder(settings, store)

    assert isinstance(store, FilesystemStore) and store.root == tmp_path / "shared"
    assert folder.cache_dir == tmp_path / "shared"
    assert folder.engine_dir == PurePosixPath("/mnt/adapters")
    assert folder.engine_path("c" * 64) == f"/mnt/adapters/{'c' * 64}"


def test_an_s3_store_syncs_into_a_cache_in_the_data_directory(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store="s3://bucket/a/b", s3_endpoint_url="http://minio:9000")
    store = open_store(settings)
    folder = engine_folder(settings, store)

    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.location) == ("bucket", "a/b", "s3://bucket/a/b")
    assert folder.cache_dir == tmp_path / "adapter-cache"
    assert folder.engine_dir == PurePosixPath(f"{tmp_path}/adapter-cache")
    store.close()


def test_s3_client_uses_path_style_against_an_endpoint() -> None:
    settings = artifact_settings("http://minio:9000", "s3://bucket")
    client = s3_client(settings)
    assert client.meta.endpoint_url == "http://minio:9000"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    client.close()


# --- checking a store before anything depends on it ---------------------------------------


def test_check_creates_a_missing_bucket_only_when_asked(s3_endpoint: str) -> None:
    url = f"s3://twinloop-new-{uuid.uuid4().hex[:8]}/adapters"
    store = S3Store.from_url(url, artifact_settings(s3_endpoint, url))

    with pytest.raises(ArtifactStoreUnavailableError, match="NoSuchBucket"):
        store.check()
    store.check(create=True)
    store.check()  # and again, on the bucket that now exists
    assert store._client.list_objects_v2(Bucket=store.bucket).get("KeyCount") == 0
    store.close()


def test_check_of_a_folder_store(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "missing" / "adapters")
    with pytest.raises(ArtifactStoreUnavailableError, match="cannot be written"):
        store.check()
    store.check(create=True)
    assert list(store.root.iterdir()) == []
