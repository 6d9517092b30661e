"""The admin token: never a default; `twinloop up` writes a random one into the data directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from twinloop.identity.admin_token import AdminTokenError, ensure_admin_token_file, load_admin_token
from twinloop.settings import Settings
from twinloop.testing.engine import FakeEngine
from twinloop.testing.knowledge import FakeKnowledge
from twinloop.testing.router import FakeRouter


def test_up_writes_a_random_token_only_its_owner_can_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")

    written = ensure_admin_token_file(settings)

    assert written.created and written.path == tmp_path / "var" / "admin_token"
    assert stat.S_IMODE(written.path.stat().st_mode) == 0o600
    token = load_admin_token(settings)
    assert len(token) >= 40 and token == written.path.read_text().strip()
    again = ensure_admin_token_file(settings)
    assert not again.created and load_admin_token(settings) == token


def test_two_data_directories_get_different_tokens(tmp_path: Path) -> None:
    tokens = set()
    for name in ("a", "b"):
        settings = Settings(data_dir=tmp_path / name)
        ensure_admin_token_file(settings)
        tokens.add(load_admin_token(settings))
    assert len(tokens) == 2


def test_a_token_setting_wins_and_no_file_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, admin_token="from-the-environment-0123456789")

    written = ensure_admin_token_file(settings)

    assert written.path is None and not written.created
    assert not (tmp_path / "admin_token").exists()
    assert load_admin_token(settings) == "from-the-environment-0123456789"


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.parametrize("token", ["change-me", "", "   "])
def test_the_placeholder_or_an_empty_token_is_refused_in_every_environment(
    environment: str, token: str
) -> None:
    with pytest.raises(ValidationError, match="TWINLOOP_ADMIN_TOKEN"):
        Settings(environment=environment, admin_token=token)


@pytest.mark.parametrize("content", ["change-me\n", "\n", ""])
def test_a_placeholder_or_empty_token_file_is_refused(tmp_path: Path, content: str) -> None:
    (tmp_path / "admin_token").write_text(content)

    with pytest.raises(AdminTokenError, match="admin_token"):
        load_admin_token(Settings(data_dir=tmp_path))


def test_without_a_token_the_message_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(AdminTokenError) as missing:
        load_admin_token(Settings(data_dir=tmp_path))

    assert "TWINLOOP_ADMIN_TOKEN" in missing.value.message
    assert str(tmp_path / "admin_token") in missing.value.message
    assert "twinloop up" in missing.value.message


async def test_the_gateway_refuses_to_start_without_a_real_admin_token(
    settings: Settings, fake_engine: FakeEngine, fake_knowledge: FakeKnowledge
) -> None:
    from api.app import create_app

    unset = settings.model_copy(update={"admin_token": None})
    placeholder = settings.model_copy(update={"admin_token": SecretStr("change-me")})
    for refused, match in ((unset, "no admin token"), (placeholder, "change-me")):
        app = create_app(
            refused,
            engine_transport=fake_engine.transport(),
            router=FakeRouter(),
            knowledge=fake_knowledge,
        )
        with pytest.raises(AdminTokenError, match=match):
            async with app.router.lifespan_context(app):
                pass
    (settings.data_dir / "admin_token").write_text("change-me\n")
    app = create_app(
        unset, engine_transport=fake_engine.transport(), router=FakeRouter(),
        knowledge=fake_knowledge,
    )  # fmt: skip
    with pytest.raises(AdminTokenError, match="change-me"):
        async with app.router.lifespan_context(app):
            pass
