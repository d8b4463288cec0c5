"""The GRPO math against hand-computed values."""

import math

import pytest
import torch

from lightning_longrl.rl.advantages import group_advantages, informative_groups
from lightning_longrl.rl.objective import GRPOLossConfig, aggregate, clipped_policy_loss, grpo_loss, kl_divergence


def test_group_advantages_hand_values():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.9, 0.1, 0.1, 0.1]]))
    # group 0: mean 0.5, unbiased std sqrt(1/3)
    expected0 = 0.5 / math.sqrt(1 / 3)
    assert torch.allclose(adv[0], torch.tensor([expected0, -expected0, -expected0, expected0]), atol=1e-5)
    # group 1: mean 0.3, deviations 0.6 / -0.2, unbiased std sqrt((0.36 + 3 * 0.04) / 3) = 0.4
    assert torch.allclose(adv[1], torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-5)


def test_equal_rewards_give_zero_advantages_not_nan():
    adv = group_advantages(torch.tensor([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(adv, torch.zeros(3, 3))
    assert torch.equal(group_advantages(torch.tensor([[0.7]])), torch.zeros(1, 1))  # a group of one


def test_informative_groups_drop_all_right_and_all_wrong():
    accuracy = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    assert informative_groups(accuracy).tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("ratio", "advantage", "expected_loss", "clipped"),
    [
        (1.5, 1.0, -1.3, True),  # above 1 + clip_high with A > 0: held at 1.3
        (0.5, 1.0, -0.5, False),  # below the band with A > 0: the smaller, unclipped term wins
        (0.5, -1.0, 0.8, True),  # below 1 - clip_low with A < 0: held at 0.8
        (1.5, -1.0, 1.5, False),  # above the band with A < 0: pessimistic unclipped term
        (1.1, 2.0, -2.2, False),  # inside the band
    ],
)
def test_clipped_policy_loss_hand_values(ratio, advantage, expected_loss, clipped):
    old = torch.tensor([[math.log(0.2)]])
    new = old + math.log(ratio)
    out = clipped_policy_loss(new, old, torch.tensor([advantage]), clip_low=0.2, clip_high=0.3)
    assert out.loss.item() == pytest.approx(expected_loss, abs=1e-5)
    assert out.clipped.item() is clipped


def test_dual_clip_caps_negative_advantage_losses():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[5.0, 2.0]]))
    plain = clipped_policy_loss(new, old, torch.tensor([-1.0]), 0.2, 0.3)
    dual = clipped_policy_loss(new, old, torch.tensor([-1.0]), 0.2, 0.3, dual_clip=3.0)
    assert plain.loss.tolist()[0] == pytest.approx([5.0, 2.0])
    assert dual.loss.tolist()[0] == pytest.approx([3.0, 2.0])
    assert dual.clipped.tolist() == [[True, False]]
    positive = clipped_policy_loss(new, old, torch.tensor([1.0]), 0.2, 0.3, dual_clip=3.0)
    assert positive.loss.tolist()[0] == pytest.approx([-1.3, -1.3])  # dual clip leaves A > 0 alone


def test_kl_estimators_hand_values():
    logp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    log_ratio = math.log(0.5)  # ref - logp
    assert kl_divergence(logp, ref, "k1").item() == pytest.approx(-log_ratio)
    assert kl_divergence(logp, ref, "k2").item() == pytest.approx(0.5 * log_ratio**2)
    assert kl_divergence(logp, ref, "k3").item() == pytest.approx(0.5 - log_ratio - 1)
    same = kl_divergence(logp, logp, "k3")
    assert same.item() == 0.0


def test_k3_is_unbiased_kl_estimate():
    torch.manual_seed(0)
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    samples = torch.multinomial(p, 200_000, replacement=True)
    k3 = kl_divergence(p.log()[samples], q.log()[samples], "k3").mean().item()
    exact = float((p * (p / q).log()).sum())
    assert k3 == pytest.approx(exact, rel=0.02)


