"""Meta-Q-Learning (discrete): DQN targets, context windows, propensity weights, adaptation,
learning, the per-task DQN baseline, errors, resume."""

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
from metarl_jax.algorithms import metaq
from metarl_jax.rl import replay
from metarl_jax.rl.dqn import double_q_target, epsilon_greedy_probs, linear_schedule
from metarl_jax.rl.propensity import effective_sample_size, propensity_weights

CI = os.environ.get("CI") == "true"


def tiny(**overrides):
    fields = dict(num_train_tasks=6, context_length=4, context_size=8, hidden_sizes=(16,),
                  num_tasks_sample=2, num_train_steps=3, meta_batch_size=4, batch_size=8,
                  replay_capacity=300, adapt_steps=2, adapt_old_size=16, adapt_batch_size=8,
                  propensity_steps=10)
    fields.update(overrides)
    return metaq.Config(**fields)


def cartpole(**options):
    return metarl_jax.make("cartpole", max_steps_in_episode=30, **options)


# -- DQN pieces --------------------------------------------------------------------------

def test_double_q_target_closed_form_and_terminal_states():
    reward = jnp.array([1.0, 2.0, 0.5])
    terminated = jnp.array([0.0, 1.0, 0.0])
    online = jnp.array([[1.0, 5.0], [0.0, 9.0], [3.0, 2.0]])
    target = jnp.array([[10.0, 20.0], [7.0, 8.0], [30.0, 40.0]])
    # double: the online net picks argmax (1, 1, 0), the target net values it
    np.testing.assert_allclose(double_q_target(reward, terminated, online, target, 0.9),
                               [1.0 + 0.9 * 20.0, 2.0, 0.5 + 0.9 * 30.0])
    # plain DQN: max of the target net
    np.testing.assert_allclose(double_q_target(reward, terminated, online, target, 0.9,
                                               double=False),
                               [1.0 + 0.9 * 20.0, 2.0, 0.5 + 0.9 * 40.0])


def test_epsilon_greedy_and_schedule():
    probs = epsilon_greedy_probs(jnp.array([[0.0, 3.0, 1.0], [2.0, 2.0, 0.0]]), 0.3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[0], [0.1, 0.8, 0.1], rtol=1e-6)
    np.testing.assert_allclose(probs[1], [0.8, 0.1, 0.1], rtol=1e-6)   # ties: the first
    assert float(linear_schedule(1.0, 0.1, 10, 0)) == 1.0
    np.testing.assert_allclose(float(linear_schedule(1.0, 0.1, 10, 5)), 0.55, rtol=1e-6)
    assert float(linear_schedule(1.0, 0.1, 10, 50)) == pytest.approx(0.1)


def test_dqn_learns_a_tiny_mdps_optimal_q_values_with_truncation_bootstrapped():
    """Uniform behaviour on a 3-state MDP with 10-step episodes: Q-learning must find the
    infinite-horizon Q* (value iteration), which it can only do if the time-limit
    truncations bootstrap from the final observation instead of ending the return."""
    family = metarl_jax.make("tabular-mdp", states=3, actions=2, episode_length=10)
    task = family.sample_params(jax.random.PRNGKey(3)).replace(reward_noise_std=0.0)
    gamma = 0.7
    P, R = np.asarray(task.transitions, np.float64), np.asarray(task.mean_rewards, np.float64)
    q_star = np.zeros_like(R)
    for _ in range(500):
        q_star = R + gamma * P @ q_star.max(-1)
    learner = metaq.make(metaq.Config(
        num_train_tasks=1, context_length=0, hidden_sizes=(64,), num_tasks_sample=1,
        meta_batch_size=1, batch_size=128, num_initial_trials=20, replay_capacity=5000,
        num_train_steps=100, learning_rate=3e-3, tau=0.05, gamma=gamma, huber_delta=10.0,
        epsilon_start=1.0, epsilon_end=1.0, adapt_steps=0), family)
    state = learner.init(jax.random.PRNGKey(0), jax.tree.map(lambda x: jnp.asarray(x)[None], task))
    update = jax.jit(learner.update)
    for i in range(40):
        state, _ = update(state, jax.random.PRNGKey(i))
    q = learner.network.apply(state.params, jnp.eye(3), jnp.zeros((3, 0, 1)),
                              jnp.zeros((3, 0), bool))
    np.testing.assert_allclose(np.asarray(q), q_star, atol=0.1 * np.abs(q_star).max())
    # the finite-horizon values a terminal-at-the-time-limit target would learn differ
    q_short = np.zeros_like(R)
    for _ in range(3):
        q_short = R + gamma * P @ q_short.max(-1)
    assert np.abs(q_short - q_star).max() > 0.2 * np.abs(q_star).max()


