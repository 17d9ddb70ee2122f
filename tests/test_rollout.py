"""``metarl_jax.core.rollout``: shapes, masks, returns, log-probs, vmapping, gradients."""

from functools import partial

import chex
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl_jax import make, rollout
from metarl_jax.envs import Navigation2D

E, T = 3, 7  # episodes, time steps


def gaussian_policy(params, obs, key):
    """Linear-Gaussian policy on positions: ``(action [2], log_prob [])``."""
    mean = obs @ params["w"] + params["b"]
    std = jnp.exp(params["log_std"])
    action = mean + std * jax.random.normal(key, mean.shape)
    return action, gaussian_log_prob(params, obs, action)


def gaussian_log_prob(params, obs, action):
    mean = obs @ params["w"] + params["b"]
    std = jnp.exp(params["log_std"])
    z = (action - mean) / std
    return jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def constant_policy(velocity, obs, key):
    """Deterministic: always the same velocity; returns no log-prob."""
    return velocity


def softmax_policy(logits, obs, key):
    """Tabular softmax policy for one-hot observations: ``logits [S, A]``."""
    row = obs @ logits
    action = jax.random.categorical(key, row).astype(jnp.int32)
    return action, jax.nn.log_softmax(row)[action]


@pytest.fixture(scope="module")
def nav():
    env = Navigation2D()
    policy_params = {
        "w": 0.1 * jnp.eye(2),
        "b": jnp.array([0.05, -0.02], jnp.float32),
        "log_std": jnp.full((2,), -2.0, jnp.float32),
    }
    tasks = make("navigation2d").sample(jax.random.PRNGKey(0), 3)
    return env, policy_params, tasks


@pytest.fixture(scope="module")
def nav_rollout(nav):
    """jit'd rollout of ``E`` episodes of ``T`` steps, shared by the tests below."""
    env = nav[0]

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(policy_params, env_params, key):
        return rollout(env, gaussian_policy, policy_params, env_params, key, E, T)

    return run


def test_trajectory_shapes_and_dtypes(nav, nav_rollout):
    env, policy_params, tasks = nav
    traj = nav_rollout(policy_params, jax.tree.map(lambda x: x[0], tasks), jax.random.PRNGKey(1))
    chex.assert_shape([traj.obs, traj.action, traj.next_obs], (E, T, 2))
    chex.assert_shape(
        [traj.reward, traj.terminated, traj.truncated, traj.valid, traj.log_prob], (E, T)
    )
    chex.assert_type([traj.obs, traj.action, traj.reward, traj.log_prob], jnp.float32)
    chex.assert_type([traj.terminated, traj.truncated, traj.valid], jnp.bool_)
    np.testing.assert_array_equal(traj.obs[:, 0], 0.0)  # every episode starts at the origin
    # next_obs of step t is obs of step t + 1 inside an episode
    np.testing.assert_array_equal(traj.next_obs[:, :-1], traj.obs[:, 1:])
    assert len({tuple(np.asarray(a)) for a in traj.action[:, 0]}) == E  # independent episodes


def test_valid_mask_stops_after_termination_and_next_obs_is_final():
    env = Navigation2D()
    params = env.default_params.replace(goal=jnp.array([0.15, 0.0], jnp.float32))
    velocity = jnp.array([0.05, 0.0], jnp.float32)  # reaches the goal on step 3
    traj = rollout(env, constant_policy, velocity, params, jax.random.PRNGKey(0), 2, 6)
    expected_valid = np.array([True, True, True, False, False, False])
    np.testing.assert_array_equal(traj.valid, np.tile(expected_valid, (2, 1)))
    np.testing.assert_array_equal(traj.terminated[:, :3], [[False, False, True]] * 2)
    assert not bool(jnp.any(traj.truncated[:, :3]))
    np.testing.assert_allclose(traj.next_obs[:, 2], [[0.15, 0.0]] * 2, atol=1e-6)
    np.testing.assert_allclose(traj.episode_returns, [-(0.1 + 0.05 + 0.0)] * 2, atol=1e-6)
    np.testing.assert_array_equal(traj.episode_lengths, [3, 3])
    np.testing.assert_array_equal(traj.log_prob, 0.0)  # policy gave no log-prob


