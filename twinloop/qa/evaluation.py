"""Asking a slot the suite and judging its answers, the way `/answer` would answer them.

Each case is answered on the slot's engine directly (the domain's adapter, retrieval at the
snapshot's pinned RAG version) and, when retrieval found something, once more without it,
so the report can tell what retrieval contributes from what the weights know. Passages and
answers pass the safety layer's context and output screens (`twinloop.safety`) as on
/answer, so what is judged is what a user would be shown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from twinloop.engines.client import EngineClient
from twinloop.inference.adapter_retry import chat_with_adapter_retry
from twinloop.inference.retrieval import DocumentSearch, relevant_contexts, with_contexts
from twinloop.inference.safety import screened_contexts
from twinloop.qa.judges import LlmJudge, ReferenceJudge, Verdict
from twinloop.qa.suites import QaCase, Suite
from twinloop.releases.service import ReleaseController
from twinloop.releases.state import Target
from twinloop.safety.screens import SafetyConfig, screen_output
from twinloop.settings import QaSettings, Slot


@dataclass(frozen=True)
class Answered:
    answer: str
    contexts: list[str]
    answer_without: str | None  # asked again without retrieval; None when nothing was found
    latency_ms: float


@dataclass(frozen=True)
class Judged:
    answered: Answered
    verdict: Verdict
    without: Verdict  # the verdict without retrieval (the same one when nothing was found)


class SlotEvaluator:
    """Answers and verdicts for every case of a suite on one slot."""

    def __init__(
        self,
        *,
        engines: Mapping[str, EngineClient],
        releases: ReleaseController,
        knowledge: DocumentSearch | None,
        judge: ReferenceJudge,
        llm_judge: LlmJudge | None,
        settings: QaSettings,
        top_k: int,
        min_score: float,
        safety: SafetyConfig,
    ) -> None:
        self._engines = engines
        self._releases = releases
        self._knowledge = knowledge
        self._judge = judge
        self._llm_judge = llm_judge
        self._settings = settings
        self._top_k = top_k
        self._min_score = min_score
        self._safety = safety

    async def evaluate(self, slot: Slot, targets: dict[str, Target], suite: Suite) -> list[Judged]:
        unique = {(c.domain, c.question) for c in suite.cases}
        gate = asyncio.Semaphore(self._settings.concurrency)

        async def ask(domain: str, question: str) -> tuple[tuple[str, str], Answered]:
            async with gate:
                return (domain, question), await self._ask(slot, domain, targets[domain], question)

        answered = dict(await asyncio.gather(*(ask(d, q) for d, q in sorted(unique))))
        cases = list(suite.cases)
        got = [answered[(c.domain, c.question)] for c in cases]
        verdicts = await asyncio.to_thread(
            self._judge.judge_many, cases, [a.answer for a in got], [a.contexts for a in got]
        )
        retried = [i for i, a in enumerate(got) if a.answer_without is not None]
        without = await asyncio.to_thread(
            self._judge.judge_many,
            [cases[i] for i in retried],
            [got[i].answer_without or "" for i in retried],
            [[] for _ in retried],
        )
        if self._llm_judge is not None:
            verdicts = await self._llm_verdicts(
                cases, [a.answer for a in got], [a.contexts for a in got], verdicts, gate
            )
            without = await self._llm_verdicts(
                [cases[i] for i in retried],
                [got[i].answer_without or "" for i in retried],
                [[] for _ in retried],
                without,
                gate,
            )
        without_of = dict(zip(retried, without, strict=True))
        return [
            Judged(answered=a, verdict=v, without=without_of.get(i, v))
            for i, (a, v) in enumerate(zip(got, verdicts, strict=True))
        ]

    async def _llm_verdicts(
        self,
        cases: Sequence[QaCase],
        answers: Sequence[str],
        contexts: Sequence[Sequence[str]],
        verdicts: Sequence[Verdict],
        gate: asyncio.Semaphore,
    ) -> list[Verdict]:
        judge = self._llm_judge
        assert judge is not None

        async def one(i: int) -> Verdict:
            async with gate:
                return await judge.judge(cases[i], answers[i], contexts[i], verdicts[i])

        return list(await asyncio.gather(*(one(i) for i in range(len(cases)))))

    async def _ask(self, slot: Slot, domain: str, target: Target, question: str) -> Answered:
        started = time.perf_counter()
        found = await relevant_contexts(
            self._knowledge,
            domain=domain,
            question=question,
            version=target.rag_version,
            top_k=self._top_k,
            min_score=self._min_score,
        )
        contexts, _ = await asyncio.to_thread(screened_contexts, found, self._safety)
        answer = await self._complete(slot, target, with_contexts(question, contexts))
        latency_ms = (time.perf_counter() - started) * 1000
        without = await self._complete(slot, target, question) if contexts else None
        return Answered(answer, [c.text for c in contexts], without, latency_ms)

    async def _complete(self, slot: Slot, target: Target, content: str) -> str:
        body = {
            "model": target.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self._settings.max_tokens,
            "temperature": 0.0,
        }
        result = await chat_with_adapter_retry(
            self._engines[slot], body, slot=slot, adapter=target.adapter, releases=self._releases
        )
        shown = await asyncio.to_thread(screen_output, result.text, self._safety)
        return shown.text
