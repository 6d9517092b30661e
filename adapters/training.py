"""Train one LoRA adapter on new examples, with a guard against forgetting.

`AdapterTrainingConfig` (`config.py`) → `train_adapter(...)` → `AdapterArtifact`, plus
`generate_answers` to build replay sets (the base model's own answers) and to check what an
adapter learned. A job with preference pairs then runs the DPO stage (`preference.py`) on
the adapter SFT trained, before it is saved.

**The loss.** Each step takes a batch of new examples and, when `kl_weight > 0` and a replay
set is given, a batch of replay items, and minimises

    total = sft + kl_weight * kl

* `sft` — cross-entropy on the answer tokens of the new examples (the prompt part is
  masked with -100): this is what teaches the facts.
* `kl` — KL(adapted ‖ base) of the next-token distributions over the answer tokens of replay
  items (question, base model's answer), averaged over those tokens. It measures how far the
  adapter has moved the model away from what it said before on unrelated prompts; keeping it
  small is what stops a LoRA that learns three facts from forgetting general knowledge
  (measured on SmolLM2-135M: without it, r=16 at lr 1e-3 for 30 steps learned the facts and
  lost e.g. capitals). The base distribution comes from the same model with the adapter
  switched off, computed once before any adapter exists (`guard.py`).

**Where and how fast.** The device and the base weights' dtype follow `cfg.device` and
`cfg.dtype` (`device.py`: CUDA and bfloat16 when present, else CPU and float32, the path the
defaults were measured on); LoRA weights and every loss stay float32. A step sums the
gradients of `gradient_accumulation` micro-batches; the learning rate follows
`schedule.py` (constant by default, warmup and cosine opt-in).

**Why a hand-written loop, not TRL's `SFTTrainer`.** The KL-to-base term needs a second,
adapter-disabled forward pass on a different batch (replay) every step; with `SFTTrainer`
that means overriding `compute_loss` and feeding two datasets through one collator, which is
longer than this loop. TRL is also not a dependency of this project. PEFT does the LoRA part.

**Continual jobs.** A job may start from an earlier adapter's weights instead of the base,
guarded toward that adapter as well (`AdapterJob.grow_from`, `adapters.continual`).

torch, transformers and PEFT are imported inside the functions, so importing this module is
cheap.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from adapters.config import AdapterTrainingConfig
from adapters.continual import GrowFrom, guard_toward_previous, load_grown_from
from adapters.device import choose_device, choose_dtype, torch_probes
from adapters.guard import Guarded, kl_to_base, with_base_log_probs
from adapters.loading import model_and_tokenizer
from adapters.preference import PreferencePair, PreferenceReport, train_preference
from adapters.schedule import scheduler
from adapters.tokens import (
    Encoded,
    answer_logits,
    batches,
    encode,
    model_device,
    pad_token_id,
    prompt_text,
)

__all__ = [
    "AdapterArtifact",
    "AdapterJob",
    "AdapterTrainingConfig",
    "PreferencePair",
    "PreferenceReport",
    "TrainingExample",
    "generate_answers",
    "train_adapter",
    "train_adapters",
]

StepCallback = Callable[[int, int, float], None]
# (adapter name, step, total steps, loss) as a pass trains its adapters.
JobStepCallback = Callable[[str, int, int, float], None]


class QuestionAnswer(Protocol):
    """Anything with a question and an answer (a `TrainingExample`, a stored example...)."""

    @property
    def question(self) -> str: ...

    @property
    def answer(self) -> str: ...


@dataclass(frozen=True)
class TrainingExample:
    """One chat turn to learn (or, in a replay set, the base model's own answer)."""

    question: str
    answer: str


@dataclass(frozen=True)
class AdapterArtifact:
    """A trained adapter folder and how its training went.

    `final_loss`, `sft_loss` and `kl_loss` are the values of the last SFT step (`kl_loss` is
    0.0 when the guard was off); `seconds` is the adapter's wall time plus its share of what
    its pass did once (loading the model, the base log-probabilities of the replay set).
    `preference` is the DPO stage's report, None when the job had no pairs to train on.
    """

    path: Path
    steps: int
    final_loss: float
    sft_loss: float
    kl_loss: float
    seconds: float
    trainable_parameters: int
    device: str = "cpu"
    dtype: str = "float32"
    preference: PreferenceReport | None = None


@dataclass(frozen=True)
class AdapterJob:
    """One adapter of a training pass: its name (the domain), what it learns, where it goes.

    `pairs` are trained on by the DPO stage after SFT; `heldout_pairs` only measure it.
    """

    name: str
    examples: Sequence[QuestionAnswer]
    out_dir: Path
    _: KW_ONLY  # the optional parts are named: a positional one landed in the wrong field once
    pairs: Sequence[PreferencePair] = field(default=())
    heldout_pairs: Sequence[PreferencePair] = field(default=())
    grow_from: GrowFrom | None = None
    """Start from this adapter's weights, guarded toward it too (`adapters.continual`)."""


def train_adapter(
    base_model_dir: Path,
    examples: Sequence[QuestionAnswer],
    replay: Sequence[QuestionAnswer],
    cfg: AdapterTrainingConfig,
    out_dir: Path,
    *,
    on_step: StepCallback | None = None,
    pairs: Sequence[PreferencePair] = (),
    heldout_pairs: Sequence[PreferencePair] = (),
) -> AdapterArtifact:
    """Train one LoRA adapter on `examples` (then on `pairs`, if any), guarded by `replay`,
    and save it to `out_dir`."""
    job = AdapterJob("adapter", examples, out_dir, pairs=pairs, heldout_pairs=heldout_pairs)
    report = None if on_step is None else (lambda _name, s, t, loss: on_step(s, t, loss))
    return train_adapters(base_model_dir, [job], replay, cfg, on_step=report)[0]


def train_adapters(
    base_model_dir: Path,
    jobs: Sequence[AdapterJob],
    replay: Sequence[QuestionAnswer],
    cfg: AdapterTrainingConfig,
    *,
    on_step: JobStepCallback | None = None,
) -> list[AdapterArtifact]:
    """Train one LoRA adapter per job, one after another in one pass over a loaded model.

    `replay` holds (question, base model's answer) pairs, e.g. from `generate_answers`. What
    the jobs share is done once: loading the model and the base model's log-probabilities
    on the replay answers, which the KL guard compares against at every step of every job.
    Each job starts from the same seed, so an adapter's weights do not depend on which other
    adapters share its pass. The base model folder is read offline and never written.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not jobs or any(not job.examples for job in jobs):
        raise ValueError("train_adapters needs at least one job, each with an example")
    started = time.perf_counter()
    probes = torch_probes()
    device = choose_device(cfg.device, probes)
    dtype = choose_dtype(cfg.dtype, device, probes)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir), local_files_only=True)
    pad_id = pad_token_id(tokenizer)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(base_model_dir), local_files_only=True, dtype=getattr(torch, dtype)
    )
    model.to(device)
    guard: list[Guarded] = []
    toward_previous = any(j.grow_from is not None and j.grow_from.kl_weight > 0 for j in jobs)
    if (cfg.kl_weight > 0 or toward_previous) and replay:
        encoded = [encode(tokenizer, r.question, r.answer, cfg.max_length) for r in replay]
        guard = with_base_log_probs(model, encoded, pad_id)
    shared_seconds = time.perf_counter() - started
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    artifacts = []
    for job in jobs:
        job_started = time.perf_counter()
        train = [encode(tokenizer, e.question, e.answer, cfg.max_length) for e in job.examples]
        sft_steps = cfg.total_steps(len(train))
        dpo_steps = cfg.dpo_steps if job.pairs else 0
        total = sft_steps + dpo_steps
        preference = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            peft_model = get_peft_model(model, lora)
            job_guard, job_cfg = guard if cfg.kl_weight > 0 else [], cfg
            if job.grow_from is not None:
                load_grown_from(peft_model, job.grow_from, cfg)
                job_guard, weight = guard_toward_previous(
                    peft_model, guard, job.grow_from, cfg, pad_id
                )
                job_cfg = replace(cfg, kl_weight=weight)
            result = _train_one(
                peft_model, train, job_guard, job_cfg, pad_id, job.name, total, on_step
            )
            if dpo_steps:
                preference = train_preference(
                    peft_model,
                    tokenizer,
                    job.pairs,
                    job.heldout_pairs,
                    job_guard,
                    job_cfg,
                    on_step=_after_sft(on_step, job.name, sft_steps, total),
                )
        job.out_dir.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(job.out_dir))
        _normalise_adapter_config(job.out_dir / "adapter_config.json", base_model_dir)
        model = peft_model.unload()  # the bare base model again, for the next job
        artifacts.append(
            AdapterArtifact(
                path=job.out_dir,
                seconds=time.perf_counter() - job_started + shared_seconds / len(jobs),
                device=device,
                dtype=dtype,
                preference=preference,
                **result,
            )
        )
    return artifacts


def _after_sft(
    on_step: JobStepCallback | None, name: str, sft_steps: int, total: int
) -> Callable[[int, int, float], None] | None:
    """The DPO stage's progress, reported as the steps after SFT's of the job's total."""
    if on_step is None:
        return None
    return lambda step, _stage_total, loss: on_step(name, sft_steps + step, total, loss)


def _train_one(
    model: Any,
    train: list[Encoded],
    guard: list[Guarded],
    cfg: AdapterTrainingConfig,
    pad_id: int,
    name: str,
    reported_total: int,
    on_step: JobStepCallback | None,
) -> dict[str, Any]:
    """The SFT stage; progress is reported out of `reported_total` (SFT and DPO steps)."""
    import torch
    import torch.nn.functional as F

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    order = random.Random(cfg.seed)
    total_steps = cfg.total_steps(len(train))
    lr = scheduler(optimizer, total_steps, warmup=cfg.warmup_steps, schedule=cfg.lr_schedule)
    train_batches = batches(train, cfg.batch_size, order)
    guard_batches = batches(guard, cfg.replay_batch_size, order) if guard else None
    sft_value = kl_value = total_value = 0.0
    for step in range(1, total_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        sft_value = kl_value = total_value = 0.0
        for _ in range(cfg.gradient_accumulation):
            logits, targets = answer_logits(model, next(train_batches), pad_id)
            sft = F.cross_entropy(logits, targets)
            loss = sft
            if guard_batches is not None:
                kl = kl_to_base(model, next(guard_batches), pad_id)
                loss = sft + cfg.kl_weight * kl
                kl_value += float(kl.detach()) / cfg.gradient_accumulation
            # Dividing by 1 changes nothing: the CPU path's gradients are as measured.
            torch.autograd.backward(loss / cfg.gradient_accumulation)
            sft_value += float(sft.detach()) / cfg.gradient_accumulation
            total_value += float(loss.detach()) / cfg.gradient_accumulation
        optimizer.step()
        lr.step()
        if on_step is not None:
            on_step(name, step, reported_total, total_value)
    return {
        "steps": total_steps,
        "final_loss": total_value,
        "sft_loss": sft_value,
        "kl_loss": kl_value,
        "trainable_parameters": sum(p.numel() for p in trainable),
    }


def generate_answers(
    model_dir_or_model: Path | str | Any,
    questions: Sequence[str],
    *,
    adapter_dir: Path | None = None,
    max_new_tokens: int = 48,
    batch_size: int = 32,
) -> list[str]:
    """Greedy answers to `questions`, one user turn each, formatted with the chat template.

    `model_dir_or_model` is a model folder (loaded offline, float32) or an already loaded
    (PEFT) model, whose tokenizer is read from its `name_or_path`. With `adapter_dir` the
    LoRA in that folder is applied first. Questions are batched with left padding: on 2 CPU
    cores the 135M model answered 64 general prompts in 24 s in batches of 32 against 48 s
    in batches of 8 (each decoding step's Python overhead is paid once per batch), and the
    160 answers of both batch sizes were identical.
    """
    import torch
    from transformers import GenerationConfig

    model, tokenizer = model_and_tokenizer(model_dir_or_model, adapter_dir)
    tokenizer.padding_side = "left"
    pad_id = pad_token_id(tokenizer)
    # The checkpoint's generation config samples (temperature 0.2, top_p 0.9); transformers
    # fills every unset (None) field from it and then logs that those flags are invalid for
    # greedy decoding, so they are set to their neutral values here.
    greedy = GenerationConfig.from_dict(
        {
            "do_sample": False,
            "temperature": 1.0,
            "top_p": 1.0,
            "max_new_tokens": max_new_tokens,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": pad_id,
        }
    )
    was_training = bool(model.training)
    model.eval()
    answers: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [prompt_text(tokenizer, q) for q in questions[start : start + batch_size]]
            batch = tokenizer(
                prompts, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(model_device(model))
            with torch.no_grad():
                out = model.generate(**batch, generation_config=greedy)
            new_tokens = out[:, batch["input_ids"].shape[1] :]
            answers += [
                text.strip()
                for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            ]
    finally:
        model.train(was_training)
    return answers


def _normalise_adapter_config(config_path: Path, base_model_dir: Path) -> None:
    """Make `adapter_config.json` byte-identical from run to run and name the base folder.

    PEFT keeps target_modules as a set and writes it in iteration order, which string hash
    randomisation changes from process to process (peft 0.21), so the adapter's sha256 would
    change too. Rewritten the way PEFT writes the file (`json.dumps(indent=2,
    sort_keys=True)`).
    """
    body = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(body.get("target_modules"), list):
        body["target_modules"] = sorted(body["target_modules"])
    body["base_model_name_or_path"] = str(base_model_dir)
    config_path.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