def test_mask_invariants_with_random_policy(nav, nav_rollout):
    env, policy_params, tasks = nav
    traj = nav_rollout(policy_params, jax.tree.map(lambda x: x[1], tasks), jax.random.PRNGKey(2))
    done = traj.terminated | traj.truncated
    assert bool(jnp.all(traj.valid[:, 0]))
    np.testing.assert_array_equal(traj.valid[:, 1:], traj.valid[:, :-1] & ~done[:, :-1])


def test_last_step_is_truncated_and_env_truncation_ends_episodes():
    env = Navigation2D()
    far = env.default_params.replace(goal=jnp.array([5.0, 5.0], jnp.float32))
    still = jnp.zeros(2, jnp.float32)
    key = jax.random.PRNGKey(0)
    short = rollout(env, constant_policy, still, far, key, 2, 4)  # horizon < max_steps (100)
    np.testing.assert_array_equal(short.truncated, [[False, False, False, True]] * 2)
    assert not bool(jnp.any(short.terminated)) and bool(jnp.all(short.valid))
    long = rollout(env, constant_policy, still, far.replace(max_steps_in_episode=3), key, 2, 5)
    np.testing.assert_array_equal(long.truncated[:, :3], [[False, False, True]] * 2)
    np.testing.assert_array_equal(long.valid, [[True, True, True, False, False]] * 2)
    np.testing.assert_allclose(long.episode_returns, [-3 * np.sqrt(50.0)] * 2, rtol=1e-6)


def test_returns_equal_a_manual_loop_with_the_same_keys():
    """Step-for-step Python replica of the rollout's key schedule on a stochastic task."""
    family = make("tabular-mdp", states=3, actions=2, episode_length=4)
    env = family.env
    params = family.sample_params(jax.random.PRNGKey(3))
    logits = jax.random.normal(jax.random.PRNGKey(4), (3, 2))
    num_episodes, horizon = 2, 6  # the env truncates after 4 of the 6 steps
    key = jax.random.PRNGKey(5)
    traj = rollout(env, softmax_policy, logits, params, key, num_episodes, horizon)

    reset_key, scan_key = jax.random.split(key)
    reset_keys = jax.random.split(reset_key, num_episodes)
    step_keys = [jax.random.split(k, num_episodes) for k in jax.random.split(scan_key, horizon)]
    for e in range(num_episodes):
        obs, state = env.reset(reset_keys[e], params)
        total, rewards = 0.0, []
        for t in range(horizon):
            policy_key, env_key = jax.random.split(step_keys[t][e])
            action, _ = softmax_policy(logits, obs, policy_key)
            obs, state, reward, terminated, truncated, _ = env.step_no_reset(
                env_key, state, action, params
            )
            rewards.append(float(reward))
            total += float(reward)
            if terminated or truncated:
                break
        assert t == env.episode_length - 1
        np.testing.assert_allclose(traj.reward[e, : t + 1], rewards, rtol=1e-6)
        assert float(traj.episode_returns[e]) == pytest.approx(total, rel=1e-5)


def test_returns_equal_a_gym_style_loop_for_a_deterministic_policy():
    """Key-independent check: a plain ``while not done`` loop with auto-reset ``step``."""
    env = Navigation2D()
    params = env.default_params.replace(goal=jnp.array([0.2, -0.1], jnp.float32))
    params = params.replace(max_steps_in_episode=10)
    velocity = jnp.array([0.03, -0.02], jnp.float32)
    traj = rollout(env, constant_policy, velocity, params, jax.random.PRNGKey(0), 1, 12)
    obs, state = env.reset(jax.random.PRNGKey(1), params)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, state, reward, terminated, truncated, _ = env.step(
            jax.random.PRNGKey(steps), state, velocity, params
        )
        total, steps, done = total + float(reward), steps + 1, bool(terminated | truncated)
    assert int(traj.episode_lengths[0]) == steps == 10
    assert float(traj.episode_returns[0]) == pytest.approx(total, rel=1e-5)


