"""The general replay set: the base model's answers, generated once per model and question."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twinloop.training.replay import general_replay_set, load_general_prompts, replay_budget


def _model(tmp_path: Path, weights: bytes = b"w") -> Path:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_answers_are_generated_once_and_regenerated_for_another_model(tmp_path: Path) -> None:
    calls: list[int] = []

    def generate(model_dir: Path, prompts: Sequence[str]) -> list[str]:
        calls.append(len(prompts))
        return [f"answer to {p}" for p in prompts]

    model = _model(tmp_path)
    first = general_replay_set(model, tmp_path / "cache", 5, generate=generate)
    again = general_replay_set(model, tmp_path / "cache", 5, generate=generate)

    assert calls == [5] and first == again
    assert [i.question for i in first] == load_general_prompts()[:5]
    assert first[0].answer == f"answer to {first[0].question}"
    _model(tmp_path, b"other weights")
    general_replay_set(model, tmp_path / "cache", 5, generate=generate)
    assert calls == [5, 5]
    assert general_replay_set(model, tmp_path / "cache", 0, generate=generate) == []


def test_a_new_prompt_set_generates_only_the_questions_it_adds(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def generate(model_dir: Path, prompts: Sequence[str]) -> list[str]:
        calls.append(list(prompts))
        return [f"answer to {p}" for p in prompts]

    model = _model(tmp_path)
    general_replay_set(model, tmp_path / "cache", 3, generate=generate, extra_prompts=["a?"])
    items = general_replay_set(model, tmp_path / "cache", 3, generate=generate,
                               extra_prompts=["b?", "a?"])  # fmt: skip

    assert calls[1] == ["b?"]
    assert [i.question for i in items][3:] == ["b?", "a?"]
    assert items[-1].answer == "answer to a?"


def test_the_shipped_prompts_are_many_and_distinct() -> None:
    prompts = load_general_prompts()
    assert len(prompts) >= 64 and len(set(prompts)) == len(prompts)


def test_replay_budget_rounds_up() -> None:
    assert (replay_budget(3, 1.0), replay_budget(3, 0.5), replay_budget(3, 0.0)) == (3, 2, 0)
