"""The pairwise LLM judge of mirrored pairs: which of two answers to a question is better.

The same endpoint as QA's judge (`qa.llm_judge_url`); asked once per order by
`pairs.judge_both_orders`. A judge that fails or answers something unreadable raises, so
that the pair stays unjudged (and falls back to the cheap signals) rather than a tie.
"""

from __future__ import annotations

from twinloop.canary.pairs import JudgeChoice
from twinloop.engines.client import EngineClient
from twinloop.engines.judge import read_choice
from twinloop.errors import EngineResponseError

_PROMPT = """You compare two answers to the same question.
Question: {question}
Answer A: {answer_a}
Answer B: {answer_b}

Which answer is more correct and more helpful? Judge content, not length or style.
Reply with JSON only: {{"better": "A" | "B" | "tie"}}."""

_CHOICES: dict[str, JudgeChoice] = {"a": "a", "b": "b", "tie": "tie"}


class LlmPairwiseJudge:
    """An LLM behind any OpenAI-compatible endpoint picks the better of two answers."""

    def __init__(self, *, client: EngineClient, model: str, max_tokens: int = 16) -> None:
        self._client = client
        self._model = model
        self._max_tokens = max_tokens

    async def compare(self, question: str, answer_a: str, answer_b: str) -> JudgeChoice:
        prompt = _PROMPT.format(question=question, answer_a=answer_a, answer_b=answer_b)
        body = {
            "model": self._model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self._max_tokens,
            "temperature": 0.0,
        }
        result = await self._client.chat(body)
        choice = parse_choice(result.text) if result.has_message else None
        if choice is None:
            raise EngineResponseError(f"pairwise judge reply not understood: {result.text[:80]!r}")
        return choice


def parse_choice(content: str) -> JudgeChoice | None:
    """The choice in a reply: JSON `{"better": ...}` or, failing that, a lone A, B or tie."""
    choice = read_choice(content, key="better", choices=_CHOICES)
    return _CHOICES[choice] if choice is not None else None
