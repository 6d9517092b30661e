"""Row ids: random version-4 UUIDs, written as 32 hex digits."""

from __future__ import annotations

import uuid

from twinloop.db.base import new_id


def test_ids_are_version_4_uuids_in_hex_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(2000)]

    for made in ids:
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert parsed.hex == made
    assert len(set(ids)) == len(ids)
