"""Returns, GAE, the linear baseline and the policy-gradient losses.

References are plain Python loops / float64 NumPy; estimator tests compare
sample means with analytic gradients and Hessians within 5 standard errors.
"""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl_jax.rl import (
    dice_loss,
    discounted_returns,
    gae,
    linear_baseline_features,
    linear_feature_baseline,
    masked_mean,
    normalize_advantages,
    ppo_clip_loss,
    vpg_loss,
)

# -- random masked data ---------------------------------------------------------


def _episodes(seed, shape=(2, 3, 12), mid_row_terminations=False):
    """Rewards/values with episodes of random length, some terminated, some
    truncated, and rows whose mask has gaps (a new episode after a gap).

    ``mid_row_terminations`` also ends episodes at valid steps followed by
    valid steps, as in auto-reset rollouts holding several episodes per row.
    """
    rng = np.random.default_rng(seed)
    horizon = shape[-1]
    lengths = rng.integers(1, horizon + 1, size=shape[:-1])
    valid = np.arange(horizon) < lengths[..., None]
    valid.reshape(-1, horizon)[0, 4] = False  # a gap: steps 0-3 and 5.. are two episodes
    valid.reshape(-1, horizon)[0, 5:] = True
    last = np.zeros(shape, bool)
    nxt = np.concatenate([valid[..., 1:], np.zeros(shape[:-1] + (1,), bool)], -1)
    last[valid & ~nxt] = True
    terminated = last & (rng.random(shape) < 0.5)
    if mid_row_terminations:
        terminated |= valid & (rng.random(shape) < 0.15)
    rewards = rng.normal(size=shape).astype(np.float32)
    values = rng.normal(size=shape).astype(np.float32)
    next_values = rng.normal(size=shape).astype(np.float32)
    return rewards, values, next_values, terminated, valid


def _ref_returns(rewards, valid, gamma):
    out = np.zeros(rewards.shape, np.float64)
    for idx in np.ndindex(rewards.shape[:-1]):
        acc = 0.0
        for t in reversed(range(rewards.shape[-1])):
            cont = t + 1 < rewards.shape[-1] and valid[idx + (t + 1,)]
            acc = rewards[idx + (t,)] + gamma * (acc if cont else 0.0) if valid[idx + (t,)] else 0.0
            out[idx + (t,)] = acc
    return out


def _ref_gae(rewards, values, next_values, terminated, valid, gamma, lam):
    adv = np.zeros(rewards.shape, np.float64)
    for idx in np.ndindex(rewards.shape[:-1]):
        acc = 0.0
        for t in reversed(range(rewards.shape[-1])):
            i = idx + (t,)
            if not valid[i]:
                acc = 0.0
            else:
                nv = 0.0 if terminated[i] else next_values[i]
                delta = rewards[i] + gamma * nv - values[i]
                cont = t + 1 < rewards.shape[-1] and valid[idx + (t + 1,)] and not terminated[i]
                acc = delta + gamma * lam * (acc if cont else 0.0)
            adv[i] = acc
    return adv


@pytest.mark.parametrize("seed,gamma", [(0, 0.99), (1, 0.5), (2, 1.0), (3, 0.0)])
def test_discounted_returns_match_loop(seed, gamma):
    rewards, _, _, _, valid = _episodes(seed)
    out = jax.jit(discounted_returns)(rewards, valid, gamma)
    chex.assert_shape(out, rewards.shape)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, _ref_returns(rewards, valid, gamma), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,gamma,lam", [(0, 0.99, 0.95), (1, 0.9, 0.0), (2, 1.0, 1.0), (3, 0.7, 0.5)])
def test_gae_matches_loop(seed, gamma, lam):
    rewards, values, next_values, terminated, valid = _episodes(seed, mid_row_terminations=True)
    assert np.any(terminated[..., :-1] & valid[..., 1:])
    adv, ret = jax.jit(gae)(rewards, values, next_values, terminated, valid, gamma, lam)
    ref = _ref_gae(rewards, values, next_values, terminated, valid, gamma, lam)
    np.testing.assert_allclose(adv, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, np.where(valid, ref + values, 0.0), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(adv)[~valid] == 0) and np.all(np.asarray(ret)[~valid] == 0)


