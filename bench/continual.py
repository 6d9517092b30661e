"""Continual adapters vs from-base: two cycles on made-up facts, what each keeps and learns.

Needs the prepared base model (`make up` once, or `twinloop models prepare`).

Cycle 1 trains an adapter from the base model on facts A (the first `--facts` made-up facts
about "Quorvath", three phrasings each). Cycle 2 teaches facts B (the next `--facts`) the way
a training cycle does — the new examples plus the domain's replay of earlier accepted
examples (facts A, `--domain-replay` of them per new one, `trainer.domain_replay_ratio`),
guarded by KL over the general replay set — three ways:

* **from base**: a fresh LoRA (what every cycle did before `trainer.continual`);
* **continual**: starting from cycle 1's adapter, guarded toward the base only;
* **continual + KL to previous**: the same, plus KL(new ‖ cycle 1's adapter) over the replay
  set with `--previous-weight` (`trainer.continual_kl_weight`).

Each adapter is asked the held-out paraphrases of facts A (retained: never trained, two per
fact) and of facts B (learned) and the first `--holdout` questions of the general holdout the
base model answers correctly; the table gives those counts, the steps and the training wall
time. The trainer's default settings otherwise (`training_config`). Sized to finish in about
ten minutes on two busy cores (greedy generation is most of it); `--facts 5 --holdout 54
--max-new-tokens 48` is the full set.

    .venv/bin/python bench/continual.py
    .venv/bin/python bench/continual.py --base-model var/test/models/smollm2-135m-instruct
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import math
import tempfile
import time
from collections.abc import Sequence

from adapters.continual import GrowFrom
from adapters.files import adapter_sha256
from adapters.training import (
    AdapterJob,
    AdapterTrainingConfig,
    generate_answers,
    train_adapter,
    train_adapters,
)
from twinloop.settings import Settings
from twinloop.testing.learning_eval import Fact, load_facts, load_holdout, score
from twinloop.training.peft_trainer import training_config
from twinloop.training.replay import ReplayItem, general_replay_set


def _examples(facts: Sequence[Fact]) -> list[ReplayItem]:
    return [ReplayItem(q, f.answer) for f in facts for q in f.train_questions]


def run(
    base_dir: Path, cache_dir: Path, cfg: AdapterTrainingConfig, args: argparse.Namespace
) -> None:
    import torch

    torch.set_num_threads(args.threads)
    facts = load_facts()
    facts_a, facts_b = facts[: args.facts], facts[args.facts : 2 * args.facts]
    holdout = load_holdout()[: args.holdout]
    a_questions = [q for f in facts_a for q in f.test_questions]
    b_questions = [q for f in facts_b for q in f.test_questions]
    questions = a_questions + b_questions + [h.question for h in holdout]
    accepts = (
        [f.accept for f in facts_a for _ in f.test_questions],
        [f.accept for f in facts_b for _ in f.test_questions],
        [h.accept for h in holdout],
    )

    def evaluate(adapter_dir: Path | None) -> tuple[int, int, int]:
        answers = generate_answers(
            base_dir, questions, adapter_dir=adapter_dir, max_new_tokens=args.max_new_tokens
        )
        split = (len(a_questions), len(a_questions) + len(b_questions))
        a, b, rest = answers[: split[0]], answers[split[0] : split[1]], answers[split[1] :]
        return score(a, accepts[0]), score(b, accepts[1]), score(rest, accepts[2])

    guard = general_replay_set(
        base_dir, cache_dir, args.general_replay, generate=lambda d, p: generate_answers(d, p)
    )
    print(f"{len(guard)} general replay items", flush=True)
    rows: list[tuple[object, ...]] = [("base model", *evaluate(None), "-", "-")]
    print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        first = train_adapter(base_dir, _examples(facts_a), guard, cfg, Path(tmp) / "cycle1")
        seconds = time.perf_counter() - started
        rows.append(("cycle 1: facts A, from base", *evaluate(first.path), first.steps,
                     f"{seconds:.0f}"))  # fmt: skip
        print(rows[-1], flush=True)
        sha256 = adapter_sha256(first.path)
        new_b = _examples(facts_b)
        replay_a = _examples(facts_a)[: math.ceil(len(new_b) * args.domain_replay)]
        second = [*new_b, *replay_a]
        modes: list[tuple[str, GrowFrom | None]] = [
            ("cycle 2: facts B, from base", None),
            ("cycle 2: facts B, continual", GrowFrom(first.path, sha256, 0.0)),
            (
                f"cycle 2: facts B, continual + {args.previous_weight:g} x KL to previous",
                GrowFrom(first.path, sha256, args.previous_weight),
            ),
        ]
        for n, (label, grow_from) in enumerate(modes):
            started = time.perf_counter()
            job = AdapterJob("b", second, Path(tmp) / f"cycle2-{n}", grow_from=grow_from)
            (artifact,) = train_adapters(base_dir, [job], guard, cfg)
            seconds = time.perf_counter() - started
            rows.append((label, *evaluate(artifact.path), artifact.steps, f"{seconds:.0f}"))
            print(rows[-1], flush=True)
    print(
        f"\ncontinual: facts A {len(facts_a)} x 3 phrasings, then facts B {len(facts_b)} x 3 with "
        f"{len(replay_a)} replayed A examples; {len(guard)} general replay items; {cfg}"
    )
    header = ("", f"A retained /{len(a_questions)}", f"B learned /{len(b_questions)}",
              f"holdout /{len(holdout)}", "steps", "train s")  # fmt: skip
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(v) for v in row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    settings = Settings()
    parser.add_argument("--base-model", type=Path, default=Path(settings.base_model_path))
    parser.add_argument("--previous-weight", type=float, default=10.0,
                        help="weight of KL to the previous adapter in the third mode")  # fmt: skip
    parser.add_argument("--domain-replay", type=float, default=settings.trainer.domain_replay_ratio,
                        help="facts A examples replayed per new facts B example")  # fmt: skip
    parser.add_argument("--general-replay", type=int, default=settings.trainer.general_replay_size)
    parser.add_argument("--threads", type=int, default=settings.trainer.threads)
    parser.add_argument("--facts", type=int, default=3, help="made-up facts per cycle (<= 5)")
    parser.add_argument("--holdout", type=int, default=12, help="general holdout questions")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="per evaluated answer")
    args = parser.parse_args()
    run(args.base_model, settings.training_dir / "cache", training_config(settings), args)


if __name__ == "__main__":
    main()
