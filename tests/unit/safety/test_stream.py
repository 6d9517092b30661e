"""A streamed answer is redacted as the whole answer would be, however it is cut into chunks."""

from __future__ import annotations

import itertools
import random

import pytest

from twinloop.cleaning.redaction import find_pii, redact_pii
from twinloop.safety.stream import StreamRedactor
from twinloop.testing.hostile import HostileItem, load_hostile_items

REGIONS = ("US", "GB", "DE", "FR")
PII_ITEMS = [item for item in load_hostile_items() if item.kind == "pii"]


def _stream(text: str, cuts: list[int], *, hold: int = 256) -> tuple[list[str], int]:
    """`text` fed in the pieces `cuts` makes: what is released per piece, and the most held."""
    redactor = StreamRedactor(REGIONS, hold)
    released, most_held, previous = [], 0, 0
    for cut in [*cuts, len(text)]:
        ready = redactor.feed(text[previous:cut])
        released.append(redactor.release() if ready else "")
        most_held = max(most_held, len(redactor.held))
        previous = cut
    released.append(redactor.finish())
    return released, most_held


@pytest.mark.parametrize("item", PII_ITEMS, ids=lambda item: item.id)
def test_pii_split_at_every_boundary_is_redacted_as_if_whole(item: HostileItem) -> None:
    text = f"{item.question} {item.answer} Anything else about it today?"
    whole = redact_pii(text)[0]
    spans, _ = find_pii(text)
    assert spans

    for at in sorted({at for s in spans for at in range(s.start - 2, s.end + 3)} - {0}):
        assert "".join(_stream(text, [at])[0]) == whole, (at, text[:at])
    one_by_one, _ = _stream(text, list(range(1, len(text))))
    assert "".join(one_by_one) == whole


def test_random_chunks_of_number_heavy_text_with_forced_cuts_match_the_whole() -> None:
    pieces = ["jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958", "SSN 123456789",
              "DE89 3704 0044 0532 0130 00", "192.168.0.1", "2001:db8::1:2", "the", "capital",
              "\u200b", "\uff20", "1", "-", ".", "at", "dot", "(415) 555-2671", "12 34 56",
              "jane [at] example [dot] com", "QA58 DOHB 0000 1234 5678 90AB CDEF G"]  # fmt: skip
    rng = random.Random(7)
    for _ in range(15):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(20, 60)))
        cuts = sorted(rng.sample(range(1, len(text)), len(text) // 4))
        released, most_held = _stream(text, cuts, hold=128)
        assert "".join(released) == redact_pii(text)[0], text
        assert most_held <= 128 + 60  # the hold, and the piece that overflowed it


def test_pieces_added_in_batches_with_one_release_each_match_the_whole() -> None:
    pieces = ["jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958", "the",
              "capital", "is", "Paris", "at", "(415) 555-2671",
              "DE89 3704 0044 0532 0130 00"]  # fmt: skip
    rng = random.Random(11)
    for _ in range(15):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(20, 60)))
        cuts = [0, *sorted(rng.sample(range(1, len(text)), len(text) // 3)), len(text)]
        deltas = [text[a:b] for a, b in itertools.pairwise(cuts)]
        redactor, released, start = StreamRedactor(REGIONS, 128), [], 0
        while start < len(deltas):
            size = rng.randint(1, 12)  # the chunks that arrived together
            for delta in deltas[start : start + size]:
                redactor.add(delta)
            released.append(redactor.release() if redactor.ready() else "")
            start += size
        released.append(redactor.finish())
        assert "".join(released) == redact_pii(text)[0], text


def test_prose_is_released_a_few_words_behind() -> None:
    prose = "The capital of France is Paris, a city on the Seine known for its museums. " * 4
    tokens = [prose[i : i + 4] for i in range(0, len(prose), 4)]
    released, most_held = _stream(
        prose, [sum(map(len, tokens[: i + 1])) for i in range(len(tokens) - 1)]
    )

    assert "".join(released) == prose
    assert most_held <= 32  # the release step (16) and the two words a quiet cut waits for
    assert sum(1 for piece in released if piece) > len(tokens) // 6  # a steady trickle


def test_a_number_is_held_until_it_can_no_longer_grow() -> None:
    redactor = StreamRedactor(REGIONS)
    shown = []
    for piece in ["Your card is ", "4111 1111", " 1111 11", "11 and it", " is valid now", "."]:
        shown.append(redactor.release() if redactor.feed(piece) else "")
    shown.append(redactor.finish())

    assert "".join(shown) == "Your card is [CARD] and it is valid now."
    assert not any("1111" in piece for piece in shown)
    assert redactor.hits["card"] == 1