def test_gae_lambda_one_without_bootstrap_is_returns_minus_values():
    rewards, values, _, terminated, valid = _episodes(4)
    # V(next obs) is the next step's value inside an episode, 0 after its end
    nxt_valid = np.concatenate([valid[..., 1:], np.zeros(valid.shape[:-1] + (1,), bool)], -1)
    next_values = np.where(valid & nxt_valid, np.roll(values, -1, axis=-1), 0.0).astype(np.float32)
    adv, ret = gae(rewards, values, next_values, terminated, valid, 0.9, 1.0)
    returns = discounted_returns(rewards, valid, 0.9)
    np.testing.assert_allclose(adv, np.where(valid, returns - values, 0.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, returns, rtol=1e-5, atol=1e-5)


def test_gae_truncation_bootstraps_termination_does_not():
    rewards = jnp.array([[1.0, 1.0], [1.0, 1.0]])
    values = jnp.zeros((2, 2))
    next_values = jnp.full((2, 2), 10.0)
    valid = jnp.ones((2, 2), bool)
    terminated = jnp.array([[False, False], [False, True]])
    adv, _ = gae(rewards, values, next_values, terminated, valid, 1.0, 1.0)
    # row 0 truncated at the horizon: bootstrap from V = 10; row 1 terminated: no bootstrap
    np.testing.assert_allclose(adv[:, 1], [11.0, 1.0])


def test_masked_mean_and_normalize():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 9)).astype(np.float32)
    valid = rng.random((4, 9)) < 0.6
    np.testing.assert_allclose(masked_mean(x, valid), x[valid].mean(), rtol=1e-5)
    np.testing.assert_allclose(masked_mean(x, valid, axis=-1),
                               [x[i][valid[i]].mean() if valid[i].any() else 0.0 for i in range(4)],
                               rtol=1e-5)
    assert masked_mean(x, np.zeros_like(valid)) == 0.0
    norm = np.asarray(normalize_advantages(x, valid))
    np.testing.assert_allclose(norm[valid], (x[valid] - x[valid].mean()) / x[valid].std(), rtol=1e-4, atol=1e-5)
    assert np.all(norm[~valid] == 0)


def test_returns_input_errors():
    with pytest.raises(ValueError, match="rewards .* valid"):
        discounted_returns(jnp.zeros((2, 3)), jnp.ones((2, 4), bool), 0.9)
    with pytest.raises(ValueError, match="gamma must be in"):
        discounted_returns(jnp.zeros((2, 3)), jnp.ones((2, 3), bool), 1.5)
    with pytest.raises(ValueError, match="gae_lambda must be in"):
        z = jnp.zeros((3,))
        gae(z, z, z, z > 0, z == 0, 0.9, -0.1)
    with pytest.raises(ValueError, match="time axis"):
        discounted_returns(jnp.float32(1.0), jnp.bool_(True), 0.9)
    with pytest.raises(ValueError, match="does not broadcast"):
        masked_mean(jnp.zeros((2, 3)), jnp.ones((4,), bool))


def test_returns_trace_once_for_traced_gamma():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(rewards, valid, gamma):
        return discounted_returns(rewards, valid, gamma)

    rewards, _, _, _, valid = _episodes(0)
    for gamma in (0.9, 0.95, 0.99):
        np.testing.assert_allclose(fn(rewards, valid, jnp.float32(gamma)),
                                   _ref_returns(rewards, valid, gamma), rtol=1e-5, atol=1e-5)


# -- linear feature baseline -------------------------------------------------------------


def _baseline_data(seed, episodes=6, horizon=30, obs_dim=3):
    rng = np.random.default_rng(seed)
    obs = np.cumsum(rng.normal(scale=0.1, size=(episodes, horizon, obs_dim)), axis=1).astype(np.float32)
    lengths = rng.integers(horizon // 2, horizon + 1, size=episodes)
    valid = np.arange(horizon) < lengths[:, None]
    rewards = (-np.linalg.norm(obs, axis=-1) + rng.normal(scale=0.1, size=(episodes, horizon))).astype(np.float32)
    return obs, np.asarray(discounted_returns(rewards, valid, 0.99)), valid


def _numpy_ridge(obs, returns, valid, reg):
    al = np.arange(obs.shape[1])[None, :, None] / 100.0 * np.ones(obs.shape[:2] + (1,))
    feats = np.concatenate([obs, obs**2, al, al**2, al**3, np.ones_like(al)], -1).astype(np.float64)
    x, y = feats[valid], returns[valid].astype(np.float64)
    f = x.shape[1]
    # ridge regression as an augmented least-squares problem
    w = np.linalg.lstsq(np.vstack([x, np.sqrt(reg) * np.eye(f)]), np.concatenate([y, np.zeros(f)]), rcond=None)[0]
    return np.where(valid, feats @ w, 0.0), feats


def test_linear_baseline_matches_numpy_lstsq():
    obs, returns, valid = _baseline_data(0)
    values = jax.jit(linear_feature_baseline)(obs, returns, valid)
    ref, feats = _numpy_ridge(obs, returns, valid, 1e-5)
    chex.assert_shape(values, returns.shape)
    np.testing.assert_allclose(values, ref, atol=1e-3 * np.abs(ref).max())
    assert np.all(np.asarray(values)[~valid] == 0)
    np.testing.assert_allclose(linear_baseline_features(obs, valid), feats * valid[..., None], rtol=1e-6, atol=1e-7)


def test_linear_baseline_exact_on_linear_returns():
    obs, _, valid = _baseline_data(1, obs_dim=2)
    _, feats = _numpy_ridge(obs, np.zeros(valid.shape), valid, 1e-5)
    w_true = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, 0.7, 4.0])
    returns = np.where(valid, feats @ w_true, 0.0).astype(np.float32)
    values = linear_feature_baseline(obs, returns, valid)
    np.testing.assert_allclose(values, returns, atol=2e-3)


