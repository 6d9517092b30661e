"""The hand-back rules: a cycle that ends without its adapters in Active returns its items.

* Unfinished (failed, abandoned): the new items no adapter learned go back to `pending`, as
  they were; nothing judged them (`hand_back_untrained`).
* Refused (rejected by the QA gate, rolled back by its canary): every user item goes back to
  `pending` with the reason, to be learned again, and counts one more refusal; after
  `max_rejections` refusals it is quarantined instead, so one unlearnable item cannot block
  every cycle. QA-made examples retire: the next cycle's QA makes its own from its own
  failures (`hand_back_refused`).

The functions change the rows in the caller's session and return what they did; the caller
commits with the cycle's end and counts the outcomes in its process's metrics.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession

from twinloop.items import repository
from twinloop.states import ItemStatus

# The source of the examples QA made from a failed round: `qa-correction` and
# `qa-reinforcement` (twinloop/qa/corrections.py, a layer above this one).
QA_MADE_PREFIX = "qa-"

# Outcomes of a refused cycle's items, as metric labels (`twinloop_training_items` in the
# trainer, `twinloop_canary_items` in the gateway).
HANDED_BACK = "handed_back"
QUARANTINED = "quarantined.rejections"
RETIRED = str(ItemStatus.RETIRED)


async def hand_back_untrained(session: AsyncSession, cycle_id: str) -> int:
    """A cycle that did not finish gives the new items it has not trained on back to the next
    one; how many."""
    examples = await repository.accepted_new_examples(session, cycle_id, untrained_only=True)
    for example in examples:
        example.status = ItemStatus.PENDING
    return len(examples)


async def hand_back_refused(
    session: AsyncSession, cycle_id: str, *, reason: str, max_rejections: int
) -> Counter[str]:
    """A refused cycle's items: user items to `pending` with `reason` (a sentence that names
    the cycle and what refused it), or quarantined at `max_rejections` refusals; QA-made
    examples retired. The count of each outcome."""
    outcomes: Counter[str] = Counter()
    examples = await repository.accepted_new_examples(session, cycle_id, untrained_only=False)
    for example in examples:
        if example.source.startswith(QA_MADE_PREFIX):
            example.status = ItemStatus.RETIRED
            outcomes[RETIRED] += 1
            continue
        example.rejections += 1
        if example.rejections >= max_rejections:
            example.status = ItemStatus.QUARANTINED
            example.reject_reason = (
                f"refused in {example.rejections} cycles (rejected by the QA gate or rolled "
                f"back by a canary); last: {reason}"
            )
            outcomes[QUARANTINED] += 1
        else:
            example.status = ItemStatus.PENDING
            example.reject_reason = reason
            outcomes[HANDED_BACK] += 1
    return outcomes
