"""The literal text every match of a pattern starts with, read from the pattern itself."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinloop.cleaning.prefixes import literal_prefixes


@pytest.mark.parametrize(
    ("pattern", "prefixes"),
    [
        (r"\bfoo|bar", {"foo", "bar"}),
        (r"\b(?<!not )(?:ignore[rz]?|skip)\s", {"ignore", "skip"}),
        (r"<\|[a-z]|\[/?INST\]|<</?SYS>>", {"<|", "[", "<<"}),
        (r"[ab]c", {"ac", "bc"}),
        (r"(?:^|(?<=\s))#{2,}x", {"##"}),
        (r"(?:ab)+c", {"ab"}),
    ],
)
def test_the_words_a_match_must_start_with(pattern: str, prefixes: set[str]) -> None:
    assert literal_prefixes(re.compile(pattern)) == prefixes


@pytest.mark.parametrize(
    "pattern",
    [r"a?b", r"x*y", r"(?:^|\s)x", r"(?:ab|)c", r"(?i)abc", r"[^a]b", r"\w+", r".x"],
)
def test_no_words_when_a_match_can_start_anywhere_or_in_any_case(pattern: str) -> None:
    assert literal_prefixes(re.compile(pattern)) is None


_PATTERNS = [r"\bfoo|bar", r"(?:ab)+c", r"[ab]c", r"(?:^|(?<=\s))#{2,}x", r"(?:x|yz)w?"]


@given(st.text(alphabet="abcfoxyzrw# \n", max_size=30), st.sampled_from(_PATTERNS))
def test_a_text_without_the_words_has_no_match(text: str, pattern: str) -> None:
    compiled = re.compile(pattern)
    prefixes = literal_prefixes(compiled)
    assert prefixes is not None
    for match in compiled.finditer(text):
        assert any(match.group(0).startswith(prefix) for prefix in prefixes)
