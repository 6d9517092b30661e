"""What the deployment tests share: paths, the settings' names, outside tools."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import BaseModel

from twinloop.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
DASHBOARDS = ROOT / "dashboards"

# Values the compose files require from deploy/.env (`${VAR:?...}`), made up for the tests.
COMPOSE_ENV = {
    "TWINLOOP_ADMIN_TOKEN": "test-admin-token",
    "POSTGRES_PASSWORD": "test-password",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana",
    "MINIO_ROOT_PASSWORD": "test-minio-password",
}


def setting_names() -> set[str]:
    """Every environment variable twinloop's settings read (nested groups with `__`)."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"TWINLOOP_{name}".upper())
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            names |= {f"TWINLOOP_{name}__{sub}".upper() for sub in group.model_fields}
    return names


def unknown_settings(names: set[str]) -> set[str]:
    return {name for name in names if name.startswith("TWINLOOP_")} - setting_names()


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process with exactly these TWINLOOP_* variables would build."""
    for name in list(os.environ):
        if name.startswith("TWINLOOP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("TWINLOOP_"):
            monkeypatch.setenv(name, value)
    return Settings()


def require_tool(name: str, install: str) -> str:
    """The tool's path; skipped where it is missing, but a failure under CI (`CI` set)."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run this check")
    pytest.skip(f"{message}; CI is unset, so the check is skipped here")


def image_is_pinned(image: str) -> bool:
    """A tag other than `latest`, or a digest."""
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in {"", "latest"}


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (what deploy/ uses)."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op and op.endswith("-") else ""

    return _VARIABLE.sub(value, text)
