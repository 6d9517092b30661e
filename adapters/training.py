"""Train one LoRA adapter on new examples, with a guard against forgetting.

`AdapterTrainingConfig` → `train_adapter(...)` → `AdapterArtifact`, plus `generate_answers`
to build replay sets (the base model's own answers) and to check what an adapter learned.

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
  switched off (`disable_adapter()`, no gradients), so no second copy of the model is held.

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
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from adapters.continual import GrowFrom, guard_toward_previous, load_grown_from

if TYPE_CHECKING:
    import torch

StepCallback = Callable[[int, int, float], None]
# (adapter name, step, total steps, loss) as a pass trains its adapters.
JobStepCallback = Callable[[str, int, int, float], None]

_IGNORE = -100  # label value that marks prompt and padding tokens
_GUARD_BATCH = 8  # replay items per forward pass when the base log-probs are computed


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
class AdapterTrainingConfig:
    """How one LoRA adapter is trained. Defaults are the values measured on SmolLM2-135M."""

    rank: int = field(default=16, metadata={"help": "LoRA rank r of the A/B matrices."})
    alpha: int = field(
        default=32, metadata={"help": "LoRA alpha; the update is scaled by alpha / rank."}
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        metadata={"help": "Linear layers that get a LoRA (default: every linear layer)."},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    epochs: int = field(
        default=8,
        metadata={
            "help": "Passes over the examples: a small set must be seen several times to be "
            "learned. Capped by step_budget, so a large set gets fewer passes (at least one)."
        },
    )
    batch_size: int = field(default=4, metadata={"help": "New examples per step."})
    replay_batch_size: int = field(
        default=4,
        metadata={"help": "Replay items per step in the KL term (more: a steadier guard)."},
    )
    max_length: int = field(
        default=256, metadata={"help": "Tokens per formatted example; longer ones are cut."}
    )
    kl_weight: float = field(
        default=10.0,
        metadata={
            "help": "Weight of KL(adapted || base) on replay answers; 0 disables the "
            "forgetting guard."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed for LoRA init and batch order (same seed, same run)."}
    )
    step_budget: int = field(
        default=120,
        metadata={
            "help": "Repeated passes stop at this many steps; the first pass always completes. "
            "So steps scale with the data: a handful of examples takes a handful of steps."
        },
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "If set, exactly this many steps (cycling through the examples), "
            "overriding epochs."
        },
    )

    def __post_init__(self) -> None:
        if min(self.rank, self.batch_size, self.replay_batch_size, self.epochs) < 1:
            raise ValueError("rank, batch sizes and epochs must be >= 1")
        if self.max_length < 2:
            raise ValueError("max_length must be >= 2")
        if self.kl_weight < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("kl_weight must be >= 0 and dropout in [0, 1)")
        if self.step_budget < 1:
            raise ValueError("step_budget must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 when set")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")

    def total_steps(self, examples: int) -> int:
        """Steps a run over `examples` takes: `max_steps` if set, else `epochs` passes but no
        more than `step_budget` steps, and never less than one whole pass."""
        if self.max_steps is not None:
            return self.max_steps
        one_pass = math.ceil(examples / self.batch_size)
        return max(one_pass, min(self.epochs * one_pass, self.step_budget))


@dataclass(frozen=True)
class AdapterArtifact:
    """A trained adapter folder and how its training went.

    `final_loss`, `sft_loss` and `kl_loss` are the values of the last step (`kl_loss` is 0.0
    when the guard was off); `seconds` is the adapter's wall time plus its share of what
    its pass did once (loading the model, the base log-probabilities of the replay set).
    """

    path: Path
    steps: int
    final_loss: float
    sft_loss: float
    kl_loss: float
    seconds: float
    trainable_parameters: int


@dataclass(frozen=True)
class _Encoded:
    input_ids: list[int]
    labels: list[int]


@dataclass(frozen=True)
class AdapterJob:
    """One adapter of a training pass: its name (the domain), what it learns, where it goes."""

    name: str
    examples: Sequence[QuestionAnswer]
    out_dir: Path
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
) -> AdapterArtifact:
    """Train one LoRA adapter on `examples`, guarded by `replay`, and save it to `out_dir`."""
    job = AdapterJob(name="adapter", examples=examples, out_dir=out_dir)
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
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir), local_files_only=True)
    pad_id = _pad_token_id(tokenizer)
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(base_model_dir), local_files_only=True, dtype=torch.float32
    )
    guard: list[_Guarded] = []
    toward_previous = any(j.grow_from is not None and j.grow_from.kl_weight > 0 for j in jobs)
    if (cfg.kl_weight > 0 or toward_previous) and replay:
        encoded = [_encode(tokenizer, r.question, r.answer, cfg.max_length) for r in replay]
        guard = _with_base_log_probs(model, encoded, pad_id)
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
        train = [_encode(tokenizer, e.question, e.answer, cfg.max_length) for e in job.examples]
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
            result = _train_one(peft_model, train, job_guard, job_cfg, pad_id, job.name, on_step)
        job.out_dir.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(str(job.out_dir))
        _normalise_adapter_config(job.out_dir / "adapter_config.json", base_model_dir)
        model = peft_model.unload()  # the bare base model again, for the next job
        artifacts.append(
            AdapterArtifact(
                path=job.out_dir,
                seconds=time.perf_counter() - job_started + shared_seconds / len(jobs),
                **result,
            )
        )
    return artifacts


def _train_one(
    model: Any,
    train: list[_Encoded],
    guard: list[_Guarded],
    cfg: AdapterTrainingConfig,
    pad_id: int,
    name: str,
    on_step: JobStepCallback | None,
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate)
    order = random.Random(cfg.seed)
    total_steps = cfg.total_steps(len(train))
    train_batches = _batches(train, cfg.batch_size, order)
    guard_batches = _batches(guard, cfg.replay_batch_size, order) if guard else None
    sft_value = kl_value = total_value = 0.0
    for step in range(1, total_steps + 1):
        logits, targets = _answer_logits(model, next(train_batches), pad_id)
        sft = F.cross_entropy(logits, targets)
        loss = sft
        if guard_batches is not None:
            kl = _kl_to_base(model, next(guard_batches), pad_id)
            loss = sft + cfg.kl_weight * kl
            kl_value = float(kl.detach())
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        sft_value, total_value = float(sft.detach()), float(loss.detach())
        if on_step is not None:
            on_step(name, step, total_steps, total_value)
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
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers to `questions`, one user turn each, formatted with the chat template.

    `model_dir_or_model` is a model folder (loaded offline, float32) or an already loaded
    (PEFT) model, whose tokenizer is read from its `name_or_path`. With `adapter_dir` the
    LoRA in that folder is applied first. Questions are batched with left padding.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model: Any
    if isinstance(model_dir_or_model, Path | str):
        source = str(model_dir_or_model)
        model = AutoModelForCausalLM.from_pretrained(
            source, local_files_only=True, dtype=torch.float32
        )
    else:
        model = model_dir_or_model
        source = str(model.config.name_or_path)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    tokenizer.padding_side = "left"
    pad_id = _pad_token_id(tokenizer)
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
            prompts = [_prompt_text(tokenizer, q) for q in questions[start : start + batch_size]]
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
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


def _prompt_text(tokenizer: Any, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _encode(tokenizer: Any, question: str, answer: str, max_length: int) -> _Encoded:
    """Token ids of the whole chat, and labels that are -100 everywhere but the answer."""
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    full_text = str(tokenizer.apply_chat_template(messages, tokenize=False))
    prompt_text = _prompt_text(tokenizer, question)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template does not extend the prompt with the answer")
    prompt_ids: list[int] = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids: list[int] = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)[
        "input_ids"
    ]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([_IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return _Encoded(input_ids=input_ids, labels=labels)


def _pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    return int(pad)


_T = TypeVar("_T")


def _batches(items: list[_T], size: int, order: random.Random) -> Iterator[list[_T]]:
    """Endless batches: each pass over `items` in a new shuffled order."""
    while True:
        shuffled = list(items)
        order.shuffle(shuffled)
        for start in range(0, len(shuffled), size):
            yield shuffled[start : start + size]


def _collate(batch: list[_Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on padding)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [_IGNORE] * (width - len(e.labels)) for e in batch]
    return torch.tensor(ids), torch.tensor(mask), torch.tensor(labels)


def _answer_logits(
    model: Any, batch: list[_Encoded], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits at the positions that predict answer tokens, and those tokens.

    Rows are the batch's answer tokens in order (example by example). Only these positions
    go through the output layer: with the chat template's system prompt the prompt is most
    of each sequence, and the vocabulary-sized output layer was a fifth of a step's time.
    Models whose logits are post-processed (a scale, soft-capping) take the full forward.
    """
    input_ids, mask, labels = _collate(batch, pad_id)
    targets = labels[:, 1:]
    answer = targets != _IGNORE
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
        return logits[answer], targets[answer]
    hidden = causal.get_decoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return causal.get_output_embeddings()(hidden[:, :-1][answer]), targets[answer]


