"""PEARL (Rakelly et al. 2019): inference, SAC pieces, gradient routing, learning, errors."""

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
from metarl_jax.algorithms import pearl
from metarl_jax.nn.context import product_of_gaussians, standard_normal_kl
from metarl_jax.nn.distributions import DiagGaussian, TanhGaussian
from metarl_jax.rl.sac import polyak, soft_td_target, temperature_loss

CI = os.environ.get("CI") == "true"


def tiny(**overrides):
    fields = dict(num_train_tasks=6, encoder_hidden_sizes=(16,), hidden_sizes=(16, 16),
                  num_initial_steps=40, num_steps_prior=20, num_steps_posterior=20,
                  num_extra_rl_steps_posterior=20, num_tasks_sample=2, num_train_steps=3,
                  meta_batch_size=4, batch_size=16, context_batch_size=8,
                  replay_capacity=200, reward_scale=10.0)
    fields.update(overrides)
    return pearl.Config(**fields)


def point_robot():
    return metarl_jax.make("point-robot")


# -- inference ---------------------------------------------------------------------------

def test_product_of_gaussians_matches_the_normalised_density_product():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(5, 1)).astype(np.float32)
    var = rng.uniform(0.2, 2.0, size=(5, 1)).astype(np.float32)
    mean, post_var = product_of_gaussians(jnp.asarray(mu), jnp.asarray(var))
    # the product of the five densities on a fine grid, normalised
    x = np.linspace(-6, 6, 200_001)
    log_density = np.sum(-0.5 * (x[None] - mu) ** 2 / var, axis=0)
    density = np.exp(log_density - log_density.max())
    density /= density.sum()
    grid_mean = np.sum(x * density)
    grid_var = np.sum((x - grid_mean) ** 2 * density)
    np.testing.assert_allclose(mean[0], grid_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(post_var[0], grid_var, rtol=1e-4)


def test_product_of_gaussians_mask_and_empty_context():
    mu = jnp.array([[0.5, -1.0], [3.0, 2.0], [-2.0, 0.0]])
    var = jnp.array([[1.0, 0.5], [0.25, 2.0], [4.0, 1.0]])
    mean, post_var = product_of_gaussians(mu, var, jnp.array([True, False, True]))
    expected = product_of_gaussians(mu[jnp.array([0, 2])], var[jnp.array([0, 2])])
    np.testing.assert_allclose(mean, expected[0], rtol=1e-6)
    np.testing.assert_allclose(post_var, expected[1], rtol=1e-6)
    mean, post_var = product_of_gaussians(mu, var, jnp.zeros(3, bool))
    np.testing.assert_array_equal(mean, [0.0, 0.0])
    np.testing.assert_array_equal(post_var, [1.0, 1.0])


def test_standard_normal_kl_matches_the_closed_form_and_monte_carlo():
    mean, var = jnp.array([0.3, -1.2, 0.0]), jnp.array([0.5, 2.0, 1.0])
    kl = standard_normal_kl(mean, var)
    expected = DiagGaussian(mean, 0.5 * jnp.log(var)).kl(DiagGaussian(jnp.zeros(3), jnp.zeros(3)))
    np.testing.assert_allclose(kl, expected, rtol=1e-6)
    z = mean + jnp.sqrt(var) * jax.random.normal(jax.random.PRNGKey(0), (200_000, 3))
    q = DiagGaussian(mean, 0.5 * jnp.log(var)).log_prob(z)
    p = DiagGaussian(jnp.zeros(3), jnp.zeros(3)).log_prob(z)
    np.testing.assert_allclose(jnp.mean(q - p), kl, rtol=0.02)
    np.testing.assert_allclose(standard_normal_kl(jnp.zeros(4), jnp.ones(4)), 0.0, atol=1e-7)


# -- SAC pieces ----------------------------------------------------------------------------

def test_tanh_gaussian_log_prob_is_the_change_of_variables():
    dist = TanhGaussian(jnp.array([[0.3, -2.5]]), jnp.array([[-0.5, 0.4]]))
    action, log_prob = dist.sample_and_log_prob(jax.random.PRNGKey(3))
    u = np.arctanh(np.asarray(action, np.float64))
    mean, std = np.array([0.3, -2.5]), np.exp(np.array([-0.5, 0.4]))
    log_normal = np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi))
    expected = log_normal - np.sum(np.log(1 - np.tanh(u) ** 2))
    np.testing.assert_allclose(log_prob, expected, rtol=1e-4)
    # the density integrates to one over (-1, 1) (1-D, on a grid)
    one = TanhGaussian(jnp.array([0.4]), jnp.array([-0.2]))
    a = np.linspace(-0.999999, 0.999999, 400_001)
    u = np.arctanh(a)
    s = np.exp(-0.2)
    density = np.exp(-0.5 * ((u - 0.4) / s) ** 2) / (s * np.sqrt(2 * np.pi)) / (1 - a ** 2)
    np.testing.assert_allclose(np.trapezoid(density, a), 1.0, atol=2e-3)
    np.testing.assert_allclose(one.mode(), np.tanh(0.4), rtol=1e-6)


