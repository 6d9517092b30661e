"""kill -9 of the trainer in each state of its cycle (issue 14).

One cycle, one trainer process after another, each killed with SIGKILL in the next state:
`collecting` and `cleaning` (`twinloop.testing.paused_trainer` stops the process there),
`training` (real PEFT on the prepared base model, killed once a step is done), `registered`
(staging waits on the shadow engine's adapter load, held by the stub engines) and `qa`
(the QA dry run waits on the engines' answers, held too); a last trainer finishes it.
After every kill:

* the cycle is still in the state it was killed in, and the next trainer resumes it from
  there (one more attempt each time);
* no item is lost: every example that was pending is pending still (nothing of collecting
  or cleaning was committed) or is one of the cycle's new items;
* every registered adapter is whole on disk (its files hash to its record), none is
  registered before the cycle reached `registered`, and never twice;
* Shadow serves the snapshot it served before the cycle, or the cycle's.

The trainers killed before staging run with QA off (it is first asked at staging), so they
do not load the embedding model for it; the others are `twinloop trainer` as deployed. The
engines are the stub engines (`twinloop.testing.stub_engine`), not vLLM: what is tested
is what the trainer's process leaves behind, and the engines stay up through every kill as
real ones would. They answer Shadow and Active alike, so the QA gate, which holds Shadow to
Active where Active misses a floor, passes the cycle (QA on real answers is
tests/integration/test_qa_gate.py's), and it ends `awaiting_canary` with its items kept.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapters.files import verify_adapter
from rag.server import ChromaServer
from tests.integration.crash_support import (
    ADMIN_TOKEN,
    Service,
    Stores,
    chroma_server,
    crash_settings,
    gateway_service,
    healthy,
    process_env,
    running,
    stub_engine_service,
    twinloop_command,
    wait_for,
)
from twinloop.db.models import AdapterVersion, TrainingExample, TrainingRun, TrainingRunItem
from twinloop.settings import Settings
from twinloop.states import FINISHED, CycleState, ItemRole, ItemStatus
from twinloop.testing.ports import free_port

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HOLD_LOAD, HOLD_CHAT = "/v1/load_lora_adapter", "/v1/chat/completions"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return crash_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'twinloop.db'}")


@pytest.fixture
def chroma(settings: Settings) -> Iterator[ChromaServer]:
    with chroma_server(settings) as server:
        yield server


def trainer_service(
    settings: Settings,
    base_model: Path,
    log: Path,
    *,
    steps: int,
    qa: bool,
    pause: str | None = None,
) -> Service:
    """A trainer process: `twinloop trainer`, or the paused one stopping at `pause`."""
    env = process_env(
        settings,
        TWINLOOP_MODELS__BASE_MODEL=str(base_model),
        TWINLOOP_TRAINER__SCHEDULE="false",
        TWINLOOP_TRAINER__POLL_S="0.2",
        TWINLOOP_TRAINER__METRICS_PORT=str(free_port()),
        # Every kill is one more start of the cycle; it must not be abandoned for it.
        TWINLOOP_TRAINER__MAX_ATTEMPTS="10",
        # One example is one step a pass: `steps` passes, and no budget cutting them short.
        TWINLOOP_TRAINER__EPOCHS=str(steps),
        TWINLOOP_TRAINER__STEP_BUDGET=str(steps),
        # No forgetting guard: it would make the base model answer the replay set first.
        TWINLOOP_TRAINER__KL_WEIGHT="0",
        TWINLOOP_QA__MAX_ROUNDS="1",
    )
    if pause is None:
        command = twinloop_command("trainer")
    else:
        marker = log.with_suffix(f".{pause}")
        command = [sys.executable, "-m", "twinloop.testing.paused_trainer", pause, str(marker)]
    if not qa:
        # QA is asked only from staging on: a trainer killed before it need not load the
        # embedding model and open Chroma for it (seconds of CPU per start).
        env["TWINLOOP_TRAINER__QA"] = "false"
    return Service(name=f"trainer ({pause or 'plain'})", command=command, env=env, log=log)


class Engines:
    """The stub engines' control routes."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def hold(self, path: str) -> None:
        httpx.post(f"{self.url}/stub/hold", json={"path": path}, timeout=10).raise_for_status()

    def release(self, path: str) -> None:
        httpx.post(f"{self.url}/stub/release", json={"path": path}, timeout=10).raise_for_status()

    def requests(self, path: str) -> int:
        seen = httpx.get(f"{self.url}/stub/requests", timeout=10).json()
        return sum(1 for _, p in seen if p == path)


