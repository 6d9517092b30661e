"""The miner's Prometheus metrics; registered in the trainer's registry (which mines) and the
gateway's (where admins review)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class MiningMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.items = Counter(
            "twinloop_mined_items",
            "Mined proposals by rule (retry, regenerate, negative_followup, abandoned) and "
            "outcome: proposed (stored, waiting for agreement or review), quarantined (the "
            "screen stopped it), capped (over mining.max_per_source in one pass; not stored), "
            "agreed (independent evidence made it trainable), accepted and rejected (an "
            "admin's review). From the trainer, except accepted and rejected (the gateway).",
            ["rule", "outcome"],
            registry=r,
        )
        self.runs = Counter(
            "twinloop_mining_runs",
            "Passes of the miner over the answer log, by trigger (cycle, schedule).",
            ["trigger"],
            registry=r,
        )
        self.proposals = Gauge(
            "twinloop_mined_proposals",
            "Mined proposals by state after the trainer's latest pass (proposed ones wait for "
            "agreement or an admin's review at GET /mined).",
            ["state"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
