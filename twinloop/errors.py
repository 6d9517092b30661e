"""twinloop's own error types.

Every error a caller may see is a `TwinloopError` with a message meant for a
person and the HTTP status the gateway answers with. `twinloop/` never imports
FastAPI; `api/errors.py` maps these to JSON.
"""

from __future__ import annotations


class TwinloopError(Exception):
    """Base of every error twinloop raises on purpose."""

    status_code: int = 500

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the gateway sends with this error (`Retry-After`, `WWW-Authenticate`)."""
        return {}

    @property
    def extra_body(self) -> dict[str, object]:
        """Members the JSON error body carries besides `error` and `detail` (each one declared
        in the API's `ErrorBody`)."""
        return {}


class InvalidRequestError(TwinloopError):
    """The caller asked for something that cannot be served as asked."""

    status_code = 422


class PayloadTooLargeError(TwinloopError):
    """The request is over one of the gateway's size limits; the message names the limit."""

    status_code = 413


class NotFoundError(TwinloopError):
    status_code = 404


class EngineUnavailableError(TwinloopError):
    """The engine could not be reached (refused, reset, DNS): nothing was generated."""

    status_code = 503


class EngineTimeoutError(TwinloopError):
    """The engine took longer than the configured timeout."""

    status_code = 504


class EngineResponseError(TwinloopError):
    """The engine answered, but with an error or a response we cannot use."""

    status_code = 502


class AdapterIntegrityError(TwinloopError):
    """A stored adapter's files no longer hash to what it was registered under (or are gone)."""

    status_code = 409


class ArtifactStoreUnavailableError(TwinloopError):
    """The adapter store could not be reached or refused the call (network, credentials)."""

    status_code = 503


class AdapterFetchError(TwinloopError):
    """An engine's fetch agent could not be reached or failed to put an adapter on its disk."""

    status_code = 503


class ModelPreparationError(TwinloopError):
    """A model could not be found or prepared (missing package, bad file)."""


class EngineProcessError(TwinloopError):
    """Starting, stopping or watching an engine process failed."""
