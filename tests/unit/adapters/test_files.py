"""Adapter folders on disk: the content hash, config checks, the store and its integrity check."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from adapters.files import (
    AdapterIntegrityError,
    InvalidAdapterError,
    StoredAdapter,
    adapter_sha256,
    read_adapter_config,
    store_adapter,
    verify_adapter,
)
from twinloop.testing.adapters import SMOLLM2_HUB_ID, write_fake_adapter

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return write_fake_adapter(tmp_path / "adapter")


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


# --- the hash -------------------------------------------------------------------------


def test_hash_is_stable_and_independent_of_location(adapter: Path, tmp_path: Path) -> None:
    first = adapter_sha256(adapter)
    copy = shutil.copytree(adapter, tmp_path / "elsewhere" / "copy")

    assert adapter_sha256(adapter) == first
    assert adapter_sha256(copy) == first
    assert len(first) == 64


def test_hash_is_sha256sum_of_the_sorted_file_listing(adapter: Path) -> None:
    listing = "".join(
        f"{hashlib.sha256((adapter / name).read_bytes()).hexdigest()}  {name}\n"
        for name in sorted(["adapter_config.json", WEIGHTS])
    )
    assert adapter_sha256(adapter) == hashlib.sha256(listing.encode()).hexdigest()


def test_one_changed_byte_changes_the_hash(adapter: Path) -> None:
    before = adapter_sha256(adapter)
    _flip_last_byte(adapter / WEIGHTS)
    assert adapter_sha256(adapter) != before


def test_renamed_file_changes_the_hash(adapter: Path) -> None:
    before = adapter_sha256(adapter)
    (adapter / WEIGHTS).rename(adapter / "adapter_model2.safetensors")
    assert adapter_sha256(adapter) != before


def test_added_file_in_a_subfolder_changes_the_hash(adapter: Path) -> None:
    before = adapter_sha256(adapter)
    (adapter / "extra").mkdir()
    (adapter / "extra" / "notes.txt").write_text("x")
    assert adapter_sha256(adapter) != before


def test_top_level_readme_is_not_hashed(adapter: Path) -> None:
    before = adapter_sha256(adapter)
    (adapter / "README.md").write_text("a model card PEFT rewrote\n")
    assert adapter_sha256(adapter) == before
    (adapter / "README.md").unlink()
    assert adapter_sha256(adapter) == before


def test_symlinks_inside_are_refused(adapter: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.bin").write_bytes(b"x")
    (adapter / "linked.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(InvalidAdapterError, match=r"symlink \(linked\.bin\)"):
        adapter_sha256(adapter)


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidAdapterError, match="does not exist"):
        adapter_sha256(tmp_path / "nope")


# --- the config -----------------------------------------------------------------------


def test_reads_the_peft_config(adapter: Path) -> None:
    config = read_adapter_config(adapter)

    assert config.base_model_name_or_path == SMOLLM2_HUB_ID
    assert (config.r, config.lora_alpha, config.peft_type) == (8, 16, "LORA")
    assert config.target_modules == ("q_proj", "v_proj")
    assert config.max_rank == 8


def test_rank_pattern_counts_toward_the_max_rank(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "a", rank_pattern={"v_proj": 32})
    assert read_adapter_config(folder).max_rank == 32


def test_bin_weights_are_accepted(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "a", weights_name="adapter_model.bin")
    assert read_adapter_config(folder).r == 8


def test_empty_base_model_reads_as_none(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "a", base_model="")
    assert read_adapter_config(folder).base_model_name_or_path is None


def test_missing_config_is_refused(adapter: Path) -> None:
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(InvalidAdapterError, match=r"adapter_config\.json is missing") as e:
        read_adapter_config(adapter)
    assert e.value.status_code == 422


def test_missing_weights_are_refused(adapter: Path) -> None:
    (adapter / WEIGHTS).unlink()
    with pytest.raises(InvalidAdapterError, match="no adapter weights"):
        read_adapter_config(adapter)


def test_bad_json_is_refused(adapter: Path) -> None:
    (adapter / "adapter_config.json").write_text("{not json")
    with pytest.raises(InvalidAdapterError, match="not readable JSON"):
        read_adapter_config(adapter)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"peft_type": "IA3"}, "peft_type is 'IA3'; only LoRA"),
        ({"r": 0}, "r must be a positive integer"),
        ({"r": "8"}, "r must be a positive integer"),
        ({"lora_alpha": None}, "lora_alpha must be a positive number"),
        ({"target_modules": [1, 2]}, "target_modules must be"),
        ({"use_dora": True}, "cannot serve: DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"init_lora_weights": "pissa"}, "changes the base weights"),
    ],
)
def test_unservable_configs_are_refused(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    folder = write_fake_adapter(tmp_path / "a")
    body = json.loads((folder / "adapter_config.json").read_text()) | overrides
    (folder / "adapter_config.json").write_text(json.dumps(body))
    with pytest.raises(InvalidAdapterError, match=message):
        read_adapter_config(folder)


# --- the store ------------------------------------------------------------------------


def test_store_copies_under_the_hash(adapter: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    sha = adapter_sha256(adapter)

    stored = store_adapter(adapter, root)

    assert stored == StoredAdapter(path=root / sha, sha256=sha)
    assert sorted(p.name for p in stored.path.iterdir()) == ["adapter_config.json", WEIGHTS]
    assert (stored.path / WEIGHTS).read_bytes() == (adapter / WEIGHTS).read_bytes()
    assert adapter_sha256(stored.path) == sha
    assert [p.name for p in root.iterdir()] == [sha], "no staging folder is left behind"
    assert (stored.path / WEIGHTS).stat().st_mode & 0o777 == 0o644


def test_store_twice_reuses_the_copy(adapter: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    first = store_adapter(adapter, root)
    mtime = (first.path / WEIGHTS).stat().st_mtime_ns

    again = store_adapter(adapter, root)

    assert again == first
    assert (again.path / WEIGHTS).stat().st_mtime_ns == mtime


def test_store_replaces_a_broken_copy(adapter: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    stored = store_adapter(adapter, root)
    _flip_last_byte(stored.path / WEIGHTS)

    again = store_adapter(adapter, root)

    verify_adapter(again.path, again.sha256)
    assert [p.name for p in root.iterdir()] == [again.sha256]


def test_crash_while_copying_leaves_nothing(
    adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    real_copy = shutil.copyfile
    copied: list[str] = []

    def copy_then_fail(src: Path, dst: Path) -> object:
        if copied:
            raise OSError("disk full")
        copied.append(str(src))
        return real_copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)

    with pytest.raises(OSError, match="disk full"):
        store_adapter(adapter, root)

    assert list(root.iterdir()) == []


def test_source_changing_during_the_copy_is_refused(
    adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_copy = shutil.copyfile

    def copy_a_newer_file(src: Path, dst: Path) -> object:
        result = real_copy(src, dst)
        if Path(dst).name == WEIGHTS:
            _flip_last_byte(Path(dst))  # as if the trainer was still writing
        return result

    monkeypatch.setattr(shutil, "copyfile", copy_a_newer_file)

    with pytest.raises(InvalidAdapterError, match="changed while it was being copied"):
        store_adapter(adapter, tmp_path / "store")
    assert list((tmp_path / "store").iterdir()) == []


# --- verification ---------------------------------------------------------------------


def test_verify_accepts_an_intact_copy(adapter: Path, tmp_path: Path) -> None:
    stored = store_adapter(adapter, tmp_path / "store")
    verify_adapter(stored.path, stored.sha256)


def test_verify_detects_a_changed_byte(adapter: Path, tmp_path: Path) -> None:
    stored = store_adapter(adapter, tmp_path / "store")
    _flip_last_byte(stored.path / WEIGHTS)
    actual = adapter_sha256(stored.path)

    with pytest.raises(AdapterIntegrityError) as e:
        verify_adapter(stored.path, stored.sha256)

    assert e.value.status_code == 409
    assert str(stored.path) in e.value.message
    assert stored.sha256 in e.value.message and actual in e.value.message
    assert "changed on disk and will not be loaded" in e.value.message


def test_verify_detects_an_added_file(adapter: Path, tmp_path: Path) -> None:
    stored = store_adapter(adapter, tmp_path / "store")
    (stored.path / "added_tokens.json").write_text("{}")
    with pytest.raises(AdapterIntegrityError):
        verify_adapter(stored.path, stored.sha256)


def test_verify_detects_a_swapped_in_symlink(adapter: Path, tmp_path: Path) -> None:
    stored = store_adapter(adapter, tmp_path / "store")
    (stored.path / WEIGHTS).unlink()
    (stored.path / WEIGHTS).symlink_to(adapter / WEIGHTS)
    with pytest.raises(AdapterIntegrityError, match="symlink"):
        verify_adapter(stored.path, stored.sha256)


def test_verify_detects_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(AdapterIntegrityError, match="is missing; it was changed on disk"):
        verify_adapter(tmp_path / "gone", "0" * 64)
