"""The admin token for scripts that call a running gateway's admin routes (bench/).

TWINLOOP_ADMIN_TOKEN if set, else the file `twinloop up` wrote into the data directory
(TWINLOOP_DATA_DIR, default ./var) — the same rule as the `twinloop` CLI's admin commands.
"""

from __future__ import annotations

from twinloop.identity.admin_token import load_admin_token
from twinloop.settings import Settings


def admin_headers(token: str | None = None) -> dict[str, str]:
    """`Authorization` for `token`, else for the admin token in force (AdminTokenError if none)."""
    return {"Authorization": f"Bearer {token or load_admin_token(Settings())}"}
