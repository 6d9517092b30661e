"""A miner on the test's own SQLite database, with an answer log to write into."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from twinloop.cleaning.config import CleaningConfig
from twinloop.db.session import SessionMaker
from twinloop.mining.metrics import MiningMetrics
from twinloop.mining.service import MiningService, question_similarity
from twinloop.settings import MiningSettings
from twinloop.testing.answer_log import AnswerLog

MakeMiner = Callable[..., MiningService]


@pytest.fixture
def answer_log(sessionmaker: SessionMaker) -> AnswerLog:
    return AnswerLog(sessionmaker)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def make_miner(sessionmaker: SessionMaker, registry: CollectorRegistry) -> MakeMiner:
    """`make_miner(max_per_source=2, embed=...)`: a miner with these mining settings."""
    metrics = MiningMetrics(registry)

    def make(*, embed: Any = None, **overrides: Any) -> MiningService:
        settings = MiningSettings(**overrides)
        return MiningService(
            sessionmaker=sessionmaker,
            settings=settings,
            cleaning=CleaningConfig(),
            metrics=metrics,
            similarity=question_similarity(settings, embed),
        )

    return make
