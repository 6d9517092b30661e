"""Errors of the QA dry run."""

from __future__ import annotations

from twinloop.errors import TwinloopError


class QaError(TwinloopError):
    """The run's answers do not stand for one snapshot (or the run cannot be made now)."""

    status_code = 409
