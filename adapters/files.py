"""LoRA adapter folders on disk: content hash, config, content-addressed store, integrity check.

Synchronous on purpose (hashing and copying are blocking file work); async callers run
these functions with `asyncio.to_thread`.

**The hash.** An adapter's sha256 is computed over every regular file in its folder,
recursively, except a top-level `README.md`. Each file contributes the line
`"<sha256 of its bytes>  <path relative to the folder, POSIX separators>\\n"`; the lines
are sorted by path and the adapter hash is the sha256 of their concatenation (UTF-8). That
is exactly what `sha256sum` prints, so an operator can check a stored adapter by hand::

    cd ADAPTER && find . -type f ! -path ./README.md | sed 's|^\\./||' | LC_ALL=C sort \\
        | xargs -d '\\n' sha256sum | sha256sum

The hash covers names as well as contents, so renaming, adding or removing a file changes
it; it does not depend on where the folder lies, file times or permissions. The top-level
`README.md` is left out because PEFT rewrites its model card on every `save_pretrained`
(stamped with the PEFT version) and neither vLLM nor PEFT reads it: the same weights saved
twice must get the same name. It is not copied into the store either, so a stored folder
holds exactly the files its hash covers. Symlinks and special files anywhere inside the
folder are refused: a link could change what is served without changing the hash of what
was registered.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import structlog

# Defined in the core: the fetch agent's client (twinloop.engines) raises it too.
from twinloop.errors import AdapterIntegrityError as AdapterIntegrityError
from twinloop.errors import InvalidRequestError
from twinloop.files import fsync_dir, sha256_file

log = structlog.get_logger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
# vLLM's LoRA loader looks for these names, in this order (vllm/lora/lora_model.py).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")
UNHASHED_TOP_LEVEL = frozenset({"README.md"})

# init_lora_weights values that only set the starting weights, so the saved adapter is a
# plain LoRA. Others (PiSSA, OLoRA, CorDA, LoftQ) change the base weights too and vLLM
# refuses them; the list mirrors vllm/lora/peft_helper.py `_init_is_supported`.
_PLAIN_LORA_INITS = frozenset({"gaussian", "eva", "orthogonal", "mica", "lora_ga"})


class InvalidAdapterError(InvalidRequestError):
    """A folder is not a LoRA adapter this service can serve."""


@dataclass(frozen=True, slots=True)
class AdapterConfigInfo:
    """What twinloop needs from a PEFT `adapter_config.json`."""

    base_model_name_or_path: str | None
    """As PEFT recorded it: a Hugging Face id or a folder path; None when it recorded none."""
    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str | None
    """Module names, or one regular expression (PEFT accepts both)."""
    peft_type: str
    rank_pattern: tuple[tuple[str, int], ...] = ()
    """Per-module rank overrides; vLLM checks these against --max-lora-rank as well."""

    @property
    def max_rank(self) -> int:
        return max([self.r, *(rank for _, rank in self.rank_pattern)])


@dataclass(frozen=True, slots=True)
class StoredAdapter:
    path: Path
    sha256: str


def adapter_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative POSIX name, path) of every file the hash covers, sorted by name."""
    if not folder.is_dir():
        raise InvalidAdapterError(f"adapter folder {folder} does not exist or is not a folder")
    found: list[tuple[str, Path]] = []
    for path in folder.rglob("*"):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            raise InvalidAdapterError(
                f"adapter folder {folder} contains a symlink ({name}); copy the real file in"
            )
        if path.is_dir():
            continue
        if not path.is_file():
            raise InvalidAdapterError(f"adapter folder {folder} contains a special file ({name})")
        if "\n" in name:
            # One line per file in the hashed listing: a newline would make it ambiguous.
            raise InvalidAdapterError(f"adapter folder {folder} has a file name with a newline")
        if name in UNHASHED_TOP_LEVEL:
            continue
        found.append((name, path))
    return sorted(found)


def adapter_sha256(folder: Path) -> str:
    """The adapter's content hash (see the module docstring for the exact rule)."""
    listing = "".join(f"{sha256_file(path)}  {name}\n" for name, path in adapter_files(folder))
    return hashlib.sha256(listing.encode("utf-8", "surrogateescape")).hexdigest()