def test_log_prob_is_passed_through(nav, nav_rollout):
    env, policy_params, tasks = nav
    traj = nav_rollout(policy_params, jax.tree.map(lambda x: x[0], tasks), jax.random.PRNGKey(6))
    recomputed = gaussian_log_prob(policy_params, traj.obs, traj.action)
    np.testing.assert_allclose(traj.log_prob, recomputed, rtol=1e-5, atol=1e-5)
    assert float(jnp.std(traj.log_prob)) > 0


def test_vmap_over_tasks_equals_per_task_rollouts_without_retracing(nav, nav_rollout):
    env, policy_params, tasks = nav
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    batched = jax.jit(jax.vmap(
        partial(rollout, env, gaussian_policy, num_episodes=E, horizon=T),
        in_axes=(None, 0, 0),
    ))(policy_params, tasks, keys)
    for i in range(3):
        single = nav_rollout(policy_params, jax.tree.map(lambda x: x[i], tasks), keys[i])
        chex.assert_trees_all_close(
            jax.tree.map(lambda x: x[i], batched), single, rtol=1e-5, atol=1e-6
        )
    # new params of the same shape (other goals, other policy weights) reuse the compile
    other_tasks = make("navigation2d").sample(jax.random.PRNGKey(8), 3)
    other_policy = jax.tree.map(lambda x: x + 0.01, policy_params)
    nav_rollout(other_policy, jax.tree.map(lambda x: x[2], other_tasks), keys[0])


def test_gradient_flows_through_log_prob_into_policy_params():
    """d/dlogits of sum_t log pi(a_t|s_t) over valid steps = sum_t (onehot(a_t) - pi(.|s_t))."""
    family = make("tabular-mdp", states=3, actions=2, episode_length=5)
    env = family.env
    params = family.sample_params(jax.random.PRNGKey(9))
    logits = jax.random.normal(jax.random.PRNGKey(10), (3, 2))
    key = jax.random.PRNGKey(11)

    def total_log_prob(logits):
        traj = rollout(env, softmax_policy, logits, params, key, 4, 6)
        return jnp.sum(traj.log_prob * traj.valid), traj

    grad, traj = jax.grad(total_log_prob, has_aux=True)(logits)
    states = np.asarray(jnp.argmax(traj.obs, -1))[np.asarray(traj.valid)]
    actions = np.asarray(traj.action)[np.asarray(traj.valid)]
    probs = np.asarray(jax.nn.softmax(logits))
    expected = np.zeros((3, 2), np.float32)
    for s, a in zip(states, actions):
        expected[s] += np.eye(2)[a] - probs[s]
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def test_rollout_of_a_plain_gymnax_env_uses_its_final_observation():
    """Without ``step_no_reset`` the auto-resetting step is used; ``next_obs`` is pre-reset."""
    env, params = gymnax.make("CartPole-v1")
    push_right = jnp.int32(1)
    traj = rollout(env, lambda p, obs, key: p, push_right, params, jax.random.PRNGKey(0), 2, 40)
    length = np.asarray(traj.episode_lengths)
    assert np.all(length < 40) and np.all(length > 3)  # the pole falls over
    for e in range(2):
        last = length[e] - 1
        assert bool(traj.terminated[e, last]) and not bool(traj.valid[e, last + 1])
        final = np.asarray(traj.next_obs[e, last])
        fell = abs(final[2]) > 12 * 2 * np.pi / 360 or abs(final[0]) > 2.4
        assert fell  # the terminal observation, not the reset one


def test_bad_sizes_raise():
    env = Navigation2D()
    params = env.default_params
    with pytest.raises(ValueError, match="num_episodes must be >= 1"):
        rollout(env, constant_policy, jnp.zeros(2), params, jax.random.PRNGKey(0), 0, 5)
    with pytest.raises(ValueError, match="horizon must be an integer"):
        rollout(env, constant_policy, jnp.zeros(2), params, jax.random.PRNGKey(0), 2, 5.0)


