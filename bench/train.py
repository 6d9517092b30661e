"""Training on this CPU: throughput, one cycle's wall time, and learning with and without replay.

Needs the prepared base model (`make up` once, or `twinloop models prepare`).

1. **Learning** — trains two adapters side by side on the same 30 examples (10 made-up
   facts about "Quorvath", 3 phrasings each, as corrections would send them) with the
   trainer's default settings: one with the forgetting guard (KL to the base model over
   the general replay set), one with replay off (`kl_weight=0`). Each is asked the 10
   held-out paraphrases (one per fact, never trained), all 20 paraphrases, and the
   54-question general holdout the base model answers correctly. The base model's scores
   are the baseline.
2. **One cycle of 50 examples** (`--cycle`) — the whole cycle (collect, clean, train,
   register, snapshot, stage) through `CycleRunner` on a temporary SQLite database, with a
   stub engine answering the adapter loads; prints each step's wall time and examples/s.

    .venv/bin/python bench/train.py            # both
    .venv/bin/python bench/train.py --no-cycle # learning only
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import dataclasses
import tempfile
import time

from adapters.training import generate_answers, train_adapter
from twinloop.settings import Settings
from twinloop.testing.learning_eval import load_facts, load_holdout, score
from twinloop.training.peft_trainer import training_config
from twinloop.training.replay import ReplayItem, general_replay_set


def learning(settings: Settings) -> None:
    base_dir = Path(settings.base_model_path)
    facts, holdout = load_facts(), load_holdout()
    examples = [ReplayItem(q, f.answer) for f in facts for q in f.train_questions]
    first = [f.test_questions[0] for f in facts]
    all_paraphrases = [q for f in facts for q in f.test_questions]
    first_accept = [f.accept for f in facts]
    all_accept = [f.accept for f in facts for _ in f.test_questions]
    questions = first + all_paraphrases + [h.question for h in holdout]
    guard = general_replay_set(
        base_dir,
        settings.training_dir / "cache",
        settings.trainer.general_replay_size,
        generate=lambda d, p: generate_answers(d, p),
    )

    def evaluate(adapter_dir: Path | None) -> tuple[int, int, int]:
        answers = generate_answers(base_dir, questions, adapter_dir=adapter_dir)
        a, rest = answers[: len(first)], answers[len(first) :]
        b, c = rest[: len(all_paraphrases)], rest[len(all_paraphrases) :]
        return (
            score(a, first_accept),
            score(b, all_accept),
            score(c, [h.accept for h in holdout]),
        )

    rows = [("base model", *evaluate(None), "-", "-")]
    config = training_config(settings)
    with tempfile.TemporaryDirectory() as tmp:
        for label, kl in (("guard on (KL, replay)", config.kl_weight), ("replay off", 0.0)):
            cfg = dataclasses.replace(config, kl_weight=kl)
            started = time.perf_counter()
            artifact = train_adapter(
                base_dir, examples, guard if kl else [], cfg, Path(tmp) / label.split()[0]
            )
            seconds = time.perf_counter() - started
            rows.append((label, *evaluate(artifact.path), f"{artifact.steps}", f"{seconds:.0f}"))
    print(f"\nlearning: {len(examples)} examples, {len(guard)} general replay items, {config}")
    header = ("", "facts 10", "paraphrases 20", f"holdout {len(holdout)}", "steps", "train s")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(v) for v in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cycle", action="store_true", help="skip the 50-example cycle")
    parser.add_argument("--no-learning", action="store_true", help="skip the learning figures")
    args = parser.parse_args()
    settings = Settings()
    if not args.no_learning:
        learning(settings)
    if not args.no_cycle:
        from bench.train_cycle import one_cycle

        asyncio.run(one_cycle(settings, examples=50))


if __name__ == "__main__":
    main()
