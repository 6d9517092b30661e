"""The release-scoped answer cache: the same temperature-0 question, the same answer.

At temperature 0 an engine answers the same prompt with the same text, and what a prompt
becomes is fixed by the snapshot that serves it (adapter per domain, RAG version, router
rules). So an answer is cached under (snapshot id, domain, normalised question, every
parameter that reaches the engine), and served again without the engine. A swap or a
rollback changes the snapshot the request is served by, hence the key: the cache can never
serve an answer of another release; a canary's arms are served by different snapshots, so
they never share entries either. A rollback to a snapshot served before finds its answers
again, which is right: they are that snapshot's answers.

What is cached is the answer as the client got it, after the safety layer's output screen
(and with what the context screen found), so a hit has already been screened; the input
screen still runs on every request, before the lookup. Sampled requests (temperature > 0,
or unset on /v1, where the engine's default samples) are never cached; streams neither,
and previews: the cache serves users' answers only.

Near-duplicate matching (`answer_cache.similarity`, off by default) also serves the answer
of another question of the same snapshot, domain and parameters whose embedding is at least
that similar: cheaper, and a different prompt, so opt in knowingly.

In memory, per gateway process (LRU): several workers each warm their own.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from rag.query_embeddings import normalise_question
from twinloop.engines.client import Usage
from twinloop.inference.schemas import AnswerCacheStatus, Context
from twinloop.metrics import Metrics
from twinloop.safety.flags import Flag
from twinloop.settings import AnswerCacheSettings

# Parameters that reach the engine but do not change the answer's text.
UNKEYED = frozenset({"messages", "model", "user", "stream", "stream_options"})


@dataclass(frozen=True, slots=True)
class CacheKey:
    snapshot_id: str
    domain: str
    question: str
    """The normalised question (a chat: its normalised messages, as JSON)."""
    parameters: str
    """Every other input of the answer, canonical JSON: engine model name, length bound, the
    route's own switches (retrieval on /answer), the sampling parameters of a chat."""

    @property
    def bucket(self) -> tuple[str, str, str]:
        """What a near-duplicate must share: everything but the question."""
        return (self.snapshot_id, self.domain, self.parameters)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    text: str
    """The answer as shown (after the output screen)."""
    raw: str | None
    """The answer as generated, when the output screen changed it and it is kept."""
    flags: tuple[Flag, ...]
    """What the context and output screens found when it was generated."""
    contexts: tuple[Context, ...]
    finish_reason: str | None
    usage: Usage
    completion: Mapping[str, Any] | None = None
    """A chat's completion as relayed (the engine's fields, the shown answer)."""


def answer_key(
    *, snapshot_id: str, domain: str, question: str, model: str, max_tokens: int, use_rag: bool
) -> CacheKey:
    """The key of a /answer request (always temperature 0)."""
    parameters = _canonical({"model": model, "max_tokens": max_tokens, "use_rag": use_rag})
    return CacheKey(snapshot_id, domain, normalise_question(question), parameters)


def chat_key(
    *, snapshot_id: str, domain: str, body: Mapping[str, Any], messages: Sequence[Any]
) -> CacheKey:
    """The key of a /v1 chat request: its messages and every engine parameter that shapes the
    answer (`body` is what the engine gets)."""
    turns = [[m.role, normalise_question(m.text)] for m in messages]
    parameters = {k: v for k, v in body.items() if k not in UNKEYED}
    parameters["model"] = body["model"]
    return CacheKey(snapshot_id, domain, _canonical(turns), _canonical(parameters))


