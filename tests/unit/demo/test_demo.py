"""`twinloop demo` against a fake gateway: the story's order, what it prints, how it fails."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.unit.demo.fake_gateway import ADMIN, FakeGateway
from twinloop.cli import app
from twinloop.demo.client import DemoError, GatewayClient, GatewayUnreachableError
from twinloop.demo.context import DemoContext
from twinloop.demo.driver import demo_context, run_demo
from twinloop.demo.narrator import Narrator
from twinloop.demo.plan import DemoPlan

PLAN = DemoPlan.fast()


class Clock:
    """Time that moves only when the demo sleeps: no test waits for real."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1.0)


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


def _context(gateway: FakeGateway, out: io.StringIO, token: str = ADMIN) -> Iterator[DemoContext]:
    clock = Clock()
    narrator = Narrator(Console(file=out, width=160, color_system=None))
    with GatewayClient(
        base_url="http://gateway", bearer=token, transport=gateway.transport()
    ) as api:
        yield demo_context(api, PLAN, narrator, sleep=clock.sleep, clock=clock)


def _run(gateway: FakeGateway, out: io.StringIO, token: str = ADMIN) -> DemoContext:
    for ctx in _context(gateway, out, token):
        run_demo(ctx, fast=True)
        return ctx
    raise AssertionError("no context")


def _text(out: io.StringIO) -> str:
    return re.sub(r"\s+", " ", out.getvalue())


def test_the_whole_story_in_order_ends_with_the_summary_and_where_to_look(
    out: io.StringIO,
) -> None:
    gateway = FakeGateway()
    ctx = _run(gateway, out)

    text = _text(out)
    chapters = [int(n) for n in re.findall(r"^(\d)\. ", out.getvalue(), re.M)]
    assert chapters == [1, 2, 3, 4, 5, 6, 7]
    steps = [row.step for row in ctx.rows]
    assert steps == [
        "users ask Active", "corrections + document via /ingest",
        "retrieval on Shadow (paraphrases)", "training cycle (train, stage, QA)",
        "QA: taught facts",
        "QA: general holdout", "QA: gate", "canary (simulated users)",
        "users ask Active again",
        "bad update (over-trained)", "bad update QA: taught facts",
        "bad update QA: general holdout", "bad update QA: gate",
    ]  # fmt: skip
    rows = {row.step: row for row in ctx.rows}
    assert rows["users ask Active"].after == "0/2 right"
    assert rows["retrieval on Shadow (paraphrases)"].before == "Active 0/2"
    assert rows["retrieval on Shadow (paraphrases)"].after == "Shadow 2/2"
    assert rows["canary (simulated users)"].after.startswith("promoted after")
    assert rows["users ask Active again"].after.startswith("2/2 right, paraphrases 4/4")
    assert rows["bad update (over-trained)"].after.startswith("QA rejected it")
    assert "a canary of it is refused: QA rejected Shadow's snapshot" in text
    assert "Shadow reset to a copy of Active: snapshot copy-of-snap-cy1" in text
    assert gateway.snapshots["shadow"] == "copy-of-snap-cy1" and not gateway.shadow_rejected
    assert "What happened" in text and "total" in text
    assert "twinloop status --gateway http://gateway" in text
    assert "/adapters/ad-cy1/lineage" in text
    # The first cycle trains with the settings, the second with the admin's override.
    assert gateway.train_bodies[0] is None
    bad = gateway.train_bodies[1]
    assert bad["overrides"] == PLAN.bad_overrides and bad["overrides"]["kl_weight"] == 0
    assert bad["overrides"]["max_rounds"] == 1 and bad["reason"]
    # Corrections carry held-out paraphrases on each fact's first phrasing only.
    corrections = [i for i in gateway.ingested if i["type"] == "feedback" and "correction" in i]
    assert len(corrections) == 3 * PLAN.good_facts
    assert sum("heldout" in i for i in corrections) == PLAN.good_facts
    assert any(i["type"] == "document" for i in gateway.ingested)
    # The simulated users rated what they got, on their own key, revoked at the end.
    ratings = [i for i in gateway.ingested if "rating" in i and "correction" not in i]
    assert ratings and {i["rating"] for i in ratings} <= {"up", "down"}
    # ... and withdrew every rating once the canary had decided: none may train a cycle.
    withdrawn = [i["id"] for i in gateway.ingested if i.get("deleted")]
    assert sorted(withdrawn) == sorted(i["id"] for i in ratings)
    assert "ratings are withdrawn" in text
    assert gateway.revoked == ["k1"]


