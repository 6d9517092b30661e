"""Dashboards query only metric names that exist: ours (gateway and trainer) or vLLM's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from twinloop.metrics import Metrics
from twinloop.training.metrics import TrainerMetrics

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
VLLM_METRICS = {"vllm:num_requests_running", "vllm:num_requests_waiting"}


def _exported_names() -> set[str]:
    names: set[str] = set()
    families = [*Metrics().registry.collect(), *TrainerMetrics().registry.collect()]
    for family in families:
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
    return names


def test_every_dashboard_metric_is_exported() -> None:
    exported = _exported_names()
    # Histograms and counters appear under their sample names once observed.
    exported |= {f"{n}_bucket" for n in exported} | {f"{n}_total" for n in exported}
    used: set[str] = set()
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                used |= set(re.findall(r"\b(twinloop_[a-z_]+|vllm:[a-z_]+)", target["expr"]))
    assert used, "the dashboards query nothing"
    missing = {name for name in used if name not in exported and name not in VLLM_METRICS}
    assert not missing
