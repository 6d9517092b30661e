"""The literal text every match of a regular expression starts with: a cheap test that
rules a pattern out before the regex engine runs it.

`literal_prefixes(pattern)` reads the pattern's parse tree (the `re` module's own parser)
and returns strings one of which begins every match, or None when it cannot say (the
pattern may start with a character class, an optional part, or an empty alternative). Zero-
width assertions (`\\b`, look-behinds, `^`) are skipped: they consume nothing, so the text
after them is still the start of the match. The strings are only as long as the analysis can
prove; a text that contains none of them cannot match, whatever the pattern says after them.

Why here: the injection screen runs a dozen long alternations on every question, and an
ordinary question contains none of their first words (`ignore`, `reveal`, `<|`, ...).
Searching for the words first costs a few microseconds; running the patterns, twenty.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
from typing import Any

# Past this many strings the prefixes stop growing: a longer list searches no faster.
_MAX_PREFIXES = 64
_ZERO_WIDTH = frozenset({sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT})


def literal_prefixes(pattern: re.Pattern[str]) -> frozenset[str] | None:
    """Strings one of which starts every match of `pattern`, or None (no such set found)."""
    if pattern.flags & re.IGNORECASE:
        return None  # the literals would stand for every casing of themselves
    prefixes = _sequence(list(sre_parse.parse(pattern.pattern, pattern.flags)))
    return frozenset(prefixes) if prefixes else None


def _sequence(items: list[tuple[Any, Any]]) -> set[str] | None:
    """The prefixes of a sequence of parsed items: extended item by item while each one is
    a literal or a set of literal characters, then by the first alternation's prefixes."""
    found = {""}
    for op, arg in items:
        if op in _ZERO_WIDTH or _zero_width_branch(op, arg):
            continue
        if op is sre_constants.LITERAL:
            found = {text + chr(arg) for text in found}
            continue
        choices = _choices(op, arg)
        if choices is None or len(found) * len(choices) > _MAX_PREFIXES:
            break
        found = {text + choice for text in found for choice in choices}
        if op is not sre_constants.IN:
            break  # an item's prefix may be only its start: nothing after it follows safely
    return None if "" in found else found


def _zero_width_branch(op: Any, arg: Any) -> bool:
    """An alternation of assertions only (`(?:^|(?<=\\s))`): it consumes nothing either."""
    return op is sre_constants.BRANCH and all(
        all(kind in _ZERO_WIDTH for kind, _ in branch) for branch in arg[1]
    )


def _choices(op: Any, arg: Any) -> set[str] | None:
    """What one item can start with, as strings; None when that is not a finite set."""
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
        least, _most, body = arg
        body = list(body)
        if least < 1:
            return None
        if len(body) == 1 and body[0][0] is sre_constants.LITERAL:
            return {chr(body[0][1]) * least}
        return _sequence(body)
    if op is sre_constants.IN:
        members = list(arg)
        if all(kind is sre_constants.LITERAL for kind, _ in members):
            return {chr(code) for _, code in members}
        return None
    if op is sre_constants.BRANCH:
        alternatives = [_sequence(list(branch)) for branch in arg[1]]
        if any(alternative is None for alternative in alternatives):
            return None
        return set().union(*alternatives)  # type: ignore[arg-type]
    if op is sre_constants.SUBPATTERN:
        _group, add_flags, _del_flags, body = arg
        if add_flags & re.IGNORECASE:
            return None
        return _sequence(list(body))
    return None