# -- context windows ----------------------------------------------------------------------

def test_buffer_windows_are_the_contexts_the_agent_acted_on():
    family = metarl_jax.make("cartpole", max_steps_in_episode=6)
    learner = metaq.make(tiny(trial_episodes=2, batch_size=8), family)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = jax.tree.map(lambda x: x[:1], state.train_tasks)
    played = jax.tree.map(lambda x: x[0],
                          learner.play(state.params, tasks, jax.random.PRNGKey(1), 2, 0.5))
    valid = np.asarray(played.valid)
    items = {**played.items, "window": played.window, "mask": played.mask}
    keep = played.items                  # exactly what the learner stores
    buffer = replay.init(jax.tree.map(lambda x: x[0], keep), 1, 50)
    # an unrelated trial first: its transitions must never leak into the windows
    other = learner.play(state.params, tasks, jax.random.PRNGKey(2), 2, 1.0)
    buffer = replay.add(buffer, jnp.array([0]), other.items, other.valid)
    buffer = replay.add(buffer, jnp.array([0]), jax.tree.map(lambda x: x[None], keep),
                        valid[None])
    runs, present = replay.sample_sequences(buffer, jax.random.PRNGKey(3), jnp.array([0]), 400,
                                            5)
    batch = jax.tree.map(lambda x: np.asarray(x[0]), learner.batch_from_runs(runs, present))
    acted = {int(t): i for i, t in enumerate(np.asarray(items["t"])) if valid[i]}
    checked = 0
    for j in range(400):
        match = np.flatnonzero((np.asarray(items["obs"]) == batch["obs"][j]).all(-1) & valid)
        if len(match) != 1:
            continue                     # from the other trial (or an ambiguous obs)
        i = match[0]
        np.testing.assert_array_equal(batch["mask"][j], np.asarray(items["mask"][i]))
        np.testing.assert_allclose(batch["window"][j][batch["mask"][j]],
                                   np.asarray(items["window"][i])[np.asarray(items["mask"][i])])
        checked += 1
    assert checked > 100 and len(acted) == valid.sum()
    # a trial's first step acted on an empty context; the s' window holds the transition
    first = np.asarray(items["t"]) == 0
    assert first.sum() == 1 and not np.asarray(items["mask"])[first].any()
    assert batch["next_mask"][:, -1].all()


# -- MQL's propensity weights and adaptation --------------------------------------------

def test_propensity_weights_recover_the_density_ratio():
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    new = jax.random.normal(k1, (400, 2))
    # the same distribution: weights near 1, ESS near 1
    beta, ess = propensity_weights(new, jax.random.normal(k2, (400, 2)))
    assert abs(float(beta.mean()) - 1.0) < 0.15 and float(ess) > 0.9
    # old data: half from the new task's distribution, half far away -> ratio 2 and 0
    near = jax.random.normal(k3, (300, 2))
    far = jax.random.normal(jax.random.fold_in(k3, 1), (300, 2)) + 12.0
    beta, ess = propensity_weights(new, jnp.concatenate([near, far]), steps=500)
    beta = np.asarray(beta)
    assert abs(beta[:300].mean() - 2.0) < 0.3 and beta[300:].mean() < 0.05
    assert abs(float(ess) - 0.5) < 0.08
    # separable samples: the old data is worth almost nothing
    beta, _ = propensity_weights(new, far, steps=500)
    assert float(np.asarray(beta).mean()) < 0.05
    # masked rows of the new sample are ignored
    junk = jnp.concatenate([new, jnp.full((100, 2), 50.0)])
    mask = jnp.arange(500) < 400
    beta_masked, _ = propensity_weights(junk, jax.random.normal(k2, (400, 2)), mask)
    assert abs(float(beta_masked.mean()) - 1.0) < 0.15
    np.testing.assert_allclose(float(effective_sample_size(jnp.array([1.0, 0, 0, 0]))), 0.25)