def test_a_bad_update_past_qa_is_caught_by_its_canary(out: io.StringIO) -> None:
    ctx = _run(FakeGateway(bad_passes_qa=True, bad_canary="aborted"), out)

    rows = {row.step: row for row in ctx.rows}
    assert "QA let it through; now the canary must catch it" in _text(out)
    assert rows["bad update's canary"].after.startswith("aborted after")
    assert rows["bad update (over-trained)"].after.startswith(
        "its canary ended aborted; Active snap-cy1 (unchanged)"
    )


def test_a_bad_update_that_reaches_users_fails_the_demo(out: io.StringIO) -> None:
    gateway = FakeGateway(bad_passes_qa=True, bad_canary="promoted")

    with pytest.raises(DemoError, match="over-trained update was promoted"):
        _run(gateway, out)
    assert "demo stopped" in _text(out)
    assert gateway.revoked == ["k1"], "the users' key is revoked on failure too"


def test_a_good_canary_that_ends_inconclusive_stops_the_demo_with_what_to_look_at(
    out: io.StringIO,
) -> None:
    with pytest.raises(DemoError, match="canary ended inconclusive, not promoted") as e:
        _run(FakeGateway(good_canary="inconclusive"), out)
    assert "twinloop canary status" in e.value.message
    # What happened so far is still summed up.
    assert "What happened" in _text(out)


def test_a_rejected_first_cycle_stops_the_demo(out: io.StringIO) -> None:
    with pytest.raises(DemoError, match="training cycle ended rejected"):
        _run(FakeGateway(good_cycle_ends="rejected"), out)


def test_a_cycle_no_trainer_takes_says_how_to_run_one(out: io.StringIO) -> None:
    gateway = FakeGateway(no_trainer=True)

    with pytest.raises(DemoError, match="no trainer took training cycle cy1 in 600 s") as e:
        _run(gateway, out)
    assert "twinloop trainer" in e.value.message
    assert gateway.revoked == ["k1"]


def test_a_running_canary_is_reported_before_anything_is_sent(out: io.StringIO) -> None:
    gateway = FakeGateway(canary_running=True)

    with pytest.raises(DemoError, match="canary c0 is running; let it end or `twinloop canary"):
        _run(gateway, out)
    assert gateway.ingested == [] and gateway.keys == {}


def test_a_wrong_admin_token_says_where_the_token_comes_from(out: io.StringIO) -> None:
    with pytest.raises(DemoError, match="answered 401") as e:
        _run(FakeGateway(), out, token="not-the-token")
    assert "TWINLOOP_ADMIN_TOKEN" in e.value.message


def test_no_gateway_says_how_to_start_one(out: io.StringIO) -> None:
    with pytest.raises(GatewayUnreachableError, match="make up") as e:
        _run(FakeGateway(down=True), out)
    assert e.value.status_code == 2


def test_the_command_exits_non_zero_with_the_hint_when_no_gateway_listens(
    closed_ports: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = closed_ports[0]
    result = CliRunner().invoke(
        app, ["demo", "--fast", "--gateway", f"http://127.0.0.1:{port}", "--token", "t"]
    )

    assert result.exit_code == 2, result.output
    assert "make up" in re.sub(r"\s+", " ", result.output)
    assert "Traceback" not in result.output


def test_fast_is_smaller_than_full() -> None:
    fast, full = DemoPlan.fast(), DemoPlan.full()
    assert fast.good_facts < full.good_facts and fast.bad_facts <= full.bad_facts
    assert fast.bad_overrides["step_budget"] < full.bad_overrides["step_budget"]
    assert fast.canary_max_duration_s < full.canary_max_duration_s


def test_a_read_answered_busy_is_asked_again_and_a_write_only_when_repeatable() -> None:
    """The trainer's writes hold SQLite for a moment: the gateway answers 503 with
    Retry-After, and the client asks a GET again (a benchmark died on one such poll)."""
    calls: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) < 3:
            return httpx.Response(503, json={"error": "busy"}, headers={"retry-after": "0"})
        return httpx.Response(200, json={"state": "training"})

    with GatewayClient(
        base_url="http://gw", bearer="t", transport=httpx.MockTransport(handle)
    ) as api:
        assert api.cycle("c1") == {"state": "training"}
        assert calls == ["GET", "GET", "GET"]
        calls.clear()
        with pytest.raises(DemoError) as refused:
            api.train()
        assert calls == ["POST"] and "503" in str(refused.value)
        calls.clear()  # an ingest is idempotent by item id: asked again like a read
        assert api.ingest([]) == {"state": "training"}
    assert calls == ["POST", "POST", "POST"]
