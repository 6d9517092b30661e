"""Answering questions: pick the target, ask its engine, record the answer and the metrics.

While a canary runs with mirroring, a share of Active's non-streamed answers is also asked
of the canary in the background once the user's answer is stored (`_ask_canary`): the same
question, routed to the same domain, with the canary's own retrieval; the pair goes to the
canary service. Streamed completions are not mirrored: their answer is stored only once
the stream ends, and a mirror must not hold the relay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
import structlog
from numpy.typing import NDArray

from rag.query_embeddings import QueryEmbeddings
from twinloop.canary.assignment import Arm
from twinloop.canary.pairs import Reply
from twinloop.canary.service import CanaryService
from twinloop.canary.state import ArmChoice
from twinloop.db.base import new_id, utcnow
from twinloop.db.session import SessionMaker
from twinloop.engines.client import ChatResult, EngineClient, Usage
from twinloop.errors import (
    EngineTimeoutError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
    TwinloopError,
)
from twinloop.identity.schemas import Caller
from twinloop.inference import repository
from twinloop.inference.adapter_retry import chat_with_adapter_retry
from twinloop.inference.answer_cache import (
    AnswerCache,
    CachedAnswer,
    CacheKey,
    answer_key,
    chat_key,
)
from twinloop.inference.limits import RequestLimits
from twinloop.inference.mirror import MirrorTasks
from twinloop.inference.overhead import (
    RequestClock,
    current_clock,
    measure,
    waiting_for_engine,
)
from twinloop.inference.records import AnswerRecord
from twinloop.inference.retrieval import DocumentSearch, relevant_contexts, with_contexts
from twinloop.inference.safety import AnswerSafety, ScreenedAnswer, flag_views
from twinloop.inference.schemas import (
    AnswerCacheStatus,
    AnswerRequest,
    AnswerResponse,
    ChatCompletionRequest,
    Context,
    ModelCard,
    SafetyStatus,
)
from twinloop.inference.writer import AnswerWriter
from twinloop.metrics import Metrics
from twinloop.releases.service import ReleaseController
from twinloop.releases.state import Target
from twinloop.routing.router import RouteResult
from twinloop.safety.flags import Flag
from twinloop.safety.screens import SafetyConfig
from twinloop.settings import Slot
from twinloop.states import ABANDONED_FINISH_REASON

AUTO_MODEL = "auto"
log = structlog.get_logger(__name__)


class QuestionRouter(Protocol):
    """Picks a domain for a question (twinloop.routing.DomainRouter, or a fake in tests)."""

    def route(self, question: str) -> RouteResult: ...

    def route_embedding(self, embedding: NDArray[np.float32]) -> RouteResult: ...


class RouterSource(Protocol):
    """The router for a snapshot's rules version (twinloop.routing.service.RoutingService)."""

    async def router_for(self, version: int | None) -> QuestionRouter: ...


class PreviewForbiddenError(TwinloopError):
    status_code = 403


@dataclass(frozen=True)
class Routed:
    domain: str
    score: float | None
    target: Target
    # The canary arm that serves the request; None while no canary splits traffic.
    choice: ArmChoice | None = None
    # The base model was asked for by name: no adapter, on whichever slot serves.
    base_model: bool = False
    # The question's embedding when routing computed it: retrieval reuses it.
    embedding: NDArray[np.float32] | None = None

    @property
    def role(self) -> Arm:
        return self.choice.arm if self.choice is not None else Arm.ACTIVE


