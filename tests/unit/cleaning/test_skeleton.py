"""The injection screen's view of ASCII text: lowercased, whitespace runs one space."""

from __future__ import annotations

import re
import string

from hypothesis import given
from hypothesis import strategies as st

from twinloop.cleaning.normalize import _CONFUSABLES, skeleton


def test_the_look_alike_table_changes_no_ascii_character() -> None:
    assert min(_CONFUSABLES) >= 128


@given(st.text(alphabet=string.printable, max_size=60))
def test_ascii_text_reads_as_on_the_full_path(text: str) -> None:
    # The full path: casefolded, look-alikes folded (none in ASCII), whitespace runs one space.
    assert skeleton(text) == re.sub(r"\s+", " ", text.casefold().translate(_CONFUSABLES))
    # ... and text that is not ASCII still takes it: a Cyrillic o (U+043E) reads as a Latin one.
    assert skeleton(text + " ign\u043ere") == skeleton(text + " ignore")
