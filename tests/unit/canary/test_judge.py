"""The pairwise LLM judge over an OpenAI-compatible endpoint (a MockTransport here)."""

from __future__ import annotations

import json

import httpx
import pytest

from twinloop.canary.judge import LlmPairwiseJudge, parse_choice
from twinloop.canary.pairs import judge_both_orders
from twinloop.engines.judge import open_judge
from twinloop.errors import EngineResponseError
from twinloop.settings import QaSettings, Settings


@pytest.mark.parametrize(
    ("reply", "choice"),
    [
        ('{"better": "B"}', "b"),
        ('Sure: {"better": "tie"} because both are right', "tie"),
        ("A", "a"),
        ("b.", "b"),
        ("A or B", None),
        ('{"better": "C"}', None),
        ("", None),
    ],
)
def test_the_choice_is_read_from_json_or_a_lone_word(reply: str, choice: str | None) -> None:
    assert parse_choice(reply) == choice


async def test_the_judge_is_asked_through_the_configured_endpoint_in_both_orders() -> None:
    asked: list[dict[str, object]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        asked.append({"auth": request.headers.get("authorization"), **body})
        prompt = body["messages"][0]["content"]
        better = "A" if "Answer A: Canberra" in prompt else "B"
        message = {"role": "assistant", "content": json.dumps({"better": better})}
        return httpx.Response(200, json={"choices": [{"message": message}]})

    qa = QaSettings(llm_judge_url="http://judge:9000", llm_judge_model="big", llm_judge_api_key="k")
    settings = Settings(qa=qa)
    async with open_judge(settings, transport=httpx.MockTransport(reply)) as client:
        assert client is not None
        judge = LlmPairwiseJudge(client=client, model="big")
        judged = await judge_both_orders(judge, "Capital of Australia?", "Sydney", "Canberra")

    assert judged.outcome.value == "win"
    assert [a["model"] for a in asked] == ["big", "big"] and asked[0]["auth"] == "Bearer k"
    assert asked[0]["temperature"] == 0.0


async def test_an_unreadable_reply_raises_so_the_pair_stays_unjudged() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        message = {"role": "assistant", "content": "I cannot decide."}
        return httpx.Response(200, json={"choices": [{"message": message}]})

    settings = Settings(qa=QaSettings(llm_judge_url="http://judge:9000"))
    async with open_judge(settings, transport=httpx.MockTransport(reply)) as client:
        assert client is not None
        with pytest.raises(EngineResponseError, match="not understood"):
            await LlmPairwiseJudge(client=client, model="judge").compare("q", "x", "y")


async def test_without_a_judge_url_there_is_no_judge() -> None:
    async with open_judge(Settings()) as client:
        assert client is None
