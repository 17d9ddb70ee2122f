"""Distributions against closed forms, policies' shapes, and a real rollout."""

import math

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

from metarl_jax.nn import (
    Categorical,
    DiagGaussian,
    MLPPolicy,
    ValueNetwork,
    make_policy,
    policy_sample_fn,
)
from metarl_jax.core.rollout import rollout


def _cat(seed=0, batch=(3, 4), n=5):
    return Categorical(jax.random.normal(jax.random.PRNGKey(seed), batch + (n,)) * 2.0)


def _gauss(seed=0, batch=(3, 4), d=2):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return DiagGaussian(jax.random.normal(k1, batch + (d,)), 0.3 * jax.random.normal(k2, (d,)))


# -- Categorical -------------------------------------------------------------


def test_categorical_log_prob_matches_log_softmax():
    dist = _cat()
    actions = jax.random.randint(jax.random.PRNGKey(1), (3, 4), 0, 5)
    expected = np.take_along_axis(
        np.asarray(jax.nn.log_softmax(dist.logits)), np.asarray(actions)[..., None], -1
    )[..., 0]
    np.testing.assert_allclose(dist.log_prob(actions), expected, rtol=1e-6)
    # broadcasting: one action for every batch element
    np.testing.assert_allclose(dist.log_prob(jnp.int32(2)), jax.nn.log_softmax(dist.logits)[..., 2])


def test_categorical_entropy_kl_closed_form():
    p, q = _cat(0), _cat(1)
    pp = np.asarray(jax.nn.softmax(p.logits), np.float64)
    qq = np.asarray(jax.nn.softmax(q.logits), np.float64)
    np.testing.assert_allclose(p.entropy(), -(pp * np.log(pp)).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(p.kl(q), (pp * (np.log(pp) - np.log(qq))).sum(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p.kl(p), 0.0, atol=1e-6)


def test_categorical_zero_probability_is_finite():
    dist = Categorical(jnp.array([0.0, -jnp.inf, 1.0]))
    grad = jax.grad(lambda logits: Categorical(logits).entropy())(dist.logits)
    assert np.isfinite(dist.entropy()) and np.all(np.isfinite(grad))


def test_categorical_sampling_frequencies():
    logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
    n = 20_000
    samples = Categorical(jnp.broadcast_to(logits, (n, 4))).sample(jax.random.PRNGKey(0))
    assert samples.dtype == jnp.int32 and samples.shape == (n,)
    freq = np.bincount(np.asarray(samples), minlength=4) / n
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    # 5 standard errors of a binomial proportion
    np.testing.assert_array_less(np.abs(freq - probs), 5 * np.sqrt(probs * (1 - probs) / n))
    assert Categorical(logits).mode() == 3


def test_categorical_rejects_float_action():
    with pytest.raises(TypeError, match="action must be integer"):
        _cat().log_prob(jnp.zeros((3, 4)))


# -- DiagGaussian --------------------------------------------------------------


def test_gaussian_log_prob_matches_scipy():
    dist = _gauss()
    actions = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 2))
    std = jnp.exp(dist.log_std)
    expected = jax.scipy.stats.norm.logpdf(actions, dist.mean, std).sum(-1)
    chex.assert_shape(dist.log_prob(actions), (3, 4))
    np.testing.assert_allclose(dist.log_prob(actions), expected, rtol=1e-5, atol=1e-6)


def test_gaussian_entropy_kl_closed_form():
    p, q = _gauss(0), _gauss(1)
    sp, sq = np.exp(np.asarray(p.log_std, np.float64)), np.exp(np.asarray(q.log_std, np.float64))
    mp, mq = np.asarray(p.mean, np.float64), np.asarray(q.mean, np.float64)
    entropy = np.sum(0.5 * np.log(2 * math.pi * math.e * sp**2) * np.ones_like(mp), -1)
    kl = np.sum(np.log(sq / sp) + (sp**2 + (mp - mq) ** 2) / (2 * sq**2) - 0.5, -1)
    np.testing.assert_allclose(p.entropy(), entropy, rtol=1e-5)
    np.testing.assert_allclose(p.kl(q), kl, rtol=1e-5)
    np.testing.assert_allclose(p.kl(p), 0.0, atol=1e-6)


def test_gaussian_kl_matches_monte_carlo():
    p = DiagGaussian(jnp.array([0.3, -0.2]), jnp.array([0.1, -0.4]))
    q = DiagGaussian(jnp.array([0.0, 0.5]), jnp.array([0.2, 0.0]))
    n = 200_000
    x = DiagGaussian(jnp.broadcast_to(p.mean, (n, 2)), p.log_std).sample(jax.random.PRNGKey(3))
    samples = np.asarray(p.log_prob(x) - q.log_prob(x))
    stderr = samples.std() / np.sqrt(n)
    assert abs(samples.mean() - float(p.kl(q))) < 5 * stderr


def test_gaussian_sample_moments():
    p = DiagGaussian(jnp.zeros((50_000, 2)) + jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.5, 2.0])))
    x = np.asarray(p.sample(jax.random.PRNGKey(4)))
    assert x.dtype == np.float32
    np.testing.assert_array_less(np.abs(x.mean(0) - [1.0, -2.0]), 5 * np.array([0.5, 2.0]) / np.sqrt(50_000))
    np.testing.assert_allclose(x.std(0), [0.5, 2.0], rtol=0.02)
    np.testing.assert_array_equal(p.mode(), p.mean)


def test_distributions_are_pytrees_under_vmap_and_jit():
    dist = _gauss(batch=(6,))
    out = jax.jit(jax.vmap(lambda d: d.entropy()))(dist.replace(log_std=jnp.zeros((6, 2))))
    chex.assert_shape(out, (6,))
    leaves = jax.tree.leaves(_cat())
    assert len(leaves) == 1


