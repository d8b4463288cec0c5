"""The RL variants beside GRPO (GSPO, CISPO, Dr. GRPO, RLOO, REINFORCE++, DAPO's overlong penalty)
against hand-computed values, and each wired through a real GRPOModule step."""

import math

import pytest
import torch
from test_grpo import GroupCapture

from lightning_longrl.rl.advantages import AdvantageConfig, compute_advantages, group_advantages
from lightning_longrl.rl.objective import GRPOLossConfig, aggregate, cispo_policy_loss, grpo_loss, gspo_policy_loss
from lightning_longrl.rl.rewards import OverlongPenalty

from helpers import PARITY_REWARDS, grpo_run

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.9, 0.1, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]])


def test_group_mean_and_rloo_hand_values():
    # group 0: mean 0.5; group 1: mean 0.3; group 2: all equal -> 0
    expected = torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.6, -0.2, -0.2, -0.2], [0.0] * 4])
    assert torch.allclose(compute_advantages(REWARDS, "group_mean"), expected, atol=1e-6)
    # leave-one-out: r_0 of group 0 against the mean of (0, 0, 1) = 1/3
    rloo = compute_advantages(REWARDS, "rloo")
    assert rloo[0].tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])
    assert rloo[1, 0].item() == pytest.approx(0.9 - 0.1)  # the others are all 0.1
    assert rloo[1, 1].item() == pytest.approx(0.1 - (0.9 + 0.1 + 0.1) / 3)
    assert rloo[2].tolist() == [0.0] * 4


def test_reinforce_pp_whitens_group_centred_rewards_over_the_batch():
    adv = compute_advantages(REWARDS, "reinforce_pp", eps=0.0)
    centred = [0.5, -0.5, -0.5, 0.5, 0.6, -0.2, -0.2, -0.2, 0, 0, 0, 0]
    mean = sum(centred) / 12
    std = math.sqrt(sum((c - mean) ** 2 for c in centred) / 11)  # unbiased, as torch.std
    assert adv.flatten().tolist() == pytest.approx([(c - mean) / std for c in centred], abs=1e-6)
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("estimator", ["grpo", "group_mean", "rloo", "reinforce_pp"])
def test_every_estimator_gives_zero_for_a_group_of_one_or_all_equal(estimator):
    assert torch.equal(compute_advantages(torch.tensor([[0.7], [0.2]]), estimator), torch.zeros(2, 1))
    assert torch.equal(compute_advantages(torch.full((2, 3), 0.3), estimator), torch.zeros(2, 3))


def test_grpo_estimator_is_the_group_normalisation():
    assert torch.equal(AdvantageConfig()(REWARDS), group_advantages(REWARDS))
    with pytest.raises(ValueError, match="rloo"):
        AdvantageConfig(estimator="ppo")


def test_gspo_ratio_is_the_geometric_mean_of_the_token_ratios():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.2, 0.2]]))
    # response 0: token ratios 1.2 and 0.9 (the third token is padding); response 1: 1.5, 1.5, 1.5
    new = old + torch.log(torch.tensor([[1.2, 0.9, 7.0], [1.5, 1.5, 1.5]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    out = gspo_policy_loss(new, old, torch.tensor([1.0, 1.0]), mask, clip_low=0.2, clip_high=0.3)
    s0 = math.sqrt(1.2 * 0.9)  # inside [0.8, 1.3]
    assert out.loss[0, :2].tolist() == pytest.approx([-s0, -s0])
    assert out.loss[1].tolist() == pytest.approx([-1.3] * 3)  # 1.5 held at 1 + clip_high
    assert out.clipped.tolist() == [[False, False, False], [True, True, True]]


def test_gspo_gradient_is_the_sequence_objectives_gradient():
    """Token form with sequence_mean == GSPO's per-response objective -min(s A, clip(s) A), s = geometric mean."""
    torch.manual_seed(0)
    old = torch.randn(3, 5) * 0.3 - 1.0
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    adv = torch.tensor([1.0, -0.7, 0.4])
    for shift in (0.01, 0.5):  # inside the clip band, and far outside it for some responses
        new = (old + shift * torch.randn(3, 5)).requires_grad_(True)
        cfg = GRPOLossConfig(objective="gspo", clip_low=0.2, clip_high=0.3, kl_coef=0.0, aggregation="sequence_mean")
        grpo_loss(cfg, new, old, adv, mask).loss.backward()
        token_form = new.grad.clone()
        new.grad = None
        m = mask.float()
        s = torch.exp(((new - old) * m).sum(-1) / m.sum(-1))
        per_response = torch.maximum(-adv * s, -adv * s.clamp(0.8, 1.3))
        per_response.mean().backward()
        assert torch.allclose(token_form, new.grad, atol=1e-7)
        assert (token_form * (1 - m)).abs().max() == 0  # padding gets no gradient


def test_cispo_keeps_every_tokens_gradient_with_a_clipped_weight():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    new = (old + torch.log(torch.tensor([[2.0, 1.1, 0.5]]))).requires_grad_(True)
    out = cispo_policy_loss(new, old, torch.tensor([1.0]), clip_low=0.2, clip_high=0.3)
    weights = [1.3, 1.1, 0.8]  # 2.0 and 0.5 clipped to the band
    assert out.loss[0].tolist() == pytest.approx([-w * math.log(p) for w, p in zip(weights, [1.0, 0.55, 0.25])])
    assert out.clipped.tolist() == [[True, False, True]]
    out.loss.sum().backward()
    assert new.grad[0].tolist() == pytest.approx([-w for w in weights])  # clipped tokens still learn


def test_sequence_sum_divides_by_one_fixed_length():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # (6 / 10 + 4 / 10) / 2 responses
    assert aggregate(values, mask, "sequence_sum", length_normalizer=10).item() == pytest.approx(0.5)
    # a micro-batch normalised by the whole mini-batch's response count
    assert aggregate(values[:1], mask[:1], "sequence_sum", normalizer=2.0, length_normalizer=10).item() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="length_normalizer"):
        aggregate(values, mask, "sequence_sum")


def test_dr_grpo_loss_does_not_reweight_by_response_length():
    """Under sequence_sum a token's gradient does not depend on its response's length (Dr. GRPO)."""
    old = torch.zeros(2, 4)
    new = old.clone().requires_grad_(True)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]])
    cfg = GRPOLossConfig(aggregation="sequence_sum", length_normalizer=8, kl_coef=0.0)
    grpo_loss(cfg, new, old, torch.tensor([1.0, 1.0]), mask).loss.backward()
    assert new.grad[0, 0].item() == pytest.approx(new.grad[1, 0].item()) == pytest.approx(-1 / (8 * 2))