def test_rollout_of_a_gymnax_wrapper_around_our_env_goes_through_the_wrapper():
    """A wrapper (here gymnax's LogWrapper) must not be bypassed by ``step_no_reset``."""
    from gymnax.wrappers.purerl import LogWrapper

    env = Navigation2D()
    params = env.default_params.replace(goal=jnp.array([0.3, 0.0], jnp.float32))
    velocity = jnp.array([0.1, 0.0], jnp.float32)
    key = jax.random.PRNGKey(0)
    plain = rollout(env, constant_policy, velocity, params, key, 2, 5)
    logged = rollout(LogWrapper(env), constant_policy, velocity, params, key, 2, 5)
    np.testing.assert_array_equal(logged.valid, [[True, True, True, False, False]] * 2)
    np.testing.assert_array_equal(logged.valid, plain.valid)
    # inside episodes the two agree; after the end the wrapper auto-resets
    inside = jax.tree.map(lambda x: np.asarray(x)[np.asarray(plain.valid)], (logged, plain))
    chex.assert_trees_all_close(*inside, atol=1e-6)


# -- windowed episodes ------------------------------------------------------------------------

def _windowed(trial_episodes, num_episodes, key, start=None, window=4):
    from metarl_jax.core.rollout import run_windowed, with_horizon
    from metarl_jax.nn.spaces import action_spec

    family = make("cartpole")
    task = with_horizon(family.sample_params(jax.random.PRNGKey(0)), 6)
    spec = action_spec(family.env.action_space(task))

    def act(params, obs, win, mask, key):
        return jax.random.bernoulli(key, 0.5).astype(jnp.int32)

    return run_windowed(family.env, act, None, task, key, num_episodes=num_episodes, horizon=6,
                        window=window, action_spec=spec, trial_episodes=trial_episodes,
                        start=start), spec


def test_windows_hold_the_last_transitions_of_the_trial_and_reset_between_trials():
    from metarl_jax.core.rollout import transition_vector

    for trial_episodes in (1, 2):
        played, spec = _windowed(trial_episodes, 4, jax.random.PRNGKey(1))
        valid = np.asarray(played.valid)
        vectors = np.asarray(transition_vector(played.items, spec))
        done, t = np.asarray(played.items["done"]), np.asarray(played.items["t"])
        episode = np.cumsum(done) - done
        trial_start = 0
        for i in np.flatnonzero(valid):
            if i and done[i - 1] and episode[i] % trial_episodes == 0:
                trial_start = i
            assert t[i] == i - trial_start
            history = vectors[max(trial_start, i - 4):i]
            mask = np.asarray(played.mask[i])
            assert mask.sum() == len(history)
            np.testing.assert_array_equal(np.asarray(played.window[i])[mask], history)
        returns = [np.sum(np.asarray(played.items["reward"])[valid & (episode == e)])
                   for e in range(4)]
        np.testing.assert_allclose(played.returns, returns)


def test_windowed_play_continues_exactly_where_it_stopped():
    first, spec = _windowed(2, 1, jax.random.PRNGKey(2))
    rest, _ = _windowed(2, 1, jax.random.PRNGKey(3), start=first.carry)
    # the same trial: the continuation starts at the next episode's reset with the
    # first episode's last transitions in its window
    from metarl_jax.core.rollout import transition_vector
    last = np.asarray(transition_vector(first.items, spec))[np.asarray(first.valid)][-4:]
    np.testing.assert_array_equal(np.asarray(rest.window[0])[np.asarray(rest.mask[0])], last)
    assert int(rest.items["t"][0]) == int(np.asarray(first.valid).sum())
    assert np.asarray(rest.valid).sum() >= 1 and float(rest.returns[0]) > 0
    # with one episode per trial the continuation starts a new trial: empty context
    first, _ = _windowed(1, 1, jax.random.PRNGKey(2))
    rest, _ = _windowed(1, 1, jax.random.PRNGKey(3), start=first.carry)
    assert not np.asarray(rest.mask[0]).any() and int(rest.items["t"][0]) == 0
