"""The answer cache's rules: what its key holds, when it applies, LRU, near-duplicates."""

from __future__ import annotations

import numpy as np

from twinloop.engines.client import Usage
from twinloop.inference.answer_cache import (
    AnswerCache,
    CachedAnswer,
    CacheKey,
    _canonical,
    answer_key,
    chat_key,
)
from twinloop.inference.schemas import ChatCompletionRequest
from twinloop.metrics import Metrics

ANSWER = CachedAnswer("Paris.", None, (), (), "stop", Usage(3, 2))


def _key(
    *,
    snapshot_id: str = "s1",
    domain: str = "general",
    question: str = "Capital of France?",
    model: str = "m",
    max_tokens: int = 64,
    use_rag: bool = True,
) -> CacheKey:
    return answer_key(
        snapshot_id=snapshot_id,
        domain=domain,
        question=question,
        model=model,
        max_tokens=max_tokens,
        use_rag=use_rag,
    )


def test_the_key_is_the_snapshot_domain_normalised_question_and_parameters() -> None:
    assert _key() == _key(question="  Capital  of\nFrance? ")
    others = [
        _key(snapshot_id="s2"),  # another release: a swap or a rollback
        _key(domain="law"),
        _key(question="capital of france?"),
        _key(model="law-adapter"),
        _key(max_tokens=65),
        _key(use_rag=False),
    ]
    assert all(other != _key() for other in others)
    assert len(set(others)) == len(others)


def test_a_chat_key_holds_every_turn_and_sampling_parameter_but_not_the_user() -> None:
    def key(**body: object) -> CacheKey:
        request = ChatCompletionRequest.model_validate(
            {"model": "auto", "messages": [{"role": "user", "content": "Hi"}], **body}
        )
        engine = request.engine_body("m", default_max_tokens=64)
        return chat_key(snapshot_id="s1", domain="general", body=engine, messages=request.messages)

    assert key(temperature=0) == key(temperature=0, user="someone else")
    assert key(temperature=0) != key(temperature=0, seed=1)
    assert key(temperature=0) != key(temperature=0, stop=["."])
    assert key(temperature=0) != key(temperature=0, max_tokens=5)
    two_turns = ChatCompletionRequest.model_validate(
        {
            "model": "auto",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Hi"},
            ],
            "temperature": 0,
        }
    )
    engine = two_turns.engine_body("m", default_max_tokens=64)
    longer = chat_key(snapshot_id="s1", domain="general", body=engine, messages=two_turns.messages)
    assert longer != key(temperature=0)


def test_parameters_are_spelled_one_way_even_past_what_orjson_writes() -> None:
    assert _canonical({"b": 1, "a": [0.5, "é"]}) == '{"a":[0.5,"é"],"b":1}'
    assert _canonical({"seed": 2**70}) == '{"seed":1180591620717411303424}'


def test_it_applies_at_temperature_zero_only_and_not_to_excluded_domains() -> None:
    metrics = Metrics()
    cache = AnswerCache(exclude_domains=["med"], metrics=metrics)
    assert cache.applies(route="chat", domain="general", temperature=0.0)
    assert not cache.applies(route="chat", domain="general", temperature=0.2)
    assert not cache.applies(route="chat", domain="general", temperature=None)
    assert not cache.applies(route="answer", domain="med", temperature=0.0)
    assert not AnswerCache(enabled=False).applies(route="answer", domain="law", temperature=0.0)
    bypass = metrics.registry.get_sample_value(
        "twinloop_answer_cache_lookups_total", {"route": "chat", "outcome": "bypass"}
    )
    assert bypass == 2


def test_a_snapshot_never_reads_another_snapshots_answer() -> None:
    cache = AnswerCache()
    cache.put(_key(snapshot_id="s1"), ANSWER)
    assert cache.get(_key(snapshot_id="s1"), route="answer") == ANSWER
    assert cache.get(_key(snapshot_id="s2"), route="answer") is None


def test_the_least_recently_used_answer_goes_first() -> None:
    cache = AnswerCache(max_entries=2)
    a, b, c = (_key(question=q) for q in "abc")
    cache.put(a, ANSWER)
    cache.put(b, ANSWER)
    assert cache.get(a, route="answer") is not None
    cache.put(c, ANSWER)
    assert cache.get(b, route="answer") is None
    assert cache.get(a, route="answer") is not None
    assert len(cache) == 2


def test_near_duplicates_match_above_the_threshold_only_when_enabled() -> None:
    near = np.array([1.0, 0.05, 0.0], dtype=np.float32)
    far = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    stored = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    for similarity, expected in ((0.95, ANSWER), (None, None)):
        cache = AnswerCache(similarity=similarity)
        cache.put(_key(question="What is the capital of France?"), ANSWER, embedding=stored)
        got = cache.get(_key(question="Capital of France?"), route="answer", embedding=near)
        assert got == expected
        assert cache.get(_key(question="Who?"), route="answer", embedding=far) is None
    # Never across snapshots, even when near.
    cache = AnswerCache(similarity=0.5)
    cache.put(_key(question="What is the capital of France?"), ANSWER, embedding=stored)
    other = _key(snapshot_id="s2", question="Capital of France?")
    assert cache.get(other, route="answer", embedding=near) is None
