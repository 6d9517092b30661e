"""Redacting a streamed answer: PII that straddles chunks is redacted like in a whole answer.

An engine streams an answer a token at a time, and an e-mail address or a card number can
arrive in several chunks (`4111 1111` then ` 1111 1111`). The redactor therefore holds back
the text that could still belong to PII and releases only a prefix that nothing to come can
change:

* **a quiet cut**: the last gap between two complete plain words (letters only, with trailing
  punctuation; not `at` or `dot`, which spell e-mail addresses out) with no digit in the
  `_AFTER_DIGITS` visible characters before it. Every PII form the redactor finds is a single
  token (`jane.doe@example.com`, `4111.1111.1111.1111`) or crosses a gap next to a digit, an
  `@`, a bracket or a spelled `at`/`dot` (`4111 1111 ...`, `jane @ example.com`,
  `jane [at] example [dot] com`), and an IBAN's letter groups follow its digits closely, so no
  PII can span a quiet cut. The last word is not complete until a gap follows it, and a
  release waits for at least `_MIN_RELEASE` visible characters: in ordinary prose the client
  reads two to four words behind the engine.
* **a forced cut**: when no quiet cut appears for `max_hold_chars` visible characters
  (numbers, code, a table), the text is cut at the last gap that keeps half of that held
  (mid-word only if there is none), and never inside PII found so far: half of 256
  characters is more than any PII span the redactor knows, except e-mail addresses with
  parts of 60 characters or more.

What is released is redacted with the spans found in the whole held text plus the last
`_CONTEXT_CHARS` visible characters already released (read again, never sent again: the SSN
rule needs "SSN" a few words before the number, and look-behinds need their left neighbour),
so the streamed answer reads the same as the same answer redacted whole.

Cost (`bench/safety_overhead.py`): the client reads a few words behind the engine in prose
(a 600-character answer in 4-character chunks: 15 characters held at the median, 79 at most,
around an e-mail address and a phone number, which are held whole; up to `max_hold_chars`
in numbers, code or tables), and each release runs the PII finders over the held text and
that context: about 70 us of CPU per chunk there, twice that with digits nearby.
Everything reads the `visible` view (`twinloop.cleaning.normalize`), so zero-width or
fullwidth characters neither hide PII nor count as held text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from twinloop.cleaning.normalize import visible
from twinloop.cleaning.redaction import PiiSpan, apply_spans, find_pii

_CONTEXT_CHARS = 80
# Each release runs the PII finders over the held text and the context: releasing at most
# every few words instead of every word costs the client a word or two and saves most of them.
_MIN_RELEASE = 16
_AFTER_DIGITS = 48
_TOKEN = re.compile(r"\S+")
_WHITESPACE = re.compile(r"\s")
# Digits as the PII finders read them (`\d` on the `visible` view, where NFKC has made
# fullwidth and superscript digits ASCII).
_DIGIT = re.compile(r"\d")
_LEADING = "(\"'\u201c\u2018\u00ab"
_TRAILING = ".,;:!?)\"'\u201d\u2019\u00bb"
_SPELLED_EMAIL_WORDS = frozenset({"at", "dot"})


def _plain(token: str) -> bool:
    core = token.lstrip(_LEADING).rstrip(_TRAILING)
    return core.isalpha() and core.casefold() not in _SPELLED_EMAIL_WORDS


def _tail(text: str, chars: int) -> str:
    """The end of `text` that shows its last `chars` visible characters."""
    view, origin = visible(text)
    return text if len(view) <= chars else text[origin[len(view) - chars] :]


@dataclass
class StreamRedactor:
    """Feed it the deltas in order; `release()` after a `feed` that returns True, `finish()`
    at the end. Together they return the answer redacted, in pieces."""

    phone_regions: Sequence[str]
    max_hold_chars: int = 256

    def __post_init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self._context = ""  # released raw text, read again as left context
        self._pending = ""  # raw text not released yet
        self._cut: int | None = None  # where the next release ends, in `_pending`

    @property
    def held(self) -> str:
        return self._pending

    def feed(self, delta: str) -> bool:
        """Take `delta`; True when some text can be released (call `release`)."""
        self.add(delta)
        return self.ready()

    def add(self, delta: str) -> None:
        """Take `delta` without looking for a cut: deltas that arrived together are added
        one by one, then `ready` is asked once."""
        self._pending += delta

    def ready(self) -> bool:
        """True when some of the held text can be released (call `release`)."""
        view, origin = visible(self._pending)
        self._cut = self._quiet_cut(view, origin, min_chars=_MIN_RELEASE)
        if self._cut is None and len(view) > self.max_hold_chars:
            self._cut = self._forced_cut(view, origin)
        return bool(self._cut)

    def release(self) -> str:
        """The text up to the cut `feed` found, redacted; the rest stays held."""
        cut, self._cut = self._cut or 0, None
        return self._release(cut)

    def finish(self) -> str:
        """Everything still held, redacted (the stream ended)."""
        return self._release(len(self._pending)) if self._pending else ""

    def _quiet_cut(self, view: str, origin: Sequence[int], *, min_chars: int) -> int | None:
        if len(view) <= min_chars:
            return None  # no gap can be far enough in yet
        tokens = [m.span() for m in _TOKEN.finditer(view)]
        complete = len(tokens) if view[-1:].isspace() else len(tokens) - 1
        for a in range(complete - 2, -1, -1):
            gap = tokens[a][1]
            if gap < min_chars:
                return None
            if (
                _plain(view[tokens[a][0] : gap])
                and _plain(view[tokens[a + 1][0] : tokens[a + 1][1]])
                and _DIGIT.search(view, max(0, gap - _AFTER_DIGITS), gap) is None
            ):
                return origin[gap]
        return None

    def _forced_cut(self, view: str, origin: Sequence[int]) -> int:
        target = len(view) - self.max_hold_chars // 2
        gaps = [m.start() for m in _WHITESPACE.finditer(view, 0, target + 1)]
        at = gaps[-1] if gaps and gaps[-1] > 0 else target
        return origin[at]

    def _release(self, cut: int) -> str:
        window = self._context + self._pending
        offset = len(self._context)
        spans, _ = find_pii(window, phone_regions=self.phone_regions)
        end = offset + cut
        for span in spans:  # never cut through PII (a forced cut may land in it)
            if span.start < end < span.end:
                end = span.start
        if end <= offset:
            return ""
        released = [
            PiiSpan(max(s.start, offset) - offset, s.end - offset, s.kind, s.placeholder)
            for s in spans
            if s.start < end and s.end > offset
        ]
        if released:
            self.hits.update(span.kind for span in released)
        raw = window[offset:end]
        self._pending = window[end:]
        self._context = _tail(window[:end], _CONTEXT_CHARS)
        return apply_spans(raw, released)
