"""A model to evaluate with: a folder loaded offline in float32, or one already loaded, with
an adapter applied on request. Generating answers (`training.generate_answers`) and scoring
preference pairs (`preference.score_pairs`) both start here, so both see the same model."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def model_and_tokenizer(
    model_dir_or_model: Path | str | Any, adapter_dir: Path | None = None
) -> tuple[Any, Any]:
    """The model (with the LoRA in `adapter_dir` applied if given) and its tokenizer, read
    from the folder or from a loaded model's `name_or_path`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any
    if isinstance(model_dir_or_model, Path | str):
        source = str(model_dir_or_model)
        model = AutoModelForCausalLM.from_pretrained(
            source, local_files_only=True, dtype=torch.float32
        )
    else:
        model = model_dir_or_model
        source = str(model.config.name_or_path)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    return model, AutoTokenizer.from_pretrained(source, local_files_only=True)
