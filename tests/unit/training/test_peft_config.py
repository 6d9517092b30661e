"""The trainer's settings reach the PEFT loop's config (no model is loaded)."""

from __future__ import annotations

from twinloop.settings import Settings, TrainerSettings
from twinloop.training.peft_trainer import training_config


def test_preference_and_gpu_settings_reach_the_training_config() -> None:
    trainer = TrainerSettings(
        device="cuda",
        dtype="bfloat16",
        gradient_accumulation=4,
        warmup_steps=10,
        lr_schedule="cosine",
        dpo_learning_rate=2e-4,
        dpo_beta=0.2,
        dpo_steps=16,
        dpo_batch_size=8,
    )
    cfg = training_config(Settings(trainer=trainer))
    assert (cfg.device, cfg.dtype, cfg.gradient_accumulation) == ("cuda", "bfloat16", 4)
    assert (cfg.warmup_steps, cfg.lr_schedule) == (10, "cosine")
    assert (cfg.dpo_learning_rate, cfg.dpo_beta, cfg.dpo_steps, cfg.dpo_batch_size) == (
        2e-4,
        0.2,
        16,
        8,
    )


def test_the_cpu_defaults_stay_as_measured() -> None:
    cfg = training_config(Settings())
    assert (cfg.device, cfg.dtype) == ("auto", "auto")  # auto is CPU/float32 without a GPU
    assert (cfg.gradient_accumulation, cfg.warmup_steps, cfg.lr_schedule) == (1, 0, "constant")
    assert (cfg.learning_rate, cfg.batch_size, cfg.kl_weight) == (1e-3, 4, 10.0)
