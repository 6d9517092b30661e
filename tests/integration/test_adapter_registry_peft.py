"""A real PEFT LoRA adapter for the prepared SmolLM2, registered and verified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.artifacts import FilesystemStore, sync_adapter
from adapters.files import adapter_sha256, read_adapter_config
from twinloop.registry import AdapterRegistry, base_model_aliases
from twinloop.settings import Settings
from twinloop.testing.adapters import make_random_lora
from twinloop.weights.prepare import prepare_base_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served() -> Settings:
    # Left relative: PEFT records the base model path as given, and such a path must match.
    return Settings(data_dir=Path(os.environ.get("TWINLOOP_TEST_DATA_DIR", "var/test")))


@pytest.fixture(scope="module")
def base_dir(served: Settings) -> Path:
    folder = served.prepared_base_model_dir
    prepare_base_model(folder)  # only verifies the manifest when `make test` already ran
    return folder


@pytest.fixture(scope="module")
def lora(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_lora(base_dir, tmp_path_factory.mktemp("lora") / "law-1", seed=0)


def test_random_lora_is_a_servable_non_zero_adapter(lora: Path, base_dir: Path) -> None:
    config = read_adapter_config(lora)

    assert (config.peft_type, config.r, config.lora_alpha) == ("LORA", 8, 16)
    assert config.target_modules == ("q_proj", "v_proj")
    assert config.base_model_name_or_path == str(base_dir)
    weights = load_file(str(lora / "adapter_model.safetensors"))
    b_weights = [t for name, t in weights.items() if ".lora_B." in name]
    assert len(b_weights) == 2 * 30, "q_proj and v_proj in each of SmolLM2's 30 layers"
    assert all(t.abs().sum() > 0 for t in b_weights), "B is non-zero, so outputs change"


def test_random_lora_is_deterministic_by_seed(lora: Path, base_dir: Path, tmp_path: Path) -> None:
    same = make_random_lora(base_dir, tmp_path / "same", seed=0)
    other = make_random_lora(base_dir, tmp_path / "other", seed=1)

    assert adapter_sha256(same) == adapter_sha256(lora)
    assert adapter_sha256(other) != adapter_sha256(lora)


async def test_register_a_real_adapter(
    lora: Path, base_dir: Path, served: Settings, settings: Settings, session: AsyncSession
) -> None:
    registry = AdapterRegistry(
        store=FilesystemStore(settings.data_dir / "adapters"),
        base_model_aliases=base_model_aliases(served),
        max_lora_rank=served.engines.max_lora_rank,
        domains=served.domains,
    )

    adapter = await registry.register(session, source=lora, domain="law", metrics={"seed": 0})

    sha = adapter_sha256(lora)
    assert (adapter.sha256, adapter.name) == (sha, f"law-{sha[:12]}")
    assert adapter.base_model == str(base_dir)
    stored = sync_adapter(registry.store, sha, settings.data_dir / "adapters")  # hashed in place
    assert stored.path == Path(adapter.path) == settings.data_dir / "adapters" / sha
    assert read_adapter_config(Path(adapter.path)) == read_adapter_config(lora)
    assert not (Path(adapter.path) / "README.md").exists(), "PEFT's model card is not stored"
