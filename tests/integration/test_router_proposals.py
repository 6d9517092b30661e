"""Rule proposals scored with the real embedding model on the shipped labelled set."""

from __future__ import annotations

import json
from functools import partial

import pytest

from rag.embeddings import Embedder
from twinloop.db.session import create_engine, create_sessionmaker
from twinloop.routing.evaluation import default_testset
from twinloop.routing.router import DomainRouter
from twinloop.routing.rules import RouterRules, default_rules
from twinloop.routing.service import RoutingService, RulesRejectedError
from twinloop.runtime import load_embedder
from twinloop.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(Settings())


def _router(embedder: Embedder, rules: RouterRules) -> DomainRouter:
    return DomainRouter(embedder=embedder, rules=rules)


async def test_worse_rules_are_refused_and_no_worse_rules_get_a_version(
    settings: Settings, embedder: Embedder
) -> None:
    db = create_engine(settings.sqlalchemy_url)
    service = RoutingService(
        sessionmaker=create_sessionmaker(db),
        build_router=partial(_router, embedder),
        testset=default_testset(),
        domains=settings.domains,
    )
    try:
        await service.ensure_default()
        rules = json.loads(default_rules().to_json())
        # Law loses its exemplars: legal questions fall through to other domains.
        worse = json.loads(json.dumps(rules))
        worse["domains"]["law"]["exemplars"] = ["Tell me about the weather on Mars."]
        with pytest.raises(RulesRejectedError, match="refused"):
            await service.propose(worse, baseline_version=1, actor="t", reason="worse")

        better = json.loads(json.dumps(rules))
        better["domains"]["law"]["exemplars"].append("Is it legal to record a phone call?")
        proposal = await service.propose(better, baseline_version=1, actor="t", reason="more law")

        assert proposal.version == 2
        assert proposal.accuracy >= proposal.baseline_accuracy >= 0.9
        routed = (await service.router_for(2)).route("Is it legal to record a phone call?")
        assert routed.domain == "law"
    finally:
        await db.dispose()
