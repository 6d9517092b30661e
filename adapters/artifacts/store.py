"""The adapter store: content-addressed LoRA folders, on a file system or in S3.

An adapter is stored under its sha256 (`adapters.files`: the hash of its file listing) and
read back only through `adapters.artifacts.sync`, which hashes what it got before anything may
load it. Backends only move bytes: `put` stores a folder under its hash, `fetch` writes the
files stored under a hash into an empty folder. Neither trusts the other side: `put` hashes a
private copy of the source, and every read is verified after the copy.

Synchronous on purpose, like `adapters.files`: file and network copies are blocking work,
which async callers run with `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# In the core: the fetch agent's client (twinloop.engines) raises it as the agent reports it.
from twinloop.errors import ArtifactStoreUnavailableError as ArtifactStoreUnavailableError

Check = Callable[[Path], None]
"""Called on the local folder whose bytes are stored, before they count as stored."""


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    sha256: str
    location: str
    """Where the store keeps it: a folder path, or s3://bucket/prefix/<sha256>."""


class ArtifactStore(Protocol):
    @property
    def kind(self) -> str:
        """`filesystem` or `s3`."""
        ...

    @property
    def location(self) -> str:
        """The store's root, as an operator would name it (a folder, s3://bucket/prefix)."""
        ...

    def put(self, source: Path, check: Check | None = None) -> StoredArtifact:
        """Store the adapter folder `source` under its sha256 (again, if it is there already).

        Raises InvalidAdapterError when `source` is not an adapter folder or changes while it
        is copied, and ArtifactStoreUnavailableError when the store cannot be written.
        """
        ...

    def fetch(self, sha256: str, dest: Path) -> None:
        """Write the files stored under `sha256` into the empty folder `dest`, unverified.

        Raises AdapterIntegrityError when nothing is stored under it, and
        ArtifactStoreUnavailableError when the store cannot be read.
        """
        ...

    def local_folder(self, sha256: str) -> Path | None:
        """The folder holding `sha256` where this process can read it in place; None if the
        store is not a local file system."""
        ...

    def check(self, *, create: bool = False) -> None:
        """Write, read back and delete a probe; with `create`, make a missing bucket or folder
        first. ArtifactStoreUnavailableError says what failed (unreachable, credentials)."""
        ...

    def close(self) -> None: ...