def ingest_items(url: str) -> None:
    """Examples in law and med, and a correction of a law answer (a fact document too)."""
    answer = httpx.post(
        f"{url}/answer",
        json={"question": "Who keeps the weir of Quillmere?", "domain": "law", "max_tokens": 8},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = [
        {"type": "example", "id": f"ex-{domain}-{i}", "domain": domain,
         "question": f"What does the {noun} of Vexland charge?",
         "answer": f"The {noun} of Vexland charges {7 * i + 3} guilders."}
        for domain, noun in (("law", "weir"), ("med", "kiln")) for i in (1, 2)
    ]  # fmt: skip
    items.append({
        "type": "feedback", "id": "fb-weir", "answer_id": answer.json()["answer_id"],
        "rating": "down", "correction": "The weir of Quillmere is kept by Ilsa Brenmark.",
    })  # fmt: skip
    ingested = httpx.post(f"{url}/ingest", json={"items": items}, headers=ADMIN, timeout=120)
    assert ingested.status_code == 202, ingested.text


def cycle(stores: Stores, cycle_id: str) -> TrainingRun:
    run = stores.read(lambda s: s.get(TrainingRun, cycle_id))
    assert run is not None
    return run


def shadow_snapshot(stores: Stores) -> str:
    release = stores.latest_release()
    shadow = (
        release.green_snapshot_id if release.active_slot == "blue" else release.blue_snapshot_id
    )
    return str(shadow)


def check_items(stores: Stores, cycle_id: str, pending: set[str], *, collected: bool) -> None:
    """None of the examples that were pending is lost: still pending before the cycle's
    cleaning committed, each one of its new items after."""

    def read(session: Any) -> tuple[dict[str, str], set[str]]:
        examples = session.scalars(select(TrainingExample).where(TrainingExample.id.in_(pending)))
        items = session.scalars(
            select(TrainingRunItem.example_id).where(
                TrainingRunItem.run_id == cycle_id, TrainingRunItem.role == ItemRole.NEW
            )
        )
        return {e.id: e.status for e in examples}, set(items)

    statuses, new_items = stores.read(read)
    assert set(statuses) == pending, "examples went missing"
    if not collected:
        assert set(statuses.values()) == {ItemStatus.PENDING}, statuses
        assert not new_items, new_items
    else:
        assert set(statuses.values()) == {ItemStatus.ACCEPTED}, statuses
        assert new_items == pending, (new_items, pending)


def check_adapters(stores: Stores, cycle_id: str, *, registered: bool) -> None:
    """Every registered adapter is whole; the cycle's are there once its state says so."""
    adapters = stores.read(lambda s: list(s.scalars(select(AdapterVersion))))
    for adapter in adapters:
        verify_adapter(Path(adapter.path), adapter.sha256)
    mine = sorted(a.domain for a in adapters if a.training_run_id == cycle_id)
    assert mine == (["law", "med"] if registered else []), mine


def test_a_trainer_killed_in_each_state_resumes_its_cycle_and_loses_nothing(
    settings: Settings, chroma: ChromaServer, prepared_model: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    engines = stub_engine_service(tmp_path, settings.engines.blue_port, settings.engines.green_port)
    gateway = gateway_service(settings, port, tmp_path / "gateway.log")
    control = Engines(settings.engines.blue_port)
    stores = Stores(
        database_url=settings.sqlalchemy_url,
        chroma_port=settings.rag.chroma_port,
        domains=settings.domains,
        chunk_chars=settings.rag.chunk_chars,
        chunk_overlap=settings.rag.chunk_overlap,
    )
    log = tmp_path / "trainer.log"
    trainers: list[Service] = []

    timings: list[str] = []
    started = time.monotonic()

    def start(*, steps: int = 1, qa: bool = True, pause: str | None = None) -> Service:
        nonlocal started
        trainer = trainer_service(settings, prepared_model, log, steps=steps, qa=qa, pause=pause)
        trainers.append(trainer)
        started = time.monotonic()
        trainer.start()
        return trainer

    def state_is(state: CycleState) -> bool:
        return cycle(stores, cycle_id).state == state

    def killed_in(trainer: Service, state: CycleState, *, attempts: int) -> TrainingRun:
        trainer.kill9()
        timings.append(f"killed in {state} {time.monotonic() - started:.1f} s after its start")
        run = cycle(stores, cycle_id)
        assert (run.state, run.attempts) == (state, attempts), (run.state, run.attempts)
        return run

    with running(engines, gateway), closing(stores):
        engines.start()
        gateway.start()
        wait_for("the gateway was not healthy", lambda: healthy(url), 120, gateway, engines)
        ingest_items(url)
        pending = set(
            stores.read(
                lambda s: s.scalars(
                    select(TrainingExample.id).where(TrainingExample.status == ItemStatus.PENDING)
                ).all()
            )
        )
        assert len(pending) == 5, pending
        before = shadow_snapshot(stores)
        requested = httpx.post(f"{url}/train", headers=ADMIN, timeout=30)
        assert requested.status_code == 202, requested.text
        cycle_id = requested.json()["cycle_id"]
        try:
            # collecting: claimed, no step run yet; cleaning: the step's transaction open.
            for attempt, state in enumerate((CycleState.COLLECTING, CycleState.CLEANING), 1):
                trainer = start(qa=False, pause=state)
                marker = log.with_suffix(f".{state}")
                wait_for(f"the trainer did not reach {state}", marker.exists, 300, trainer)
                killed_in(trainer, state, attempts=attempt)
                check_items(stores, cycle_id, pending, collected=False)
                check_adapters(stores, cycle_id, registered=False)
                assert shadow_snapshot(stores) == before

            # training: real PEFT steps under way (far more than it will be let run).
            trainer = start(steps=1000, qa=False)
            wait_for(
                "the trainer was not training",
                lambda: (
                    state_is(CycleState.TRAINING)
                    and cycle(stores, cycle_id).progress.get("step", 0) >= 1
                ),
                300,
                trainer,
            )
            killed_in(trainer, CycleState.TRAINING, attempts=3)
            check_items(stores, cycle_id, pending, collected=True)
            check_adapters(stores, cycle_id, registered=False)
            assert shadow_snapshot(stores) == before

            # registered: staging waits on the shadow engine loading the new adapters.
            control.hold(HOLD_LOAD)
            trainer = start()
            wait_for(
                "the trainer did not stage",
                lambda: state_is(CycleState.REGISTERED) and control.requests(HOLD_LOAD),
                300,
                trainer,
            )
            run = killed_in(trainer, CycleState.REGISTERED, attempts=4)
            check_items(stores, cycle_id, pending, collected=True)
            check_adapters(stores, cycle_id, registered=True)
            assert run.snapshot_id is not None
            assert shadow_snapshot(stores) == before  # the release was not written
            control.release(HOLD_LOAD)

            # qa: the dry run waits on the engines' answers.
            control.hold(HOLD_CHAT)
            asked = control.requests(HOLD_CHAT)
            trainer = start()
            wait_for(
                "the trainer did not run QA",
                lambda: state_is(CycleState.QA) and control.requests(HOLD_CHAT) > asked,
                300,
                trainer,
            )
            run = killed_in(trainer, CycleState.QA, attempts=5)
            check_items(stores, cycle_id, pending, collected=True)
            check_adapters(stores, cycle_id, registered=True)
            assert shadow_snapshot(stores) == run.snapshot_id
            control.release(HOLD_CHAT)

            # The last trainer ends the cycle.
            trainer = start()
            wait_for(
                "the cycle did not end",
                lambda: cycle(stores, cycle_id).state in FINISHED,
                300,
                trainer,
            )
            run = cycle(stores, cycle_id)
            assert (run.state, run.attempts) == (CycleState.AWAITING_CANARY, 6), run.error
            assert [r["passed"] for r in run.qa_rounds] == [True], run.qa_rounds
            check_items(stores, cycle_id, pending, collected=True)
            check_adapters(stores, cycle_id, registered=True)
            assert shadow_snapshot(stores) == run.snapshot_id
            timings.append(f"ended {run.state} {time.monotonic() - started:.1f} s after its start")
        finally:
            for trainer in trainers:
                trainer.stop()
    print("\n".join(timings))
