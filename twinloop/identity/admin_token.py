"""The admin token: the setting, else the file `twinloop up` writes into the data directory.

There is no default token anywhere. `ensure_admin_token_file` (run by `twinloop up`) creates
`<data_dir>/admin_token` with a random token, readable by its owner only, when neither the
setting nor the file exists; the gateway, the CLI's admin commands and the bench scripts read
it with `load_admin_token`, which refuses an empty token and the old `change-me`.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from twinloop.errors import TwinloopError
from twinloop.files import fsync_dir
from twinloop.settings import Settings, admin_token_problem

TOKEN_BYTES = 32


class AdminTokenError(TwinloopError):
    """No usable admin token: the gateway does not start without one."""


@dataclass(frozen=True)
class TokenFile:
    path: Path | None  # None: TWINLOOP_ADMIN_TOKEN is set, no file is used
    created: bool = False


def ensure_admin_token_file(settings: Settings) -> TokenFile:
    """Create `<data_dir>/admin_token` with a random token unless the setting or the file
    exists. Created exclusively with mode 0600, so no other user can read it, ever."""
    if settings.admin_token is not None:
        return TokenFile(path=None)
    path = settings.admin_token_path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return TokenFile(path=path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(path.parent)
    return TokenFile(path=path, created=True)


def load_admin_token(settings: Settings) -> str:
    """The admin token in force; AdminTokenError when there is none or it is refused."""
    if settings.admin_token is not None:
        token, where = settings.admin_token.get_secret_value(), "TWINLOOP_ADMIN_TOKEN"
    else:
        path = settings.admin_token_path
        try:
            token, where = path.read_text(encoding="utf-8").strip(), str(path)
        except FileNotFoundError:
            raise AdminTokenError(
                f"no admin token: set TWINLOOP_ADMIN_TOKEN, or run `twinloop up`, which writes "
                f"a random one to {path}"
            ) from None
    problem = admin_token_problem(token)
    if problem is not None:
        raise AdminTokenError(
            f"the admin token from {where} is refused: {problem}; set a long random token "
            f"(or delete {settings.admin_token_path} and run `twinloop up` to get one)"
        )
    return token
