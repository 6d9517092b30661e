"""The folder backend: `<root>/<sha256>/`, as `adapters.files.store_adapter` has always written.

On one machine, or where every engine mounts the folder (a shared volume), engines load the
stored folder in place: `local_folder` says where it is, and reading it is only a hash check.
"""

from __future__ import annotations

from pathlib import Path

from adapters.artifacts.store import Check, StoredArtifact
from adapters.files import InvalidAdapterError, copy_adapter_files, store_adapter
from twinloop.errors import AdapterIntegrityError


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

    def close(self) -> None:
        return None