def test_linear_baseline_per_task_vmap_and_no_gradient():
    data = [_baseline_data(s) for s in range(3)]
    obs, returns, valid = (np.stack(x) for x in zip(*data))
    batched = jax.vmap(linear_feature_baseline)(obs, returns, valid)
    for i in range(3):
        np.testing.assert_allclose(batched[i], linear_feature_baseline(obs[i], returns[i], valid[i]),
                                   rtol=1e-4, atol=1e-4)
    grads = jax.grad(lambda o, r: jnp.sum(linear_feature_baseline(o, r, valid[0])), argnums=(0, 1))(
        obs[0], returns[0])
    assert all(np.all(np.asarray(g) == 0) for g in grads)


def test_linear_baseline_stays_finite():
    obs, returns, valid = _baseline_data(2)
    # obs**4 overflows float32 in X^T X: every solve fails -> baseline 0, no NaN
    values = linear_feature_baseline(obs * 1e12, returns, valid)
    assert np.all(np.isfinite(values)) and np.all(np.asarray(values) == 0)


def test_linear_baseline_errors():
    obs, returns, valid = _baseline_data(0)
    with pytest.raises(ValueError, match="obs must be"):
        linear_feature_baseline(obs[:, :5], returns, valid)
    with pytest.raises(ValueError, match="returns .* valid"):
        linear_feature_baseline(obs, returns[:, :5], valid)
    with pytest.raises(ValueError, match="reg_coeff"):
        linear_feature_baseline(obs, returns, valid, reg_coeff=0.0)


# -- estimators on bandits --------------------------------------------------------------

ARM_MEANS = jnp.array([1.0, 0.2])
THETA = jnp.array([0.3, -0.4])
NUM_SAMPLES = 20_000


def _expected_return(theta):
    return jnp.dot(jax.nn.softmax(theta), ARM_MEANS)


def _bandit_samples(key, horizon):
    ka, kr = jax.random.split(key)
    actions = jax.random.categorical(ka, THETA, shape=(NUM_SAMPLES, horizon))
    rewards = ARM_MEANS[actions] + 0.5 * jax.random.normal(kr, (NUM_SAMPLES, horizon))
    return actions, rewards


def _close_in_expectation(samples, expected, num_se=5.0, atol=1e-6):
    samples = np.asarray(samples, np.float64)
    mean = samples.mean(0)
    stderr = samples.std(0) / np.sqrt(samples.shape[0])
    assert np.all(np.abs(mean - np.asarray(expected)) <= num_se * stderr + atol), (mean, expected, stderr)


def test_vpg_gradient_unbiased_on_bandit():
    actions, rewards = _bandit_samples(jax.random.PRNGKey(0), 1)

    def one(action, reward):
        def objective(theta):
            logp = jax.nn.log_softmax(theta)[action]
            return -vpg_loss(logp, reward, jnp.ones_like(reward, bool))
        return jax.grad(objective)(THETA)

    grads = jax.vmap(one)(actions, rewards)
    _close_in_expectation(grads, jax.grad(_expected_return)(THETA))
    # the batch loss is the mean of the per-sample losses
    batch = jax.grad(lambda th: -vpg_loss(jax.nn.log_softmax(th)[actions], rewards, jnp.ones_like(rewards, bool)))(THETA)
    np.testing.assert_allclose(batch, grads.mean(0), rtol=1e-4, atol=1e-6)


