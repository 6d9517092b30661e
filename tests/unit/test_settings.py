from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from twinloop.settings import (
    ArtifactSettings,
    CanarySettings,
    EngineSettings,
    GatewaySettings,
    Settings,
    Slot,
)


def test_there_is_no_default_admin_token_and_the_placeholder_is_refused() -> None:
    assert Settings(environment="production").admin_token is None
    with pytest.raises(ValidationError, match="TWINLOOP_ADMIN_TOKEN"):
        Settings(admin_token="change-me")
    token = Settings(environment="production", admin_token="s3cret").admin_token
    assert token is not None and token.get_secret_value() == "s3cret"


def test_database_url_defaults_to_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    url = Settings(data_dir=tmp_path).sqlalchemy_url
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/twinloop.db"


def test_plain_postgres_url_gets_the_async_driver() -> None:
    url = Settings(database_url="postgresql://u@127.0.0.1:5432/test").sqlalchemy_url
    assert url == "postgresql+asyncpg://u@127.0.0.1:5432/test"


def test_nested_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINLOOP_ENGINES__GREEN_PORT", "9999")
    monkeypatch.setenv("TWINLOOP_DOMAINS", '["a", "general"]')
    settings = Settings()
    assert settings.engines.base_url(Slot.GREEN) == "http://127.0.0.1:9999"
    assert settings.domains == ["a", "general"]


def test_engines_on_their_own_hosts_are_addressed_by_url(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose services and Kubernetes Services: one host name per engine, not one host.
    monkeypatch.setenv("TWINLOOP_ENGINES__BLUE_URL", "http://vllm-blue:8000/")
    monkeypatch.setenv("TWINLOOP_ENGINES__GREEN_URL", "http://vllm-green:8000")
    engines = Settings().engines
    assert engines.base_url(Slot.BLUE) == "http://vllm-blue:8000"
    assert engines.base_url(Slot.GREEN) == "http://vllm-green:8000"
    assert EngineSettings(blue_url="http://b:1").base_url(Slot.GREEN) == "http://127.0.0.1:8102"


def test_trainer_metrics_bind_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().trainer.metrics_host == "127.0.0.1"
    monkeypatch.setenv("TWINLOOP_TRAINER__METRICS_HOST", "0.0.0.0")
    assert Settings().trainer.metrics_host == "0.0.0.0"


def test_each_slot_gets_its_own_core_by_default() -> None:
    engines = EngineSettings()
    assert engines.cpus(Slot.BLUE) != engines.cpus(Slot.GREEN)


def test_default_domain_must_be_a_domain() -> None:
    with pytest.raises(ValidationError, match="default_domain"):
        Settings(domains=["law"])


def test_canary_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().canary.auto is False
    monkeypatch.setenv("TWINLOOP_CANARY__AUTO", "true")
    monkeypatch.setenv("TWINLOOP_CANARY__PERCENT", "25")
    canary = Settings().canary
    assert (canary.auto, canary.percent, canary.min_requests) == (True, 25.0, 200)


def test_canary_percent_is_a_share_of_100() -> None:
    with pytest.raises(ValidationError, match="percent"):
        CanarySettings(percent=101)


def test_the_adapter_store_is_a_folder_or_an_s3_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWINLOOP_ARTIFACTS__STORE", "s3://twinloop-adapters/prod")
    monkeypatch.setenv("TWINLOOP_ARTIFACTS__S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("TWINLOOP_ARTIFACTS__GREEN_FETCH_URL", "http://vllm-green:8400/")
    artifacts = Settings().artifacts
    assert artifacts.store == "s3://twinloop-adapters/prod"
    assert artifacts.fetch_url(Slot.GREEN) == "http://vllm-green:8400"
    assert artifacts.fetch_url(Slot.BLUE) is None
    for refused, reason in [
        ("gs://bucket", "a folder, file:///folder or s3://"),
        ("s3:///prefix", "names no bucket"),
    ]:
        with pytest.raises(ValidationError, match=reason):
            ArtifactSettings(store=refused)


def test_s3_keys_come_in_pairs_or_from_boto3s_chain() -> None:
    assert ArtifactSettings(store="s3://b").s3_access_key_id is None
    with pytest.raises(ValidationError, match="set together"):
        ArtifactSettings(store="s3://b", s3_access_key_id="id")
    both = ArtifactSettings(s3_access_key_id="id", s3_secret_access_key="hunter2")
    assert both.s3_secret_access_key is not None
    assert "hunter2" not in repr(both)


def test_several_gateway_workers_need_postgresql(tmp_path: Path) -> None:
    gateway = GatewaySettings(workers=2)
    with pytest.raises(ValidationError, match=r"gateway.workers=2 needs PostgreSQL"):
        Settings(data_dir=tmp_path, gateway=gateway)
    pg = "postgresql://twinloop@db/twinloop"
    assert Settings(data_dir=tmp_path, gateway=gateway, database_url=pg).gateway.workers == 2
