"""PPO maths: GAE, per-task advantage normalisation, stratified minibatches, the clipped
loss, per-slot gradient clipping and explained variance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Categorical, Normal

from skillbank.algos.ppo import (
    PPOConfig,
    clip_grad_norm_per_slot,
    explained_variance,
    gae,
    normalize_per_task,
    ppo_loss,
    ppo_update,
    stratified_minibatches,
)

DT = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- GAE
def rollout(seed: int = 0, steps: int = 9, envs: int = 3):
    g = gen(seed)
    rewards = torch.randn(steps, envs, generator=g, dtype=DT)
    values = torch.randn(steps, envs, generator=g, dtype=DT)
    dones = (torch.rand(steps, envs, generator=g, dtype=DT) < 0.25).to(DT)
    dones[2, 0] = 1.0
    dones[steps - 1, 1] = 1.0  # episode ends on the last step: last value not used
    dones[:, 2] = 0.0  # one env never ends: bootstraps from last_value all the way
    last_value = torch.randn(envs, generator=g, dtype=DT)
    return rewards, values, dones, last_value


def reference_gae(rewards, values, dones, last_value, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, stopping after the step that ends the episode;
    delta_t = r_t + gamma V_{t+1} (1 - done_t) - V_t with V_T = last_value."""
    steps, envs = rewards.shape
    adv = [[0.0] * envs for _ in range(steps)]
    for n in range(envs):
        r = rewards[:, n].tolist()
        v = values[:, n].tolist() + [float(last_value[n])]
        d = dones[:, n].tolist()
        delta = [r[t] + gamma * v[t + 1] * (1 - d[t]) - v[t] for t in range(steps)]
        for t in range(steps):
            total, coef = 0.0, 1.0
            for k in range(t, steps):
                total += coef * delta[k]
                if d[k]:
                    break
                coef *= gamma * lam
            adv[t][n] = total
    return torch.tensor(adv, dtype=DT)


def discounted_returns(rewards, dones, last_value, gamma):
    steps, envs = rewards.shape
    out = torch.zeros(steps, envs, dtype=DT)
    for n in range(envs):
        for t in range(steps):
            total, coef, ended = 0.0, 1.0, False
            for k in range(t, steps):
                total += coef * float(rewards[k, n])
                coef *= gamma
                if dones[k, n]:
                    ended = True
                    break
            if not ended:
                total += coef * float(last_value[n])
            out[t, n] = total
    return out


@pytest.mark.parametrize(("gamma", "lam"), [(0.99, 0.95), (0.9, 0.5), (0.99, 0.0), (1.0, 1.0)])
def test_gae_matches_reference(gamma: float, lam: float) -> None:
    rewards, values, dones, last_value = rollout()
    adv, ret = gae(rewards, values, dones, last_value, gamma, lam)
    want = reference_gae(rewards, values, dones, last_value, gamma, lam)
    torch.testing.assert_close(adv, want, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ret, want + values, atol=1e-10, rtol=1e-10)


