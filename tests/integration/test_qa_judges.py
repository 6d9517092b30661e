"""The judges against real parts: thresholds calibrated with the real embedding model, and
the LLM judge speaking to a real OpenAI-compatible server (the vLLM engine)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.integration.conftest import TEST_BLUE_PORT
from twinloop.engines.client import EngineClient
from twinloop.engines.process import EngineProcesses
from twinloop.qa.judges import (
    JudgeThresholds,
    Label,
    LabelledSample,
    LlmJudge,
    ReferenceJudge,
    calibrate,
)
from twinloop.qa.suites import HELDOUT, QaCase
from twinloop.runtime import load_embedder
from twinloop.settings import Settings

pytestmark = pytest.mark.integration

LABELLED = Path(__file__).resolve().parents[1] / "data" / "judge_labelled.jsonl"


def _samples() -> list[LabelledSample]:
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]
    return [LabelledSample(r["reference"], r["answer"], r["correct"]) for r in rows]


def test_shipped_thresholds_are_the_calibrated_ones(engine_settings: Settings) -> None:
    embed = load_embedder(engine_settings).embed
    samples = _samples()

    calibrated, accuracy = calibrate(samples, embed)

    shipped = JudgeThresholds()
    assert (calibrated.f1, calibrated.similarity) == (shipped.f1, shipped.similarity)
    assert accuracy >= 0.8, f"the reference judge labels only {accuracy:.0%} of the sample"
    judge = ReferenceJudge(embed=embed)
    cases = [
        QaCase(
            key=f"s/{i}",
            category="sample",
            domain="general",
            question="",
            reference=s.reference,
            split=HELDOUT,
        )
        for i, s in enumerate(samples)
    ]
    verdicts = judge.judge_many(cases, [s.answer for s in samples], [[] for _ in samples])
    agreed = sum(v.correct == s.correct for v, s in zip(verdicts, samples, strict=True))
    assert agreed / len(samples) == pytest.approx(accuracy)


def test_llm_judge_labels_through_a_real_openai_compatible_server(
    real_engine: EngineProcesses, engine_settings: Settings
) -> None:
    case = QaCase(
        key="general/paris",
        category="general",
        domain="general",
        question="What is the capital of France?",
        reference="The capital of France is Paris.",
        split=HELDOUT,
    )
    reference = ReferenceJudge(embed=None).judge_many([case], ["Paris."], [[]])[0]

    async def judge() -> tuple[Label, str, str]:
        client = EngineClient(name="judge", base_url=f"http://127.0.0.1:{TEST_BLUE_PORT}")
        try:
            llm = LlmJudge(client=client, model=engine_settings.models.served_name)
            verdict = await llm.judge(case, "Paris.", [], reference)
            return verdict.label, verdict.judge, verdict.reason
        finally:
            await client.aclose()

    label, judge_name, reason = asyncio.run(judge())

    # The 135M model is no judge: it either answers in the asked format or the reference
    # verdict stands, saying why. Either way the label is one of the three.
    assert label in set(Label)
    assert judge_name == "llm" or "LLM judge reply not understood" in reason, reason
