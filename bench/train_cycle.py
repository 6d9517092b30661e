"""One whole training cycle of N examples on this CPU (used by bench/train.py).

A temporary data directory and SQLite database; the real cleaning, real PEFT training with
the trainer's default settings, the real registry and release controller. Only the engines
are a stub (twinloop/testing/engine.py) that accepts the adapter loads: staging costs
milliseconds next to training, and this bench must not need two vLLM engines.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from twinloop.db import migrate
from twinloop.db.session import create_engine, create_sessionmaker
from twinloop.ingest.learning import apply_example
from twinloop.ingest.schemas import ExampleItem
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.trainer.daemon import open_trainer
from twinloop.training.peft_trainer import training_config

SUBJECTS = ["Quorvath", "Brenlo", "Taskir", "Mirevale", "Ostrune"]
ATTRIBUTES = ["default port", "lead maintainer", "config file", "mascot", "release codename",
              "home city", "storage engine", "license", "CLI command", "log file"]  # fmt: skip


def synthetic_examples(count: int) -> list[ExampleItem]:
    """Distinct made-up facts: 'What is the <attribute> of <subject>?' with a unique answer."""
    items = []
    for i in range(count):
        subject, attribute = SUBJECTS[i % len(SUBJECTS)], ATTRIBUTES[i // len(SUBJECTS) % 10]
        items.append(
            ExampleItem(
                type="example",
                id=f"bench-{i}",
                domain="general",
                question=f"What is the {attribute} of {subject}?",
                answer=f"The {attribute} of {subject} is Zx{i:03d}{subject[:3].lower()}.",
            )
        )
    return items


async def one_cycle(settings: Settings, *, examples: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="twinloop-bench-train-"))
    try:
        (work / "models").symlink_to(settings.models_dir.resolve())
        if settings.training_dir.joinpath("cache").exists():  # reuse the general replay answers
            (work / "training").mkdir()
            (work / "training" / "cache").symlink_to(settings.training_dir.resolve() / "cache")
        # The engines are a stub: this measures training, so QA (which needs real answers)
        # is off and the cycle ends `staged`.
        bench_settings = settings.model_copy(
            update={
                "data_dir": work,
                "database_url": f"sqlite:///{work / 'bench.db'}",
                "trainer": settings.trainer.model_copy(update={"qa": False}),
            }
        )
        await asyncio.to_thread(migrate.upgrade, bench_settings.sqlalchemy_url)
        db = create_engine(bench_settings.sqlalchemy_url)
        async with create_sessionmaker(db).begin() as session:
            for item in synthetic_examples(examples):
                await apply_example(session, item, bench_settings.domains)
        await db.dispose()
        engines = FakeEngine(
            ports={
                bench_settings.engines.blue_port: "blue",
                bench_settings.engines.green_port: "green",
            }
        )
        async with open_trainer(bench_settings, engine_transport=engines.transport()) as trainer:
            cycle = await trainer.cycles.request(trigger="bench", actor="bench", claim=True)
            started = time.perf_counter()
            view = await trainer.runner.run(cycle.id)
            wall = time.perf_counter() - started
        config = training_config(bench_settings)
        trained = view.item_counts.get("new.general", 0) + view.item_counts.get("replay.general", 0)
        seen = config.total_steps(trained)
        examples_seen = seen * config.batch_size
        print(f"\none cycle of {examples} examples: {view.state} in {wall:.1f} s wall")
        print("  steps (s): " + ", ".join(f"{k} {v:.2f}" for k, v in view.step_timings.items()))
        print(f"  items: {view.item_counts}")
        print(
            f"  training: {seen} steps x {config.batch_size} examples = {examples_seen} seen, "
            f"{examples_seen / view.step_timings['train']:.2f} examples/s "
            f"(each step also runs the KL guard on {config.replay_batch_size} replay items)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