def test_soft_td_target_polyak_and_temperature():
    target = soft_td_target(jnp.array([1.0, 2.0]), jnp.array([False, True]),
                            jnp.array([[3.0, 5.0], [7.0, 1.0]]), jnp.array([0.5, 0.5]),
                            jnp.array(0.2), 0.9)
    np.testing.assert_allclose(target, [1.0 + 0.9 * (3.0 - 0.1), 2.0], rtol=1e-6)
    np.testing.assert_allclose(polyak(jnp.array(1.0), jnp.array(3.0), 0.25), 1.5)
    # entropy below target (log pi high): the gradient step raises log alpha; above: lowers it
    low_entropy = jax.grad(temperature_loss)(jnp.array(0.0), jnp.array([2.0, 3.0]), -1.0)
    high_entropy = jax.grad(temperature_loss)(jnp.array(0.0), jnp.array([-2.0, -3.0]), -1.0)
    assert float(low_entropy) < 0 < float(high_entropy)


def test_learned_temperature_moves_toward_its_target():
    family = point_robot()
    for target_entropy, direction in ((10.0, 1), (-10.0, -1)):
        learner = pearl.make(tiny(learn_alpha=True, target_entropy=target_entropy,
                                  num_train_steps=20, learning_rate=1e-2), family)
        state = learner.init(jax.random.PRNGKey(0))
        state, metrics = jax.jit(learner.update)(state, jax.random.PRNGKey(1))
        moved = float(state.params["log_alpha"]) - 0.0
        assert direction * moved > 0.05, (target_entropy, moved)
    fixed = pearl.make(tiny(), family)
    state = fixed.init(jax.random.PRNGKey(0))
    state, _ = jax.jit(fixed.update)(state, jax.random.PRNGKey(1))
    assert float(state.params["log_alpha"]) == 0.0


# -- gradient routing ----------------------------------------------------------------------

def _loss_inputs(learner, state, key=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    from metarl_jax.rl import replay
    ids = jnp.arange(4)
    context = learner.context_of(replay.sample(state.encoder_replay, k1, ids, 8))
    batch = replay.sample(state.replay, k2, ids, 16)
    return state.params, state.target_critic, context, batch, jax.random.PRNGKey(5)


@pytest.mark.parametrize("family_name", ["point-robot", "cartpole"])
def test_the_encoder_learns_only_from_the_critic_and_the_kl(family_name):
    # cartpole: the discrete-action variant (categorical actor, Q of every action)
    family = metarl_jax.make(family_name, **({"max_steps_in_episode": 20}
                                             if family_name == "cartpole" else {}))
    learner = pearl.make(tiny(kl_weight=0.1, horizon=20), family)
    state = learner.init(jax.random.PRNGKey(0))
    inputs = _loss_inputs(learner, state)

    def term(name):
        return jax.grad(lambda p: learner.loss(p, *inputs[1:])[1][name])(inputs[0])

    actor_grads = term("actor_loss")
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(actor_grads["encoder"]))
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(actor_grads["critic"]))
    critic_grads = term("critic_loss")
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(critic_grads["actor"]))
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(critic_grads["encoder"])) > 0
    total = jax.grad(lambda p: learner.loss(p, *inputs[1:])[0])(inputs[0])
    kl = term("kl")
    for t, c, k in zip(jax.tree.leaves(total["encoder"]), jax.tree.leaves(critic_grads["encoder"]),
                       jax.tree.leaves(kl["encoder"])):
        np.testing.assert_allclose(t, c + 0.1 * k, rtol=1e-4, atol=1e-6)


# -- the learner ---------------------------------------------------------------------------

