"""The trainer process (`twinloop trainer`): runs requested and scheduled cycles, one at a time.

It never runs inside the gateway: training holds both cores for minutes, and the gateway's
event loop must keep answering. It talks to the same database and engines as the gateways:
cycles are requested there (`POST /train`), picked up here, and staged through the release
controller like any operator's change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from rag.embeddings import Embedder
from rag.store import KnowledgeStore, close_chroma, connect_chroma
from twinloop.db.session import create_engine, create_sessionmaker
from twinloop.ingest.service import IngestService
from twinloop.metrics import Metrics
from twinloop.qa.setup import open_qa
from twinloop.registry.service import AdapterRegistry
from twinloop.releases.service import ReleaseController
from twinloop.runtime import Knowledge, engine_clients, load_embedder
from twinloop.settings import Settings
from twinloop.training.cycles import CycleInProgressError, TrainingCycles
from twinloop.training.metrics import TrainerMetrics
from twinloop.training.protocols import AdapterTrainer, ProgressCallback
from twinloop.training.runner import CycleRunner

log = logging.getLogger(__name__)
PROGRESS_LOG_EVERY = 10


@dataclass(frozen=True)
class Trainer:
    settings: Settings
    cycles: TrainingCycles
    runner: CycleRunner
    metrics: TrainerMetrics


@asynccontextmanager
async def open_trainer(
    settings: Settings,
    *,
    trainer: AdapterTrainer | None = None,
    engine_transport: httpx.AsyncBaseTransport | None = None,
    knowledge: Knowledge | None = None,
) -> AsyncIterator[Trainer]:
    """Database, engine clients, Chroma, QA and the cycle runner.

    `trainer` replaces PEFT and `knowledge` the Chroma index in unit tests (where no
    embedding model is loaded, so the judge works without similarity).
    """
    if trainer is None:
        from twinloop.training.peft_trainer import PeftAdapterTrainer

        trainer = PeftAdapterTrainer(settings)
    qa_on = settings.trainer.qa
    chroma = None
    embedder: Embedder | None = None
    if qa_on and knowledge is None:
        embedder = await asyncio.to_thread(load_embedder, settings)
        chroma = await connect_chroma(settings.rag)
        knowledge = KnowledgeStore(client=chroma, embedder=embedder)
    db = create_engine(settings.sqlalchemy_url)
    sessionmaker = create_sessionmaker(db)
    http, engines = engine_clients(settings, engine_transport)
    stack = contextlib.AsyncExitStack()
    try:
        releases = ReleaseController(
            sessionmaker=sessionmaker,
            engines=engines,
            metrics=Metrics(),  # release metrics are the gateways' to export
            base_model_name=settings.models.served_name,
        )
        await releases.load()
        metrics = TrainerMetrics()
        cycles = TrainingCycles(sessionmaker=sessionmaker)
        qa = facts = None
        if qa_on and knowledge is not None:
            qa = await stack.enter_async_context(
                open_qa(
                    settings,
                    engines=engines,
                    releases=releases,
                    sessionmaker=sessionmaker,
                    knowledge=knowledge,
                    embed=embedder.embed if embedder is not None else None,
                    metrics=metrics.qa,
                )
            )
            facts = IngestService.from_settings(
                settings,
                sessionmaker=sessionmaker,
                index=knowledge,
                releases=releases,
                metrics=Metrics(),  # ingestion metrics are the gateways' to export
            )
        runner = CycleRunner(
            sessionmaker=sessionmaker,
            cycles=cycles,
            trainer=trainer,
            registry=AdapterRegistry.from_settings(settings),
            releases=releases,
            metrics=metrics,
            domains=settings.domains,
            work_dir=settings.training_dir / "runs",
            domain_replay_ratio=settings.trainer.domain_replay_ratio,
            max_attempts=settings.trainer.max_attempts,
            qa=qa,
            facts=facts,
            max_rounds=settings.qa.max_rounds,
            reinforcement_phrasings=settings.qa.reinforcement_phrasings,
            weak_spot_factor=settings.trainer.weak_spot_factor,
            max_rejections=settings.trainer.max_rejections,
        )
        yield Trainer(settings=settings, cycles=cycles, runner=runner, metrics=metrics)
    finally:
        await stack.aclose()
        if chroma is not None:
            await close_chroma(chroma)
        await http.aclose()
        await db.dispose()


def log_progress(domain: str, step: int, total: int) -> None:
    """The trainer's log shows where a long training stands."""
    if step == 1 or step == total or step % PROGRESS_LOG_EVERY == 0:
        log.info("training %s: step %d of %d", domain, step, total)


async def serve(
    trainer: Trainer, stop: asyncio.Event, on_progress: ProgressCallback | None = log_progress
) -> None:
    """Resume what a dead trainer left, then run requested and scheduled cycles until `stop`."""
    cfg = trainer.settings.trainer
    await trainer.runner.resume_interrupted(on_progress)
    await trainer.runner.warm_replay()
    last_schedule = time.monotonic()
    while not stop.is_set():
        queued = await trainer.cycles.next_queued()
        if queued is not None and await trainer.cycles.claim(queued):
            log.info("running requested training cycle %s", queued)
            await trainer.runner.run(queued, on_progress)
            continue
        if cfg.schedule and time.monotonic() - last_schedule >= cfg.interval_s:
            last_schedule = time.monotonic()
            await _scheduled_cycle(trainer, on_progress)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=cfg.poll_s)


async def _scheduled_cycle(trainer: Trainer, on_progress: ProgressCallback | None) -> None:
    pending = await trainer.cycles.pending_items()
    if pending < trainer.settings.trainer.min_new_items:
        return
    try:
        cycle = await trainer.cycles.request(trigger="schedule", actor="schedule", claim=True)
    except CycleInProgressError:
        return
    log.info("scheduled training cycle %s for %d new items", cycle.id, pending)
    await trainer.runner.run(cycle.id, on_progress)
