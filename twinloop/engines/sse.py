"""Server-sent events as vLLM streams them, read from bytes as they arrive.

Only the `data:` lines matter (vLLM writes one per event, `data: <json>` then a blank
line, and `data: [DONE]` at the end); nothing is decoded here but the line split, so
the cost per event is one `bytes.split` share and the JSON parse of the caller's choice.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SseData:
    """Feed it the body's bytes in any pieces; each call returns the data fields of the
    lines it completed, in order."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line[5:].strip() for line in lines if line.startswith(b"data:")]

    def end(self) -> list[bytes]:
        """The last line, if the body ended without its newline."""
        rest, self._partial = self._partial, b""
        return [rest[5:].strip()] if rest.startswith(b"data:") else []
