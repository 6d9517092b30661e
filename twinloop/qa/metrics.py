"""QA's Prometheus metrics; registered in the gateway's and the trainer's registries alike."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200)


class QaMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.score = Gauge(
            "twinloop_qa_score",
            "Held-out score per category of the last QA run, for the candidate (Shadow) and "
            "its baseline (Active).",
            ["category", "role"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.overall = Gauge(
            "twinloop_qa_overall_score",
            "Mean held-out category score of the last QA run, candidate and baseline.",
            ["role"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.hallucination_rate = Gauge(
            "twinloop_qa_hallucination_rate",
            "Share of held-out answers judged hallucinations in the last QA run.",
            ["role"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.runs = Counter(
            "twinloop_qa_runs",
            "QA dry runs on Shadow, by gate outcome (passed, rejected, failed).",
            ["outcome"],
            registry=r,
        )
        self.gate_passed = Gauge(
            "twinloop_qa_gate_passed",
            "1 when the last QA run's gate passed, 0 when it rejected the candidate.",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.run_seconds = Histogram(
            "twinloop_qa_run_seconds",
            "Wall time of a QA dry run, the baseline included when it was not cached.",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.drop_bound = Gauge(
            "twinloop_qa_drop_lower_bound",
            "The gate's paired test per category in the last QA run: the lower confidence "
            "bound on Shadow's drop against Active (above the tolerance: regressed).",
            ["category"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.discordant = Gauge(
            "twinloop_qa_discordant_cases",
            "Held-out cases per category in the last QA run where Shadow and Active disagree: "
            "lost (Active right only) or gained (Shadow right only).",
            ["category", "kind"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.judge_agreement = Gauge(
            "twinloop_qa_judge_agreement",
            "How often the judge agreed with users' thumbs on answers with feedback, per "
            "category (a drifting judge is itself a defect).",
            ["category"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
