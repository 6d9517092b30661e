"""The fetch step: a verified copy of a stored adapter in a folder an engine reads.

`sync_adapter(store, sha256, cache_dir)` makes `<cache_dir>/<sha256>/` hold exactly the files
that hash to `sha256`, and returns it:

- idempotent: a copy already there is hashed and kept when it verifies (nothing is fetched);
  a copy that does not verify is replaced;
- atomic: files are fetched into a hidden staging folder beside it, hashed, and renamed in
  whole, so the folder under the hash name is absent or complete and verified — an engine
  asked to load it never sees a half-written copy, and a fetch that fails or is killed leaves
  only a staging folder no one loads;
- verified: a copy whose files do not hash to `sha256` (an object changed, added or missing in
  the store) raises AdapterIntegrityError and is never put in place;
- in place: when the store is a folder and the cache is that same folder (one machine, or a
  volume every engine mounts), nothing is copied and the stored folder is hashed where it is.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.artifacts.store import ArtifactStore
from adapters.files import (
    InvalidAdapterError,
    adapter_sha256,
    is_intact,
    move_into_place,
    verify_adapter,
)
from twinloop.errors import AdapterIntegrityError, InvalidRequestError

SHA256 = re.compile(r"[0-9a-f]{64}")
STAGING_MARK = ".fetch-"


@dataclass(frozen=True, slots=True)
class SyncedAdapter:
    path: Path
    fetched: bool
    """False when a verified copy was already in place."""


def check_sha256(sha256: str) -> str:
    """`sha256` as given, when it is a lowercase hex sha256 (it becomes a folder name)."""
    if not SHA256.fullmatch(sha256):
        raise InvalidRequestError(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    return sha256


def sync_adapter(store: ArtifactStore, sha256: str, cache_dir: Path) -> SyncedAdapter:
    """Put a verified copy of `sha256` at `<cache_dir>/<sha256>/` (see the module docstring)."""
    target = cache_dir.absolute() / check_sha256(sha256)
    in_place = store.local_folder(sha256)
    if in_place is not None and in_place.absolute() == target:
        verify_adapter(target, sha256)
        return SyncedAdapter(path=target, fetched=False)
    if is_intact(target, sha256):
        return SyncedAdapter(path=target, fetched=False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha256}{STAGING_MARK}", dir=cache_dir))
    try:
        store.fetch(sha256, staging)
        _verify_fetched(store, staging, sha256)
        staging.chmod(0o755)  # mkdtemp makes it 0700; the engine may run as another user
        move_into_place(staging, target, sha256)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SyncedAdapter(path=target, fetched=True)


def remove_stale_staging(cache_dir: Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove staging folders a killed fetch left behind; for the cache's only writer."""
    if not cache_dir.is_dir():
        return []
    now = time.time()
    removed = []
    for path in cache_dir.glob(f".*{STAGING_MARK}*"):
        if path.is_dir() and now - path.stat().st_mtime >= older_than_s:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _verify_fetched(store: ArtifactStore, staging: Path, sha256: str) -> None:
    refusal = "the store's copy was changed, and it will not be loaded"
    try:
        actual = adapter_sha256(staging)
    except InvalidAdapterError as e:
        raise AdapterIntegrityError(
            f"adapter {sha256} fetched from {store.location} cannot be hashed ({e.message}); "
            f"{refusal}"
        ) from e
    if actual != sha256:
        raise AdapterIntegrityError(
            f"adapter {sha256} fetched from {store.location} hashes to {actual}: {refusal}"
        )
