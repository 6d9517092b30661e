"""Adapter artifacts: the content-addressed store (a folder or S3) and the verified fetch step.

Why not vLLM's LoRA resolver plugins. vLLM 0.32 can resolve an unknown adapter name on the
request path (`VLLM_PLUGINS`, `LoRAResolverRegistry`; the bundled `lora_filesystem_resolver`
loads `<VLLM_LORA_RESOLVER_CACHE_DIR>/<name>`). They do not fit: a resolver runs inside the
engine, so an S3 resolver would be twinloop code baked into the `vllm/vllm-openai` image; it
loads on the first user request for the name (a cold download on someone's answer) instead of
before a swap; it checks no hash, and the bundled one accepts a folder only when its
`base_model_name_or_path` equals the engine's model path exactly, which adapters trained
elsewhere (a Hub id) do not. twinloop keeps the engine plain and loads explicitly: a verified
copy is put where the engine reads (`sync.sync_adapter`, by the gateway or by the fetch agent
beside the engine), then the gateway asks the engine to load `<engine_dir>/<sha256>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from adapters.artifacts.filesystem import FilesystemStore
from adapters.artifacts.store import ArtifactStore, ArtifactStoreUnavailableError, StoredArtifact
from adapters.artifacts.sync import SyncedAdapter, check_sha256, sync_adapter
from twinloop.settings import Settings

ADAPTERS_DIRNAME = "adapters"
CACHE_DIRNAME = "adapter-cache"

__all__ = [
    "ADAPTERS_DIRNAME",
    "ArtifactStore",
    "ArtifactStoreUnavailableError",
    "EngineFolder",
    "FilesystemStore",
    "StoredArtifact",
    "SyncedAdapter",
    "check_sha256",
    "engine_folder",
    "open_store",
    "sync_adapter",
]


def open_store(settings: Settings) -> ArtifactStore:
    """The store `artifacts.store` names; the caller closes it."""
    url = settings.artifacts.store
    if url is None:
        return FilesystemStore(settings.data_dir / ADAPTERS_DIRNAME)
    if url.startswith("s3://"):
        from adapters.artifacts.s3 import S3Store  # boto3 only where S3 is used

        return S3Store.from_url(url, settings.artifacts)
    return FilesystemStore(Path(url.removeprefix("file://")).expanduser())


@dataclass(frozen=True, slots=True)
class EngineFolder:
    """The folder engines load adapters from: where this process writes it, where they read it."""

    cache_dir: Path
    engine_dir: PurePosixPath

    def engine_path(self, sha256: str) -> str:
        return str(self.engine_dir / check_sha256(sha256))


def engine_folder(settings: Settings, store: ArtifactStore) -> EngineFolder:
    """`artifacts.cache_dir` and `engine_dir`, with their defaults (settings.ArtifactSettings)."""
    configured = settings.artifacts
    if configured.cache_dir is not None:
        cache_dir = configured.cache_dir.absolute()
    elif isinstance(store, FilesystemStore):
        cache_dir = store.root
    else:
        cache_dir = (settings.data_dir / CACHE_DIRNAME).absolute()
    engine_dir = PurePosixPath(configured.engine_dir or cache_dir.as_posix())
    return EngineFolder(cache_dir=cache_dir, engine_dir=engine_dir)
