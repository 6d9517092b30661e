"""The DPO loss on made-up log-probabilities (no model)."""

from __future__ import annotations

import math

import pytest

from adapters.preference import PairScore, PreferenceReport, dpo_loss


def test_the_loss_is_log_2_at_the_reference_and_falls_as_the_margin_grows() -> None:
    import torch

    ref_c, ref_r = torch.tensor([-10.0, -4.0]), torch.tensor([-8.0, -6.0])
    at_ref, margins = dpo_loss(ref_c, ref_r, ref_c, ref_r, beta=0.1)
    assert float(at_ref) == pytest.approx(math.log(2))
    assert margins.tolist() == [0.0, 0.0]
    # The chosen answer up by 2 nats, the rejected one down by 3: margin 0.1 * 5.
    better, margins = dpo_loss(ref_c + 2, ref_r - 3, ref_c, ref_r, beta=0.1)
    assert margins.tolist() == pytest.approx([0.5, 0.5])
    assert float(better) == pytest.approx(-math.log(1 / (1 + math.exp(-0.5))))
    worse, _ = dpo_loss(ref_c - 2, ref_r, ref_c, ref_r, beta=0.1)
    assert float(worse) > float(at_ref) > float(better)


def test_the_gradient_raises_chosen_and_lowers_rejected() -> None:
    import torch

    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5)
    loss.backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert float(chosen.grad) < 0 < float(rejected.grad)  # descent moves them apart


def test_held_out_preference_compares_per_token_not_summed_log_probs() -> None:
    # A short chosen answer (3 tokens) against a long rejected one (30 tokens): summed,
    # the short one wins by length alone; per token the long one is the likelier text.
    score = PairScore(chosen=-6.0, rejected=-30.0, chosen_per_token=-2.0, rejected_per_token=-1.0)
    assert not score.prefers_chosen


def test_the_report_rounds_its_figures_for_storage() -> None:
    report = PreferenceReport(
        pairs=3,
        heldout_pairs=1,
        steps=8,
        loss=0.123456,
        reward_margin=0.98765,
        reward_accuracy=1.0,
        heldout_accuracy=None,
        heldout_accuracy_sft=None,
        seconds=1.23456,
    )
    assert report.as_dict()["reward_margin"] == 0.9877
    assert report.as_dict()["heldout_accuracy"] is None