def test_collection_fills_the_buffers_as_configured():
    learner = pearl.make(tiny(), point_robot())
    state = learner.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(state.replay.size, 40)
    np.testing.assert_array_equal(state.encoder_replay.size, 40)
    assert int(state.env_steps) == 6 * 40
    new, metrics = jax.jit(learner.update)(state, jax.random.PRNGKey(1))
    grown = np.flatnonzero(np.asarray(new.replay.size) > 40)
    assert len(grown) == 2                                   # num_tasks_sample, distinct
    np.testing.assert_array_equal(np.asarray(new.replay.size)[grown], 40 + 60)
    # the encoder buffers of the sampled tasks were cleared and refilled (prior + posterior)
    np.testing.assert_array_equal(np.asarray(new.encoder_replay.size)[grown], 40)
    assert float(metrics["env_steps"]) == 2 * 60
    assert int(new.env_steps) == 240 + 120


def test_runs_without_retracing_and_on_other_continuous_families():
    for name, options in [("point-robot-sparse", {}),
                          ("navigation2d", {"max_steps_in_episode": 10}),
                          ("pendulum", {}),
                          ("cartpole", {"random_push_direction": True})]:
        family = metarl_jax.make(name, **options)
        overrides = {"critic_reward": "dense"} if name == "point-robot-sparse" else {}
        learner = pearl.make(tiny(horizon=20, **overrides), family)
        chex.clear_trace_counter()
        update = jax.jit(chex.assert_max_traces(learner.update, n=1))
        state = learner.init(jax.random.PRNGKey(0))
        for i in range(2):
            state, metrics = update(state, jax.random.PRNGKey(i))
        assert all(np.isfinite(float(v)) for v in metrics.values()), name
        curve = learner.evaluate(state, family.sample(jax.random.PRNGKey(9), 3, "test"),
                                 jax.random.PRNGKey(1))
        assert np.asarray(curve["pearl"]).shape == (3, 3)
        assert curve.baselines == ("posterior_mean", "prior_z")


@pytest.mark.parametrize("field,value,match", [
    ("latent_dim", 0, "latent_dim"),
    ("batch_size", -1, "batch_size"),
    ("num_train_steps", 0, "num_train_steps"),
    ("num_steps_prior", -1, "num_steps_prior"),
    ("critic_reward", "sparse", "critic_reward"),
    ("replay_capacity", 8, "replay_capacity=8 is smaller than batch_size"),
    ("num_initial_steps", 10, "larger than the num_initial_steps=10"),
    ("num_tasks_sample", 7, "num_tasks_sample=7 exceeds num_train_tasks=6"),
    ("num_exploration_episodes", 3, "num_exploration_episodes"),
])
def test_bad_config_is_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny(**{field: value})


def test_discrete_soft_target_is_the_exact_expectation_over_next_actions():
    from metarl_jax.rl.sac import discrete_soft_td_target
    next_q = jnp.array([[[1.0, 2.0], [4.0, 3.0]]])          # [1, A=2, J=2]
    log_probs = jnp.log(jnp.array([[0.25, 0.75]]))
    target = discrete_soft_td_target(jnp.array([0.5]), jnp.array([0.0]), next_q, log_probs,
                                     0.2, 0.9)
    soft_value = 0.25 * (1.0 - 0.2 * np.log(0.25)) + 0.75 * (3.0 - 0.2 * np.log(0.75))
    np.testing.assert_allclose(target, [0.5 + 0.9 * soft_value], rtol=1e-6)
    terminal = discrete_soft_td_target(jnp.array([0.5]), jnp.array([1.0]), next_q, log_probs,
                                       0.2, 0.9)
    np.testing.assert_allclose(terminal, [0.5])


def test_bad_family_is_rejected():
    from gymnax.environments import spaces
    family = point_robot()

    class BoxEnv(type(family.env)):
        def action_space(self, params=None):
            return spaces.Box(-1.0, 1.0, (2, 2))

    with pytest.raises(TypeError, match="Discrete or 1-D Box"):
        pearl.make(tiny(), dataclasses.replace(family, env=BoxEnv()))
    with pytest.raises(TypeError, match="dense_reward"):
        pearl.make(tiny(critic_reward="dense"), point_robot())
    with pytest.raises(TypeError, match="pearl.Config"):
        pearl.make({"latent_dim": 5}, point_robot())


def test_runner_resumes_exactly_with_the_buffers(assert_resumes_exactly):
    assert_resumes_exactly("pearl", dataclasses.asdict(tiny()), "point-robot",
                           family_options={}, eval_num_tasks=4)


