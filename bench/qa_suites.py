"""What the base model (or an adapter) scores on the shipped QA suites, case by case, and what
each case costs a QA run.

Needs the prepared base model (`make up` once, or `twinloop models prepare`). Answers as the
QA dry run asks them — one user turn, greedy, `qa.max_tokens` — with transformers on the CPU,
one question at a time (no padding, so each answer is the one a single stream gives), in
float32 or bfloat16 (what the vLLM CPU engine computes in; greedy answers can differ between
the two, and a case that flips with the dtype is a coin toss for the gate). Prints every
case's verdict and answer, then per category the training-split and held-out scores, and the
generated tokens and seconds, from which the added time per QA run follows.

    .venv/bin/python bench/qa_suites.py                          # safety and reasoning
    .venv/bin/python bench/qa_suites.py --categories general --dtype float32
    .venv/bin/python bench/qa_suites.py --adapter var/adapters/<id>
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time
from collections import defaultdict

from twinloop.qa.judges import ReferenceJudge
from twinloop.qa.suites import HELDOUT, TRAIN, load_shipped
from twinloop.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", nargs="+", default=["safety", "reasoning"])
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--adapter", type=Path, default=None, help="a LoRA adapter folder")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = Settings()
    torch.set_num_threads(args.threads)
    source = settings.base_model_path
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        source, local_files_only=True, dtype=getattr(torch, args.dtype)
    )
    if args.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(args.adapter))
    model.eval()
    cases = [
        c
        for c in load_shipped(settings.qa.suite_dir, settings.domains, settings.default_domain)
        if c.category in args.categories
    ]
    answers, tokens, seconds = [], defaultdict(int), defaultdict(float)
    for case in cases:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": case.question}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **ids,
                max_new_tokens=settings.qa.max_tokens,
                do_sample=False,
                temperature=1.0,
                top_p=1.0,
                pad_token_id=tokenizer.eos_token_id,
            )
        seconds[case.category] += time.perf_counter() - started
        new = out[0, ids["input_ids"].shape[1] :]
        tokens[case.category] += len(new)
        answers.append(tokenizer.decode(new, skip_special_tokens=True))
    verdicts = ReferenceJudge(embed=None).judge_many(cases, answers, [[] for _ in cases])
    right: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for case, answer, verdict in zip(cases, answers, verdicts, strict=True):
        right[(case.category, case.split)].append(verdict.correct)
        flat = " ".join(answer.split())
        print(f"{verdict.label.value:13} {case.key:24} {verdict.reason}\n    {flat[:160]!r}")
    print(f"\n{args.dtype}, max_tokens {settings.qa.max_tokens}, adapter {args.adapter}")
    for category in args.categories:
        splits = {split: right[(category, split)] for split in (TRAIN, HELDOUT)}
        scores = "  ".join(f"{s} {sum(got)}/{len(got)}" for s, got in splits.items())
        rate = tokens[category] / seconds[category] if seconds[category] else 0.0
        print(
            f"  {category:10} {scores}  tokens {tokens[category]}"
            f"  {seconds[category]:.0f} s  ({rate:.1f} tok/s)"
        )


if __name__ == "__main__":
    main()