def test_vpg_normalisations():
    rng = np.random.default_rng(0)
    logp, adv = rng.normal(size=(2, 3, 5)).astype(np.float32)
    valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    np.testing.assert_allclose(vpg_loss(logp, adv, valid), -(logp * adv)[valid].mean(), rtol=1e-5)
    per_ep = -np.mean([(logp[i] * adv[i])[valid[i]].mean() for i in range(3)])
    np.testing.assert_allclose(vpg_loss(logp, adv, valid, per_episode=True), per_ep, rtol=1e-5)
    # advantages are constants
    assert np.all(np.asarray(jax.grad(lambda a: vpg_loss(jnp.asarray(logp), a, valid))(jnp.asarray(adv))) == 0)
    with pytest.raises(ValueError, match="log_prob .* advantages"):
        vpg_loss(logp, adv[:, :4], valid)


def _dice_objective(theta, actions, rewards, valid, gamma, baseline=None):
    logp = jax.nn.log_softmax(theta)[actions]
    return -dice_loss(logp, rewards, valid, gamma, baseline=baseline)


@pytest.mark.parametrize("use_baseline", [False, True])
def test_dice_gradient_unbiased_with_random_lengths(use_baseline):
    gamma, horizon = 0.9, 3
    key_samples, key_len = jax.random.split(jax.random.PRNGKey(1))
    actions, rewards = _bandit_samples(key_samples, horizon)
    lengths = jax.random.randint(key_len, (NUM_SAMPLES,), 1, horizon + 1)
    valid = jnp.arange(horizon) < lengths[:, None]
    baseline = None
    if use_baseline:  # the true expected reward-to-go, a good but not perfect baseline
        baseline = discounted_returns(jnp.full(valid.shape, _expected_return(THETA)), valid, gamma)

    def one(a, r, v, b):
        return jax.grad(_dice_objective)(THETA, a[None], r[None], v[None], gamma,
                                         None if b is None else b[None])

    grads = jax.vmap(one)(actions, rewards, valid, baseline)
    factor = np.mean([sum(gamma**t for t in range(n)) for n in range(1, horizon + 1)])
    _close_in_expectation(grads, factor * jax.grad(_expected_return)(THETA))
    value = dice_loss(jax.nn.log_softmax(THETA)[actions], rewards, valid, gamma, baseline=baseline)
    np.testing.assert_allclose(value, -np.asarray(discounted_returns(rewards, valid, gamma))[:, 0].mean(), rtol=1e-4)
    if use_baseline:
        plain = jax.vmap(one)(actions, rewards, valid, None)
        assert np.all(np.asarray(grads).std(0) < 0.7 * np.asarray(plain).std(0))


@pytest.mark.parametrize("use_baseline", [False, True])
def test_dice_hessian_unbiased_one_step_bandit(use_baseline):
    actions, rewards = _bandit_samples(jax.random.PRNGKey(2), 1)
    valid = jnp.ones((1,), bool)
    baseline = jnp.full((1,), 0.5) if use_baseline else None
    hess = jax.vmap(lambda a, r: jax.hessian(_dice_objective)(THETA, a, r, valid, 0.99, baseline))(
        actions, rewards)
    _close_in_expectation(hess.reshape(NUM_SAMPLES, -1), jax.hessian(_expected_return)(THETA).reshape(-1))


def test_dice_hessian_needs_causal_dependencies():
    """Two steps where step 1 pays 1 for repeating step 0's arm: J = sum_a p_a m_a + gamma sum_a p_a^2.

    The cross-step terms of J's gradient and Hessian exist only through DiCE's
    cumulative magic box over both log-probs.
    """
    gamma = 0.8
    ka, kr = jax.random.split(jax.random.PRNGKey(3))
    actions = jax.random.categorical(ka, THETA, shape=(NUM_SAMPLES, 2))
    rewards = jnp.stack([ARM_MEANS[actions[:, 0]] + 0.5 * jax.random.normal(kr, (NUM_SAMPLES,)),
                         (actions[:, 1] == actions[:, 0]).astype(jnp.float32)], -1)
    valid = jnp.ones((2,), bool)

    def expected(theta):
        p = jax.nn.softmax(theta)
        return jnp.dot(p, ARM_MEANS) + gamma * jnp.sum(p**2)

    grads = jax.vmap(lambda a, r: jax.grad(_dice_objective)(THETA, a, r, valid, gamma))(actions, rewards)
    hess = jax.vmap(lambda a, r: jax.hessian(_dice_objective)(THETA, a, r, valid, gamma))(actions, rewards)
    _close_in_expectation(grads, jax.grad(expected)(THETA))
    _close_in_expectation(hess.reshape(NUM_SAMPLES, -1), jax.hessian(expected)(THETA).reshape(-1))


