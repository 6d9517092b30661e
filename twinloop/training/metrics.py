"""The trainer process's Prometheus metrics, served on its own port (`trainer.metrics_port`).

Its registry also carries the release changes the trainer's stages cause
(`twinloop.metrics.RELEASE_CHANGE_FAMILIES`, registered by `open_trainer`).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from twinloop.mining.metrics import MiningMetrics
from twinloop.qa.metrics import QaMetrics

STEP_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 2400)


class TrainerMetrics:
    """The trainer's own metrics, in the registry its /metrics serves. A fresh registry per
    instance keeps tests independent."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycles = Counter(
            "twinloop_training_cycles",
            "Training cycles finished, by outcome (awaiting_canary, rejected, staged, skipped, "
            "abandoned, failed).",
            ["outcome"],
            registry=r,
        )
        self.step_seconds = Histogram(
            "twinloop_training_step_seconds",
            "Wall time of one step of a training cycle (clean, replay, train, register, stage, "
            "qa).",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.items = Counter(
            "twinloop_training_items",
            "Candidate items a cycle cleaned, by outcome (accepted or quarantined.<rule>), and "
            "what a rejected cycle did with them (handed_back, quarantined.rejections, retired). "
            "The gateway exports the same family for what its screen at /ingest quarantined.",
            ["outcome"],
            registry=r,
        )
        self.redactions = Counter(
            "twinloop_training_redactions",
            "PII redacted from training items, by kind (the gateway counts what it redacts at "
            "/ingest; a cycle, what reached it unredacted).",
            ["kind"],
            registry=r,
        )
        self.examples_per_second = Gauge(
            "twinloop_training_examples_per_second",
            "Training throughput of the last adapter trained (examples x steps / seconds).",
            registry=r,
        )
        self.loss = Gauge(
            "twinloop_training_loss",
            "Final training loss of the last adapter trained, per domain.",
            ["domain"],
            registry=r,
        )
        self.weak_spot_repeats = Counter(
            "twinloop_training_weak_spot_repeats",
            "Extra copies a cycle trained on to target a rejected cycle's weak spots: new "
            "examples in SFT (sft) or guard items in the KL replay (guard).",
            ["kind"],
            registry=r,
        )
        self.overridden = Counter(
            "twinloop_training_overridden",
            "Training passes run with an admin's per-cycle override (POST /train overrides), "
            "by the setting overridden (learning_rate, kl_weight, epochs, step_budget, preference, "
            "continual, max_rounds).",
            ["setting"],
            registry=r,
        )
        self.starts = Counter(
            "twinloop_training_starts",
            "Adapters a cycle trained, by what each started from (start: continual, grown "
            "from Active's adapter; base) and why (grown, off, no_active_adapter, tainted, "
            "unreadable, incompatible: twinloop.training.starts).",
            ["start", "why"],
            registry=r,
        )
        self.active_cycle = Gauge(
            "twinloop_training_active",
            "1 while this trainer works on a cycle.",
            registry=r,
        )
        self.preference_pairs = Counter(
            "twinloop_training_preference_pairs",
            "Preference pairs (chosen over rejected) a cycle's DPO stage used: trained on "
            "(trained) or kept out to measure it (heldout).",
            ["split"],
            registry=r,
        )
        self.preference_margin = Gauge(
            "twinloop_training_preference_margin",
            "Mean DPO reward margin on the trained pairs after the last preference stage, per "
            "domain: beta times how far the adapter moved the chosen answer's log-probability "
            "up relative to the rejected one's, against its SFT state (> 0: it learned the "
            "preference).",
            ["domain"],
            registry=r,
        )
        self.preference_accuracy = Gauge(
            "twinloop_training_preference_accuracy",
            "Share of held-out pairs (never trained on by DPO) where the adapter prefers the "
            "chosen answer (higher log-probability per token), per domain, after SFT (sft) and "
            "after DPO (dpo). Unset for a domain with no held-out pair.",
            ["domain", "stage"],
            registry=r,
        )
        self.qa = QaMetrics(r)
        self.mining = MiningMetrics(r)

    def observe_preference(self, domain: str, report: dict[str, Any]) -> None:
        """A DPO stage's report (`adapters.preference.PreferenceReport.as_dict()`)."""
        self.preference_pairs.labels("trained").inc(report["pairs"])
        self.preference_pairs.labels("heldout").inc(report["heldout_pairs"])
        self.preference_margin.labels(domain).set(report["reward_margin"])
        for stage, key in (("sft", "heldout_accuracy_sft"), ("dpo", "heldout_accuracy")):
            if report.get(key) is not None:
                self.preference_accuracy.labels(domain, stage).set(report[key])