def read_adapter_config(folder: Path) -> AdapterConfigInfo:
    """Read and check `adapter_config.json`; InvalidAdapterError says what is wrong."""
    if not folder.is_dir():
        raise InvalidAdapterError(f"adapter folder {folder} does not exist or is not a folder")
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise InvalidAdapterError(
            f"{folder} is not a PEFT adapter folder: {ADAPTER_CONFIG} is missing"
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise InvalidAdapterError(
            f"{folder} has no adapter weights: expected {WEIGHT_FILES[0]} (or {WEIGHT_FILES[1]})"
        )
    try:
        body: Any = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidAdapterError(f"{config_path} is not readable JSON: {e}") from e
    if not isinstance(body, dict):
        raise InvalidAdapterError(f"{config_path} must hold a JSON object")
    return _parse_config(config_path, body)


def _parse_config(config_path: Path, body: dict[str, Any]) -> AdapterConfigInfo:
    def bad(what: str) -> InvalidAdapterError:
        return InvalidAdapterError(f"{config_path}: {what}")

    peft_type = body.get("peft_type")
    if peft_type != "LORA":
        raise bad(f"peft_type is {peft_type!r}; only LoRA adapters (LORA) can be served")
    r: object = body.get("r")
    if not _is_int(r) or r <= 0:
        raise bad(f"r must be a positive integer, not {r!r}")
    alpha = body.get("lora_alpha")
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        raise bad(f"lora_alpha must be a positive number, not {alpha!r}")
    rank_pattern = body.get("rank_pattern") or {}
    if not isinstance(rank_pattern, dict) or not all(
        _is_int(v) and v > 0 for v in rank_pattern.values()
    ):
        raise bad("rank_pattern must map module patterns to positive integer ranks")
    base = body.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise bad(f"base_model_name_or_path must be a string, not {base!r}")
    unsupported = _unsupported_features(body)
    if unsupported:
        raise bad(f"uses LoRA features the engines cannot serve: {'; '.join(unsupported)}")
    return AdapterConfigInfo(
        base_model_name_or_path=base or None,
        r=r,
        lora_alpha=alpha,
        target_modules=_target_modules(config_path, body.get("target_modules")),
        peft_type=peft_type,
        rank_pattern=tuple(sorted(rank_pattern.items())),
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _target_modules(config_path: Path, value: object) -> tuple[str, ...] | str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidAdapterError(
        f"{config_path}: target_modules must be a list of names or a regex, not {value!r}"
    )


def _unsupported_features(body: dict[str, Any]) -> list[str]:
    """What vLLM would refuse at load time, found at registration instead."""
    found: list[str] = []
    if body.get("use_dora"):
        found.append("DoRA (use_dora)")
    if body.get("bias", "none") != "none" or body.get("lora_bias"):
        found.append("trained biases (bias / lora_bias)")
    if body.get("modules_to_save"):
        found.append(f"fully trained modules (modules_to_save={body['modules_to_save']})")
    if body.get("layer_replication"):
        found.append("layer_replication")
    init = body.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _PLAIN_LORA_INITS:
        found.append(f"init_lora_weights={init!r}, which changes the base weights")
    return found


def store_adapter(src: Path, adapters_root: Path) -> StoredAdapter:
    """Copy `src` to `adapters_root/<sha256>/`, or reuse an intact copy already there.

    The copy is written to a temporary sibling and renamed in, so the folder under its
    hash name is either absent or complete. A copy there that no longer verifies is
    replaced, since `src` holds the bytes that name promises.
    """
    sha256 = adapter_sha256(src)
    target = adapters_root / sha256
    adapters_root.mkdir(parents=True, exist_ok=True)
    if is_intact(target, sha256):
        return StoredAdapter(path=target, sha256=sha256)
    staging = Path(tempfile.mkdtemp(prefix=f".{sha256}.tmp-", dir=adapters_root))
    try:
        copy_adapter_files(src, staging)
        if adapter_sha256(staging) != sha256:
            raise InvalidAdapterError(
                f"{src} changed while it was being copied; register it once it is fully written"
            )
        staging.chmod(0o755)  # mkdtemp makes it 0700; engines may run as another user
        move_into_place(staging, target, sha256)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StoredAdapter(path=target, sha256=sha256)


def verify_adapter(path: Path, expected_sha256: str) -> None:
    """Raise AdapterIntegrityError unless `path` still hashes to `expected_sha256`."""
    refusal = "it was changed on disk and will not be loaded"
    if not path.is_dir():
        raise AdapterIntegrityError(
            f"adapter folder {path} (sha256 {expected_sha256}) is missing; {refusal}"
        )
    try:
        actual = adapter_sha256(path)
    except (InvalidAdapterError, OSError) as e:
        message = e.message if isinstance(e, InvalidAdapterError) else str(e)
        raise AdapterIntegrityError(
            f"adapter at {path} (sha256 {expected_sha256}) cannot be hashed ({message}); {refusal}"
        ) from e
    if actual != expected_sha256:
        raise AdapterIntegrityError(
            f"adapter at {path} was registered with sha256 {expected_sha256} but its files now "
            f"hash to {actual}; {refusal}"
        )


def is_intact(target: Path, sha256: str) -> bool:
    """Whether `target` is a real folder whose files hash to `sha256`."""
    if target.is_symlink() or not target.exists():
        return False
    try:
        verify_adapter(target, sha256)
    except AdapterIntegrityError:
        return False
    return True


def copy_adapter_files(src: Path, dest: Path) -> None:
    """Copy the files the hash covers from `src` into `dest`, flushed, readable by all."""
    for name, path in adapter_files(src):
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        out.chmod(0o644)
        # Flushed before the rename, so a folder under its hash name is on disk in full.
        with out.open("rb") as f:
            os.fsync(f.fileno())
    for folder in sorted({p.parent for p in dest.rglob("*")}):
        folder.chmod(0o755)


def move_into_place(staging: Path, target: Path, sha256: str) -> None:
    """Rename the complete folder `staging` to `target`, replacing a broken copy there.

    Readers see no folder or a complete one under the hash name, never a half-written one.
    """
    if target.exists() or target.is_symlink():
        log.warning("adapter_store_replacing_broken_copy", path=str(target), sha256=sha256)
        old = target.with_name(f".{sha256}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        _remove(old)
    try:
        os.rename(staging, target)
    except OSError:
        # Another registration of the same files got there first; theirs is as good as ours.
        if not is_intact(target, sha256):
            raise
        shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(target.parent)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