def test_dice_errors():
    z = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="baseline"):
        dice_loss(z, z, z > 0, 0.9, baseline=jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="gamma"):
        dice_loss(z, z, z > 0, -0.5)


# -- PPO -----------------------------------------------------------------------------------


def test_ppo_clip_gradient_zero_where_clipped():
    eps = 0.2
    old = jnp.zeros((6,))
    log_ratio = jnp.log(jnp.array([1.5, 0.5, 1.5, 0.5, 1.1, 0.9]))
    adv = jnp.array([1.0, -1.0, -1.0, 1.0, 2.0, -2.0])
    valid = jnp.ones((6,), bool)
    g = np.asarray(jax.grad(lambda lp: ppo_clip_loss(lp, old, adv, valid, eps))(old + log_ratio))
    # ratio 1.5 with A > 0 and ratio 0.5 with A < 0 are clipped: no gradient
    assert g[0] == 0 and g[1] == 0
    # the other direction is not clipped (the pessimistic min keeps ratio * A)
    ratio = np.exp(np.asarray(log_ratio))
    np.testing.assert_allclose(g[2:], -ratio[2:] * np.asarray(adv[2:]) / 6, rtol=1e-5)
    surrogate = np.minimum(ratio * adv, np.clip(ratio, 1 - eps, 1 + eps) * adv)
    np.testing.assert_allclose(ppo_clip_loss(old + log_ratio, old, adv, valid, eps), -surrogate.mean(), rtol=1e-5)


def test_ppo_equals_vpg_at_ratio_one():
    rng = np.random.default_rng(0)
    logp, adv = jnp.asarray(rng.normal(size=(2, 4, 7)), jnp.float32)
    valid = jnp.asarray(rng.random((4, 7)) < 0.7)
    g_ppo = jax.grad(lambda lp: ppo_clip_loss(lp, lp, adv, valid))(logp)
    g_vpg = jax.grad(lambda lp: vpg_loss(lp, adv, valid))(logp)
    np.testing.assert_allclose(g_ppo, g_vpg, rtol=1e-6)
    with pytest.raises(ValueError, match="clip_eps"):
        ppo_clip_loss(logp, logp, adv, valid, clip_eps=0.0)
    with pytest.raises(ValueError, match="old_log_prob"):
        ppo_clip_loss(logp, logp[:, :3], adv, valid)


def test_solve_small_matches_numpy_pivots_and_flags_singular_systems():
    from metarl_jax.rl.baselines import solve_small

    rng = np.random.default_rng(0)
    for n in (1, 4, 12):
        a = rng.normal(size=(n, n)).astype(np.float32)
        a = a @ a.T + 0.1 * np.eye(n, dtype=np.float32)
        b = rng.normal(size=n).astype(np.float32)
        np.testing.assert_allclose(jax.jit(solve_small)(a, b),
                                   np.linalg.solve(a.astype(np.float64), b), rtol=2e-4,
                                   atol=1e-5)
    swap = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)  # a zero first pivot needs a row swap
    np.testing.assert_array_equal(solve_small(swap, np.array([2.0, 3.0], np.float32)), [3.0, 2.0])
    assert not np.isfinite(solve_small(np.zeros((2, 2), np.float32),
                                       np.ones(2, np.float32))).any()
    with pytest.raises(ValueError, match="a \\[n, n\\] and b \\[n\\]"):
        solve_small(np.zeros((2, 3), np.float32), np.ones(2, np.float32))


def test_linear_baseline_compiles_without_a_lapack_call():
    """jaxlib 0.10 runs LAPACK calls on XLA's CPU thread pool and two at once can deadlock
    a 2-thread pool; the baseline (fitted in every MAML step) must not contain one."""
    obs = jnp.zeros((3, 5, 2), jnp.float32)
    returns, valid = jnp.zeros((3, 5), jnp.float32), jnp.ones((3, 5), bool)
    hlo = jax.jit(jax.vmap(linear_feature_baseline)).lower(
        obs[None], returns[None], valid[None]).compile().as_text().lower()
    targets = re.findall(r'custom_call_target="([^"]+)"', hlo)
    assert not [t for t in targets if "lapack" in t or "getrf" in t], targets