def test_gae_lambda_one_is_discounted_return_minus_value() -> None:
    rewards, values, dones, last_value = rollout(seed=3, steps=12, envs=4)
    adv, ret = gae(rewards, values, dones, last_value, 0.99, 1.0)
    g = discounted_returns(rewards, dones, last_value, 0.99)
    torch.testing.assert_close(ret, g, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(adv, g - values, atol=1e-10, rtol=1e-10)


def test_gae_lambda_zero_is_td_error() -> None:
    rewards, values, dones, last_value = rollout(seed=4)
    adv, _ = gae(rewards, values, dones, last_value, 0.9, 0.0)
    next_v = torch.cat([values[1:], last_value[None]])
    torch.testing.assert_close(adv, rewards + 0.9 * next_v * (1 - dones) - values)


def test_gae_does_not_modify_inputs() -> None:
    rewards, values, dones, last_value = rollout(seed=5)
    copies = [t.clone() for t in (rewards, values, dones, last_value)]
    gae(rewards, values, dones, last_value, 0.99, 0.95)
    for a, b in zip((rewards, values, dones, last_value), copies):
        assert torch.equal(a, b)


# -------------------------------------------------------- per-task normalisation
def test_normalize_per_task() -> None:
    g = gen(1)
    task = torch.tensor([0] * 7 + [2] * 5 + [1] * 9)[torch.randperm(21, generator=g)]
    adv = torch.randn(21, generator=g, dtype=DT) * 5 + task.to(DT) * 10
    out = normalize_per_task(adv, task, num_tasks=4)  # task 3 has no rows
    assert torch.isfinite(out).all()
    for k in range(3):
        rows = out[task == k]
        assert float(rows.mean()) == pytest.approx(0.0, abs=1e-9)
        assert float(rows.std(unbiased=False)) == pytest.approx(1.0, abs=1e-6)
        # order within a task is kept (affine with a positive scale)
        src = adv[task == k]
        assert torch.equal(torch.argsort(rows), torch.argsort(src))


def test_normalize_per_task_constant_and_single_row() -> None:
    adv = torch.tensor([3.0, 3.0, 3.0, 7.0])
    task = torch.tensor([0, 0, 0, 1])
    out = normalize_per_task(adv, task, 2)
    assert torch.equal(out, torch.zeros(4))


# --------------------------------------------------------- stratified minibatches
@pytest.mark.parametrize(("per_task", "num_minibatches"), [(12, 3), (8, 4), (5, 5), (12, 1)])
def test_stratified_minibatches_partition(per_task: int, num_minibatches: int) -> None:
    num_tasks = 4
    task = torch.arange(num_tasks).repeat_interleave(per_task)
    task = task[torch.randperm(task.numel(), generator=gen(0))]  # rows arrive mixed
    mbs = stratified_minibatches(task, num_tasks, num_minibatches, gen(1))
    assert len(mbs) == num_minibatches
    all_rows = torch.cat(mbs)
    assert torch.equal(torch.sort(all_rows).values, torch.arange(task.numel()))
    for idx in mbs:
        t = task[idx]
        assert torch.equal(
            torch.bincount(t, minlength=num_tasks),
            torch.full((num_tasks,), per_task // num_minibatches),
        )
        assert bool((t[1:] >= t[:-1]).all())  # grouped, in task order
    # deterministic for a seed, different for another
    again = stratified_minibatches(task, num_tasks, num_minibatches, gen(1))
    assert all(torch.equal(a, b) for a, b in zip(mbs, again))
    if num_minibatches > 1:
        other = stratified_minibatches(task, num_tasks, num_minibatches, gen(2))
        assert not all(torch.equal(a, b) for a, b in zip(mbs, other))


def test_stratified_minibatches_uneven_split_is_still_a_partition() -> None:
    """6 rows per task in 4 minibatches: sizes differ by at most one, nothing lost."""
    task = torch.arange(2).repeat_interleave(6)
    mbs = stratified_minibatches(task, 2, 4, gen(0))
    assert len(mbs) == 4
    assert torch.equal(torch.sort(torch.cat(mbs)).values, torch.arange(12))
    for idx in mbs:
        counts = torch.bincount(task[idx], minlength=2)
        assert int(counts.min()) >= 1 and int(counts.max()) <= 2


# ------------------------------------------------------------------------ loss
def batch_for(policy_out: Tensor, value: Tensor, seed: int = 0, num_tasks: int = 2):
    g = gen(seed)
    b = policy_out.shape[0]
    dist = Categorical(logits=policy_out.detach())
    actions = torch.randint(0, policy_out.shape[1], (b,), generator=g)
    return {
        "actions": actions,
        "logp": dist.log_prob(actions),
        "advantages": torch.randn(b, generator=g) * 2 + 0.5,
        "values": value.detach() + 0.05 * torch.randn(b, generator=g),
        "returns": torch.randn(b, generator=g),
        "task": torch.arange(num_tasks).repeat_interleave(b // num_tasks),
    }


def logits_and_value(b: int = 8, n: int = 3, seed: int = 0):
    g = gen(seed)
    return torch.randn(b, n, generator=g), torch.randn(b, generator=g)


def test_ratio_one_stats_are_exact() -> None:
    logits, value = logits_and_value()
    batch = batch_for(logits, value)
    cfg = PPOConfig(norm_adv=False, clip_vloss=False, ent_coef=0.01, vf_coef=0.5)
    loss, stats = ppo_loss(logits, value, batch, "discrete", cfg, num_tasks=2)
    assert stats["approx_kl"] == 0.0 and stats["clipfrac"] == 0.0
    assert stats["policy_loss"] == pytest.approx(-float(batch["advantages"].mean()), rel=1e-6)
    v_loss = 0.5 * (value - batch["returns"]) ** 2
    assert stats["value_loss"] == pytest.approx(float(v_loss.mean()), rel=1e-6)
    entropy = Categorical(logits=logits).entropy()
    assert stats["entropy"] == pytest.approx(float(entropy.mean()), rel=1e-6)
    want = 2 * (-batch["advantages"] - 0.01 * entropy + 0.5 * v_loss).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-6)


def test_ratio_one_with_normalised_advantages() -> None:
    logits, value = logits_and_value(b=10)
    batch = batch_for(logits, value)
    cfg = PPOConfig(norm_adv=True)
    _, stats = ppo_loss(logits, value, batch, "discrete", cfg, num_tasks=2)
    norm = normalize_per_task(batch["advantages"], batch["task"], 2)
    assert stats["policy_loss"] == pytest.approx(-float(norm.mean()), abs=1e-6)
    assert stats["policy_loss"] == pytest.approx(0.0, abs=1e-6)  # zero mean per task


def test_value_clipping() -> None:
    value = torch.tensor([0.0, 1.0, -2.0, 0.5])
    logits = torch.zeros(4, 2)
    batch = batch_for(logits, value, num_tasks=1)
    batch["values"] = torch.tensor([0.0, 0.5, -1.0, 0.45])  # rows 1, 2 move > clip 0.2
    batch["returns"] = torch.tensor([1.0, 0.0, -1.0, 0.0])
    cfg = PPOConfig(clip_vloss=True, clip_coef=0.2)
    _, stats = ppo_loss(logits, value, batch, "discrete", cfg, num_tasks=1)
    v_clip = torch.tensor([0.0, 0.7, -1.2, 0.5])
    want = 0.5 * torch.max((value - batch["returns"]) ** 2, (v_clip - batch["returns"]) ** 2)
    assert stats["value_loss"] == pytest.approx(float(want.mean()), rel=1e-6)


def test_clipped_ratio_has_zero_policy_gradient() -> None:
    logits0, value = logits_and_value(b=4, n=2, seed=3)
    batch = batch_for(logits0, value, num_tasks=1)
    logp_new = Categorical(logits=logits0).log_prob(batch["actions"])
    # rows 0, 1: ratio 1.5 (> 1 + 0.2); rows 2, 3: ratio 0.6 (< 1 - 0.2)
    batch["logp"] = logp_new - torch.log(torch.tensor([1.5, 1.5, 0.6, 0.6]))
    # row 0: adv > 0 with ratio above the clip -> clipped; row 1: adv < 0 -> not clipped
    # row 2: adv < 0 with ratio below the clip -> clipped; row 3: adv > 0 -> not clipped
    batch["advantages"] = torch.tensor([1.0, -1.0, -1.0, 1.0])
    cfg = PPOConfig(norm_adv=False, ent_coef=0.0, clip_coef=0.2)
    logits = logits0.clone().requires_grad_(True)
    loss, stats = ppo_loss(logits, value, batch, "discrete", cfg, num_tasks=1)
    assert stats["clipfrac"] == 1.0
    assert stats["approx_kl"] == pytest.approx(
        float(
            (
                (torch.tensor([1.5, 1.5, 0.6, 0.6]) - 1)
                - torch.log(torch.tensor([1.5, 1.5, 0.6, 0.6]))
            ).mean()
        ),
        rel=1e-5,
    )
    loss.backward()
    grad = logits.grad
    assert torch.count_nonzero(grad[0]) == 0 and torch.count_nonzero(grad[2]) == 0
    assert torch.count_nonzero(grad[1]) > 0 and torch.count_nonzero(grad[3]) > 0
    # policy loss: rows 0, 2 use the clipped ratio
    want = torch.tensor([-1.2, 1.5, 0.8, -0.6]).mean()
    assert stats["policy_loss"] == pytest.approx(float(want), rel=1e-5)


def test_box_log_prob_is_summed_over_dims() -> None:
    g = gen(7)
    mean, log_std = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g) * 0.3
    policy_out = torch.cat([mean, log_std], dim=1)
    actions = torch.randn(6, 2, generator=g)
    logp = Normal(mean, log_std.exp()).log_prob(actions).sum(-1)
    batch = {
        "actions": actions,
        "logp": logp - 0.1,  # ratio e^0.1 for every row
        "advantages": torch.ones(6),
        "values": torch.zeros(6),
        "returns": torch.zeros(6),
        "task": torch.zeros(6, dtype=torch.long),
    }
    cfg = PPOConfig(norm_adv=False, clip_coef=0.2)
    _, stats = ppo_loss(policy_out, torch.zeros(6), batch, "box", cfg, num_tasks=1)
    assert stats["policy_loss"] == pytest.approx(-math.exp(0.1), rel=1e-5)
    assert stats["approx_kl"] == pytest.approx(math.exp(0.1) - 1 - 0.1, rel=1e-4)
    assert stats["clipfrac"] == 0.0


# ------------------------------------------------------------------------ update
@pytest.mark.parametrize(("target_kl", "epochs_run"), [(None, 3), (-1.0, 1)])
def test_ppo_update_steps_and_early_stop(target_kl, epochs_run: int) -> None:
    torch.manual_seed(0)
    num_tasks, per_task, n_act = 2, 8, 3
    pi = torch.nn.Linear(4, n_act)
    vf = torch.nn.Linear(4, 1)
    g = gen(0)
    rows = num_tasks * per_task
    obs = torch.randn(rows, 4, generator=g)
    with torch.no_grad():
        actions = torch.randint(0, n_act, (rows,), generator=g)
        batch = {
            "obs": obs,
            "actions": actions,
            "logp": Categorical(logits=pi(obs)).log_prob(actions),
            "values": vf(obs).squeeze(-1),
            "advantages": torch.randn(rows, generator=g),
            "returns": torch.randn(rows, generator=g),
            "task": torch.arange(num_tasks).repeat_interleave(per_task),
        }
    seen_tasks: list[Tensor] = []

    def forward(x: Tensor, task: Tensor):
        seen_tasks.append(task)
        return pi(x), vf(x).squeeze(-1)

    clips: list[float] = []
    params = [*pi.parameters(), *vf.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    w0 = pi.weight.detach().clone()
    cfg = PPOConfig(update_epochs=3, num_minibatches=2, target_kl=target_kl, max_grad_norm=0.7)
    stats = ppo_update(forward, opt, clips.append, batch, "discrete", cfg, num_tasks, gen(1))
    assert len(clips) == epochs_run * 2 and set(clips) == {0.7}
    for t in seen_tasks:  # stratified: equal rows per task, grouped
        assert torch.equal(t, torch.arange(num_tasks).repeat_interleave(per_task // 2))
    assert not torch.equal(pi.weight, w0)
    assert set(stats) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"}
    assert stats["explained_variance"] == pytest.approx(
        explained_variance(batch["values"], batch["returns"])
    )


# ----------------------------------------------------------- per-slot grad clip
def test_clip_grad_norm_per_slot() -> None:
    g = gen(0)
    a = torch.zeros(4, 2, 5, requires_grad=True)
    b = torch.zeros(4, 3, 2, requires_grad=True)
    frozen = torch.zeros(4, 2, requires_grad=True)  # no grad: skipped
    a.grad = torch.randn(4, 2, 5, generator=g)
    b.grad = torch.randn(4, 3, 2, generator=g)
    scale = torch.tensor([10.0, 0.01, 3.0, 0.0])  # slots 1, 3 below the max
    a.grad *= scale.view(4, 1, 1)
    b.grad *= scale.view(4, 1, 1)
    before_a, before_b = a.grad.clone(), b.grad.clone()

    def norms() -> Tensor:
        return (a.grad.pow(2).sum((1, 2)) + b.grad.pow(2).sum((1, 2))).sqrt()

    old = norms()
    max_norm = 0.5
    assert old[0] > max_norm and old[2] > max_norm and old[1] < max_norm
    clip_grad_norm_per_slot([a, b, frozen], max_norm)
    new = norms()
    assert bool((new <= max_norm + 1e-6).all())
    for k in (0, 2):  # clipped to the max, direction kept
        assert float(new[k]) == pytest.approx(max_norm, rel=1e-5)
        ratio = float(new[k] / old[k])
        torch.testing.assert_close(a.grad[k], before_a[k] * ratio)
        torch.testing.assert_close(b.grad[k], before_b[k] * ratio)
    for k in (1, 3):  # untouched
        assert torch.equal(a.grad[k], before_a[k]) and torch.equal(b.grad[k], before_b[k])
    assert frozen.grad is None


# --------------------------------------------------------- explained variance
def test_explained_variance() -> None:
    target = torch.randn(50, generator=gen(0))
    assert explained_variance(target.clone(), target) == pytest.approx(1.0)
    assert explained_variance(torch.full((50,), float(target.mean())), target) == pytest.approx(
        0.0, abs=1e-6
    )
    assert explained_variance(target + 3.0, target) == pytest.approx(1.0)  # offset ignored
    assert explained_variance(-target, target) == pytest.approx(-3.0, rel=1e-5)
    assert math.isnan(explained_variance(target, torch.ones(50)))
