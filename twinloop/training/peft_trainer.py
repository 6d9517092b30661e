"""The real `AdapterTrainer`: PEFT LoRA on the base model, configured from `TrainerSettings`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from adapters.continual import GrowFrom, incompatibility
from adapters.training import AdapterJob, AdapterTrainingConfig, generate_answers, train_adapters
from twinloop.settings import Settings
from twinloop.training.overrides import TrainingOverrides
from twinloop.training.protocols import (
    ProgressCallback,
    StartingAdapter,
    TrainedAdapter,
    TrainRequest,
)
from twinloop.training.replay import ReplayItem, general_replay_set


def training_config(settings: Settings) -> AdapterTrainingConfig:
    t = settings.trainer
    return AdapterTrainingConfig(
        rank=t.rank,
        alpha=t.alpha,
        learning_rate=t.learning_rate,
        epochs=t.epochs,
        step_budget=t.step_budget,
        batch_size=t.batch_size,
        replay_batch_size=t.replay_batch_size,
        kl_weight=t.kl_weight,
        seed=t.seed,
        gradient_accumulation=t.gradient_accumulation,
        warmup_steps=t.warmup_steps,
        lr_schedule=t.lr_schedule,
        device=t.device,
        dtype=t.dtype,
        dpo_learning_rate=t.dpo_learning_rate,
        dpo_beta=t.dpo_beta,
        dpo_steps=t.dpo_steps,
        dpo_batch_size=t.dpo_batch_size,
    )


class PeftAdapterTrainer:
    def __init__(self, settings: Settings, config: AdapterTrainingConfig | None = None) -> None:
        self._base_model_dir = Path(settings.base_model_path)
        self._cache_dir = settings.training_dir / "cache"
        self._replay_size = settings.trainer.general_replay_size
        self._config = config or training_config(settings)
        self._threads = settings.trainer.threads
        # KL toward the adapter a continual one grows from (adapters.continual); 0 when off.
        t = settings.trainer
        self._previous_kl_weight = t.continual_kl_weight if t.continual else 0.0

    def general_replay(self, extra_prompts: Sequence[str] = ()) -> list[ReplayItem]:
        if self._config.kl_weight == 0 and not self._previous_kl_weight:
            return []  # the guard is off: no need to run the base model for its answers
        self._set_threads()
        return general_replay_set(
            self._base_model_dir,
            self._cache_dir,
            self._replay_size,
            generate=lambda model_dir, prompts: generate_answers(model_dir, prompts),
            extra_prompts=extra_prompts,
        )

    def train(
        self,
        requests: Sequence[TrainRequest],
        guard: Sequence[ReplayItem],
        on_step: ProgressCallback,
        overrides: TrainingOverrides | None = None,
    ) -> dict[str, TrainedAdapter]:
        self._set_threads()
        c = overrides.apply(self._config) if overrides is not None else self._config
        jobs = [
            AdapterJob(
                r.domain,
                r.examples,
                r.out_dir,
                pairs=r.pairs,
                heldout_pairs=r.heldout_pairs,
                grow_from=self._grow_from(r.grow_from),
            )
            for r in requests
        ]
        artifacts = train_adapters(
            self._base_model_dir,
            jobs,
            guard,
            c,
            on_step=lambda name, step, total, _loss: on_step(name, step, total),
        )
        return {
            job.name: TrainedAdapter(
                path=artifact.path,
                steps=artifact.steps,
                seconds=artifact.seconds,
                final_loss=artifact.final_loss,
                preference=artifact.preference.as_dict() if artifact.preference else None,
                metrics={
                    "steps": artifact.steps,
                    "seconds": round(artifact.seconds, 2),
                    "final_loss": artifact.final_loss,
                    "sft_loss": artifact.sft_loss,
                    "kl_loss": artifact.kl_loss,
                    "examples_seen": artifact.steps * c.batch_size * c.gradient_accumulation,
                    "device": artifact.device,
                    "dtype": artifact.dtype,
                    "trainable_parameters": artifact.trainable_parameters,
                    "config": dataclasses.asdict(c),
                    **({"overrides": overrides.set_fields()} if overrides is not None else {}),
                },
            )
            for job, artifact in zip(jobs, artifacts, strict=True)
        }

    def cannot_grow_from(self, folder: Path) -> str | None:
        return incompatibility(folder, self._config)

    def _grow_from(self, start: StartingAdapter | None) -> GrowFrom | None:
        if start is None:
            return None
        return GrowFrom(start.path, start.sha256, kl_weight=self._previous_kl_weight)

    def _set_threads(self) -> None:
        import torch

        torch.set_num_threads(self._threads)
