"""Rules 7-9: mined items together, then no source, then no category, hold more than their
share of the accepted set."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from twinloop.cleaning.examples import MINED_CAP, CandidateExample, Quarantined


def cap_limit(group_sizes: Iterable[int], max_share: float, floor: int) -> int:
    """How many examples each group may keep so that no group exceeds `max_share`.

    The limit L is the largest one where a group keeping L examples holds at most `max_share`
    of the capped total `sum(min(size, L))` (water-filling: large groups are cut, small ones
    untouched), and never below `floor`, so a small batch keeps `floor` examples per group. A
    single group is never cut (there is nothing for it to dominate), and `max_share=1.0` never
    cuts anything.
    """
    sizes = list(group_sizes)
    if not sizes:
        return floor
    if len(sizes) == 1:
        return sizes[0]  # a share cap balances groups against each other; one group has none
    low, high = 0, max(sizes)
    # L <= share * S(L) holds on an interval [0, L*] (S is concave, S(0) = 0): bisect it.
    while low < high:
        mid = (low + high + 1) // 2
        if mid <= max_share * sum(min(size, mid) for size in sizes) + 1e-9:
            low = mid
        else:
            high = mid - 1
    return max(low, floor)


def apply_cap(
    kept: list[tuple[int, CandidateExample]],
    key: Callable[[CandidateExample], str],
    what: str,
    rule: str,
    max_share: float,
    floor: int,
    out: list[tuple[int, Quarantined]],
) -> list[tuple[int, CandidateExample]]:
    sizes = Counter(key(ex) for _, ex in kept)
    limit = cap_limit(sizes.values(), max_share, floor)
    seen: Counter[str] = Counter()
    survivors = []
    for index, ex in kept:  # input order: the first `limit` of each group stay
        group = key(ex)
        seen[group] += 1
        if seen[group] <= limit:
            survivors.append((index, ex))
            continue
        reason = (
            f"{what} {group!r} has {sizes[group]} of {len(kept)} remaining examples; "
            f"each {what} keeps at most {limit} (max share {max_share:g}, floor {floor})"
        )
        out.append((index, Quarantined(ex, rule, reason)))
    return survivors


def mined_limit(mined: int, others: int, max_share: float, floor: int) -> int:
    """How many mined items may stay next to `others` so that they hold at most `max_share`.

    The largest L with L <= max_share * (others + L), never below `floor` (and never above
    `mined`): weak labels supplement what users taught explicitly, they do not replace it.
    """
    if max_share >= 1:
        return mined
    limit = int(max_share * others / (1 - max_share) + 1e-9)
    return min(mined, max(limit, floor))


def apply_mined_cap(
    kept: list[tuple[int, CandidateExample]],
    max_share: float,
    floor: int,
    out: list[tuple[int, Quarantined]],
) -> list[tuple[int, CandidateExample]]:
    """Rule 7: the mined items past their limit (`mined_limit`), latest first, are quarantined."""
    mined = sum(ex.mined for _, ex in kept)
    limit = mined_limit(mined, len(kept) - mined, max_share, floor)
    seen = 0
    survivors = []
    for index, ex in kept:  # input order: the first `limit` mined items stay
        if ex.mined:
            seen += 1
            if seen > limit:
                reason = (
                    f"mined items are {mined} of {len(kept)} remaining examples; together they "
                    f"keep at most {limit} (max share {max_share:g}, floor {floor})"
                )
                out.append((index, Quarantined(ex, MINED_CAP, reason)))
                continue
        survivors.append((index, ex))
    return survivors
