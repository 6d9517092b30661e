"""Split a document into overlapping chunks for retrieval.

Boundaries are chosen in this order: paragraphs (blank lines), then sentences
(`.`, `!` or `?` followed by whitespace), then words; only a single word longer
than a chunk is cut mid-word. Pieces are packed greedily up to `size`
characters, and each chunk after the first starts with up to `overlap`
characters from the end of the one before (cut at a word boundary), so a fact
that straddles a boundary is still whole in one chunk. Whitespace inside a
paragraph is collapsed to single spaces. The same input always gives the same
chunks; no chunk is empty and none is longer than `size`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends at . ! or ?, optionally followed by a closing quote or bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")

PARAGRAPH_SEPARATOR = "\n\n"
SENTENCE_SEPARATOR = " "


@dataclass(frozen=True)
class _Piece:
    text: str
    starts_paragraph: bool


def chunk_text(text: str, *, size: int, overlap: int) -> list[str]:
    """Chunks of at most `size` characters, each repeating up to `overlap` of the last one's."""
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be in [0, {size}), got {overlap}")
    # Pieces leave room for the overlap, but never shrink below half a chunk: with a large
    # overlap the repeated tail is shortened instead of sentences being cut into crumbs.
    piece_limit = max(size - overlap - 1, (size + 1) // 2)
    pieces = list(_pieces(text, piece_limit))
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        separator = PARAGRAPH_SEPARATOR if piece.starts_paragraph else SENTENCE_SEPARATOR
        if current and len(current) + len(separator) + len(piece.text) <= size:
            current += separator + piece.text
            continue
        if current:
            chunks.append(current)
            current = _start_with_tail(current, piece.text, size=size, overlap=overlap)
        else:
            current = piece.text
    if current:
        chunks.append(current)
    return chunks


def _pieces(text: str, limit: int) -> list[_Piece]:
    """Sentences (or slices of over-long ones) no longer than `limit`, in order."""
    pieces: list[_Piece] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        flat = " ".join(paragraph.split())
        if not flat:
            continue
        first = True
        for sentence in _SENTENCE_END.split(flat):
            for part in _split_long(sentence, limit):
                pieces.append(_Piece(part, starts_paragraph=first))
                first = False
    return pieces


def _split_long(sentence: str, limit: int) -> list[str]:
    """`sentence` itself when short enough, else word-packed parts (words cut only if need be)."""
    if len(sentence) <= limit:
        return [sentence] if sentence else []
    parts: list[str] = []
    current = ""
    for word in sentence.split(" "):
        while len(word) > limit:
            if current:
                parts.append(current)
                current = ""
            parts.append(word[:limit])
            word = word[limit:]
        if not word:
            continue
        if current and len(current) + 1 + len(word) <= limit:
            current += " " + word
        elif current:
            parts.append(current)
            current = word
        else:
            current = word
    if current:
        parts.append(current)
    return parts


def _start_with_tail(previous: str, piece: str, *, size: int, overlap: int) -> str:
    """The next chunk: the end of `previous` (whole words, at most `overlap` chars) + `piece`."""
    room = min(overlap, size - len(piece) - len(SENTENCE_SEPARATOR))
    tail = _word_tail(previous, room)
    return f"{tail}{SENTENCE_SEPARATOR}{piece}" if tail else piece


def _word_tail(text: str, limit: int) -> str:
    """The last at most `limit` characters of `text`, starting at a word boundary."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text.strip()
    cut = len(text) - limit
    tail = text[cut:]
    if not text[cut - 1].isspace():
        # The cut fell inside a word: drop that word's end.
        boundary = re.search(r"\s", tail)
        tail = tail[boundary.end() :] if boundary else ""
    return tail.strip()
