"""The folder backend: `<root>/<sha256>/`, as `adapters.files.store_adapter` has always written.

On one machine, or where every engine mounts the folder (a shared volume), engines load the
stored folder in place: `local_folder` says where it is, and reading it is only a hash check.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from adapters.artifacts.store import Check, StoredArtifact
from adapters.files import InvalidAdapterError, copy_adapter_files, store_adapter
from twinloop.errors import AdapterIntegrityError, ArtifactStoreUnavailableError


class FilesystemStore:
    kind = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    @property
    def location(self) -> str:
        return str(self.root)

    def put(self, source: Path, check: Check | None = None) -> StoredArtifact:
        stored = store_adapter(source, self.root)
        if check is not None:
            check(stored.path)
        return StoredArtifact(sha256=stored.sha256, location=str(stored.path))

    def fetch(self, sha256: str, dest: Path) -> None:
        folder = self.root / sha256
        if not folder.is_dir():
            raise AdapterIntegrityError(
                f"adapter {sha256} is missing from the store {self.root}; it will not be loaded"
            )
        try:
            copy_adapter_files(folder, dest)
        except InvalidAdapterError as e:
            raise AdapterIntegrityError(
                f"adapter {sha256} in the store {self.root} cannot be read ({e.message}); it will "
                "not be loaded"
            ) from e

    def local_folder(self, sha256: str) -> Path:
        return self.root / sha256

    def check(self, *, create: bool = False) -> None:
        probe = self.root / f".twinloop-probe-{uuid.uuid4().hex}"
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"probe")
            if probe.read_bytes() != b"probe":
                raise OSError("a probe read back other bytes than were written")
        except OSError as e:
            raise ArtifactStoreUnavailableError(
                f"the adapter store {self.root} cannot be written: {e}"
            ) from e
        finally:
            probe.unlink(missing_ok=True)

    def close(self) -> None:
        return None
