"""Errors of release changes."""

from __future__ import annotations

from twinloop.errors import TwinloopError


class ReleaseConflictError(TwinloopError):
    """The change cannot be made in the current release state (or another gateway won a race)."""

    status_code = 409


class StagingError(TwinloopError):
    """The shadow engine did not end up serving the snapshot's adapters."""

    status_code = 502