def test_the_proximal_term_pulls_the_adapted_parameters_toward_the_meta_parameters():
    family = cartpole(random_push_direction=True)
    learner = metaq.make(tiny(adapt_steps=30, adapt_learning_rate=1e-2), family)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = family.sample(jax.random.PRNGKey(1), 1, "test")
    played = jax.tree.map(lambda x: x[0],
                          learner.play(state.params, tasks, jax.random.PRNGKey(2), 1, 0.0))

    def distance(proximal):
        adapt = metaq.make(dataclasses.replace(learner.config, proximal=proximal), family).adapt
        params, info = jax.jit(adapt)(state, played, jax.random.PRNGKey(3))
        return sum(float(jnp.sum(jnp.square(a - b))) for a, b in
                   zip(jax.tree.leaves(params), jax.tree.leaves(state.params))), info

    free, _ = distance(0.0)
    held, info = distance(100.0)
    auto, auto_info = distance(None)
    assert free > 0.0 and held < 0.2 * free, (held, free)
    assert float(info["proximal"]) == 100.0
    np.testing.assert_allclose(float(auto_info["proximal"]), 1.0 - float(auto_info["ess"]),
                               rtol=1e-6)
    assert 0.0 < float(auto_info["ess"]) <= 1.0


# -- the learner ----------------------------------------------------------------------------

def test_runs_without_retracing_on_discrete_families():
    # a physics family, a bandit (trials of several episodes) and a gymnax env
    # (tabular MDPs and MountainCar run in the tests above and in benchmarks/metaq_classic.py)
    for name, options, overrides in [
            ("cartpole", {"max_steps_in_episode": 20, "random_push_direction": True}, {}),
            ("bandit-bernoulli", {"arms": 2}, {"trial_episodes": 8, "gamma": 0.0}),
            ("acrobot", {"max_steps_in_episode": 20}, {})]:
        family = metarl_jax.make(name, **options)
        learner = metaq.make(tiny(**overrides), family)
        chex.clear_trace_counter()
        update = jax.jit(chex.assert_max_traces(learner.update, n=1))
        state = learner.init(jax.random.PRNGKey(0))
        for i in range(2):
            state, metrics = update(state, jax.random.PRNGKey(i))
        assert all(np.isfinite(float(v)) for v in metrics.values()), name
        if name != "cartpole":
            continue            # evaluate's compile is the slow part; once is enough
        curve = learner.evaluate(state, family.sample(jax.random.PRNGKey(9), 3, "test"),
                                 jax.random.PRNGKey(1))
        assert np.asarray(curve["metaq"]).shape == (3, 2), name
        assert curve.baselines == ("mql", "no_context"), name
        # the episodes before the adaptation step are shared (same keys)
        np.testing.assert_array_equal(np.asarray(curve["metaq"])[:, 0],
                                      np.asarray(curve["mql"])[:, 0])


def test_a_learner_without_context_adapts_on_transition_features():
    # context_length=0: the propensity classifier reads the transitions themselves
    family = cartpole()
    learner = metaq.make(tiny(context_length=0), family)
    state = learner.init(jax.random.PRNGKey(0))
    curve = learner.evaluate(state, family.sample(jax.random.PRNGKey(1), 2, "test"),
                             jax.random.PRNGKey(2))
    assert curve.baselines == ("mql",) and np.isfinite(np.asarray(curve["mql"])).all()


def test_collection_and_env_step_accounting():
    learner = metaq.make(tiny(), cartpole())
    state = learner.init(jax.random.PRNGKey(0))
    sizes = np.asarray(state.replay.size)
    assert int(state.env_steps) == sizes.sum() and (sizes >= 2).all()
    new, metrics = jax.jit(learner.update)(state, jax.random.PRNGKey(1))
    grown = np.asarray(new.replay.size) - sizes
    assert (grown > 0).sum() == 2                           # num_tasks_sample, distinct
    assert float(metrics["env_steps"]) == grown.sum() == int(new.env_steps - state.env_steps)
    assert float(metrics["epsilon"]) == 1.0


