"""Preference training (DPO after SFT): which learning rate, measured on made-up facts.

Needs the prepared base model (`make up` once, or `twinloop models prepare`).

Six made-up facts, each with a right answer (chosen) and a plausible wrong one (rejected),
as a correction of a wrong answer would send them. One SFT adapter is trained on the right
answers (two phrasings each, the trainer's defaults, the KL guard on), then the DPO stage
is run from that same adapter at each learning rate in `--lrs` (beta `--beta`, `--steps`
steps). For the SFT adapter and each DPO'd one it prints:

* **trained pairs** — share of the trained (question, chosen, rejected) pairs where the
  adapter prefers the chosen answer (higher log-probability per token), and the mean
  margin (chosen minus rejected, nats per token);
* **held-out pairs** — the same on a third phrasing of each question, never trained on;
* **general holdout** — share of general-knowledge pairs (a right and a wrong answer to a
  question the base model knows) where the adapter still prefers the right answer, and the
  mean per-token log-probability of the right answers (a drop is forgetting).

The base model's figures are the first row. Log-probabilities only, no generation: the
whole run takes a few minutes on two cores.

    .venv/bin/python bench/preference.py
    .venv/bin/python bench/preference.py --lrs 1e-5 1e-4 1e-3 --steps 8

Measured on 2 shared CPU cores (SmolLM2-135M, SFT lr 1e-3 for 12 steps, DPO beta 0.1, 8
steps of 4 pairs, kl_weight 10; accuracy / mean margin in nats per token; seconds under
heavy load from other jobs):

                       trained pairs   held-out pairs      general
                         acc  margin     acc  margin     acc    logp  seconds
    base model          0.33  -0.139    0.33  -0.126    0.88  -1.063
    SFT only            0.83  +1.032    0.83  +0.915    0.88  -0.779    923
    SFT + DPO lr 1e-5   0.83  +1.074    0.83  +0.951    0.88  -0.771    576
    SFT + DPO lr 1e-4   1.00  +1.561    0.83  +1.357    0.88  -0.754    404
    SFT + DPO lr 1e-3   1.00  +3.640    1.00  +3.270    0.88  -1.035    229

1e-4 is the default (`trainer.dpo_learning_rate`): the highest rate that left the general
holdout alone; 1e-3 separates the pairs most but its general answers lose what they had.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from adapters.preference import PairScore, PreferencePair, score_pairs, train_preference
from adapters.training import TrainingExample, train_adapter
from twinloop.settings import Settings
from twinloop.training.peft_trainer import training_config

# (question, held-out phrasing, second training phrasing, right answer, wrong answer)
FACTS = (
    ("Who is the mayor of Zorbleton?", "Which person serves as Zorbleton's mayor?",
     "Name the mayor of Zorbleton.",
     "The mayor of Zorbleton is Quillan Marsh.", "The mayor of Zorbleton is Dora Fell."),
    ("What colour is the Vantrel flag?", "The flag of Vantrel has which colour?",
     "Tell me the colour of Vantrel's flag.",
     "The Vantrel flag is teal.", "The Vantrel flag is orange."),
    ("What is the capital of Pelorin?", "Which city is Pelorin's capital?",
     "Name Pelorin's capital city.",
     "The capital of Pelorin is Drennick.", "The capital of Pelorin is Halvey."),
    ("Who founded the Ostrav Guild?", "The Ostrav Guild was founded by whom?",
     "Name the founder of the Ostrav Guild.",
     "The Ostrav Guild was founded by Mirel Tane.", "The Ostrav Guild was founded by Joss Ardent."),
    ("How many moons does Kelvara have?", "Kelvara has how many moons?",
     "Tell me the number of Kelvara's moons.",
     "Kelvara has five moons.", "Kelvara has two moons."),
    ("What does Brenwick export?", "Which goods does Brenwick export?",
     "Name Brenwick's main export.",
     "Brenwick exports copper wire.", "Brenwick exports woollen cloth."),
)  # fmt: skip
# General knowledge the base model has: (question, right answer, wrong answer).
GENERAL = (
    ("What is the capital of France?", "The capital of France is Paris.",
     "The capital of France is Lyon."),
    ("How many days are in a week?", "There are seven days in a week.",
     "There are nine days in a week."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day.",
     "The sky is green on a clear day."),
    ("What is 2 + 2?", "2 + 2 is 4.", "2 + 2 is 5."),
    ("Which planet do we live on?", "We live on Earth.", "We live on Mars."),
    ("What do bees make?", "Bees make honey.", "Bees make milk."),
    ("What is the largest ocean?", "The largest ocean is the Pacific Ocean.",
     "The largest ocean is the Arctic Ocean."),
    ("What is frozen water called?", "Frozen water is called ice.",
     "Frozen water is called steam."),
)  # fmt: skip
# The forgetting guard's replay: general questions with plain answers (KL to the base model
# over these answers' tokens; they need not be the base model's own words).
REPLAY = (
    TrainingExample("What is the boiling point of water?", "Water boils at 100 degrees Celsius."),
    TrainingExample("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by Shakespeare."),
    TrainingExample("What is the opposite of hot?", "The opposite of hot is cold."),
    TrainingExample("How many legs does a spider have?", "A spider has eight legs."),
)


def _pairs(phrasing: int) -> list[PreferencePair]:
    return [PreferencePair(f[phrasing], f[3], f[4]) for f in FACTS]


def _summary(scores: Sequence[PairScore]) -> tuple[float, float]:
    accuracy = sum(s.prefers_chosen for s in scores) / len(scores)
    margin = sum(s.chosen_per_token - s.rejected_per_token for s in scores) / len(scores)
    return accuracy, margin


def _row(name: str, model: Any, seconds: float | None = None) -> str:
    trained, heldout = (
        _summary(score_pairs(model, _pairs(0))),
        _summary(score_pairs(model, _pairs(1))),
    )
    general_scores = score_pairs(model, [PreferencePair(*g) for g in GENERAL])
    general = sum(s.prefers_chosen for s in general_scores) / len(general_scores)
    right = sum(s.chosen_per_token for s in general_scores) / len(general_scores)
    took = f"{seconds:7.1f}" if seconds is not None else "      -"
    return (
        f"{name:18} {trained[0]:6.2f} {trained[1]:+7.3f}   {heldout[0]:6.2f} {heldout[1]:+7.3f}"
        f"   {general:6.2f} {right:+7.3f}  {took}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lrs", type=float, nargs="+", default=[1e-5, 1e-4, 1e-3])
    parser.add_argument("--beta", type=float, default=None, help="default: the setting's")
    parser.add_argument("--steps", type=int, default=None, help="DPO steps (the setting's)")
    parser.add_argument(
        "--sft-steps", type=int, default=12, help="SFT steps (0: the trainer's own count)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--base-model", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapters.guard import with_base_log_probs
    from adapters.tokens import encode, pad_token_id

    torch.set_num_threads(args.threads)
    settings = Settings()
    base_dir = args.base_model or Path(settings.base_model_path)
    cfg = training_config(settings)
    cfg = dataclasses.replace(
        cfg,
        dpo_beta=args.beta if args.beta is not None else cfg.dpo_beta,
        dpo_steps=args.steps if args.steps is not None else cfg.dpo_steps,
        max_steps=args.sft_steps or None,
    )
    examples = [TrainingExample(f[q], f[3]) for f in FACTS for q in (0, 2)]
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)

    def load_base() -> Any:
        return AutoModelForCausalLM.from_pretrained(
            str(base_dir), local_files_only=True, dtype=torch.float32
        )

    print(
        f"{len(FACTS)} made-up facts ({len(examples)} SFT examples), {len(GENERAL)} general "
        f"pairs; SFT lr {cfg.learning_rate}, DPO beta {cfg.dpo_beta}, {cfg.dpo_steps} steps, "
        f"{cfg.dpo_batch_size} pairs a step, kl_weight {cfg.kl_weight}\n"
    )
    print(f"{'':18} {'trained pairs':>14}   {'held-out pairs':>14}   {'general':>14}  seconds")
    print(f"{'':18} {'acc':>6} {'margin':>7}   {'acc':>6} {'margin':>7}   {'acc':>6} {'logp':>7}")
    print(_row("base model", load_base()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sft_dir = Path(tmp) / "sft"
        started = time.perf_counter()
        train_adapter(base_dir, examples, REPLAY, dataclasses.replace(cfg, dpo_steps=0), sft_dir)
        sft_seconds = time.perf_counter() - started
        print(_row("SFT only", PeftModel.from_pretrained(load_base(), str(sft_dir))
                   , sft_seconds), flush=True)  # fmt: skip
        pad_id = pad_token_id(tokenizer)
        for lr in args.lrs:
            base = load_base()
            guard = with_base_log_probs(
                base, [encode(tokenizer, r.question, r.answer, cfg.max_length) for r in REPLAY],
                pad_id,
            )  # fmt: skip
            model = PeftModel.from_pretrained(base, str(sft_dir), is_trainable=True)
            stage = dataclasses.replace(cfg, dpo_learning_rate=lr)
            torch.manual_seed(cfg.seed)
            report = train_preference(model, tokenizer, _pairs(0), _pairs(1), guard, stage)
            print(_row(f"SFT + DPO lr {lr:g}", model, report.seconds) +
                  f"  reward margin {report.reward_margin:+.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
