"""Prometheus metrics, one registry per process, built in the owner's lifespan.

With several gateway workers (`gateway.workers`), `twinloop serve` sets
`PROMETHEUS_MULTIPROC_DIR` before they start: every worker writes its values there and
`/metrics`, whichever worker answers, reads them all (`render`). Counters and histograms
are summed; a gauge says how workers combine (`multiprocess_mode`): the release's
(`twinloop_active_slot`, `twinloop_release_generation`) are kept per worker (a `pid`
label), so a worker that has not yet taken a swap shows; the others are the most recent
value any worker set.

Names carry the `twinloop_` prefix; dashboards/ query exactly these. The QA metrics
(`twinloop/qa/metrics.py`) are registered in the same registry by the process wiring. The
trainer builds `Metrics` for its services too, and exports only the release-change families
of it (`Families`, `RELEASE_CHANGE_FAMILIES`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
# The release changes any process's ReleaseController causes and counts: the trainer's
# stages too, so the trainer exports them (`Families`). Not the release's gauges
# (generation, active slot): those describe the release in force, the gateways' to export.
RELEASE_CHANGE_FAMILIES = ("twinloop_release_change_seconds", "twinloop_shadow_changes")


_M = TypeVar("_M", bound="_LabelCache")


class _LabelCache:
    """`labels(...)` looked up in a plain dict first. prometheus_client's own checks the
    count, converts every value with `str` and takes a lock on every call (2.8 us for five
    labels and an `inc` here); the gateway calls it half a dozen times per request. Only
    string values are kept as keys: `True` and `1` are equal keys but different labels."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children_by_values: dict[tuple[object, ...], Any] = {}

    def labels(self: _M, *labelvalues: object, **labelkwargs: object) -> _M:
        cache = self._children_by_values
        child: _M | None = cache.get(labelvalues) if not labelkwargs else None
        if child is None:
            child = super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc]
            if not labelkwargs and all(isinstance(value, str) for value in labelvalues):
                cache[labelvalues] = child
        return child


class Counter(_LabelCache, _Counter):
    pass


class Gauge(_LabelCache, _Gauge):
    pass


class Histogram(_LabelCache, _Histogram):
    pass


