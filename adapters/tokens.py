"""Chat turns as token ids for training: encoding, batching, and the answer positions' logits.

Shared by the SFT loop (`training.py`) and the preference stage (`preference.py`). torch is
imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

IGNORE = -100  # label value that marks prompt and padding tokens


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        """Positions that predict an answer token (the rows `answer_logits` gives it)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


def prompt_text(tokenizer: Any, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def encode(tokenizer: Any, question: str, answer: str, max_length: int) -> Encoded:
    """Token ids of the whole chat, and labels that are -100 everywhere but the answer."""
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    full_text = str(tokenizer.apply_chat_template(messages, tokenize=False))
    prompt = prompt_text(tokenizer, question)
    if not full_text.startswith(prompt):
        raise ValueError("the chat template does not extend the prompt with the answer")
    prompt_ids: list[int] = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids: list[int] = tokenizer(full_text[len(prompt) :], add_special_tokens=False)[
        "input_ids"
    ]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return Encoded(input_ids=input_ids, labels=labels)


def pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    return int(pad)


def collate(
    batch: list[Encoded], pad_id: int, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 on padding), on `device`."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = [e.input_ids + [pad_id] * (width - len(e.input_ids)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in batch]
    return (
        torch.tensor(ids, device=device),
        torch.tensor(mask, device=device),
        torch.tensor(labels, device=device),
    )


def model_device(model: Any) -> str:
    return str(next(model.parameters()).device)


def answer_logits(
    model: Any, batch: list[Encoded], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits (float32) at the positions that predict answer tokens, and those
    tokens.

    Rows are the batch's answer tokens in order (example by example). Only these positions
    go through the output layer: with the chat template's system prompt the prompt is most
    of each sequence, and the vocabulary-sized output layer was a fifth of a step's time.
    Models whose logits are post-processed (a scale, soft-capping) take the full forward.
    Logits are upcast so that a bfloat16 model's losses are computed in float32 (a no-op for
    a float32 model).
    """
    input_ids, mask, labels = collate(batch, pad_id, model_device(model))
    targets = labels[:, 1:]
    answer = targets != IGNORE
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = causal.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
        return logits[answer].float(), targets[answer]
    hidden = causal.get_decoder()(input_ids=input_ids, attention_mask=mask).last_hidden_state
    return causal.get_output_embeddings()(hidden[:, :-1][answer]).float(), targets[answer]


_T = TypeVar("_T")


def batches(items: list[_T], size: int, order: random.Random) -> Iterator[list[_T]]:
    """Endless batches: each pass over `items` in a new shuffled order."""
    while True:
        shuffled = list(items)
        order.shuffle(shuffled)
        for start in range(0, len(shuffled), size):
            yield shuffled[start : start + size]
