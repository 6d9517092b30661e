"""OpenAI-compatible endpoints, so the official clients work against the gateway."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import AnswersDep, ClientCallerDep, MetricsDep
from api.disconnect import cancel_on_disconnect
from api.responses import BODY, CLIENT, ENGINE, SCREENED, errors
from twinloop.errors import TwinloopError
from twinloop.inference.schemas import ChatCompletion, ChatCompletionRequest, ModelList

router = APIRouter(prefix="/v1", tags=["openai"])

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
) -> dict[str, Any] | StreamingResponse:
    if body.stream:
        chunks = await answers.stream_chat(body, caller=caller)
        return StreamingResponse(_sse(chunks), media_type="text/event-stream")
    return await cancel_on_disconnect(
        request, answers.chat(body, caller=caller), route="chat", metrics=metrics
    )


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    try:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
    except TwinloopError as e:
        # Headers are gone; OpenAI's clients read an error event as the failure.
        error = {"message": e.message, "type": type(e).__name__, "code": e.status_code}
        yield f"data: {json.dumps({'error': error})}\n\n"
        return
    yield "data: [DONE]\n\n"