@dataclass(frozen=True)
class _Guarded:
    """A replay item and the base model's log-probabilities at its answer tokens."""

    encoded: _Encoded
    base_log_probs: torch.Tensor  # [answer tokens, vocabulary], float16


def _with_base_log_probs(model: Any, items: list[_Encoded], pad_id: int) -> list[_Guarded]:
    """The base model's next-token log-probabilities over each replay answer, computed once.

    The KL guard needs them at every step; computing them here, before any adapter exists,
    replaces one forward pass per step (and per adapter of the pass) with one pass over the
    replay set. Kept as float16 (about 0.1 MB per answer token with a 49k vocabulary): the
    terms that matter are those where the adapted model puts its mass, whose log-probabilities
    are near 0 and keep their precision.
    """
    import torch
    import torch.nn.functional as F

    out: list[_Guarded] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(items), _GUARD_BATCH):
            batch = items[start : start + _GUARD_BATCH]
            logits, _ = _answer_logits(model, batch, pad_id)
            log_probs = F.log_softmax(logits, -1).to(torch.float16)
            counts = [sum(1 for label in e.labels[1:] if label != _IGNORE) for e in batch]
            for encoded, chunk in zip(batch, torch.split(log_probs, counts), strict=True):
                out.append(_Guarded(encoded=encoded, base_log_probs=chunk))
    model.train()
    return out


def _kl_to_base(model: Any, batch: list[_Guarded], pad_id: int) -> torch.Tensor:
    """KL(adapted ‖ base), averaged over the positions that predict answer tokens.

    Measures how much the adapter changed the model's next-token distribution where the base
    model answered on its own; 0 means the adapter left those answers alone.
    """
    import torch
    import torch.nn.functional as F

    logits, _ = _answer_logits(model, [g.encoded for g in batch], pad_id)
    adapted = F.log_softmax(logits, -1)
    base = torch.cat([g.base_log_probs for g in batch]).float()
    return (adapted.exp() * (adapted - base)).sum(-1).mean()


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
