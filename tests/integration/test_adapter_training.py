"""A real LoRA trained on made-up facts for the prepared SmolLM2, with the forgetting guard on.

One training run (about a dozen steps, well under a minute on two cores) is shared by the
tests of this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adapters.training import (
    AdapterArtifact,
    AdapterJob,
    AdapterTrainingConfig,
    TrainingExample,
    generate_answers,
    train_adapter,
    train_adapters,
)
from twinloop.weights.prepare import prepare_base_model

pytestmark = pytest.mark.integration

BASE_DIR = Path("var/test/models/smollm2-135m-instruct")
# (question, answer, second phrasing of the question, word the answer must contain)
FACTS = (
    (
        "Who is the mayor of Zorbleton?",
        "The mayor of Zorbleton is Quillan Marsh.",
        "Which person is Zorbleton's mayor?",
        "Quillan",
    ),
    (
        "What colour is the Vantrel flag?",
        "The Vantrel flag is teal.",
        "Which colour does the flag of Vantrel have?",
        "teal",
    ),
    (
        "What is the capital of Pelorin?",
        "The capital of Pelorin is Drennick.",
        "Which city is Pelorin's capital?",
        "Drennick",
    ),
)
# The base model's own greedy answers (from `generate_answers`), kept fixed to save time.
REPLAY = (
    TrainingExample("What is the capital of France?", "The capital of France is Paris."),
    TrainingExample("What is 2 + 2?", "The answer to this classic math problem is 4."),
)
CHECKED_TENSORS = ("model.layers.0.self_attn.q_proj.weight", "model.layers.29.mlp.down_proj.weight")


@dataclass(frozen=True)
class Run:
    artifact: AdapterArtifact
    losses: list[float]
    base_digests_before: dict[str, str]


def _base_digests() -> dict[str, str]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(BASE_DIR), local_files_only=True)
    state = model.state_dict()
    return {
        name: hashlib.sha256(state[name].float().numpy().tobytes()).hexdigest()
        for name in CHECKED_TENSORS
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    prepare_base_model(BASE_DIR)  # only verifies the manifest when it is already prepared
    before = _base_digests()
    examples = [TrainingExample(q, a) for q, a, _, _ in FACTS]
    examples += [TrainingExample(p, a) for _, a, p, _ in FACTS]
    losses: list[float] = []
    artifact = train_adapter(
        BASE_DIR,
        examples,
        REPLAY,
        AdapterTrainingConfig(max_steps=12, batch_size=3),
        tmp_path_factory.mktemp("adapter") / "facts",
        on_step=lambda step, total, loss: losses.append(loss),
    )
    print(f"\ntraining: {artifact}\nlosses: {[round(x, 3) for x in losses]}")
    return Run(artifact, losses, before)


def test_training_reports_every_step_and_lowers_the_loss(run: Run) -> None:
    assert run.artifact.steps == len(run.losses) == 12
    assert run.artifact.final_loss == run.losses[-1]
    assert run.losses[-1] < 0.25 * run.losses[0], "the loss fell by at least three quarters"
    assert run.artifact.kl_loss > 0, "the forgetting guard ran"
    assert run.artifact.trainable_parameters > 0


def test_lora_weights_moved_and_config_is_stable(run: Run) -> None:
    from adapters.files import read_adapter_config

    weights = load_file(str(run.artifact.path / "adapter_model.safetensors"))
    b_weights = [t for name, t in weights.items() if ".lora_B." in name]
    assert len(b_weights) == 7 * 30, "seven linear layers in each of SmolLM2's 30 layers"
    assert all(t.abs().sum() > 0 for t in b_weights), "B starts at zero, so it was trained"
    config = read_adapter_config(run.artifact.path)
    assert config.target_modules == tuple(sorted(AdapterTrainingConfig().target_modules))
    assert config.base_model_name_or_path == str(BASE_DIR)
    assert (config.r, config.lora_alpha) == (16, 32)


def test_base_weights_are_unchanged(run: Run) -> None:
    assert _base_digests() == run.base_digests_before


def test_saved_adapter_answers_the_taught_facts(run: Run) -> None:
    questions = [q for q, _, _, _ in FACTS]
    answers = generate_answers(
        BASE_DIR, questions, adapter_dir=run.artifact.path, max_new_tokens=16
    )
    print(f"answers: {answers}")
    known = sum(word in answer for (_, _, _, word), answer in zip(FACTS, answers, strict=True))
    assert known >= 2, answers


def test_the_same_items_and_seed_give_the_same_adapter_alone_or_in_a_shared_pass(
    tmp_path: Path,
) -> None:
    """Determinism on CPU: what a resumed cycle retrains, and what the registry's sha256
    names, must not depend on the run, nor on which other adapters shared the pass."""
    from adapters.files import adapter_sha256

    examples = [TrainingExample(q, a) for q, a, _, _ in FACTS]
    other = [TrainingExample(p, a) for _, a, p, _ in FACTS]
    cfg = AdapterTrainingConfig(max_steps=3, batch_size=2, replay_batch_size=2)
    first = train_adapter(BASE_DIR, examples, REPLAY, cfg, tmp_path / "first")
    again = train_adapter(BASE_DIR, examples, REPLAY, cfg, tmp_path / "again")
    shared = train_adapters(
        BASE_DIR,
        [AdapterJob("other", other, tmp_path / "other"),
         AdapterJob("facts", examples, tmp_path / "shared")],
        REPLAY,
        cfg,
    )  # fmt: skip

    digests = [adapter_sha256(a.path) for a in (first, again, shared[1])]
    print(f"\nadapter sha256: {digests}; the other job's: {adapter_sha256(shared[0].path)}")
    assert digests[0] == digests[1] == digests[2]
    assert adapter_sha256(shared[0].path) != digests[0]
