"""Row ids: random version-4 UUIDs, written as 32 hex digits."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

from twinloop.db.base import new_id


def test_ids_are_version_4_uuids_in_hex_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(2000)]

    for made in ids:
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert parsed.hex == made
    assert len(set(ids)) == len(ids)


def test_threads_taking_ids_at_once_never_share_one() -> None:
    def take(_: int) -> list[str]:
        return [new_id() for _ in range(3000)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        taken = [made for batch in pool.map(take, range(4)) for made in batch]

    assert len(set(taken)) == len(taken) == 12000


def test_a_forked_child_does_not_reuse_the_ids_its_parent_read_ahead() -> None:
    new_id()  # the parent has ids read ahead, not yet handed out
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and exits
        os.write(writer, "".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    childs = {text[i : i + 32] for i in range(0, len(text), 32)}

    assert len(childs) == 10
    assert not childs & {new_id() for _ in range(10)}