def test_per_task_dqn_trains_independent_learners():
    family = cartpole()
    tasks = family.sample(jax.random.PRNGKey(0), 2, "test")
    returns, steps = metaq.per_task_dqn(tiny(), family, tasks, jax.random.PRNGKey(1),
                                        num_iterations=4, eval_every=2)
    assert returns.shape == steps.shape == (2, 2)
    assert (np.diff(np.asarray(steps), axis=1) > 0).all()
    with pytest.raises(ValueError, match="multiple of eval_every"):
        metaq.per_task_dqn(tiny(), family, tasks, jax.random.PRNGKey(1), 3, 2)


@pytest.mark.parametrize("field,value,match", [
    ("context_length", -1, "context_length"),
    ("batch_size", 0, "batch_size"),
    ("num_train_steps", 0, "num_train_steps"),
    ("gamma", 1.5, "gamma"),
    ("proximal", -1.0, "proximal"),
    ("replay_capacity", 4, "replay_capacity=4 is smaller than batch_size"),
    ("num_tasks_sample", 7, "num_tasks_sample=7 exceeds num_train_tasks=6"),
    ("adapt_after_episodes", 2, "adapt_after_episodes=2"),
])
def test_bad_config_is_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny(**{field: value})


def test_bad_family_or_sizes_are_rejected():
    with pytest.raises(TypeError, match="Discrete actions.*pearl"):
        metaq.make(tiny(), metarl_jax.make("point-robot"))
    with pytest.raises(TypeError, match="metaq.Config"):
        metaq.make({"context_length": 4}, cartpole())
    bandit = metarl_jax.make("bandit-bernoulli", arms=2)
    with pytest.raises(ValueError, match="context_length=4 is longer than a trial"):
        metaq.make(tiny(trial_episodes=3), bandit)
    with pytest.raises(ValueError, match="cannot hold one trial"):
        metaq.make(tiny(replay_capacity=20, batch_size=8), metarl_jax.make("cartpole"))
    with pytest.raises(ValueError, match="larger than the num_initial_trials"):
        metaq.make(tiny(trial_episodes=4, batch_size=16, num_initial_trials=2), bandit)
    learner = metaq.make(tiny(), cartpole())
    with pytest.raises(ValueError, match="train_tasks has 2 tasks"):
        learner.init(jax.random.PRNGKey(0), cartpole().sample(jax.random.PRNGKey(0), 2))


def test_runner_resumes_exactly_with_the_buffers(assert_resumes_exactly):
    assert_resumes_exactly("metaq", dataclasses.asdict(tiny()), "cartpole",
                           family_options={"max_steps_in_episode": 30}, eval_num_tasks=3)


def test_a_nan_in_the_q_network_stops_the_run_and_keeps_the_last_good_checkpoint(
        assert_nan_stops_run):
    def poison(state, now, nan):
        return state.replace(params=jax.tree.map(lambda x: jnp.where(now, nan, x),
                                                 state.params))

    assert_nan_stops_run(metaq, tiny(), "cartpole", poison,
                         family_options={"max_steps_in_episode": 30})


@pytest.mark.slow
def test_metaq_learns_cartpole_with_a_hidden_push_direction():
    """Held-out CartPole tasks whose push direction is reversed half the time: the
    context-conditioned agent must beat random play and its own context-free reading
    clearly (no fixed policy balances both directions)."""
    family = metarl_jax.make("cartpole", max_steps_in_episode=200, random_push_direction=True)
    learner = metaq.make(metaq.Config(
        num_train_tasks=20, context_length=10, num_tasks_sample=4, num_train_steps=50,
        meta_batch_size=8, batch_size=32, replay_capacity=5000, epsilon_decay_iterations=100,
        adapt_steps=0), family)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    for i in range(110 if CI else 150):
        state, _ = update(state, jax.random.PRNGKey(i + 10))
    curve = learner.evaluate(state, family.sample(jax.random.PRNGKey(2), 40, "test"),
                             jax.random.PRNGKey(3))
    with_context = float(np.asarray(curve["metaq"]).mean())
    blind = float(np.asarray(curve["no_context"]).mean())
    assert with_context > 80.0 and with_context > blind + 40.0, (with_context, blind)
