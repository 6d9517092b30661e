"""Steps 3-5: mix the new items with replay, train the adapters, register them.

A domain whose new items include preference pairs (`training/preference.py`) has its
adapter trained on them with DPO after SFT, in the same pass; the stage's report is stored
with the cycle (`preference`, per domain) and the adapter's metrics (its lineage).

The cycle's items are recorded, so a cycle interrupted while training trains again (same
items, same seed, same weights) and registers its adapters with the move to `registered`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.cleaning.redaction import redact_pii
from twinloop.db.base import utcnow
from twinloop.db.models import TrainingRun
from twinloop.registry.service import StoredAdapter
from twinloop.states import CycleState, ItemRole
from twinloop.training import repository, starts
from twinloop.training.overrides import TrainingOverrides
from twinloop.training.preference import DomainPairs, split_pairs
from twinloop.training.progress import progress_written
from twinloop.training.protocols import ProgressCallback, TrainedAdapter, TrainRequest
from twinloop.training.replay import ReplayItem, replay_budget
from twinloop.training.starts import Start
from twinloop.training.steps.context import CycleContext, Ending, of_round
from twinloop.training.steps.weak_spots import oversample_weak_spots

log = structlog.get_logger(__name__)

ByDomain = dict[str, list[ReplayItem]]
GROW_FROM_DIRNAME = ".grow-from"  # verified copies of the adapters cycles grow from


@dataclass(frozen=True)
class TrainedRun:
    """What one training pass of a cycle used and made, for registering it."""

    new: ByDomain
    replay: ByDomain
    trained: dict[str, TrainedAdapter]
    starts: dict[str, Start]
    guard_size: int


async def train_and_register(
    ctx: CycleContext, cycle_id: str, on_progress: ProgressCallback | None
) -> Ending | None:
    started = time.perf_counter()
    async with ctx.sessionmaker.begin() as session:
        by_domain, replay = await _new_and_replay(ctx, session, cycle_id)
        rejected = await repository.last_rejected_before(session, cycle_id)
        overrides = _overrides(await repository.get_run(session, cycle_id))
        pairs = await _pairs(ctx, session, cycle_id, overrides)
    if not by_domain:
        return Ending(CycleState.SKIPPED, "every item was deleted")
    guard_started = time.perf_counter()
    guard: list[ReplayItem] = []
    extra: list[str] = []
    # Without the guard (an admin's kl_weight 0) the base model's replay answers are unused.
    if overrides is None or overrides.kl_weight != 0:
        taught = [i.question for items in by_domain.values() for i in items]
        extra = await ctx.qa.replay_questions(exclude=taught) if ctx.qa is not None else []
        guard = await asyncio.to_thread(ctx.trainer.general_replay, extra)
    sft, guard, targets = await oversample_weak_spots(ctx, rejected, by_domain, guard, extra)
    if targets:
        await _record_targets(ctx, cycle_id, targets)
    replay_seconds = time.perf_counter() - guard_started
    chosen = await _starts(ctx, cycle_id, sorted(by_domain), overrides)
    requests = []
    for domain in sorted(by_domain):
        out_dir = ctx.work_dir / cycle_id / domain
        shutil.rmtree(out_dir, ignore_errors=True)
        examples = [*sft[domain], *replay[domain]]
        found = pairs.get(domain)
        requests.append(
            TrainRequest(
                domain=domain,
                examples=examples,
                out_dir=out_dir,
                pairs=found.trained if found else (),
                heldout_pairs=found.heldout if found else (),
                grow_from=chosen[domain].adapter,
            )
        )
    if overrides is not None:
        for setting in overrides.set_fields():
            ctx.metrics.overridden.labels(setting).inc()
    async with progress_written(ctx.sessionmaker, cycle_id, on_progress) as on_step:
        trained = await asyncio.to_thread(ctx.trainer.train, requests, guard, on_step, overrides)
    for request in requests:
        _observe_training(ctx, request.domain, len(request.examples), trained[request.domain])
        start = chosen[request.domain]
        ctx.metrics.starts.labels(start.kind.value, start.why.value).inc()
    train_seconds = time.perf_counter() - started - replay_seconds
    ctx.metrics.step_seconds.labels("replay").observe(replay_seconds)
    ctx.metrics.step_seconds.labels("train").observe(train_seconds)
    timings = {"replay": replay_seconds, "train": train_seconds}
    trained_run = TrainedRun(by_domain, replay, trained, chosen, len(guard))
    return await _register(ctx, cycle_id, trained_run, timings)


async def _starts(
    ctx: CycleContext, cycle_id: str, domains: list[str], overrides: TrainingOverrides | None
) -> dict[str, Start]:
    """Where each domain's adapter starts: the base, or Active's adapter (`starts`)."""
    continual = ctx.continual
    if overrides is not None and overrides.continual is not None:
        continual = overrides.continual
    await ctx.releases.refresh()  # grow from what Active serves now
    active = ctx.releases.state.serving(ctx.releases.state.active_slot)
    async with ctx.sessionmaker.begin() as session:
        found = await starts.candidates(session, active, domains, continual=continual)
    cache = ctx.work_dir / GROW_FROM_DIRNAME
    chosen = await asyncio.to_thread(starts.fetched, found, ctx.registry.store, cache, ctx.trainer)
    for domain, start in chosen.items():
        log.info("training_cycle_start", cycle_id=cycle_id, domain=domain, **start.report())
    return chosen


def _overrides(run: TrainingRun) -> TrainingOverrides | None:
    """The admin's overrides recorded on the cycle (validated again: the row is input too)."""
    return TrainingOverrides.model_validate(run.overrides) if run.overrides else None