def test_aggregation_hand_values():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert aggregate(values, mask, "token_mean").item() == pytest.approx(2.5)  # (1+2+3+4)/4
    assert aggregate(values, mask, "sequence_mean").item() == pytest.approx(3.0)  # (2 + 4)/2
    # a micro-batch normalised by the whole mini-batch's token count
    assert aggregate(values, mask, "token_mean", normalizer=8.0).item() == pytest.approx(10 / 8)


def test_micro_batches_add_up_to_the_mini_batch_loss():
    torch.manual_seed(0)
    logp, old, ref = (torch.randn(4, 5) * 0.1 - 1 for _ in range(3))
    adv = torch.tensor([1.0, -0.5, 0.2, -1.0])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    for aggregation in ("token_mean", "sequence_mean"):
        cfg = GRPOLossConfig(aggregation=aggregation)
        whole = grpo_loss(cfg, logp, old, adv, mask, ref).loss
        norm = float(mask.sum()) if aggregation == "token_mean" else 4.0
        parts = sum(grpo_loss(cfg, logp[s], old[s], adv[s], mask[s], ref[s], norm).loss for s in (slice(0, 2), slice(2, 4)))
        assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


def test_grpo_loss_is_policy_loss_plus_weighted_kl():
    logp = torch.log(torch.tensor([[0.5, 0.4]]))
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    ref = torch.log(torch.tensor([[0.25, 0.4]]))
    mask = torch.tensor([[1, 1]])
    cfg = GRPOLossConfig(kl_coef=0.1)
    terms = grpo_loss(cfg, logp, old, torch.tensor([2.0]), mask, ref)
    policy = (-2.0 * 1.0 + -2.0 * 0.8) / 2  # ratios 1.0 and 0.8 (inside the band)
    kl = (kl_divergence(logp, ref)[0, 0].item() + 0.0) / 2
    assert terms.policy_loss.item() == pytest.approx(policy, abs=1e-6)
    assert terms.kl.item() == pytest.approx(kl, abs=1e-6)
    assert terms.loss.item() == pytest.approx(policy + 0.1 * kl, abs=1e-6)
    no_ref = grpo_loss(cfg, logp, old, torch.tensor([2.0]), mask, None)
    assert no_ref.loss.item() == pytest.approx(policy, abs=1e-6) and no_ref.kl.item() == 0.0


def test_truncated_importance_sampling_hand_values():
    """Each token's policy term is weighted by min(pi_old / pi_rollout, cap); the KL term is not."""
    logp = torch.log(torch.tensor([[0.5, 0.4, 0.3]]))
    old = logp.clone()  # ratio 1: the policy term of each token is -A
    rollout = torch.log(torch.tensor([[0.25, 0.5, 0.3]]))  # old/rollout = 2.0, 0.8, 1.0
    ref = torch.log(torch.tensor([[0.25, 0.4, 0.3]]))
    mask = torch.tensor([[1, 1, 1]])
    adv = torch.tensor([1.0])
    cfg = GRPOLossConfig(kl_coef=0.1, rollout_is_cap=1.5)
    terms = grpo_loss(cfg, logp, old, adv, mask, ref, rollout_logprobs=rollout)
    policy = -(1.5 + 0.8 + 1.0) / 3  # the first weight 2.0 is truncated to the cap 1.5
    kl = float(kl_divergence(logp, ref).sum()) / 3
    assert terms.policy_loss.item() == pytest.approx(policy, abs=1e-6)
    assert terms.loss.item() == pytest.approx(policy + 0.1 * kl, abs=1e-6)
    plain = grpo_loss(GRPOLossConfig(kl_coef=0.1), logp, old, adv, mask, ref, rollout_logprobs=rollout)
    assert plain.policy_loss.item() == pytest.approx(-1.0, abs=1e-6)  # no correction unless asked for
    with pytest.raises(ValueError, match="rollout engine's log-probs"):
        grpo_loss(cfg, logp, old, adv, mask, ref)


@pytest.mark.parametrize("kwargs", [{"clip_low": 1.0}, {"clip_high": -0.1}, {"dual_clip": 1.0}, {"kl_coef": -1},
                                    {"kl_estimator": "k4"}, {"aggregation": "sum"}, {"rollout_is_cap": 0.0}])
def test_loss_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        GRPOLossConfig(**kwargs)
