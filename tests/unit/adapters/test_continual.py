"""Growing from an earlier adapter, without a model: what fits, what is verified, the guard's
merged reference. The real LoRA start is tests/integration/test_continual_training.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.continual import GrowFrom, incompatibility, load_grown_from, mix_log_probs
from adapters.files import adapter_sha256
from adapters.training import AdapterTrainingConfig
from twinloop.errors import AdapterIntegrityError
from twinloop.testing.adapters import TARGET_MODULES, write_fake_adapter

FITS = AdapterTrainingConfig(rank=8, alpha=16, target_modules=TARGET_MODULES)


def test_an_adapter_of_the_trained_shape_fits_and_another_shape_does_not(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "a", rank=8)

    assert incompatibility(folder, FITS) is None
    other_rank = incompatibility(folder, AdapterTrainingConfig())  # r=16, every linear layer
    assert other_rank is not None and "r=8" in other_rank and "r=16" in other_rank
    other_alpha = AdapterTrainingConfig(rank=8, alpha=8, target_modules=TARGET_MODULES)
    assert incompatibility(folder, other_alpha) is not None


def test_only_safetensors_weights_are_grown_from(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "a", weights_name="adapter_model.bin")
    reason = incompatibility(folder, FITS)
    assert reason is not None and "safetensors" in reason
    assert "adapter_config.json is missing" in (incompatibility(tmp_path, FITS) or "")


def test_weights_that_no_longer_hash_to_the_registered_sha256_are_refused(tmp_path: Path) -> None:
    folder = write_fake_adapter(tmp_path / "a", rank=8)
    registered = adapter_sha256(folder)
    (folder / "adapter_config.json").write_text(
        (folder / "adapter_config.json").read_text().replace('"r": 8', '"r": 8 ')
    )

    # Refused before the model is touched (None would fail on any use).
    with pytest.raises(AdapterIntegrityError, match=registered):
        load_grown_from(None, GrowFrom(folder, registered), FITS)


def test_a_negative_guard_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="kl_weight"):
        GrowFrom(Path("x"), "0" * 64, kl_weight=-1)


@pytest.mark.parametrize(("a", "b"), [(10.0, 10.0), (10.0, 1.0), (0.0, 3.0)])
def test_one_merged_reference_has_the_gradients_of_both_weighted_kl_terms(
    a: float, b: float
) -> None:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    base = F.log_softmax(torch.randn(5, 11, generator=gen), -1)
    previous = F.log_softmax(torch.randn(5, 11, generator=gen), -1)
    logits = torch.randn(5, 11, generator=gen, requires_grad=True)

    def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean()

    log_p = F.log_softmax(logits, -1)
    both = a * kl(log_p, base) + b * kl(log_p, previous)
    (two_terms,) = torch.autograd.grad(both, logits, retain_graph=True)
    merged = mix_log_probs(base, previous, a, b)
    (one_term,) = torch.autograd.grad((a + b) * kl(log_p, merged), logits)

    assert torch.allclose(merged.exp().sum(-1), torch.ones(5))
    assert torch.allclose(two_terms, one_term, atol=1e-6)
    with pytest.raises(ValueError):
        mix_log_probs(base, previous, 0.0, 0.0)
