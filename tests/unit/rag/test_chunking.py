from __future__ import annotations

import itertools

import pytest

from rag.chunking import chunk_text

SENTENCES = [f"Sentence number {i} says something about topic {i % 7}." for i in range(60)]
PROSE = (
    " ".join(SENTENCES[:20])
    + "\n\n"
    + " ".join(SENTENCES[20:40])
    + "\n\n"
    + " ".join(SENTENCES[40:])
)


def test_short_text_is_one_chunk_with_whitespace_collapsed() -> None:
    assert chunk_text("  One fact.\n  Another   fact.  ", size=100, overlap=10) == [
        "One fact. Another fact."
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\n", " \t \n \n "])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, size=50, overlap=5) == []


@pytest.mark.parametrize(("size", "overlap"), [(200, 0), (200, 40), (120, 60), (100, 90)])
def test_chunks_are_bounded_non_empty_and_cover_every_sentence(size: int, overlap: int) -> None:
    chunks = chunk_text(PROSE, size=size, overlap=overlap)

    assert len(chunks) > 1
    assert all(chunk and chunk == chunk.strip() and len(chunk) <= size for chunk in chunks)
    joined = "\n".join(chunks)
    assert all(sentence in joined for sentence in SENTENCES)


def test_chunks_end_on_sentence_boundaries_when_sentences_fit() -> None:
    chunks = chunk_text(PROSE, size=200, overlap=0)

    assert all(chunk.endswith(".") for chunk in chunks)
    # Without overlap the chunks are the text itself, cut only between sentences.
    assert " ".join(" ".join(chunks).split()) == " ".join(PROSE.split())


def test_each_chunk_starts_with_the_end_of_the_one_before() -> None:
    chunks = chunk_text(PROSE, size=200, overlap=50)

    assert len(chunks) > 1  # otherwise the loop below checks nothing
    for previous, current in itertools.pairwise(chunks):
        # Find the longest whole-word tail of `previous` (at most 50 chars) that `current` repeats.
        repeated = [n for n in range(1, 51) if current.startswith(previous[-n:].lstrip())]
        assert repeated, (previous, current)
        assert max(repeated) >= 10


def test_paragraphs_are_kept_apart_inside_a_chunk() -> None:
    chunks = chunk_text("First paragraph.\n\nSecond paragraph.", size=100, overlap=0)

    assert chunks == ["First paragraph.\n\nSecond paragraph."]


def test_a_paragraph_starts_a_new_chunk_only_when_it_does_not_fit() -> None:
    text = "A" * 30 + ".\n\n" + "B" * 30 + "."
    chunks = chunk_text(text, size=40, overlap=0)

    assert chunks == ["A" * 30 + ".", "B" * 30 + "."]


def test_an_overlong_sentence_is_split_between_words() -> None:
    words = [f"word{i:03d}" for i in range(100)]
    chunks = chunk_text(" ".join(words), size=100, overlap=0)

    assert all(len(chunk) <= 100 for chunk in chunks)
    assert [w for chunk in chunks for w in chunk.split()] == words


def test_an_overlong_word_is_cut() -> None:
    chunks = chunk_text("x" * 250, size=100, overlap=20)

    assert all(0 < len(chunk) <= 100 for chunk in chunks)
    assert "".join(chunks).count("x") >= 250


def test_chunking_is_deterministic() -> None:
    first = chunk_text(PROSE, size=150, overlap=30)

    assert all(chunk_text(PROSE, size=150, overlap=30) == first for _ in range(3))


def test_an_overlap_close_to_the_size_still_makes_progress() -> None:
    chunks = chunk_text(PROSE, size=60, overlap=59)

    assert all(0 < len(chunk) <= 60 for chunk in chunks)
    words = PROSE.split()
    assert set(words) <= {w for chunk in chunks for w in chunk.split()}


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-5, 0), (100, 100), (100, -1)])
def test_bad_sizes_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("text", size=size, overlap=overlap)
