"""Rules 7 and 8: no source, then no category, holds more than its share of the accepted set."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from twinloop.cleaning.examples import CandidateExample, Quarantined


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
