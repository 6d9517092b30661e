"""Errors raised by `rag/`: every Chroma failure reaches callers as one of these."""

from __future__ import annotations

from twinloop.errors import TwinloopError


class KnowledgeStoreError(TwinloopError):
    """The knowledge store (Chroma) could not do what was asked: down, slow or refusing."""

    status_code = 503


class ChromaServerError(KnowledgeStoreError):
    """Starting, stopping or watching the Chroma server process failed."""
