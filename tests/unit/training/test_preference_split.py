"""Which of a cycle's pairs DPO trains on, and which it keeps out to measure it."""

from __future__ import annotations

from twinloop.training.preference import PairItem, split_pairs


def _items(n: int, domain: str = "fin") -> list[PairItem]:
    return [
        PairItem(f"ex-{domain}-{i}", domain, f"Q{i}?", f"right {i}", f"wrong {i}") for i in range(n)
    ]


def test_a_quarter_is_held_out_per_domain_and_never_also_trained() -> None:
    split = split_pairs([*_items(8), *_items(3, "law")], heldout_fraction=0.25)
    assert (len(split["fin"].trained), len(split["fin"].heldout)) == (6, 2)
    assert (len(split["law"].trained), len(split["law"].heldout)) == (3, 0)  # under one pair
    assert not set(split["fin"].trained) & set(split["fin"].heldout)


def test_the_split_is_the_same_whatever_order_the_rows_come_in() -> None:
    items = _items(8)
    assert split_pairs(items, 0.25) == split_pairs(list(reversed(items)), 0.25)


def test_a_pair_whose_answers_are_the_same_is_dropped() -> None:
    same = PairItem("ex-1", "fin", "Q?", "Two days.", " Two days. ")
    assert split_pairs([same], 0.25) == {}
