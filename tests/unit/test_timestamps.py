from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import AfterValidator, BaseModel

import twinloop
from twinloop.timestamps import UtcDatetime, as_utc

# Every module of API shapes: `schemas.py` in each package.
SCHEMA_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(twinloop.__path__, "twinloop.")
    if info.name.endswith(".schemas")
)


class _Shown(BaseModel):
    at: UtcDatetime
    maybe: UtcDatetime | None = None


def test_a_naive_time_is_taken_as_utc_and_shown_with_its_zone() -> None:
    shown = _Shown(at=datetime(2026, 12, 2, 3, 53, 11, 658449))

    assert shown.at.tzinfo is UTC
    assert shown.model_dump_json() == '{"at":"2026-12-02T03:53:11.658449Z","maybe":null}'


def test_an_aware_time_is_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    shown = _Shown(at=datetime(2026, 1, 1, 12, tzinfo=paris), maybe="2026-01-01T12:00:00")

    assert shown.at == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert shown.maybe == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert as_utc(shown.at) is not None


def _has_bare_datetime(annotation: object) -> bool:
    """A `datetime` anywhere in the annotation that is not a `UtcDatetime`."""
    if annotation is datetime:
        return True
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        if base is datetime:
            return not any(isinstance(m, AfterValidator) and m.func is as_utc for m in metadata)
        return _has_bare_datetime(base)
    return any(_has_bare_datetime(arg) for arg in typing.get_args(annotation))


def test_the_api_shapes_are_all_found() -> None:
    assert {"twinloop.releases.schemas", "twinloop.canary.schemas"} <= set(SCHEMA_MODULES)


@pytest.mark.parametrize("module_name", SCHEMA_MODULES)
def test_every_timestamp_in_the_api_shapes_carries_its_zone(module_name: str) -> None:
    module = importlib.import_module(module_name)
    bare = [
        f"{model.__name__}.{name}"
        for model in vars(module).values()
        if inspect.isclass(model)
        and issubclass(model, BaseModel)
        and model.__module__ == module_name
        for name, field in model.model_fields.items()
        if _has_bare_datetime(
            typing.Annotated[(field.annotation, *field.metadata)]
            if field.metadata
            else field.annotation
        )
    ]
    assert bare == []
