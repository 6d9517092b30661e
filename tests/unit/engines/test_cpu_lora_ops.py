"""twinloop's CPU LoRA ops give what vLLM's reference ops give, op by op, on the same tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from twinloop.engines import cpu_lora_ops

pytestmark = [
    # Importing vllm runs torch's and vLLM's import-time code, which warns of deprecations.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

SLOTS, RANK, HIDDEN, OUT = 4, 8, 32, 48


@pytest.fixture(scope="module")
def vllm_ops() -> Any:
    from vllm.lora.ops.torch_ops import lora_ops

    return lora_ops


def _weights(out: int, inner: int, *, stacked: bool = True) -> torch.Tensor:
    generator = torch.Generator().manual_seed(out * 1000 + inner)
    w = torch.randn(SLOTS, 1, out, inner, generator=generator)
    return w if stacked else w.squeeze(1)


def _both(
    call: Callable[[Any, torch.Tensor], None], vllm_ops: Any, output: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    ours, theirs = output.clone(), output.clone()
    call(cpu_lora_ops, ours)
    call(vllm_ops, theirs)
    return ours, theirs


INDICES = {
    "one adapter": [2] * 7,
    "three adapters": [0, 2, 2, 1, 0, 2, 1],
}


@pytest.mark.parametrize("indices", INDICES.values(), ids=INDICES.keys())
@pytest.mark.parametrize("stacked", [True, False])
def test_shrink_matches_vllm(vllm_ops: Any, indices: list[int], stacked: bool) -> None:
    x = torch.randn(len(indices), HIDDEN)
    w = _weights(RANK, HIDDEN, stacked=stacked)
    idx = torch.tensor(indices)
    ours, theirs = _both(
        lambda ops, y: ops.bgmv_shrink(x, w, y, idx, 0.5), vllm_ops, torch.zeros(len(idx), RANK)
    )
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("indices", INDICES.values(), ids=INDICES.keys())
@pytest.mark.parametrize("add", [True, False])
def test_expand_and_expand_slice_match_vllm(vllm_ops: Any, indices: list[int], add: bool) -> None:
    x = torch.randn(len(indices), RANK)
    w = _weights(OUT, RANK)
    idx = torch.tensor(indices)
    start = torch.randn(len(idx), OUT + 16)
    ours, theirs = _both(lambda ops, y: ops.bgmv_expand(x, w, y, idx, add), vllm_ops, start)
    torch.testing.assert_close(ours, theirs)
    ours, theirs = _both(
        lambda ops, y: ops.bgmv_expand_slice(x, w, y, idx, 8, OUT, add), vllm_ops, start
    )
    torch.testing.assert_close(ours, theirs)


def test_prefill_ops_spread_each_sequences_adapter_over_its_tokens(vllm_ops: Any) -> None:
    seq_lens = torch.tensor([3, 1, 4])
    adapters = torch.tensor([1, 0, 1])
    tokens = int(seq_lens.sum())
    meta = (torch.tensor([0, 3, 4]), seq_lens, adapters, 3, 4, tokens)
    x = torch.randn(tokens, HIDDEN)
    a, b = _weights(RANK, HIDDEN), _weights(OUT, RANK)
    shrunk = _both(
        lambda ops, y: ops.sgmv_shrink(x, a, y, *meta, 2.0), vllm_ops, torch.zeros(tokens, RANK)
    )
    torch.testing.assert_close(*shrunk)
    h = shrunk[0]
    start = torch.randn(tokens, 2 * OUT)
    torch.testing.assert_close(
        *_both(lambda ops, y: ops.sgmv_expand(h, b, y, *meta, True), vllm_ops, start)
    )
    torch.testing.assert_close(
        *_both(
            lambda ops, y: ops.sgmv_expand_slice(h, b, y, *meta, OUT, OUT, True), vllm_ops, start
        )
    )


def test_tokens_without_an_adapter_get_no_lora_contribution() -> None:
    """Index -1 (a base-model request in the batch) adds nothing, whatever the slots hold."""
    idx = torch.tensor([-1, 1, -1, 1])
    x = torch.randn(4, HIDDEN)
    a = _weights(RANK, HIDDEN)
    shrunk = torch.full((4, RANK), 7.0)
    cpu_lora_ops.bgmv_shrink(x, a, shrunk, idx, 1.0)
    assert torch.equal(shrunk[0], torch.zeros(RANK)) and torch.equal(shrunk[2], torch.zeros(RANK))
    torch.testing.assert_close(shrunk[1], x[1] @ a[1, 0].t())
    base = torch.randn(4, OUT)
    out = base.clone()
    cpu_lora_ops.bgmv_expand(torch.randn(4, RANK), _weights(OUT, RANK), out, idx, True)
    assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])
    assert not torch.equal(out[1], base[1])
    only_base = base.clone()
    cpu_lora_ops.bgmv_expand(torch.randn(4, RANK), _weights(OUT, RANK), only_base, -idx.abs(), True)
    assert torch.equal(only_base, base)


def test_register_replaces_the_cpu_wrappers_ops_unless_told_to_keep_vllms(
    monkeypatch: pytest.MonkeyPatch, vllm_ops: Any
) -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    for name in cpu_lora_ops.OPS:
        monkeypatch.setattr(punica_cpu, name, getattr(vllm_ops, name))
    monkeypatch.setenv(cpu_lora_ops.ENV, "vllm")
    cpu_lora_ops.register()
    assert all(getattr(punica_cpu, name) is getattr(vllm_ops, name) for name in cpu_lora_ops.OPS)
    monkeypatch.setenv(cpu_lora_ops.ENV, "fast")
    with pytest.raises(ValueError, match="grouped, vllm"):
        cpu_lora_ops.register()
    monkeypatch.delenv(cpu_lora_ops.ENV)
    cpu_lora_ops.register()
    assert all(getattr(punica_cpu, name) is op for name, op in cpu_lora_ops.OPS.items())