class AnswerService:
    def __init__(
        self,
        *,
        engines: Mapping[str, EngineClient],
        releases: ReleaseController,
        sessionmaker: SessionMaker,
        metrics: Metrics,
        domains: list[str],
        default_domain: str,
        base_model_name: str,
        default_max_tokens: int,
        routing: RouterSource,
        canary: CanaryService | None = None,
        knowledge: DocumentSearch | None = None,
        top_k: int = 3,
        min_score: float = 0.0,
        mirror_limit: int = 2,
        writer: AnswerWriter,
        limits: RequestLimits | None = None,
        safety: SafetyConfig | None = None,
        embeddings: QueryEmbeddings | None = None,
        answer_cache: AnswerCache | None = None,
    ) -> None:
        self._engines = engines
        self._releases = releases
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._domains = domains
        self._default_domain = default_domain
        self._base_model_name = base_model_name
        self._default_max_tokens = default_max_tokens
        self._routing = routing
        self._canary = canary
        self._knowledge = knowledge
        self._top_k = top_k
        self._min_score = min_score
        self._mirrors = MirrorTasks(limit=mirror_limit, metrics=metrics)
        self._limits = limits or RequestLimits()
        self._stores: set[asyncio.Task[None]] = set()
        self._writer = writer
        self._safety = AnswerSafety(config=safety or SafetyConfig(), metrics=metrics)
        # None: the router embeds (tests' keyword router) and retrieval embeds in the store.
        self._embeddings = embeddings
        self._cache = answer_cache if answer_cache is not None else AnswerCache(enabled=False)

    async def aclose(self) -> None:
        """Cancel the mirrors still running and finish storing answers (the gateway stops)."""
        await self._mirrors.aclose()
        await self.wait_for_stores()
        await self._writer.aclose()

    async def wait_for_mirrors(self) -> None:
        await self._mirrors.wait()

    # -- /answer ------------------------------------------------------------------

    async def answer(
        self, request: AnswerRequest, *, caller: Caller | None = None
    ) -> AnswerResponse:
        """Answer on the active slot, or preview the shadow slot when an admin asks.

        `caller` (None: anonymous) is recorded with the answer, and its key scopes the user id.
        """
        self._limits.check_answer(request)
        preview = request.target == "shadow"
        if preview and (caller is None or not caller.is_admin):
            raise PreviewForbiddenError("previewing the shadow slot needs the admin role")
        route = "answer_preview" if preview else "answer"
        clock = measure(route)
        input_flags = await self._safety.check_question(request.question, route=route)
        user_id = _scoped_user(caller, request.user_id)
        if preview:
            routed = await self._route(
                request.domain, request.question, slot=self._releases.state.shadow_slot
            )
        else:
            choice = self._arm(user_id=user_id, session_id=request.session_id)
            routed = await self._route(request.domain, request.question, choice=choice)
        max_tokens = request.max_tokens or self._default_max_tokens
        key: CacheKey | None = None
        if preview:
            self._cache.bypass(route)
        elif self._cache.applies(route=route, domain=routed.domain, temperature=0.0):
            key = answer_key(
                snapshot_id=routed.target.snapshot_id,
                domain=routed.domain,
                question=request.question,
                model=routed.target.model,
                max_tokens=max_tokens,
                use_rag=request.use_rag,
            )
            embedding = await self._near_embedding(routed, request.question)
            hit = self._cache.get(key, route=route, embedding=embedding)
            if hit is not None:
                return await self._answer_from_cache(
                    request, routed, hit, input_flags, clock, max_tokens, user_id, caller
                )
        contexts, context_flags = (
            await self._retrieve(routed, request.question, route=route)
            if request.use_rag
            else ([], [])
        )
        body = {
            "model": routed.target.model,
            "messages": [{"role": "user", "content": with_contexts(request.question, contexts)}],
            "max_tokens": max_tokens,
            # Answers are stored and judged: the same question should get the same answer.
            "temperature": 0.0,
        }
        started = time.perf_counter()
        result = await self._generate(route, routed, body, clock=clock)
        output = await self._safety.screen_answer(result.text, route=route)
        latency_ms = (time.perf_counter() - started) * 1000
        flags = [*input_flags, *context_flags, *output.flags]
        if key is not None:
            cached = CachedAnswer(
                output.text, output.raw, (*context_flags, *output.flags), tuple(contexts),
                result.finish_reason, result.usage,
            )  # fmt: skip
            self._cache.put(
                key, cached, embedding=await self._near_embedding(routed, request.question)
            )
        record = self._record(
            route=route,
            question=request.question,
            answer=output,
            flags=flags,
            routed=routed,
            latency_ms=latency_ms,
            finish=result.finish_reason,
            usage=result.usage,
            user_id=user_id,
            session_id=request.session_id,
            caller=caller,
        )
        if preview:
            record.is_preview, record.role = True, None
        await self._store(record)
        if not preview:
            self._mirror(
                routed, record, body, rag_question=request.question if request.use_rag else None
            )
        return _response(routed, record.id, output.text, latency_ms, contexts, flags, preview)

    async def _answer_from_cache(
        self,
        request: AnswerRequest,
        routed: Routed,
        hit: CachedAnswer,
        input_flags: list[Flag],
        clock: RequestClock,
        max_tokens: int,
        user_id: str | None,
        caller: Caller | None,
    ) -> AnswerResponse:
        """The cached answer, stored again as this request's answer (`cached`) and counted as
        served; no tokens were generated for it, so it carries none. Mirrored to a canary
        like any of Active's answers: it is one."""
        flags = [*input_flags, *hit.flags]
        latency_ms = (time.perf_counter() - clock.started) * 1000
        record = self._record(
            route="answer",
            question=request.question,
            answer=ScreenedAnswer(hit.text, (), hit.raw),
            flags=flags,
            routed=routed,
            latency_ms=latency_ms,
            finish=hit.finish_reason,
            usage=Usage(),
            user_id=user_id,
            session_id=request.session_id,
            caller=caller,
            cached=True,
        )
        await self._store(record)
        prompt = with_contexts(request.question, list(hit.contexts))
        body = {
            "model": routed.target.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        self._mirror(
            routed, record, body, rag_question=request.question if request.use_rag else None
        )
        return _response(
            routed, record.id, hit.text, latency_ms, list(hit.contexts), flags, cached=True
        )

    async def _near_embedding(self, routed: Routed, question: str) -> NDArray[np.float32] | None:
        """The question's embedding when the cache matches near-duplicates, else None."""
        if not self._cache.near_duplicates or self._embeddings is None:
            return None
        if routed.embedding is not None:
            return routed.embedding
        return await self._embeddings.embed(question)

    # -- OpenAI-compatible --------------------------------------------------------

    def models(self) -> list[ModelCard]:
        names = [AUTO_MODEL, *self._domains, self._base_model_name]
        return [ModelCard(id=name) for name in names]

    async def chat(
        self, request: ChatCompletionRequest, *, caller: Caller | None = None
    ) -> dict[str, Any]:
        self._limits.check_chat(request)
        clock = measure("chat")
        input_flags = await self._safety.check_messages(request.messages, route="chat")
        user_id = _scoped_user(caller, request.user)
        routed = await self._route_model(request, user_id)
        body = self._engine_body(request, routed)
        key: CacheKey | None = None
        # A multi-turn chat is matched exactly only: its last question alone is not the prompt.
        single = request.messages[0].text if len(request.messages) == 1 else None
        if self._cache.applies(route="chat", domain=routed.domain, temperature=request.temperature):
            key = chat_key(
                snapshot_id=routed.target.snapshot_id,
                domain=routed.domain,
                body=body,
                messages=request.messages,
            )
            embedding = await self._near_embedding(routed, single) if single else None
            hit = self._cache.get(key, route="chat", embedding=embedding)
            if hit is not None and hit.completion is not None:
                return await self._chat_from_cache(
                    request, routed, body, hit, input_flags, clock, user_id, caller
                )
        started = time.perf_counter()
        result = await self._generate("chat", routed, body, clock=clock)
        output = await self._safety.screen_answer(result.text, route="chat")
        latency_ms = (time.perf_counter() - started) * 1000
        flags = [*input_flags, *output.flags]
        record = self._record(
            route="chat",
            question=request.last_user_text(),
            answer=output,
            flags=flags,
            routed=routed,
            latency_ms=latency_ms,
            finish=result.finish_reason,
            usage=result.usage,
            user_id=user_id,
            caller=caller,
        )
        await self._store(record)
        self._mirror(routed, record, self._engine_body(request, routed))
        # Relayed as the engine sent it (the request may have asked for fields we do not read),
        # with the answer as the output screen left it.
        shown = self._safety.shown_completion(result.raw, result.text, output.text)
        if key is not None:
            cached = CachedAnswer(
                output.text, output.raw, tuple(output.flags), (), result.finish_reason,
                result.usage, completion=shown,
            )  # fmt: skip
            embedding = await self._near_embedding(routed, single) if single else None
            self._cache.put(key, cached, embedding=embedding)
        return {
            **shown,
            "id": f"chatcmpl-{record.id}",
            "model": request.model,
            "role": routed.role.value,
            "safety": [view.model_dump() for view in flag_views(flags)],
            "cached": False,
        }

    async def _chat_from_cache(
        self,
        request: ChatCompletionRequest,
        routed: Routed,
        body: dict[str, Any],
        hit: CachedAnswer,
        input_flags: list[Flag],
        clock: RequestClock,
        user_id: str | None,
        caller: Caller | None,
    ) -> dict[str, Any]:
        assert hit.completion is not None
        flags = [*input_flags, *hit.flags]
        record = self._record(
            route="chat",
            question=request.last_user_text(),
            answer=ScreenedAnswer(hit.text, (), hit.raw),
            flags=flags,
            routed=routed,
            latency_ms=(time.perf_counter() - clock.started) * 1000,
            finish=hit.finish_reason,
            usage=Usage(),
            user_id=user_id,
            caller=caller,
            cached=True,
        )
        await self._store(record)
        self._mirror(routed, record, body)
        return {
            **hit.completion,
            "id": f"chatcmpl-{record.id}",
            "created": int(time.time()),
            "model": request.model,
            "role": routed.role.value,
            "safety": [view.model_dump() for view in flag_views(flags)],
            "cached": True,
        }

    async def stream_chat(
        self, request: ChatCompletionRequest, *, caller: Caller | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Chunks of a streamed completion, those the engine sent together in one list (to
        be written together); the answer is stored once the stream ends.

        Raises before the first chunk if the engine cannot be reached, so the
        caller can still answer with an HTTP error instead of a broken stream.
        """
        self._limits.check_chat(request)
        clock = measure("chat_stream")
        # Streams are relayed as they are generated: never answered from the cache.
        self._cache.bypass("chat_stream")
        input_flags = await self._safety.check_messages(request.messages, route="chat")
        user_id = _scoped_user(caller, request.user)
        routed = await self._route_model(request, user_id)
        wants_usage = request.wants_usage
        body = self._engine_body(request, routed)
        # Usage feeds the token metrics; it is dropped again if the client did not ask for it.
        body["stream_options"] = {"include_usage": True}
        labels = (routed.target.slot.value, routed.domain)
        started = time.perf_counter()
        slot = routed.target.slot.value
        self._releases.inflight.enter(slot)
        try:
            chunks = self._engines[slot].stream_chat_batches(body)
            with waiting_for_engine(clock):
                first = await self._first_chunk(routed, chunks)
        except BaseException:
            self._releases.inflight.leave(slot)
            raise
        self._metrics.time_to_first_token.labels(labels[0]).observe(time.perf_counter() - started)
        relay = self._relay(
            request,
            routed,
            first,
            chunks,
            started,
            wants_usage,
            user_id=user_id,
            caller=caller,
            input_flags=input_flags,
        )
        # Started here, so that its `finally` frees the slot whatever happens next: a
        # generator never started has no `finally` to run, and a client that leaves before
        # the response streams would leak the in-flight count (a later swap waits to drain).
        try:
            head = await anext(relay)
        except StopAsyncIteration:
            return _nothing()
        return _prepend(head, relay)

    async def _relay(
        self,
        request: ChatCompletionRequest,
        routed: Routed,
        first: list[dict[str, Any]],
        chunks: AsyncGenerator[list[dict[str, Any]], None],
        started: float,
        wants_usage: bool,
        *,
        user_id: str | None,
        caller: Caller | None,
        input_flags: list[Flag],
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The engine's chunks as the client gets them: screened, under our id and model.
        Per chunk only what the gateway must read is looked at (finish reason, usage, the
        content the output screen holds back)."""
        answer_id = new_id()
        clock = current_clock()
        screen = self._safety.stream(route="chat")
        finish: str | None = None
        usage = Usage()
        ours = {"id": f"chatcmpl-{answer_id}", "model": request.model, "role": routed.role.value}

        def as_stored(finish: str | None, *, served: bool = True) -> AnswerRecord:
            record = self._record(
                route="chat",
                question=request.last_user_text(),
                answer=ScreenedAnswer(screen.text, screen.flags, screen.raw),
                flags=[*input_flags, *screen.flags],
                routed=routed,
                latency_ms=(time.perf_counter() - started) * 1000,
                finish=finish,
                usage=usage,
                user_id=user_id,
                caller=caller,
                served=served,
            )
            record.id = answer_id
            return record

        try:
            batch: list[dict[str, Any]] | None = first
            while batch is not None:
                relayed = []
                for chunk in batch:
                    choices = chunk.get("choices")
                    if choices:
                        for choice in choices:
                            finish = choice.get("finish_reason") or finish
                    if chunk.get("usage"):
                        usage = Usage.from_json(chunk["usage"])
                    if choices or wants_usage:
                        chunk.update(ours)
                        relayed.append(chunk)
                await screen.screen_batch(relayed)
                if relayed:
                    yield relayed
                with waiting_for_engine(clock):
                    batch = await anext(chunks, None)
            rest = await screen.finish()
            if rest:  # the engine ended without a finish_reason: what was held goes now
                yield [{**screen.last_chunk(rest), **ours}]
        except TwinloopError as e:
            await self._fail("chat", routed, e)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            self._metrics.client_disconnects.labels("chat").inc()
            # The client dropped the stream: what it got is stored as `abandoned` (a weak
            # signal the miner reads). Not awaited here: a cancelled request's awaits are
            # cancelled again, so a task of its own stores it.
            self._store_later(as_stored(ABANDONED_FINISH_REASON, served=False))
            raise
        finally:
            # Closing the upstream stream is what makes the engine stop generating.
            await chunks.aclose()
            self._releases.inflight.leave(routed.target.slot.value)
        await self._store(as_stored(finish))

    # -- status ---------------------------------------------------------------------

    def cache_status(self) -> AnswerCacheStatus:
        return self._cache.status()

    async def safety_status(self, *, window_hours: int = 24) -> SafetyStatus:
        """The safety layer's modes and what its screens did in the last `window_hours`."""
        since = utcnow() - timedelta(hours=window_hours)
        async with self._sessionmaker() as session:
            recent = await repository.safety_flags_since(session, since, limit=10_000)
        return self._safety.status(recent, window_hours=window_hours)

    # -- mirroring ------------------------------------------------------------------

    def _mirror(
        self,
        routed: Routed,
        answer: AnswerRecord,
        body: dict[str, Any],
        *,
        rag_question: str | None = None,
    ) -> None:
        """Ask the canary the same question in the background, when the canary draws it."""
        choice = routed.choice
        if choice is None or self._canary is None or not self._canary.mirrors(choice):
            return
        self._mirrors.spawn(
            lambda: self._ask_canary(choice, routed, answer, body, rag_question=rag_question)
        )

    async def _ask_canary(
        self,
        choice: ArmChoice,
        routed: Routed,
        answer: AnswerRecord,
        body: dict[str, Any],
        *,
        rag_question: str | None,
    ) -> None:
        """The canary's answer to a mirrored question, handed to the canary service.

        Counted in no request metric and stored as no answer: nobody sees it.
        """
        assert self._canary is not None
        canary, release = self._canary.state, self._releases.state
        slot = release.shadow_slot
        if canary is None or canary.id != choice.canary_id:
            return  # the canary ended while the user's answer was generated
        if release.serving(slot).snapshot_id != canary.snapshot_id:
            return
        target = self._releases.target(routed.domain, slot=slot)
        if routed.base_model:
            target = replace(target, model=routed.target.model, adapter=None)
        on_canary = replace(routed, target=target)
        body = {**body, "model": target.model}
        if rag_question is not None:
            contexts, _ = await self._retrieve(on_canary, rag_question, route="mirror")
            content = with_contexts(rag_question, contexts)
            body["messages"] = [{"role": "user", "content": content}]
        started = time.perf_counter()
        try:
            with self._releases.inflight.track(slot.value):
                result = await chat_with_adapter_retry(
                    self._engines[slot], body, slot=slot, adapter=target.adapter,
                    releases=self._releases,
                )  # fmt: skip
            # Judged as a user would see it: through the same output screen.
            shown = await self._safety.screen_answer(result.text, route="mirror")
            latency_ms = (time.perf_counter() - started) * 1000
            reply = Reply(shown.text, latency_ms, result.finish_reason)
        except TwinloopError as e:
            latency_ms = (time.perf_counter() - started) * 1000
            reply = Reply("", latency_ms, error=f"{type(e).__name__}: {e.message}")
        self._metrics.canary_mirror_latency.observe(latency_ms / 1000)
        await self._canary.record_pair(
            choice,
            answer_id=answer.id,
            question=answer.question,
            domain=routed.domain,
            active_answer=answer.answer,
            canary=reply,
        )

    # -- shared -------------------------------------------------------------------

    async def _retrieve(
        self, routed: Routed, question: str, *, route: str
    ) -> tuple[list[Context], list[Flag]]:
        """The domain's chunks visible at the serving snapshot's pinned RAG version, through
        the safety layer's context screen, and what it found.

        A failing index degrades the answer (no context) instead of failing it: the
        service keeps answering while the knowledge side recovers.
        """
        version = routed.target.rag_version
        if self._knowledge is None or version <= 0:
            return [], []
        started = time.perf_counter()
        try:
            embedding = routed.embedding
            if embedding is None and self._embeddings is not None:
                embedding = await self._embeddings.embed(question)
            contexts = await relevant_contexts(
                self._knowledge,
                domain=routed.domain,
                question=question,
                version=version,
                top_k=self._top_k,
                min_score=self._min_score,
                embedding=embedding,
            )
            elapsed = time.perf_counter() - started
            self._metrics.retrieval_latency.labels(routed.domain).observe(elapsed)
        except TwinloopError as e:
            self._metrics.retrieval_errors.labels(routed.domain).inc()
            log.warning("retrieval failed; answering without context", error=e.message)
            return [], []
        return await self._safety.screen_contexts(contexts, route=route)

    def _store_later(self, record: AnswerRecord) -> None:
        """Store `record` on a task of its own (an abandoned stream's partial answer)."""
        task = asyncio.create_task(self._store_quietly(record), name="store-abandoned-answer")
        self._stores.add(task)  # a reference, so that the task is not collected mid-flight
        task.add_done_callback(self._stores.discard)

    async def _store_quietly(self, record: AnswerRecord) -> None:
        try:
            await self._store(record)
        except Exception as e:  # nobody awaits it: log instead of an unretrieved task error
            log.warning("abandoned answer not stored", error=f"{type(e).__name__}: {e}")

    async def wait_for_stores(self) -> None:
        """Until the abandoned answers handed to `_store_later` so far are stored."""
        while self._stores:
            await asyncio.gather(*list(self._stores), return_exceptions=True)

    async def _store(self, record: AnswerRecord) -> None:
        """Commit the answer after generation, with the answers of concurrent requests
        (`writer.AnswerWriter`: group commit on a connection of its own).

        Not the request's transaction: a transaction open across a whole request would make
        swaps and other writes queue behind it. The answer is stored before its id is
        returned, so feedback never points at nothing.
        """
        await self._writer.store(record)

    def _engine_body(self, request: ChatCompletionRequest, routed: Routed) -> dict[str, Any]:
        return request.engine_body(routed.target.model, default_max_tokens=self._default_max_tokens)

    async def _generate(
        self, route: str, routed: Routed, body: dict[str, Any], *, clock: RequestClock | None = None
    ) -> ChatResult:
        """One completion on the routed slot, counted in flight so its adapter stays loaded."""
        slot = routed.target.slot
        with (
            self._releases.inflight.track(slot.value),
            waiting_for_engine(clock or current_clock()),
        ):
            try:
                return await chat_with_adapter_retry(
                    self._engines[slot],
                    body,
                    slot=slot,
                    adapter=routed.target.adapter,
                    releases=self._releases,
                )
            except TwinloopError as e:
                await self._fail(route, routed, e)
                raise

    async def _first_chunk(
        self, routed: Routed, chunks: AsyncGenerator[list[dict[str, Any]], None]
    ) -> list[dict[str, Any]]:
        try:
            return await anext(chunks)
        except TwinloopError as e:
            await self._fail("chat", routed, e)
            raise

    def _arm(self, *, user_id: str | None, session_id: str | None) -> ArmChoice | None:
        """The canary's arm for a user's request (None while no canary runs)."""
        if self._canary is None:
            return None
        return self._canary.arm_for(user_id=user_id, session_id=session_id)

    async def _route(
        self,
        domain: str | None,
        question: str,
        *,
        slot: Slot | None = None,
        choice: ArmChoice | None = None,
    ) -> Routed:
        """An explicit domain wins; otherwise the router picks one from the question.

        With a canary `choice`, its arm's slot serves (and its router rules route).
        """
        if choice is not None and choice.arm is Arm.CANARY:
            slot = choice.slot
        score: float | None = None
        embedding: NDArray[np.float32] | None = None
        if domain is None:
            # Embedding the question is CPU work: keep it off the event loop.
            state = self._releases.state
            rules_version = state.serving(slot or state.active_slot).router_rules_version
            router = await self._routing.router_for(rules_version)
            if self._embeddings is not None:
                # One embedding per question, batched with concurrent ones (off the loop);
                # retrieval reuses it. Scoring it against the exemplars is a small product.
                embedding = await self._embeddings.embed(question)
                result = router.route_embedding(embedding)
            else:
                result = await asyncio.to_thread(router.route, question)
            self._metrics.routes.labels(result.domain, str(result.fallback).lower()).inc()
            known = result.domain in self._domains
            domain = result.domain if known else self._default_domain
            score = round(result.score, 4)
        elif domain not in self._domains:
            raise InvalidRequestError(
                f"unknown domain {domain!r}; known domains: {', '.join(self._domains)}"
            )
        target = self._releases.target(domain, slot=slot)
        return Routed(domain=domain, score=score, target=target, choice=choice, embedding=embedding)

    async def _route_model(self, request: ChatCompletionRequest, user_id: str | None) -> Routed:
        model = request.model
        # OpenAI's `user` field is the end user's id: it keeps a user on one canary arm.
        choice = self._arm(user_id=user_id, session_id=None)
        if model == AUTO_MODEL:
            return await self._route(None, request.last_user_text(), choice=choice)
        if model in self._domains:
            return await self._route(model, "", choice=choice)
        if model == self._base_model_name:
            routed = await self._route(self._default_domain, "", choice=choice)
            base = routed.target
            target = Target(slot=base.slot, snapshot_id=base.snapshot_id, model=model, adapter=None)
            return replace(routed, score=None, target=target, base_model=True)
        known = ", ".join(card.id for card in self.models())
        raise NotFoundError(f"model {model!r} does not exist; available models: {known}")

    async def _fail(self, route: str, routed: Routed, error: TwinloopError) -> None:
        """Count a failed request, and to its canary arm when a canary split it."""
        self._count_failure(route, routed, error)
        if routed.choice is not None and self._canary is not None:
            await self._canary.record_failure(routed.choice, error)

    def _count_failure(self, route: str, routed: Routed, error: TwinloopError) -> None:
        slot = routed.target.slot.value
        kind = (
            "unavailable"
            if isinstance(error, EngineUnavailableError)
            else "timeout"
            if isinstance(error, EngineTimeoutError)
            else "response"
        )
        self._metrics.engine_errors.labels(slot, kind).inc()
        self._metrics.requests.labels(
            route, slot, routed.domain, routed.target.adapter or "", type(error).__name__
        ).inc()

    def _record(
        self,
        *,
        route: str,
        question: str,
        answer: ScreenedAnswer,
        flags: list[Flag],
        routed: Routed,
        latency_ms: float,
        finish: str | None,
        usage: Usage,
        user_id: str | None = None,
        session_id: str | None = None,
        caller: Caller | None = None,
        served: bool = True,
        cached: bool = False,
    ) -> AnswerRecord:
        """The answer as stored, counted in the request metrics when `served` (a stream the
        client dropped is stored, not counted)."""
        slot = routed.target.slot.value
        if served:
            adapter = routed.target.adapter or ""
            self._metrics.requests.labels(route, slot, routed.domain, adapter, "ok").inc()
            self._metrics.request_latency.labels(route, slot, routed.domain).observe(
                latency_ms / 1000
            )
            if usage.completion_tokens:
                self._metrics.completion_tokens.labels(slot, routed.domain).inc(
                    usage.completion_tokens
                )
        return AnswerRecord(
            route=route,
            question=question,
            answer=answer.text,
            raw_answer=answer.raw,
            safety_flags=[flag.as_json() for flag in flags] or None,
            domain=routed.domain,
            route_score=routed.score,
            slot=slot,
            snapshot_id=routed.target.snapshot_id,
            model=routed.target.model,
            user_id=user_id,
            session_id=session_id,
            api_key_id=caller.key_id if caller is not None else None,
            is_preview=False,
            role=routed.role.value,
            canary_id=routed.choice.canary_id if routed.choice is not None else None,
            latency_ms=latency_ms,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finish_reason=finish,
            cached=cached,
        )


async def _prepend(
    head: list[dict[str, Any]], rest: AsyncGenerator[list[dict[str, Any]], None]
) -> AsyncIterator[list[dict[str, Any]]]:
    """`head`, then `rest`; if dropped unread, `rest` is closed when it is collected."""
    try:
        yield head
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


async def _nothing() -> AsyncIterator[list[dict[str, Any]]]:
    return
    yield  # an async generator that yields nothing


def _scoped_user(caller: Caller | None, user_id: str | None) -> str | None:
    """The end-user id as stored and as the canary hashes it: under the caller's key."""
    return caller.scoped_user(user_id) if caller is not None else user_id


def _response(
    routed: Routed,
    answer_id: str,
    text: str,
    latency_ms: float,
    contexts: list[Context],
    flags: list[Flag],
    preview: bool = False,
    *,
    cached: bool = False,
) -> AnswerResponse:
    """What `/answer` returns for an answer stored as `answer_id`, generated or cached."""
    return AnswerResponse(
        answer_id=answer_id,
        answer=text,
        domain=routed.domain,
        route_score=routed.score,
        slot=routed.target.slot.value,
        snapshot_id=routed.target.snapshot_id,
        adapter=routed.target.adapter,
        latency_ms=round(latency_ms, 2),
        preview=preview,
        role=None if preview else routed.role.value,
        contexts=contexts,
        safety=flag_views(flags),
        cached=cached,
    )
