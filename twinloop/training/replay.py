"""Step 3 of the learning loop: what a cycle replays so new facts do not erase old skills.

Two sources, mixed into every domain's training:

* **domain replay** — the domain's earlier accepted examples, trained again next to the
  new ones. Each cycle trains the domain's adapter afresh from the base model, so this is
  what keeps earlier lessons in the new adapter. `trainer.domain_replay_ratio` earlier
  examples per new one, newest first (`repository.domain_replay`).
* **general replay** — the base model's own greedy answers to the general prompts shipped
  in `data/general_replay_prompts.jsonl`. The trainer keeps the adapter's next-token
  distribution close to the base model's on them (the KL term in adapters/training.py);
  without it a LoRA that learns ten facts forgets capitals. The answers are generated once
  per base model and prompt set and cached under the data directory.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twinloop.files import atomic_write_text

GENERAL_PROMPTS_PATH = Path(__file__).parent / "data" / "general_replay_prompts.jsonl"

AnswerGenerator = Callable[[Path, Sequence[str]], list[str]]


@dataclass(frozen=True)
class ReplayItem:
    """A question and the answer to keep: an earlier example's, or the base model's own."""

    question: str
    answer: str
    example_id: str | None = None


def load_general_prompts(path: Path = GENERAL_PROMPTS_PATH) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [str(json.loads(line)["question"]) for line in lines if line.strip()]


def general_replay_set(
    base_model_dir: Path,
    cache_dir: Path,
    size: int,
    *,
    generate: AnswerGenerator,
    prompts_path: Path = GENERAL_PROMPTS_PATH,
    extra_prompts: Sequence[str] = (),
) -> list[ReplayItem]:
    """The base model's answers to the first `size` general prompts (and `extra_prompts`:
    the QA suites' training-split questions, so the skills QA checks are guarded too),
    cached on disk per question.

    Blocking (runs the model for questions it has no cached answer to): call it from a
    thread in async code. The cache is one file per base model (its key covers the model's
    files, so a new model never reuses stale answers); a cycle whose prompt set differs
    from the last one's generates only the new questions.
    """
    prompts = list(dict.fromkeys([*load_general_prompts(prompts_path)[:size], *extra_prompts]))
    if not prompts:
        return []
    cache = cache_dir / f"general_replay-{_model_key(base_model_dir)}.jsonl"
    known: dict[str, str] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                known[row["question"]] = row["answer"]
    missing = [p for p in prompts if p not in known]
    if missing:
        known.update(zip(missing, generate(base_model_dir, missing), strict=True))
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            cache,
            "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in known.items()),
        )
    return [ReplayItem(question=p, answer=known[p]) for p in prompts]


def replay_budget(new_count: int, ratio: float) -> int:
    return math.ceil(new_count * ratio)


def _model_key(base_model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(base_model_dir.glob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
