"""OpenAI-compatible endpoints, so the official clients work against the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from api.deps import AnswersDep, ClientCallerDep, MetricsDep
from api.disconnect import EventStreamResponse, cancel_on_disconnect
from api.lean_route import LeanRoute
from api.responses import BODY, CLIENT, ENGINE, SCREENED, errors
from twinloop.errors import TwinloopError
from twinloop.inference.schemas import ChatCompletion, ChatCompletionRequest, ModelList

router = APIRouter(prefix="/v1", tags=["openai"], route_class=LeanRoute)

_COMPLETION = {
    "model": ChatCompletion,
    "description": "The completion. With `stream: true`, server-sent events instead: "
    "`data: <chat.completion.chunk JSON>` lines, then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


@router.get("/models", responses=errors(*CLIENT))
async def list_models(answers: AnswersDep, _: ClientCallerDep) -> ModelList:
    return ModelList(data=answers.models())


@router.post(
    "/chat/completions",
    response_model=None,
    responses={200: _COMPLETION, **errors(*BODY, *CLIENT, 404, *ENGINE, descriptions=SCREENED)},
)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    answers: AnswersDep,
    metrics: MetricsDep,
    caller: ClientCallerDep,
) -> Response:
    if body.stream:
        chunks = await answers.stream_chat(body, caller=caller)
        return EventStreamResponse(_sse(chunks))
    completion = await cancel_on_disconnect(
        request, answers.chat(body, caller=caller), route="chat", metrics=metrics
    )
    # The engine's reply relayed as it came (plus our fields): encoded once, by orjson,
    # without FastAPI's walk through every value.
    return Response(orjson.dumps(completion), media_type="application/json")


async def _sse(batches: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """Server-sent events, the chunks the engine sent together in one write."""
    try:
        async for batch in batches:
            if batch:  # one join for the batch: no bytes built per chunk beyond its JSON
                yield b"data: " + b"\n\ndata: ".join(map(orjson.dumps, batch)) + b"\n\n"
    except TwinloopError as e:
        # Headers are gone; OpenAI's clients read an error event as the failure.
        error = {"message": e.message, "type": type(e).__name__, "code": e.status_code}
        yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"
