"""The trainer process (`twinloop trainer`): runs requested and scheduled cycles, one at a time.

It never runs inside the gateway: training holds both cores for minutes, and the gateway's
event loop must keep answering. It talks to the same database and engines as the gateways:
cycles are requested there (`POST /train`), picked up here, and staged through the release
controller like any operator's change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import httpx
import structlog

from twinloop.cleaning.config import CleaningConfig
from twinloop.metrics import RELEASE_CHANGE_FAMILIES, Families, Metrics
from twinloop.mining.service import MiningService, question_similarity
from twinloop.runtime import Knowledge, open_services
from twinloop.settings import Settings
from twinloop.training.cycles import CycleInProgressError, TrainingCycles
from twinloop.training.metrics import TrainerMetrics
from twinloop.training.protocols import AdapterTrainer, ProgressCallback
from twinloop.training.runner import CycleRunner

log = structlog.get_logger(__name__)
PROGRESS_LOG_EVERY = 10


@dataclass(frozen=True)
class Trainer:
    settings: Settings
    cycles: TrainingCycles
    runner: CycleRunner
    metrics: TrainerMetrics
    miner: MiningService


@asynccontextmanager
async def open_trainer(
    settings: Settings,
    *,
    trainer: AdapterTrainer | None = None,
    engine_transport: httpx.AsyncBaseTransport | None = None,
    knowledge: Knowledge | None = None,
) -> AsyncIterator[Trainer]:
    """The shared services (`open_services`; with the knowledge store and QA when
    `trainer.qa` is on) and the cycle runner over them.

    `trainer` replaces PEFT and `knowledge` the Chroma index in unit tests (where no
    embedding model is loaded, so the judge works without similarity).
    """
    if trainer is None:
        from twinloop.training.peft_trainer import PeftAdapterTrainer

        trainer = PeftAdapterTrainer(settings)
    metrics = TrainerMetrics()
    # The services' gateway metrics: only the release changes this trainer's stages cause are
    # its to export; the rest (requests, ingestion, the release in force) are the gateways'.
    services_metrics = Metrics()
    metrics.registry.register(Families(services_metrics.registry, RELEASE_CHANGE_FAMILIES))
    async with open_services(
        settings,
        metrics=services_metrics,
        qa_metrics=metrics.qa,
        engine_transport=engine_transport,
        with_knowledge=settings.trainer.qa,
        knowledge=knowledge,
    ) as services:
        cleaning = CleaningConfig.from_settings(settings)
        miner = MiningService(
            sessionmaker=services.sessionmaker,
            settings=settings.mining,
            cleaning=cleaning,
            metrics=metrics.mining,
            similarity=question_similarity(
                settings.mining,
                services.embedder.embed if services.embedder is not None else None,
            ),
        )
        runner = CycleRunner(
            sessionmaker=services.sessionmaker,
            cycles=services.training,
            trainer=trainer,
            registry=services.registry,
            releases=services.releases,
            metrics=metrics,
            domains=settings.domains,
            work_dir=settings.training_dir / "runs",
            domain_replay_ratio=settings.trainer.domain_replay_ratio,
            max_attempts=settings.trainer.max_attempts,
            cleaning=cleaning,
            qa=services.qa,
            facts=services.ingest,
            max_rounds=settings.qa.max_rounds,
            reinforcement_phrasings=settings.qa.reinforcement_phrasings,
            weak_spot_factor=settings.trainer.weak_spot_factor,
            max_rejections=settings.trainer.max_rejections,
            miner=miner,
            preference=settings.trainer.preference,
            preference_heldout_fraction=settings.trainer.dpo_heldout_fraction,
            continual=settings.trainer.continual,
        )
        yield Trainer(
            settings=settings,
            cycles=services.training,
            runner=runner,
            metrics=metrics,
            miner=miner,
        )


@contextmanager
def serving_metrics(trainer: Trainer) -> Iterator[int]:
    """Serve the trainer's `/metrics` from a thread on `trainer.metrics_host:metrics_port`
    (the port it bound is yielded): the trainer's own families and the release changes it
    causes (`open_trainer`). Stopped, and its socket closed, on exit."""
    from prometheus_client import start_http_server

    cfg = trainer.settings.trainer
    server, thread = start_http_server(
        cfg.metrics_port, addr=cfg.metrics_host, registry=trainer.metrics.registry
    )
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def log_progress(domain: str, step: int, total: int) -> None:
    """The trainer's log shows where a long training stands."""
    if step == 1 or step == total or step % PROGRESS_LOG_EVERY == 0:
        log.info("training_progress", domain=domain, step=step, total=total)


async def serve(
    trainer: Trainer, stop: asyncio.Event, on_progress: ProgressCallback | None = log_progress
) -> None:
    """Resume what a dead trainer left, then run requested and scheduled cycles until `stop`."""
    cfg = trainer.settings.trainer
    await trainer.runner.resume_interrupted(on_progress)
    await trainer.runner.warm_replay()
    last_schedule = last_mined = time.monotonic()
    while not stop.is_set():
        queued = await trainer.cycles.next_queued()
        if queued is not None and await trainer.cycles.claim(queued):
            log.info("training_cycle_requested", cycle_id=queued)
            await trainer.runner.run(queued, on_progress)
            last_mined = time.monotonic()  # the cycle's collect step mined
            continue
        if time.monotonic() - last_mined >= trainer.settings.mining.interval_s:
            last_mined = time.monotonic()
            await _idle_mining(trainer)
        if cfg.schedule and time.monotonic() - last_schedule >= cfg.interval_s:
            last_schedule = time.monotonic()
            await _scheduled_cycle(trainer, on_progress)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=cfg.poll_s)


async def _idle_mining(trainer: Trainer) -> None:
    """A mining pass while no cycle runs: proposals to review, agreed items to count."""
    try:
        await trainer.miner.mine(trigger="schedule")
    except Exception:  # the trainer must keep serving cycles; the next pass tries again
        log.exception("mining_failed")


async def _scheduled_cycle(trainer: Trainer, on_progress: ProgressCallback | None) -> None:
    pending = await trainer.cycles.pending_items()
    if pending < trainer.settings.trainer.min_new_items:
        return
    try:
        cycle = await trainer.cycles.request(trigger="schedule", actor="schedule", claim=True)
    except CycleInProgressError:
        return
    log.info("training_cycle_scheduled", cycle_id=cycle.id, new_items=pending)
    await trainer.runner.run(cycle.id, on_progress)