def test_overlong_penalty_hand_values():
    penalty = OverlongPenalty(buffer=4, weight=0.5)
    lengths = torch.tensor([3, 6, 7, 8, 10])  # max_new_tokens 10: free up to 6, then -0.5 * (L - 6) / 4
    assert penalty(lengths, 10).tolist() == pytest.approx([0.0, 0.0, -0.125, -0.25, -0.5])
    assert not OverlongPenalty().enabled
    with pytest.raises(ValueError, match="below max_new_tokens"):
        penalty(lengths, 4)


@pytest.mark.parametrize("kwargs", [{"objective": "ppo"}, {"objective": "gspo"},  # gspo needs sequence_mean
                                    {"objective": "cispo", "dual_clip": 3.0}, {"aggregation": "sequence_sum", "length_normalizer": 0}])
def test_loss_config_rejects_bad_combinations(kwargs):
    with pytest.raises(ValueError):
        GRPOLossConfig(**kwargs)


VARIANTS = {
    "gspo": {"loss": GRPOLossConfig(objective="gspo", aggregation="sequence_mean", clip_low=3e-4, clip_high=4e-4)},
    "cispo": {"loss": GRPOLossConfig(objective="cispo", clip_low=1.0 - 1e-6, clip_high=0.3)},
    "dr_grpo": {"loss": GRPOLossConfig(aggregation="sequence_sum"), "advantage": AdvantageConfig(estimator="group_mean")},
    "rloo": {"advantage": AdvantageConfig(estimator="rloo")},
    "reinforce_pp_overlong": {"advantage": AdvantageConfig(estimator="reinforce_pp"),
                              "overlong_penalty": OverlongPenalty(buffer=4, weight=1.0)},
}


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_each_variant_moves_log_probs_along_its_advantages(tmp_path, tiny_checkpoints, synth_dir, variant):
    """A real GRPOModule step with each variant: responses with positive advantage become more likely."""
    capture = GroupCapture()
    trainer, module, data = grpo_run(
        tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir, max_steps=2,
        module_kwargs={"rewards": PARITY_REWARDS, "optimizer": lambda p: torch.optim.SGD(p, lr=0.5), **VARIANTS[variant]},
        trainer_kwargs={"callbacks": [capture]},
    )
    trainer.fit(module, data)
    if variant == "dr_grpo":
        assert module.loss_config.length_normalizer == module.sampling.max_new_tokens
    for step, after in zip(capture.before, capture.after):
        groups, old = step["groups"], step["old"]
        if variant == "reinforce_pp_overlong":
            lengths = groups.response_mask.sum(-1).view(groups.rewards.shape).float()
            expected = OverlongPenalty(buffer=4)(lengths, module.sampling.max_new_tokens)
            assert torch.allclose(groups.terms["overlong"], expected)
            assert torch.allclose(groups.advantages, compute_advantages(groups.rewards.cpu(), "reinforce_pp"), atol=1e-6)
        delta = ((after - old) * groups.response_mask).sum(-1)
        advantages = groups.advantages.flatten()
        assert advantages.abs().sum() > 0, "the parity reward should give mixed groups"
        assert float((advantages * delta).sum()) > 0
    if variant == "reinforce_pp_overlong":
        assert "reward/overlong_mean" in trainer.callback_metrics