def _canonical(value: Any) -> str:
    """One spelling per value (keys sorted). orjson, ~10x the stdlib's speed on a request's
    parameters; the stdlib for what orjson refuses (an integer past 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AnswerCache:
    """Cached answers by `CacheKey`, LRU-bounded, counted in `twinloop_answer_cache_*`."""

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        similarity: float | None = None,
        near_candidates: int = 256,
        exclude_domains: Collection[str] = (),
        metrics: Metrics | None = None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self._max_entries = max_entries
        self._similarity = similarity
        self._near_candidates = near_candidates
        self._excluded = frozenset(exclude_domains)
        self._metrics = metrics
        self._entries: OrderedDict[CacheKey, CachedAnswer] = OrderedDict()
        # Near-duplicates: per bucket, the most recent questions' embeddings.
        self._near: dict[tuple[str, str, str], OrderedDict[str, NDArray[np.float32]]] = {}
        self._hits = self._misses = 0

    @classmethod
    def from_settings(cls, settings: AnswerCacheSettings, metrics: Metrics) -> AnswerCache:
        return cls(
            enabled=settings.enabled,
            max_entries=settings.max_entries,
            similarity=settings.similarity,
            near_candidates=settings.near_candidates,
            exclude_domains=settings.exclude_domains,
            metrics=metrics,
        )

    @property
    def near_duplicates(self) -> bool:
        """Whether lookups want the question's embedding."""
        return self.enabled and self._similarity is not None

    def __len__(self) -> int:
        return len(self._entries)

    def status(self) -> AnswerCacheStatus:
        return AnswerCacheStatus(
            enabled=self.enabled,
            entries=len(self._entries),
            max_entries=self._max_entries,
            similarity=self._similarity,
            hits=self._hits,
            misses=self._misses,
        )

    def applies(self, *, route: str, domain: str, temperature: float | None) -> bool:
        """Whether a request may be answered from (and stored into) the cache; a request it
        does not apply to is counted as a bypass."""
        ok = self.enabled and temperature == 0 and domain not in self._excluded
        if not ok:
            self._count(route, "bypass")
        return ok

    def bypass(self, route: str) -> None:
        """Count a request the cache never applies to (a stream, a preview)."""
        self._count(route, "bypass")

    def get(
        self, key: CacheKey, *, route: str, embedding: NDArray[np.float32] | None = None
    ) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self._count(route, "hit")
            self._hits += 1
            return entry
        if self._similarity is not None and embedding is not None:
            near = self._nearest(key, embedding)
            if near is not None:
                self._count(route, "near_hit")
                self._hits += 1
                return near
        self._count(route, "miss")
        self._misses += 1
        return None

    def put(
        self, key: CacheKey, answer: CachedAnswer, *, embedding: NDArray[np.float32] | None = None
    ) -> None:
        self._entries[key] = answer
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            evicted, _ = self._entries.popitem(last=False)
            self._forget_near(evicted)
        if self._similarity is not None and embedding is not None:
            bucket = self._near.setdefault(key.bucket, OrderedDict())
            bucket[key.question] = np.asarray(embedding, dtype=np.float32).reshape(-1)
            bucket.move_to_end(key.question)
            while len(bucket) > self._near_candidates:
                bucket.popitem(last=False)
        if self._metrics is not None:
            self._metrics.answer_cache_entries.set(len(self._entries))

    def _nearest(self, key: CacheKey, embedding: NDArray[np.float32]) -> CachedAnswer | None:
        assert self._similarity is not None
        bucket = self._near.get(key.bucket)
        if not bucket:
            return None
        questions = list(bucket)
        matrix = np.stack([bucket[q] for q in questions])
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        scores = matrix @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
        best = int(np.argmax(scores))
        if float(scores[best]) < self._similarity:
            return None
        found = CacheKey(key.snapshot_id, key.domain, questions[best], key.parameters)
        entry = self._entries.get(found)
        if entry is None:  # evicted meanwhile
            bucket.pop(questions[best], None)
            return None
        self._entries.move_to_end(found)
        return entry

    def _forget_near(self, key: CacheKey) -> None:
        bucket = self._near.get(key.bucket)
        if bucket is not None:
            bucket.pop(key.question, None)
            if not bucket:
                del self._near[key.bucket]

    def _count(self, route: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.answer_cache.labels(route, outcome).inc()