async def _pairs(
    ctx: CycleContext,
    session: AsyncSession,
    cycle_id: str,
    overrides: TrainingOverrides | None,
) -> dict[str, DomainPairs]:
    """Each domain's pairs to train on with DPO and to hold out; none when preference
    training is off, and none for a domain with no pair left to train on."""
    preference = ctx.preference
    if overrides is not None and overrides.preference is not None:
        preference = overrides.preference
    if not preference:
        return {}
    items = await repository.live_pairs(session, cycle_id)
    # The chosen side is the item as cleaning left it; the rejected side never went through
    # cleaning, and is stored raw where raw PII is kept: the model is never shown it raw.
    regions = ctx.cleaning.phone_regions
    items = [
        dataclasses.replace(i, rejected=redact_pii(i.rejected, phone_regions=regions)[0])
        for i in items
    ]
    found = split_pairs(items, ctx.preference_heldout_fraction)
    return {domain: pairs for domain, pairs in found.items() if pairs.trained}


async def _new_and_replay(
    ctx: CycleContext, session: AsyncSession, cycle_id: str
) -> tuple[ByDomain, ByDomain]:
    """The cycle's live new items by domain, and each domain's replay of earlier examples."""
    new_items = await repository.live_items(session, cycle_id, ItemRole.NEW)
    by_domain: ByDomain = defaultdict(list)
    for item in new_items:
        by_domain[item.domain].append(
            ReplayItem(item.question, item.answer, example_id=item.example_id)
        )
    this_cycle = {item.example_id for item in new_items}
    replay = {
        domain: await repository.domain_replay(
            session,
            domain,
            exclude=this_cycle,
            limit=replay_budget(len(items), ctx.replay_ratio),
        )
        for domain, items in by_domain.items()
    }
    return by_domain, replay


async def _record_targets(ctx: CycleContext, cycle_id: str, targets: dict[str, Any]) -> None:
    log.info("training_cycle_targets_weak_spots", cycle_id=cycle_id, **targets)
    async with ctx.sessionmaker.begin() as session:
        run = await repository.get_run(session, cycle_id)
        run.targets = targets
    ctx.metrics.weak_spot_repeats.labels("sft").inc(targets["sft_repeated"])
    ctx.metrics.weak_spot_repeats.labels("guard").inc(targets["guard_repeated"])


