"""Request and response shapes of answering, shared by the service and the API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_QUESTION_CHARS = 8000
MAX_TOKENS_LIMIT = 4096


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    domain: str | None = Field(default=None, description="Skip routing and use this domain.")
    user_id: str | None = Field(default=None, max_length=255)
    session_id: str | None = Field(default=None, max_length=255)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    use_rag: bool = Field(
        default=True, description="Retrieve the domain's documents into the prompt."
    )
    target: Literal["active", "shadow"] = Field(
        default="active",
        description="`shadow` previews the shadow slot; needs the admin token. Previews are "
        "stored apart from users' answers.",
    )


class Context(BaseModel):
    doc_id: str
    text: str
    score: float


class AnswerResponse(BaseModel):
    answer_id: str
    answer: str
    domain: str
    route_score: float | None
    slot: str
    snapshot_id: str
    adapter: str | None
    latency_ms: float
    preview: bool = False
    role: Literal["active", "canary"] | None = Field(
        default="active",
        description="The arm that served it: `canary` when a running canary gave this user "
        "Shadow's snapshot, else `active`; null for an operator's preview of Shadow.",
    )
    contexts: list[Context] = Field(default_factory=list)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request; fields we do not name pass through to the engine."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="`auto` (routed), a domain name, or the base model's name.")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)

    def engine_body(self, model: str, *, default_max_tokens: int) -> dict[str, Any]:
        """The request as the engine gets it: our model name, and a bound on its length.

        Without `max_tokens` vLLM generates up to the context limit; a shared engine
        should not spend a minute on one request nobody bounded.
        """
        body = self.model_dump(exclude_none=True)
        body["model"] = model
        if self.max_tokens is None and self.max_completion_tokens is None:
            body["max_tokens"] = default_max_tokens
        return body

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return _text_of(message.content)
        return ""


def _text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "twinloop"
