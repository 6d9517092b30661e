"""Request and response shapes of answering, shared by the service and the API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_QUESTION_CHARS = 8000


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    domain: str | None = Field(default=None, description="Skip routing and use this domain.")
    user_id: str | None = Field(default=None, max_length=255)
    session_id: str | None = Field(default=None, max_length=255)
    max_tokens: int | None = Field(default=None, ge=1, description="At most `gateway.max_tokens`.")
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


class SafetyFlag(BaseModel):
    """One finding of the safety layer (`twinloop.safety`) on this request."""

    screen: Literal["input", "context", "output"] = Field(
        description="`input`: the question or a chat message; `context`: a retrieved passage; "
        "`output`: the answer, or a passage shown in `contexts`."
    )
    rule: str = Field(
        description="The injection rule (e.g. `override_instructions`) or the PII kind "
        "(`email`, `iban`, `card`, `ssn`, `ip`, `phone`)."
    )
    action: Literal["blocked", "dropped", "redacted", "flagged"] = Field(
        description="`dropped`: the passage was left out of the prompt and of `contexts`; "
        "`redacted`: replaced by a placeholder such as `[EMAIL]`; `flagged`: recorded only."
    )
    where: str = Field(description="`question`, `messages[<i>]`, `answer` or `context:<doc id>`.")
    count: int = Field(default=1, description="How many times (e.g. two e-mail addresses).")


class SafetyCount(BaseModel):
    screen: str
    rule: str
    action: str
    count: int


class SafetyStatus(BaseModel):
    """The safety layer in `/status`: each screen's mode and what the screens did lately."""

    input: Literal["block", "flag", "off"]
    contexts: Literal["drop", "flag", "off"]
    output: Literal["redact", "flag", "off"]
    keep_raw_pii: bool
    window_hours: int = Field(description="The window of `answers_with_findings` and `findings`.")
    answers_with_findings: int = Field(
        description="Stored answers in the window with any finding (at most the latest 10,000)."
    )
    findings: list[SafetyCount] = Field(
        description="Their findings summed by screen, rule and action, most frequent first."
    )
    blocked_since_start: int = Field(
        description="Requests this gateway's input screen blocked since it started (a blocked "
        "request stores no answer; twinloop_safety_events_total counts every gateway's)."
    )


class AnswerCacheStatus(BaseModel):
    """This gateway process's answer cache (each worker holds its own)."""

    enabled: bool
    entries: int = Field(description="Answers held now.")
    max_entries: int
    similarity: float | None = Field(description="Near-duplicate threshold; null: exact only.")
    hits: int = Field(description="Requests answered from the cache since the process started.")
    misses: int = Field(description="Cacheable requests the engine answered since the start.")


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
    safety: list[SafetyFlag] = Field(
        default_factory=list,
        description="What the safety layer found and did: an input flagged, a passage dropped, "
        "PII redacted from the answer. Empty: nothing.",
    )
    cached: bool = Field(
        default=False,
        description="Served from the answer cache: the same snapshot's answer to the same "
        "question and parameters, screened when it was generated, stored again as this answer.",
    )


# Fields OpenAI's clients send back on an assistant message taken from a reply: accepted
# while empty (null or []) and dropped, so a conversation can be replayed as the client holds it.
_ECHOED_FIELDS = frozenset(
    {"refusal", "tool_calls", "function_call", "audio", "annotations", "reasoning_content"}
)
MAX_TOP_LOGPROBS = 20
MAX_STOP_SEQUENCES = 4


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _drop_empty_echoes(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in _ECHOED_FIELDS or v}
        return data

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool | None = Field(
        default=None, description="Send a last chunk with the token usage."
    )


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request, limited to the parameters the gateway passes on.

    The allow-list: the sampling parameters of OpenAI's API that a served model honours
    (`temperature`, `top_p`, `stop`, `seed`, the penalties, `logprobs` and `top_logprobs`
    up to 20), the length bounds (`max_tokens`, `max_completion_tokens`, at most
    `gateway.max_tokens`), `n` of 1, `user`, `stream` and `stream_options`. Anything else
    is a 422 naming the field: vLLM's extensions (`ignore_eos`, `min_tokens`,
    `prompt_logprobs`, `best_of`, guided decoding), `response_format` (structured output is
    guided decoding too), tools and `logit_bias` - each a way to make one request cost many,
    or something this service does not offer. `null` means the default for every field.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="`auto` (routed), a domain name, or the base model's name.")
    messages: list[ChatMessage] = Field(
        min_length=1, description="At most `gateway.max_messages`, of `gateway.max_request_chars`."
    )
    stream: bool | None = None
    stream_options: StreamOptions | None = Field(default=None, description="With `stream` only.")
    max_tokens: int | None = Field(default=None, ge=1, description="At most `gateway.max_tokens`.")
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="The same bound under OpenAI's newer name."
    )
    n: Literal[1] | None = Field(default=None, description="One choice per request.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=MAX_STOP_SEQUENCES)]
        | None
    ) = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    user: str | None = Field(
        default=None, max_length=255, description="The end user: keeps them on one canary arm."
    )

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: StreamOptions | None, info: ValidationInfo) -> Any:
        if value is not None and not info.data.get("stream"):
            raise ValueError("allowed only with stream: true")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _only_with_logprobs(cls, value: int | None, info: ValidationInfo) -> Any:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("allowed only with logprobs: true")
        return value

    @property
    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

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
                return message.text
        return ""

    def text_chars(self) -> int:
        """Characters of message text, the measure of `gateway.max_request_chars`."""
        return sum(len(message.text) for message in self.messages)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "twinloop"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatCompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | None = None


class ChatCompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    message: ChatCompletionMessage
    finish_reason: str | None = None


class CompletionUsage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """What /v1/chat/completions answers: the engine's completion, fields the gateway does
    not read included, under the gateway's id and the model name asked for, with the arm
    that served it."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage | None = None
    role: Literal["active", "canary"] = Field(
        description="`canary` when a running canary served this user Shadow's snapshot."
    )
    safety: list[SafetyFlag] = Field(
        default_factory=list,
        description="What the safety layer found and did (as on /answer). Streamed "
        "completions do not carry it; their answer record does.",
    )
    cached: bool = Field(
        default=False,
        description="Served from the answer cache (temperature 0 only; as on /answer). "
        "Streamed completions never are.",
    )
