"""Repeated text: rule 5 (a loop within one text) and rule 6 (near-duplicates across texts)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import pairwise

from twinloop.cleaning.examples import DUPLICATE, CandidateExample, Quarantined

# --- 5. Repetition -----------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).casefold())


def bigram_repetition_ratio(text: str) -> float:
    """Share of word bigrams that repeat an earlier one: 1 - unique bigrams / total bigrams.

    Words are casefolded `\\w+` runs. Ordinary prose scores near 0; a model stuck in a loop
    ("the the the ...", a sentence repeated) approaches 1. Texts with fewer than two bigrams
    (under three words) score 0, since one bigram cannot repeat.
    """
    words = _words(text)
    bigrams = list(pairwise(words))
    if len(bigrams) < 2:
        return 0.0
    return 1.0 - len(set(bigrams)) / len(bigrams)


# --- 6. Near-duplicates ------------------------------------------------------------------------


def _shingles(example: CandidateExample) -> frozenset[tuple[str, ...]]:
    # "\x00" cannot be a \w word, so no shingle is shared by a question end and an answer start
    # by accident of wording.
    words = [*_words(example.question), "\x00", *_words(example.answer)]
    if len(words) < 3:
        return frozenset({tuple(words)})
    return frozenset(zip(words, words[1:], words[2:], strict=False))


def drop_near_duplicates(
    kept: Sequence[tuple[int, CandidateExample]],
    threshold: float,
    out: list[tuple[int, Quarantined]],
) -> list[tuple[int, CandidateExample]]:
    """`kept` without the near-duplicates of an earlier survivor (input order wins); each one
    dropped is appended to `out` with its reason.

    Exact Jaccard via an inverted index: only examples sharing a shingle are compared.
    """
    deduped: list[tuple[int, CandidateExample]] = []
    kept_shingles: list[frozenset[tuple[str, ...]]] = []
    index_of: defaultdict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, ex in kept:
        shingles = _shingles(ex)
        shared: Counter[int] = Counter(k for s in shingles for k in index_of.get(s, ()))
        best, best_sim = -1, 0.0
        for k, inter in shared.items():
            sim = inter / (len(shingles) + len(kept_shingles[k]) - inter)
            if sim > best_sim or (sim == best_sim and k < best):
                best, best_sim = k, sim
        if best >= 0 and best_sim >= threshold:
            reason = (
                f"near-duplicate of {deduped[best][1].id!r} (Jaccard {best_sim:.2f} "
                f">= {threshold:g})"
            )
            out.append((index, Quarantined(ex, DUPLICATE, reason)))
            continue
        for s in shingles:
            index_of[s].append(len(deduped))
        kept_shingles.append(shingles)
        deduped.append((index, ex))
    return deduped
