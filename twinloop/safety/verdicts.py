"""The input screen's verdicts on texts it has read, remembered by text.

A chat client sends the whole conversation with every turn, so without memory the input
screen reads every earlier message again at each new one: a ten-turn conversation of
300-character messages is ~3,000 characters, about 2 ms of the injection rules per request.
A verdict depends on the text alone (the rules are fixed in the code), so a text read
once need not be read again: each turn then screens only what is new.

Bounded by characters, not entries, so long messages cannot make it grow past
`max_chars`; a text longer than `max_text_chars` is screened every time and never kept.
Thread-safe: the gateway screens long inputs off the event loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

Verdict = tuple[str, str] | None  # (rule, matched text), or None: nothing found

# ~4 million characters: 4-16 MB, thousands of conversations' worth of messages.
DEFAULT_MAX_CHARS = 4_000_000
DEFAULT_MAX_TEXT_CHARS = 20_000


class InputVerdicts:
    """`find(text)` remembered: call it like `find`; `known(text)` says whether it would be
    answered from memory."""

    def __init__(
        self,
        find: Callable[[str], Verdict],
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
    ) -> None:
        self._find = find
        self._max_chars = max_chars
        self._max_text_chars = min(max_text_chars, max_chars)
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def __call__(self, text: str) -> Verdict:
        with self._lock:
            if text in self._verdicts:
                self._verdicts.move_to_end(text)
                return self._verdicts[text]
        verdict = self._find(text)
        if len(text) <= self._max_text_chars:
            self._keep(text, verdict)
        return verdict

    def known(self, text: str) -> bool:
        return text in self._verdicts

    def __len__(self) -> int:
        return len(self._verdicts)

    @property
    def chars(self) -> int:
        return self._chars

    def _keep(self, text: str, verdict: Verdict) -> None:
        with self._lock:
            if text in self._verdicts:
                return  # another thread read it meanwhile
            self._verdicts[text] = verdict
            self._chars += len(text)
            while self._chars > self._max_chars:
                dropped, _ = self._verdicts.popitem(last=False)
                self._chars -= len(dropped)
