"""LoRA adapter folders for tests: tiny fake ones (no model needed) and real random ones.

torch, transformers and PEFT are imported inside the functions, so importing this module
stays cheap for unit tests that never build an adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TARGET_MODULES = ("q_proj", "v_proj")


def write_fake_adapter(
    folder: Path,
    *,
    base_model: str | None = SMOLLM2_HUB_ID,
    rank: int = 8,
    seed: int = 0,
    weights_name: str = "adapter_model.safetensors",
    **config: Any,
) -> Path:
    """A folder shaped like PEFT's `save_pretrained` output, with tiny random tensors.

    Keyword arguments beyond these override or add `adapter_config.json` fields.
    """
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        "base_model_name_or_path": base_model,
        "bias": "none",
        "init_lora_weights": False,
        "lora_alpha": 2 * rank,
        "peft_type": "LORA",
        "r": rank,
        "target_modules": list(TARGET_MODULES),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
    } | config
    (folder / "adapter_config.json").write_text(json.dumps(body, indent=2), encoding="utf-8")
    generator = torch.Generator().manual_seed(seed)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    tensors = {
        f"{prefix}.lora_A.weight": torch.randn(rank, 8, generator=generator),
        f"{prefix}.lora_B.weight": torch.randn(8, rank, generator=generator),
    }
    save_file(tensors, str(folder / weights_name))
    (folder / "README.md").write_text("# fake adapter\n", encoding="utf-8")
    return folder


def make_random_lora(
    base_dir: Path,
    out_dir: Path,
    *,
    rank: int = 8,
    seed: int = 0,
    scaling: int = 2,
    target_modules: tuple[str, ...] = TARGET_MODULES,
) -> Path:
    """A real PEFT LoRA adapter for the model in `base_dir`, with random non-zero weights.

    PEFT's default init makes B zero, so a fresh adapter would change nothing; with
    `init_lora_weights=False` both A and B keep torch's random init and the adapter visibly
    changes the model's outputs. The same `seed` gives byte-identical files, in any process
    (hence the same registry hash); the global RNG is left as it was. Well under a second
    once torch and transformers are imported. At the default `scaling` (alpha / r) of 2,
    greedy answers to easy questions often stay the same; 8 changes them for sure.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True)
    config = LoraConfig(
        r=rank,
        lora_alpha=scaling * rank,
        target_modules=list(target_modules),
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(str(out_dir))
    _sort_target_modules(out_dir / "adapter_config.json")
    return out_dir


def _sort_target_modules(config_path: Path) -> None:
    """Make `adapter_config.json` the same in every process.

    PEFT keeps target_modules as a set and writes it in iteration order, which string hash
    randomisation changes from process to process (peft 0.21). Rewritten the way PEFT
    writes the file (`json.dumps(indent=2, sort_keys=True)`).
    """
    body = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(body.get("target_modules"), list):
        body["target_modules"] = sorted(body["target_modules"])
    config_path.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