def test_a_nan_in_the_critic_stops_the_run_and_keeps_the_last_good_checkpoint(
        assert_nan_stops_run):
    def poison(state, now, nan):
        critic = jax.tree.map(lambda x: jnp.where(now, nan, x), state.params["critic"])
        return state.replace(params={**state.params, "critic": critic})

    assert_nan_stops_run(pearl, tiny(), "point-robot", poison)


@pytest.mark.slow
def test_pearl_infers_which_train_task_it_is_on_and_beats_random():
    """Four point-robot goals: acting on the posterior of one episode of context must
    beat acting on prior samples and random actions clearly on those tasks (held-out
    generalisation needs more than a CI budget; see docs/results/pearl_navigation.md)."""
    family = point_robot()
    learner = pearl.make(pearl.Config(
        num_train_tasks=4, num_tasks_sample=4, meta_batch_size=4, encoder_hidden_sizes=(64, 64),
        hidden_sizes=(64, 64), num_initial_steps=200, num_steps_prior=100,
        num_extra_rl_steps_posterior=100, num_train_steps=300, batch_size=128,
        replay_capacity=4000, gamma=0.9, reward_scale=10.0, learn_alpha=True), family)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    for i in range(12 if CI else 25):
        state, _ = update(state, jax.random.PRNGKey(i))
    tasks = jax.tree.map(lambda x: jnp.repeat(x, 25, axis=0), state.train_tasks)
    curve = learner.evaluate(state, tasks, jax.random.PRNGKey(3))
    posterior = float(np.asarray(curve["pearl"])[:, -1].mean())
    prior = float(np.asarray(curve["prior_z"])[:, -1].mean())
    random = _random_return(family, tasks)
    assert posterior > random + 5.0 and posterior > prior + 3.0, (posterior, prior, random)


def _random_return(family, tasks):
    from metarl_jax.core.rollout import rollout

    def one(p, k):
        traj = rollout(family.env, lambda _, obs, key: jax.random.uniform(key, (2,), minval=-1,
                                                                           maxval=1),
                       None, p, k, 1, 20)
        return traj.episode_returns[0]

    keys = jax.random.split(jax.random.PRNGKey(4), tasks.goal.shape[0])
    return float(jnp.mean(jax.vmap(one)(tasks, keys)))


@pytest.mark.slow
def test_discrete_pearl_learns_cartpole_with_a_hidden_push_direction():
    """The discrete-action variant on held-out CartPole tasks (push direction reversed
    half the time) must clearly beat random play (about 22) after a short run."""
    family = metarl_jax.make("cartpole", max_steps_in_episode=200, random_push_direction=True)
    learner = pearl.make(pearl.Config(
        num_train_tasks=20, encoder_hidden_sizes=(64, 64), hidden_sizes=(64, 64),
        num_initial_steps=400, num_steps_prior=400, num_extra_rl_steps_posterior=400,
        num_tasks_sample=4, num_train_steps=100, meta_batch_size=8, batch_size=64,
        replay_capacity=10_000, reward_scale=1.0, learn_alpha=True), family)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    for i in range(61):
        state, _ = update(state, jax.random.PRNGKey(i))
    curve = learner.evaluate(state, family.sample(jax.random.PRNGKey(1), 40, "test"),
                             jax.random.PRNGKey(2))
    assert float(np.asarray(curve["pearl"])[:, -1].mean()) > 60.0


def test_acting_on_the_posterior_mean_removes_the_sampling_noise():
    """navigation2d starts every episode at the origin with deterministic dynamics and the
    actor's mode, so with z the posterior mean (episode 1: the prior's) the returns cannot
    depend on the key; with z sampled they do."""
    family = metarl_jax.make("navigation2d", max_steps_in_episode=10)
    learner = pearl.make(tiny(horizon=10, num_exploration_episodes=0), family)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = family.sample(jax.random.PRNGKey(9), 3, "test")
    by_mean = [np.asarray(learner.adapt(state, tasks, jax.random.PRNGKey(k), 3, z_mode="mean"))
               for k in (1, 2)]
    np.testing.assert_array_equal(by_mean[0], by_mean[1])
    sampled = [np.asarray(learner.adapt(state, tasks, jax.random.PRNGKey(k), 3)) for k in (1, 2)]
    assert not np.array_equal(sampled[0], sampled[1])
    with pytest.raises(ValueError, match="z_mode"):
        learner.adapt(state, tasks, jax.random.PRNGKey(1), 3, z_mode="mode")
