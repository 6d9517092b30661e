"""The gateway's metrics look labelled children up in a dict of their own first."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from twinloop.metrics import Metrics


def test_the_same_labels_give_the_same_child_and_every_count_is_exported() -> None:
    metrics = Metrics()

    first = metrics.requests.labels("chat", "active", "general", "none", "ok")
    again = metrics.requests.labels("chat", "active", "general", "none", "ok")
    first.inc()
    again.inc()
    metrics.requests.labels("chat", "active", "general", "none", "EngineTimeoutError").inc()

    assert first is again
    rendered = generate_latest(metrics.registry).decode()
    assert 'outcome="ok",route="chat",slot="active"} 2.0' in rendered
    assert 'outcome="EngineTimeoutError",route="chat",slot="active"} 1.0' in rendered


def test_values_that_are_equal_but_print_differently_stay_apart() -> None:
    metrics = Metrics()

    metrics.client_disconnects.labels(True).inc()
    metrics.client_disconnects.labels(1).inc()

    rendered = generate_latest(metrics.registry).decode()
    assert 'route="True"} 1.0' in rendered and 'route="1"} 1.0' in rendered


def test_a_wrong_label_count_is_still_refused() -> None:
    metrics = Metrics()
    metrics.requests.labels("chat", "active", "general", "none", "ok")

    with pytest.raises(ValueError, match="Incorrect label count"):
        metrics.requests.labels("chat", "active")