class Metrics:
    """The gateway's metrics. A fresh registry per instance keeps tests independent."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "twinloop_requests",
            "Answers served, by route, slot, domain, adapter and outcome (ok or the error type).",
            ["route", "slot", "domain", "adapter", "outcome"],
            registry=r,
        )
        self.request_latency = Histogram(
            "twinloop_request_latency_seconds",
            "Time from request to the last byte of the answer, measured in the gateway.",
            ["route", "slot", "domain"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "twinloop_time_to_first_token_seconds",
            "Streaming only: time until the first generated chunk reached the gateway.",
            ["slot"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.answer_batches = Counter(
            "twinloop_answer_batches",
            "Group commits of served answers (twinloop.inference.writer), by outcome: committed, "
            "failed (every request in the batch failed with the database's error).",
            ["outcome"],
            registry=r,
        )
        self.answer_batch_size = Histogram(
            "twinloop_answer_batch_size",
            "Answers committed together in one transaction: 1 while commits keep up, more as "
            "requests arrive during a commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.answer_commit_seconds = Histogram(
            "twinloop_answer_commit_seconds",
            "Time to insert and commit one batch of answers; every request in it waited for it.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.completion_tokens = Counter(
            "twinloop_completion_tokens",
            "Tokens generated, as the engine reported them.",
            ["slot", "domain"],
            registry=r,
        )
        self.engine_errors = Counter(
            "twinloop_engine_errors",
            "Failed calls to an engine, by kind (unavailable, timeout, response).",
            ["slot", "kind"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "twinloop_client_disconnects",
            "Requests whose client went away; the upstream generation was cancelled.",
            ["route"],
            registry=r,
        )
        self.routes = Counter(
            "twinloop_routes",
            "Questions the router placed, by domain; fallback=true when no domain passed "
            "its threshold.",
            ["domain", "fallback"],
            registry=r,
        )
        self.retrieval_latency = Histogram(
            "twinloop_retrieval_latency_seconds",
            "Time to embed a question and fetch its chunks at the pinned RAG version.",
            ["domain"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ingested_items = Counter(
            "twinloop_ingested_items",
            "Items /ingest took, by type and result (added, updated, unchanged, deleted, …).",
            ["type", "status"],
            registry=r,
        )
        # The same families as the trainer's (twinloop.training.metrics): the screen at /ingest
        # is the cleaning step's first half, and a dashboard sums both processes.
        self.screened_items = Counter(
            "twinloop_training_items",
            "Learning items by outcome. From the gateway: items the screen at /ingest "
            "quarantined (quarantined.<rule>; a training cycle never sees them) and documents "
            "it refused (rejected.<rule>).",
            ["outcome"],
            registry=r,
        )
        self.redactions = Counter(
            "twinloop_training_redactions",
            "PII redacted from learning items, by kind. From the gateway: at /ingest, before "
            "the item is stored.",
            ["kind"],
            registry=r,
        )
        self.retrieval_errors = Counter(
            "twinloop_retrieval_errors",
            "Retrievals that failed; the answer was given without context.",
            ["domain"],
            registry=r,
        )
        self.engine_ready = Gauge(
            "twinloop_engine_ready",
            "1 when the slot's engine generated a token in the last readiness probe, else 0.",
            ["slot"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.active_slot = Gauge(
            "twinloop_active_slot",
            "1 for the slot that is active, 0 for the shadow slot.",
            ["slot"],
            multiprocess_mode="all",
            registry=r,
        )
        self.release_generation = Gauge(
            "twinloop_release_generation",
            "Generation of the release in force; it goes up by one with every swap or rollback.",
            multiprocess_mode="all",
            registry=r,
        )

        self.release_changes = Histogram(
            "twinloop_release_change_seconds",
            "Duration of stage, swap and rollback, from the request to the pointer flip.",
            ["kind"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.shadow_changes = Counter(
            "twinloop_shadow_changes",
            "Shadow changes derived from the release in force (ingest, trainer, operator "
            "snapshots), by outcome: staged; unchanged (nothing to stage); rederived (another "
            "process changed the release first, so the snapshot was derived again from its "
            "release); refused (a conflict: an operator's generation had moved, a tainted "
            "adapter, or the race lost every attempt).",
            ["outcome"],
            registry=r,
        )
        self.engine_reconciles = Counter(
            "twinloop_engine_reconcile_loads",
            "Adapters loaded again into an engine that had lost them (an engine restart).",
            ["slot"],
            registry=r,
        )
        # Every load into an engine first puts a verified copy where the engine reads
        # (twinloop.registry.delivery): slow or failing fetches delay stages, swaps and
        # reloads after an engine restart, so both are measured where the load is asked.
        self.artifact_fetch_seconds = Histogram(
            "twinloop_artifact_fetch_seconds",
            "Time to put a verified adapter copy where a slot's engine reads it (copy or "
            "download, hash, rename), by slot; includes the hash of a copy already in place.",
            ["slot"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.artifact_fetches = Counter(
            "twinloop_artifact_fetches",
            "Adapter fetches before an engine load, by slot and outcome: fetched (copied from "
            "the store), cached (a verified copy was in place), refused (it did not hash to "
            "its sha256: never loaded), failed (store or fetch agent unavailable).",
            ["slot", "outcome"],
            registry=r,
        )

        self.canary_requests = Counter(
            "twinloop_canary_requests",
            "Requests given an arm while a canary ran, by arm (active, canary) and sticky "
            "(false: neither user nor session id, split at random).",
            ["arm", "sticky"],
            registry=r,
        )
        self.canary_errors = Counter(
            "twinloop_canary_errors",
            "Canary-period requests that failed in the engine, by arm and kind "
            "(engine_error, timeout).",
            ["arm", "kind"],
            registry=r,
        )
        self.canary_decisions = Counter(
            "twinloop_canary_decisions",
            "Canary evaluations, by verdict (continue, promote, abort, inconclusive).",
            ["verdict"],
            registry=r,
        )
        self.canary_arm = Gauge(
            "twinloop_canary_arm",
            "The running (else the last) canary's counts per arm at its latest evaluation, from "
            "the database: requests, failures, error_rate, p95_seconds, thumbs_up, thumbs_down, "
            "corrections, positive_rate (NaN while undefined).",
            ["arm", "figure"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.canary_mirrors = Counter(
            "twinloop_canary_mirrors",
            "Active requests mirrored to the canary, by outcome: paired (stored), failed (the "
            "canary's engine failed: stored as a failed reply), busy (skipped: mirror_concurrency "
            "reached), unrecorded (the pair could not be stored).",
            ["outcome"],
            registry=r,
        )
        self.canary_mirror_latency = Histogram(
            "twinloop_canary_mirror_latency_seconds",
            "The canary's latency on mirrored questions (never seen by a user).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.canary_pairs = Gauge(
            "twinloop_canary_pairs",
            "The running (else the last) canary's mirrored pairs at its latest evaluation, by "
            "outcome (win, tie, loss, undecided) and drift (drift_pairs, drifted).",
            ["outcome"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.canary_items = Counter(
            "twinloop_canary_items",
            "What a cycle rolled back by its canary did with its learning items: handed_back "
            "(to pending), quarantined.rejections (refused max_rejections times), retired "
            "(QA-made). The trainer counts the same for rejected cycles in "
            "twinloop_training_items.",
            ["outcome"],
            registry=r,
        )
        self.canary_follows = Counter(
            "twinloop_canary_follows",
            "Times a running canary followed Shadow to a child of its snapshot serving the same "
            "adapters (an ingest's newer RAG versions, new router rules) instead of ending.",
            registry=r,
        )
        self.canary_percent = Gauge(
            "twinloop_canary_percent",
            "Share of users the running canary serves (from its percent_from on); 0 when none "
            "runs.",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.canary_races = Counter(
            "twinloop_canary_races",
            "Canary changes this gateway found another gateway had made first, by action: start "
            "(another canary was started: a 409), end (ended or promoted first: this gateway's "
            "decision or abort did nothing), follow (followed Shadow first). A few are expected "
            "with several gateways; each means the other one acted.",
            ["action"],
            registry=r,
        )
        self.canary_promotions = Counter(
            "twinloop_canary_promotions",
            "Promotions this gateway claimed or finished, by outcome: swapped; swap_failed (the "
            "canary runs again); and for a gateway that stopped mid-way, recorded (it had "
            "swapped: recorded here) or resumed (it had not: the canary runs again).",
            ["outcome"],
            registry=r,
        )

        self.auth_failures = Counter(
            "twinloop_auth_failures",
            "Requests refused or demoted for their credential, by route (the path template) and "
            "reason: missing, invalid, revoked (an unknown or revoked bearer on /answer and /v1 "
            "is answered as anonymous, and counted here), forbidden (a role that may not).",
            ["route", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "twinloop_rate_limited",
            "Requests refused with 429 because their API key spent its rate limit, by role.",
            ["role"],
            registry=r,
        )

        self.safety_events = Counter(
            "twinloop_safety_events",
            "What the safety layer's screens found on /answer and /v1, one per finding, by route "
            "(answer, answer_preview, chat, mirror: Shadow's mirrored reply), screen (input, "
            "context, output), rule (an injection rule, or a PII kind) and action (blocked, "
            "dropped, redacted, flagged).",
            ["route", "screen", "rule", "action"],
            registry=r,
        )
        self.safety_seconds = Histogram(
            "twinloop_safety_screen_seconds",
            "Time one request's screen took, by screen (input, context, output; a streamed "
            "answer's output screen summed over its releases): the safety layer's cost.",
            ["screen"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=r,
        )

        # What the gateway itself costs on the answering routes (issue 16): everything but the
        # wait for the engine, so a slow engine never hides a slow gateway or the reverse.
        self.gateway_overhead = Histogram(
            "twinloop_gateway_overhead_seconds",
            "Time a request spent in the gateway, not waiting for the engine: from the request's "
            "arrival to its response's last byte, minus the time spent awaiting the engine "
            "(the whole call; a stream's reads), by route (answer, answer_preview, chat, "
            "chat_stream). A cache hit's is its whole time.",
            ["route"],
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.embedding_batch_size = Histogram(
            "twinloop_embedding_batch_size",
            "Questions encoded together in one call of the embedding model on the request path "
            "(rag.query_embeddings): 1 while the model keeps up, more under concurrent load.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.embedding_batch_seconds = Histogram(
            "twinloop_embedding_batch_seconds",
            "Time to encode one batch of questions (every question in it waited for it).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=r,
        )
        self.embedding_cache = Counter(
            "twinloop_embedding_cache",
            "Question embeddings asked for on the request path, by outcome: hit (the same "
            "normalised question was encoded before), miss (encoded, or joined the encoding of "
            "the same question already under way).",
            ["outcome"],
            registry=r,
        )
        self.answer_cache = Counter(
            "twinloop_answer_cache_lookups",
            "Answer cache lookups, by route and outcome: hit (the same snapshot, domain, "
            "question and parameters answered before), near_hit (a question above "
            "answer_cache.similarity answered before), miss, bypass (not cacheable: "
            "temperature > 0, a stream, a domain opted out, a preview).",
            ["route", "outcome"],
            registry=r,
        )
        self.answer_cache_entries = Gauge(
            "twinloop_answer_cache_entries",
            "Answers held in this process's answer cache.",
            multiprocess_mode="livesum",
            registry=r,
        )

    def render(self) -> bytes:
        if os.environ.get(MULTIPROCESS_ENV):
            # Every worker's values, from the files they write (the module docstring).
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


class Families(Collector):
    """Some families of another registry, collected wherever this is registered: a process
    that builds `Metrics` for its services but serves its own registry (the trainer) exports
    the families it causes without the gateway's others, or duplicating names of its own."""

    def __init__(self, source: CollectorRegistry, names: Collection[str]) -> None:
        self._source = source
        self._names = frozenset(names)

    def collect(self) -> Iterable[Metric]:
        return [family for family in self._source.collect() if family.name in self._names]

    def describe(self) -> Iterable[Metric]:
        # The names, for the registry's check that no two collectors export one family.
        return self.collect()
