"""The default router rules with the real embedding model route the shipped labelled set
(written apart from the exemplars, so this measures generalisation) at least 90% right."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rag.embeddings import Embedder
from twinloop.errors import ModelPreparationError
from twinloop.routing import DomainRouter, default_rules, evaluate
from twinloop.routing.evaluation import default_testset
from twinloop.weights.prepare import resolve_embedding_model

pytestmark = pytest.mark.integration

DOMAINS = ("law", "med", "fin", "general")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(resolve_embedding_model(None))


def test_embedder_returns_unit_float32_rows(embedder: Embedder) -> None:
    vectors = embedder.embed(["Can my landlord keep my deposit?", "What's the tallest mountain?"])
    assert vectors.dtype == np.float32
    assert vectors.shape == (2, embedder.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed([]).shape == (0, embedder.dimension)


def test_embedder_refuses_a_missing_folder() -> None:
    with pytest.raises(ModelPreparationError, match="does not exist"):
        Embedder("/nonexistent/embedding-model")


def test_default_rules_route_the_labelled_set(embedder: Embedder) -> None:
    rules = default_rules()
    labelled = default_testset()

    counts = Counter(item.domain for item in labelled)
    assert len(labelled) >= 80
    assert all(counts[domain] >= 20 for domain in DOMAINS), counts
    exemplars = {e.casefold() for rule in rules.domains.values() for e in rule.exemplars}
    copied = [item.question for item in labelled if item.question.casefold() in exemplars]
    assert not copied, f"test questions copied from the exemplars: {copied}"

    report = evaluate(DomainRouter(embedder=embedder, rules=rules), labelled)
    assert report.accuracy >= 0.90, report.describe()