def test_kl_type_mismatch_raises():
    with pytest.raises(TypeError, match="other must be Categorical"):
        _cat().kl(_gauss())
    with pytest.raises(TypeError, match="other must be DiagGaussian"):
        _gauss().kl(_cat())


# -- modules -------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_policy_shapes_and_params(activation):
    key = jax.random.PRNGKey(0)
    obs = jnp.ones((5, 7, 3))
    gauss = MLPPolicy(action_dim=2, discrete=False, hidden_sizes=(8, 8), activation=activation,
                      init_log_std=-0.5)
    params = gauss.init(key, obs)
    dist = gauss.apply(params, obs)
    assert isinstance(dist, DiagGaussian)
    chex.assert_shape(dist.mean, (5, 7, 2))
    np.testing.assert_allclose(params["params"]["log_std"], [-0.5, -0.5])
    chex.assert_shape(params["params"]["torso"]["hidden_0"]["kernel"], (3, 8))
    np.testing.assert_array_equal(params["params"]["output"]["bias"], 0.0)

    cat = MLPPolicy(action_dim=4, discrete=True, hidden_sizes=(8,), activation=activation)
    cparams = cat.init(key, obs)
    cdist = cat.apply(cparams, obs)
    assert isinstance(cdist, Categorical)
    chex.assert_shape(cdist.logits, (5, 7, 4))
    assert "log_std" not in cparams["params"]


def test_value_network_shape():
    net = ValueNetwork(hidden_sizes=(16,))
    obs = jnp.ones((4, 6, 3))
    out = net.apply(net.init(jax.random.PRNGKey(0), obs), obs)
    chex.assert_shape(out, (4, 6))


def test_bad_activation_raises():
    policy = MLPPolicy(action_dim=2, discrete=True, activation="gelu")
    with pytest.raises(ValueError, match="activation must be one of"):
        policy.init(jax.random.PRNGKey(0), jnp.ones(3))
    with pytest.raises(ValueError, match="activation"):
        make_policy(spaces.Discrete(2), activation="sigmoid")
    with pytest.raises(ValueError, match="hidden_sizes"):
        make_policy(spaces.Discrete(2), hidden_sizes=(0, 4))


def test_make_policy_from_spaces():
    discrete = make_policy(spaces.Discrete(3), hidden_sizes=(4,))
    assert discrete.discrete and discrete.action_dim == 3
    box = make_policy(spaces.Box(-1.0, 1.0, (2,), jnp.float32), activation="tanh", init_log_std=-1.0)
    assert not box.discrete and box.action_dim == 2 and box.hidden_sizes == (100, 100)
    with pytest.raises(TypeError, match="only 1-D Box"):
        make_policy(spaces.Box(-1.0, 1.0, (2, 2), jnp.float32))
    with pytest.raises(TypeError, match="Discrete or Box"):
        make_policy(spaces.Dict({"a": spaces.Discrete(2)}))


# -- rollout integration ----------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_rollout():
    env, env_params = gymnax.make("CartPole-v1")
    policy = make_policy(env.action_space(env_params), hidden_sizes=(16,))
    params = policy.init(jax.random.PRNGKey(0), jnp.zeros(env.observation_space(env_params).shape))
    sample = policy_sample_fn(policy)
    run = jax.jit(lambda p, k: rollout(env, sample, p, env_params, k, num_episodes=3, horizon=20))
    return policy, params, run


def test_policy_sample_fn_with_rollout_discrete(cartpole_rollout):
    policy, params, run = cartpole_rollout
    traj = run(params, jax.random.PRNGKey(1))
    chex.assert_shape(traj.action, (3, 20))
    assert traj.action.dtype == jnp.int32
    recomputed = policy.apply(params, traj.obs).log_prob(traj.action)
    np.testing.assert_allclose(traj.log_prob, recomputed, rtol=1e-5, atol=1e-6)


def test_rollout_log_prob_gradient_is_score_function(cartpole_rollout):
    """The gradient of the sampled log-prob equals that of log pi(a|s) at fixed a."""
    policy, params, run = cartpole_rollout
    traj = run(params, jax.random.PRNGKey(2))
    g_rollout = jax.grad(lambda p: jnp.sum(run(p, jax.random.PRNGKey(2)).log_prob * traj.valid))(params)
    g_fixed = jax.grad(lambda p: jnp.sum(policy.apply(p, traj.obs).log_prob(traj.action) * traj.valid))(params)
    chex.assert_trees_all_close(g_rollout, g_fixed, rtol=1e-4, atol=1e-5)


def test_policy_sample_fn_gaussian_score_not_cancelled():
    """A reparameterised sample would give d log pi / d mean == 0 exactly."""
    policy = MLPPolicy(action_dim=2, discrete=False, hidden_sizes=(4,))
    obs = jnp.ones(3)
    params = policy.init(jax.random.PRNGKey(0), obs)
    sample = policy_sample_fn(policy)
    action, _ = sample(params, obs, jax.random.PRNGKey(1))
    assert action.shape == (2,) and action.dtype == jnp.float32
    grad = jax.grad(lambda p: sample(p, obs, jax.random.PRNGKey(1))[1])(params)
    expected = jax.grad(lambda p: policy.apply(p, obs).log_prob(action))(params)
    chex.assert_trees_all_close(grad, expected, rtol=1e-5)
    assert np.abs(np.asarray(grad["params"]["output"]["bias"])).max() > 1e-3


def test_policy_sample_fn_rejects_non_policy():
    with pytest.raises(TypeError, match="MLPPolicy"):
        policy_sample_fn(ValueNetwork())
