"""Who may send which /ingest item: the rules, checked before anything in a batch is stored.

| item                                   | client          | ingest                 | admin |
| -------------------------------------- | --------------- | ---------------------- | ----- |
| feedback (rate, correct, delete)       | own answers     | own answers            | any   |
| feedback or example with `heldout`     | no              | no                     | yes   |
| change or delete one that has them     | no              | no                     | yes   |
| example (add, change, delete)          | no              | in its domains         | yes   |
| document (add, change, delete)         | no              | in its domains         | yes   |
| `fact:` document (a taught fact)       | no              | no                     | yes   |

"Own answers": answers served to the same API key (an anonymous answer is no key's). A
feedback id already stored for an answer of another key is that key's: it cannot be changed
or deleted from another. Held-out paraphrases and `accept` lists become QA's `feedback`
category, which gates every promotion, so only an admin sets them. `fact:<id>` documents are
the system's (a correction's fact, QA's corrections). One refused item refuses the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.identity.errors import PermissionDeniedError
from twinloop.identity.schemas import Caller, Role
from twinloop.ingest import repository
from twinloop.ingest.schemas import (
    FACT_PREFIX,
    DocumentItem,
    ExampleItem,
    FeedbackItem,
    IngestItem,
)


async def authorize(session: AsyncSession, caller: Caller, items: Sequence[IngestItem]) -> None:
    """PermissionDeniedError naming the first item `caller` may not send, and why."""
    if caller.is_admin:
        return
    for item in items:
        reason = await _refusal(session, caller, item)
        if reason is not None:
            raise PermissionDeniedError(f"item {item.id!r} ({item.type}): {reason}")


async def _refusal(session: AsyncSession, caller: Caller, item: IngestItem) -> str | None:
    if isinstance(item, FeedbackItem):
        return await _feedback_refusal(session, caller, item)
    if caller.role is not Role.INGEST:
        return f"a {caller.role} key may send feedback only; {item.type}s need an ingest key"
    if isinstance(item, ExampleItem):
        return await _example_refusal(session, caller, item)
    return await _document_refusal(session, caller, item)


async def _feedback_refusal(
    session: AsyncSession, caller: Caller, item: FeedbackItem
) -> str | None:
    if item.heldout is not None:
        return _HELDOUT
    stored = await repository.feedback_by_external_id(session, item.id)
    if stored is not None:
        owner = await repository.answer(session, stored.answer_id)
        if owner is None or owner.api_key_id != caller.key_id:
            return "this feedback id belongs to an answer served to another key (or none)"
        taught = await repository.live_examples_of(session, stored.id)
        if any(example.heldout is not None for example in taught):
            return _HAS_HELDOUT
    if item.deleted or item.answer_id is None:
        return None
    answer = await repository.answer(session, item.answer_id)
    if answer is not None and answer.api_key_id != caller.key_id:
        return f"answer {item.answer_id!r} was not served to this key"
    return None


async def _example_refusal(session: AsyncSession, caller: Caller, item: ExampleItem) -> str | None:
    if item.heldout is not None:
        return _HELDOUT
    stored = await repository.example_by_external_id(session, item.id)
    if stored is not None and stored.deleted_at is None and stored.heldout is not None:
        return _HAS_HELDOUT
    touched = [stored.domain] if stored is not None else []
    if not item.deleted and item.domain is not None:
        touched.append(item.domain)
    return _outside_domains(caller, touched)


async def _document_refusal(
    session: AsyncSession, caller: Caller, item: DocumentItem
) -> str | None:
    if item.id.startswith(FACT_PREFIX):
        return f"{FACT_PREFIX}… documents are taught facts; only an admin may change them"
    live = await repository.live_document(session, item.id)
    touched = [live.domain] if live is not None else []
    if not item.deleted and item.domain is not None:
        touched.append(item.domain)
    return _outside_domains(caller, touched)


def _outside_domains(caller: Caller, domains: list[str]) -> str | None:
    outside = sorted(set(domains) - caller.domains)
    if not outside:
        return None
    allowed = ", ".join(sorted(caller.domains)) or "no domains"
    return f"domain {', '.join(outside)} is not this key's to write (it may write: {allowed})"


_HELDOUT = (
    "held-out QA cases (`heldout`: paraphrases, accept) gate every promotion; only the admin "
    "role may send them"
)
_HAS_HELDOUT = "it carries held-out QA cases an admin set; only the admin role may change it"