def _observe_training(
    ctx: CycleContext, domain: str, examples: int, adapter: TrainedAdapter
) -> None:
    ctx.metrics.loss.labels(domain).set(adapter.final_loss)
    if adapter.seconds > 0:
        rate = adapter.metrics.get("examples_seen", examples) / adapter.seconds
        ctx.metrics.examples_per_second.set(rate)
    if adapter.preference is not None:
        ctx.metrics.observe_preference(domain, adapter.preference)


async def _register(
    ctx: CycleContext, cycle_id: str, run_result: TrainedRun, timings: dict[str, float]
) -> Ending | None:
    """Register the adapters with their lineage and move to `registered`; abandon the cycle
    instead when an item it learned from was deleted meanwhile, or an adapter it grew from
    was tainted meanwhile."""
    started = time.perf_counter()
    await ctx.releases.refresh()  # the parent adapter is what Active serves now
    # Copied into the artifact store before the transaction opens (`AdapterRegistry.put_files`
    # says why): with three domains, an upload each under the write lock of the first
    # adapter's row made the gateway's writers wait out SQLite's busy timeout.
    stored = {
        domain: await ctx.registry.put_files(adapter.path)
        for domain, adapter in sorted(run_result.trained.items())
    }
    new, replay = run_result.new, run_result.replay
    used = [i.example_id for items in (*new.values(), *replay.values()) for i in items]
    async with ctx.sessionmaker.begin() as session:
        run = await repository.get_run(session, cycle_id)
        deleted = await repository.deleted_among(session, [i for i in used if i])
        if deleted:
            return Ending(
                CycleState.ABANDONED,
                f"item(s) {', '.join(sorted(deleted))} were deleted while training",
            )
        grown_from = [s.adapter_id for s in run_result.starts.values() if s.adapter is not None]
        tainted = await repository.tainted_among(session, [i for i in grown_from if i])
        if tainted:
            return Ending(
                CycleState.ABANDONED,
                f"adapter(s) {', '.join(sorted(tainted))} it grew from were tainted while training",
            )
        await _register_adapters(ctx, session, run, run_result, stored)
        counts = Counter(run.item_counts)
        for domain in new:
            counts[f"new.{domain}"] = len(new[domain])
            counts[f"replay.{domain}"] = len(replay[domain])
        counts["general_replay"] = run_result.guard_size
        run.item_counts = dict(counts)
        reports = {
            d: a.preference for d, a in run_result.trained.items() if a.preference is not None
        }
        if reports:  # a correction round's retraining replaces its domain's report
            run.preference = {**run.preference, **reports}
        run.starts = {domain: s.report() for domain, s in sorted(run_result.starts.items())}
        run.step_timings = {
            **run.step_timings,
            **of_round({**timings, "register": time.perf_counter() - started}, run.qa_rounds),
        }
        run.state, run.updated_at, run.progress = CycleState.REGISTERED, utcnow(), {}
    ctx.metrics.step_seconds.labels("register").observe(time.perf_counter() - started)
    return None


async def _register_adapters(
    ctx: CycleContext,
    session: AsyncSession,
    run: TrainingRun,
    result: TrainedRun,
    stored: dict[str, StoredAdapter],
) -> None:
    """Each trained adapter (`stored` already) recorded (its parent: what Active serves; what
    it grew from) and linked to the items it learned from."""
    active = ctx.releases.state.serving(ctx.releases.state.active_slot)
    for domain, adapter in sorted(result.trained.items()):
        parent = active.adapters.get(domain)
        start = result.starts[domain]
        version = await ctx.registry.record(
            session,
            stored[domain],
            domain=domain,
            parent_id=parent.id if parent else None,
            grown_from_id=start.adapter_id if start.adapter is not None else None,
            training_run_id=run.id,
            metrics={
                **adapter.metrics,
                "new_examples": len(result.new[domain]),
                "replayed_examples": len(result.replay[domain]),
                "general_replay": {"items": result.guard_size},
                **({"preference": adapter.preference} if adapter.preference else {}),
                "start": start.report(),
            },
        )
        run.adapters = {**run.adapters, domain: version.id}
        await repository.link_items(
            session, run.id, domain, result.new[domain], result.replay[domain], version.id
        )
