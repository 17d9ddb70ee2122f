"""Meta-RL environments: bandits, 2D navigation, tabular MDPs.

Statistics are checked against the spec with 5-sigma tolerances; Navigation2D
is checked step by step against a NumPy re-implementation of
pytorch-maml-rl's ``Navigation2DEnv.step``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl_jax.envs import BernoulliBandit, GaussianBandit, Navigation2D, TabularMDP
from metarl_jax.envs.navigation import NavigationState
from metarl_jax.envs.tabular_mdp import TabularMDPState
from metarl_jax.tasks import make

SIGMAS = 5.0
NUM_PULLS = 4000  # per arm


def pull_many(env, params, key, num_pulls):
    """Rewards ``[k, num_pulls]`` of pulling every arm ``num_pulls`` times from a reset."""
    _, state = env.reset(key, params)
    keys = jax.random.split(key, (env.num_arms, num_pulls))
    actions = jnp.broadcast_to(jnp.arange(env.num_arms, dtype=jnp.int32)[:, None], keys.shape[:2])
    step = jax.vmap(jax.vmap(env.step, in_axes=(0, None, 0, None)), in_axes=(0, None, 0, None))
    return step(keys, state, actions, params)[2]


# -- bandits -------------------------------------------------------------------------


def test_bernoulli_arm_frequencies_match_means():
    env = BernoulliBandit(4)
    means = jnp.array([0.05, 0.3, 0.5, 0.9], jnp.float32)
    params = env.default_params.replace(arm_means=means)
    rewards = pull_many(env, params, jax.random.PRNGKey(0), NUM_PULLS)
    assert rewards.dtype == jnp.float32
    assert set(np.unique(np.asarray(rewards))) <= {0.0, 1.0}
    sigma = np.sqrt(means * (1 - means) / NUM_PULLS)
    np.testing.assert_array_less(np.abs(rewards.mean(axis=1) - means), SIGMAS * sigma)


def test_gaussian_reward_mean_and_std():
    env = GaussianBandit(3)
    means = jnp.array([-1.0, 0.0, 2.0], jnp.float32)
    stds = jnp.array([0.5, 1.0, 2.0], jnp.float32)
    params = env.default_params.replace(arm_means=means, arm_stds=stds)
    rewards = np.asarray(pull_many(env, params, jax.random.PRNGKey(1), NUM_PULLS))
    np.testing.assert_array_less(
        np.abs(rewards.mean(axis=1) - means), SIGMAS * stds / np.sqrt(NUM_PULLS)
    )
    # standard error of a normal sample's std is sigma / sqrt(2 n)
    np.testing.assert_array_less(
        np.abs(rewards.std(axis=1) - stds), SIGMAS * stds / np.sqrt(2 * NUM_PULLS)
    )


def test_bandit_arms_stay_fixed_across_resets():
    """A trial of many one-pull episodes keeps paying the same arm means.

    gymnax's bandits redraw their arms at reset; ours keep them in params, so
    an auto-resetting trial pulling arm 0 pays at arm 0's mean throughout.
    """
    env = BernoulliBandit(2)
    params = env.default_params.replace(arm_means=jnp.array([0.9, 0.1], jnp.float32))
    num_pulls = 2000

    def pull(state, key):
        obs, state, reward, terminated, truncated, _ = env.step(key, state, jnp.int32(0), params)
        return state, (obs, reward, terminated, truncated, state.time)

    obs0, state = env.reset(jax.random.PRNGKey(2), params)
    _, (obs, rewards, terminated, truncated, time) = jax.lax.scan(
        pull, state, jax.random.split(jax.random.PRNGKey(3), num_pulls)
    )
    assert bool(jnp.all(truncated)) and not bool(jnp.any(terminated))  # every pull is an episode
    assert bool(jnp.all(time == 0))  # auto-reset after every pull
    np.testing.assert_array_equal(obs, jnp.zeros((num_pulls, 1)))
    np.testing.assert_array_equal(obs0, jnp.zeros((1,)))
    # first and second halves both at 0.9: nothing drifts or is redrawn
    for half in (rewards[: num_pulls // 2], rewards[num_pulls // 2 :]):
        sigma = np.sqrt(0.9 * 0.1 / half.size)
        assert abs(float(half.mean()) - 0.9) < SIGMAS * sigma


def test_bandit_longer_episodes_truncate_at_max_steps():
    env = GaussianBandit(2)
    params = env.default_params.replace(max_steps_in_episode=3)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    flags = []
    for key in jax.random.split(jax.random.PRNGKey(1), 6):
        _, state, _, _, truncated, _ = env.step(key, state, jnp.int32(1), params)
        flags.append(bool(truncated))
    assert flags == [False, False, True, False, False, True]


# -- tabular MDP -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_mdp():
    family = make("tabular-mdp", states=4, actions=2, episode_length=5)
    params = family.sample_params(jax.random.PRNGKey(5))
    return family.env, params


def test_tabular_mdp_next_state_and_reward_statistics(small_mdp):
    env, params = small_mdp
    s, a, n = env.num_states, env.num_actions, 3000
    np.testing.assert_allclose(params.transitions.sum(-1), 1.0, atol=1e-5)
    states = jnp.repeat(jnp.arange(s, dtype=jnp.int32), a)
    actions = jnp.tile(jnp.arange(a, dtype=jnp.int32), s)
    keys = jax.random.split(jax.random.PRNGKey(6), (s * a, n))

    def transition(key, state_index, action):
        state = TabularMDPState(state=state_index, time=jnp.zeros((), jnp.int32))
        obs, next_state, reward, *_ = env.step_no_reset(key, state, action, params)
        return obs, next_state.state, reward

    obs, next_states, rewards = jax.vmap(
        jax.vmap(transition, in_axes=(0, None, None)), in_axes=(0, 0, 0)
    )(keys, states, actions)
    next_states = np.asarray(next_states)
    assert next_states.min() >= 0 and next_states.max() < s
    np.testing.assert_array_equal(obs, jax.nn.one_hot(next_states, s))
    frequencies = np.stack([np.bincount(row, minlength=s) for row in next_states]) / n
    expected = np.asarray(params.transitions).reshape(s * a, s)
    sigma = np.sqrt(expected * (1 - expected) / n) + 1e-3
    np.testing.assert_array_less(np.abs(frequencies - expected), SIGMAS * sigma)
    # reward = mean_rewards[s, a] + N(0, 1)
    mean_rewards = np.asarray(params.mean_rewards).reshape(s * a)
    np.testing.assert_array_less(
        np.abs(np.asarray(rewards).mean(axis=1) - mean_rewards), SIGMAS / np.sqrt(n)
    )
    np.testing.assert_array_less(
        np.abs(np.asarray(rewards).std(axis=1) - 1.0), SIGMAS / np.sqrt(2 * n)
    )


def test_tabular_mdp_reset_and_truncation(small_mdp):
    env, params = small_mdp
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.PRNGKey(0), 16), params
    )
    np.testing.assert_array_equal(state.state, 0)
    np.testing.assert_array_equal(obs, jnp.broadcast_to(jnp.eye(env.num_states)[0], obs.shape))
    state = jax.tree.map(lambda x: x[0], state)
    truncations = []
    for key in jax.random.split(jax.random.PRNGKey(1), 2 * env.episode_length):
        obs, state, _, terminated, truncated, _ = env.step(key, state, jnp.int32(1), params)
        assert not bool(terminated)
        truncations.append(bool(truncated))
        if truncated:  # auto-reset to state 0
            assert int(state.state) == 0 and int(state.time) == 0
    episode_ends = [t + 1 for t, flag in enumerate(truncations) if flag]
    assert episode_ends == [env.episode_length, 2 * env.episode_length]


def test_noise_free_mdp_rewards_are_mean_rewards(small_mdp):
    env, params = small_mdp
    params = params.replace(reward_noise_std=0.0)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    _, _, reward, *_ = env.step(jax.random.PRNGKey(1), state, jnp.int32(1), params)
    assert float(reward) == pytest.approx(float(params.mean_rewards[0, 1]))


# -- navigation ---------------------------------------------------------------------------


def maml_navigation_step(position, goal, action):
    """pytorch-maml-rl ``Navigation2DEnv.step`` (float32 state), for one transition."""
    action = np.clip(action, -0.1, 0.1)
    position = position + action
    x = position[0] - goal[0]
    y = position[1] - goal[1]
    reward = -np.sqrt(x**2 + y**2)
    done = (np.abs(x) < 0.01) and (np.abs(y) < 0.01)
    return position, reward, done


def test_navigation_matches_pytorch_maml_rl_step():
    env = Navigation2D()
    rng = np.random.default_rng(0)
    n = 1000
    positions = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    actions = rng.uniform(-0.3, 0.3, (n, 2)).astype(np.float32)  # many get clipped
    goals = rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32)
    # half of the goals right next to where the step lands, to exercise `done`
    near = rng.uniform(-0.015, 0.015, (n // 2, 2)).astype(np.float32)
    goals[: n // 2] = positions[: n // 2] + np.clip(actions[: n // 2], -0.1, 0.1) + near
    params = env.default_params.replace(
        goal=jnp.asarray(goals), max_steps_in_episode=jnp.full((n,), 100, jnp.int32)
    )
    states = NavigationState(position=jnp.asarray(positions), time=jnp.zeros((n,), jnp.int32))
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    obs, next_states, rewards, terminated, truncated, _ = jax.vmap(env.step_no_reset)(
        keys, states, jnp.asarray(actions), params
    )
    reference = [maml_navigation_step(p, g, a) for p, g, a in zip(positions, goals, actions)]
    ref_positions = np.stack([r[0] for r in reference])
    ref_rewards = np.array([r[1] for r in reference])
    ref_done = np.array([r[2] for r in reference])
    assert 50 < ref_done.sum() < n // 2  # both outcomes are exercised
    np.testing.assert_allclose(obs, ref_positions, rtol=0, atol=1e-7)
    np.testing.assert_allclose(next_states.position, ref_positions, rtol=0, atol=1e-7)
    np.testing.assert_allclose(rewards, ref_rewards, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(terminated, ref_done)
    assert not bool(jnp.any(truncated))


def rllab_normalized_action(action, low=-0.1, high=0.1):
    """rllab ``NormalizedEnv.step``'s action map: ``[-1, 1]`` onto ``[low, high]``, clipped."""
    scaled = low + (action + 1.0) * 0.5 * (high - low)
    return np.clip(scaled, low, high)


def test_navigation_normalized_actions_match_the_authors_rllab_wrapper():
    env, raw = Navigation2D(normalized_actions=True), Navigation2D()
    space = env.action_space()
    assert float(space.low) == -1.0 and float(space.high) == 1.0
    assert float(raw.action_space().high) == pytest.approx(0.1)
    rng = np.random.default_rng(1)
    n = 500
    actions = rng.uniform(-3, 3, (n, 2)).astype(np.float32)  # many beyond [-1, 1]
    goals = rng.uniform(-0.5, 0.5, (n, 2)).astype(np.float32)
    params = env.default_params.replace(
        goal=jnp.asarray(goals), max_steps_in_episode=jnp.full((n,), 100, jnp.int32))
    states = NavigationState(position=jnp.zeros((n, 2)), time=jnp.zeros((n,), jnp.int32))
    keys = jax.random.split(jax.random.PRNGKey(0), n)
    step = jax.vmap(env.step_no_reset, in_axes=(0, 0, 0, 0))
    obs, _, rewards, _, _, _ = step(keys, states, jnp.asarray(actions), params)
    reference = [maml_navigation_step(np.zeros(2, np.float32), g, rllab_normalized_action(a))
                 for g, a in zip(goals, actions)]
    np.testing.assert_allclose(obs, np.stack([r[0] for r in reference]), atol=1e-6)
    np.testing.assert_allclose(rewards, np.array([r[1] for r in reference]), atol=1e-6)
    family = make("navigation2d", normalized_actions=True)
    assert family.env.normalized_actions
    with pytest.raises(ValueError, match="normalized_actions"):
        Navigation2D(normalized_actions="yes")


def test_navigation_reset_and_auto_reset_on_goal():
    env = Navigation2D()
    goal = jnp.array([0.15, -0.05], jnp.float32)
    params = env.default_params.replace(goal=goal)
    obs, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.PRNGKey(0), 8), params
    )
    np.testing.assert_array_equal(obs, jnp.zeros((8, 2)))
    state = jax.tree.map(lambda x: x[0], state)
    action = jnp.array([0.075, -0.025], jnp.float32)  # reaches the goal in two steps
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    obs, state, _, terminated, _, _ = env.step(keys[0], state, action, params)
    assert not bool(terminated)
    obs, state, reward, terminated, truncated, info = env.step(keys[1], state, action, params)
    assert bool(terminated) and not bool(truncated)
    np.testing.assert_allclose(info["final_observation"], goal, atol=1e-6)
    assert float(reward) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_array_equal(obs, jnp.zeros(2))  # auto-reset to the origin
    assert int(state.time) == 0


def test_navigation_truncates_after_horizon():
    env = Navigation2D()
    params = env.default_params.replace(goal=jnp.array([0.5, 0.5]), max_steps_in_episode=4)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    flags = []
    for key in jax.random.split(jax.random.PRNGKey(1), 5):
        _, state, _, _, truncated, _ = env.step(key, state, jnp.zeros(2), params)
        flags.append(bool(truncated))
    assert flags == [False, False, False, True, False]


# -- batches of tasks, retracing, bad input -----------------------------------------------

FAMILIES = {
    "bandit-bernoulli": {"arms": 3},
    "bandit-gaussian": {"arms": 3},
    "navigation2d": {},
    "tabular-mdp": {"states": 3, "actions": 2, "episode_length": 4},
}


def reset_and_step(env, key, params):
    """Reset one task, take a random action: ``(obs, state, reward, terminated, truncated)``."""
    key_reset, key_action, key_step = jax.random.split(key, 3)
    _, state = env.reset(key_reset, params)
    action = env.action_space(params).sample(key_action)
    return env.step(key_step, state, action, params)[:5]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_task_batch_equals_tasks_one_by_one_and_never_retraces(name):
    family = make(name, **FAMILIES[name])
    num_tasks = 3
    chex.clear_trace_counter()  # `batched` is redefined per parametrization

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(keys, params):  # keys [tasks, 2], params [tasks, ...]
        return jax.vmap(lambda k, p: reset_and_step(family.env, k, p))(keys, params)

    keys = jax.random.split(jax.random.PRNGKey(0), num_tasks)
    batches = [family.sample(jax.random.PRNGKey(seed), num_tasks) for seed in (1, 2)]
    assert not np.allclose(jax.tree.leaves(batches[0])[0], jax.tree.leaves(batches[1])[0])
    for params in batches:  # new params of the same shape: no retrace
        out = batched(keys, params)
        for i in range(num_tasks):
            single = reset_and_step(family.env, keys[i], jax.tree.map(lambda x: x[i], params))
            chex.assert_trees_all_close(jax.tree.map(lambda x: x[i], out), single, rtol=1e-6)


def test_wrong_action_shape_or_dtype_raises():
    bandit = BernoulliBandit(3)
    bp = bandit.default_params
    _, state = bandit.reset(jax.random.PRNGKey(0), bp)
    key = jax.random.PRNGKey(1)
    with pytest.raises(ValueError, match=r"action has shape \(2,\), expected \(\)"):
        bandit.step(key, state, jnp.array([0, 1], jnp.int32), bp)
    with pytest.raises(TypeError, match="integer dtype"):
        bandit.step(key, state, jnp.float32(1.0), bp)
    nav = Navigation2D()
    np_ = nav.default_params
    _, state = nav.reset(key, np_)
    with pytest.raises(ValueError, match=r"action has shape \(3,\), expected \(2,\)"):
        nav.step(key, state, jnp.zeros(3), np_)
    with pytest.raises(ValueError, match=r"action has shape \(\), expected \(2,\)"):
        nav.step_no_reset(key, state, jnp.float32(0.1), np_)
    with pytest.raises(TypeError, match="floating dtype"):
        nav.step(key, state, jnp.zeros(2, jnp.int32), np_)


def test_constructor_sizes_are_validated():
    with pytest.raises(ValueError, match="num_arms"):
        BernoulliBandit(1)
    with pytest.raises(ValueError, match="num_arms"):
        GaussianBandit(2.5)
    with pytest.raises(ValueError, match="num_states"):
        TabularMDP(0, 2, 3)
    with pytest.raises(ValueError, match="num_actions"):
        TabularMDP(2, 0, 3)
    with pytest.raises(ValueError, match="episode_length"):
        TabularMDP(2, 2, 0)


def test_validate_params_names_the_bad_field():
    bernoulli = BernoulliBandit(3)
    ok = bernoulli.default_params
    bernoulli.validate_params(ok)
    with pytest.raises(ValueError, match="arm_means must lie in"):
        bernoulli.validate_params(ok.replace(arm_means=jnp.array([0.2, 1.2, 0.5])))
    with pytest.raises(ValueError, match=r"arm_means must have shape \[..., 3\]"):
        bernoulli.validate_params(ok.replace(arm_means=jnp.array([0.2, 0.5])))
    with pytest.raises(ValueError, match="max_steps_in_episode"):
        bernoulli.validate_params(ok.replace(max_steps_in_episode=0))
    gaussian = GaussianBandit(2)
    with pytest.raises(ValueError, match="arm_stds"):
        gaussian.validate_params(gaussian.default_params.replace(arm_stds=jnp.array([1.0, -0.1])))
    mdp = TabularMDP(3, 2, 4)
    good = mdp.default_params
    mdp.validate_params(good)
    with pytest.raises(ValueError, match=r"transitions\[s, a\] row must sum to 1"):
        mdp.validate_params(good.replace(transitions=good.transitions.at[1, 0, 2].add(0.1)))
    with pytest.raises(ValueError, match="transitions must be finite and >= 0"):
        negative = good.transitions.at[0, 0].set(jnp.array([1.5, -0.5, 0.0]))
        mdp.validate_params(good.replace(transitions=negative))
    with pytest.raises(ValueError, match="transitions must have shape"):
        mdp.validate_params(good.replace(transitions=jnp.ones((3, 3, 3)) / 3))
    with pytest.raises(ValueError, match="mean_rewards must have shape"):
        mdp.validate_params(good.replace(mean_rewards=jnp.zeros((2, 3))))
    with pytest.raises(ValueError, match="reward_noise_std"):
        mdp.validate_params(good.replace(reward_noise_std=-1.0))
    nav = Navigation2D()
    with pytest.raises(ValueError, match="goal must have shape"):
        nav.validate_params(nav.default_params.replace(goal=jnp.zeros(3)))
    with pytest.raises(ValueError, match="goal must be finite"):
        nav.validate_params(nav.default_params.replace(goal=jnp.array([0.0, jnp.nan])))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_sampled_task_batches_pass_validation(name):
    family = make(name, **FAMILIES[name])
    for split in family.splits:
        family.env.validate_params(family.sample(jax.random.PRNGKey(0), 8, split))


def test_envs_use_float32_and_int32():
    """float32 observations/rewards and int32 counters, as the contract says."""
    for env, params, action in [
        (BernoulliBandit(2), BernoulliBandit(2).default_params, jnp.int32(1)),
        (GaussianBandit(2), GaussianBandit(2).default_params, jnp.int32(0)),
        (Navigation2D(), Navigation2D().default_params, jnp.full(2, 0.05)),
        (TabularMDP(3, 2, 4), TabularMDP(3, 2, 4).default_params, jnp.int32(1)),
    ]:
        obs, state = env.reset(jax.random.PRNGKey(0), params)
        obs2, state2, reward, terminated, truncated, _ = env.step(
            jax.random.PRNGKey(1), state, action, params
        )
        assert obs.dtype == obs2.dtype == jnp.float32, env.name
        assert obs.shape == tuple(env.observation_space(params).shape), env.name
        assert reward.dtype == jnp.float32 and reward.shape == (), env.name
        assert terminated.dtype == truncated.dtype == jnp.bool_, env.name
        assert state2.time.dtype == jnp.int32, env.name


def test_equal_envs_share_compiled_step_and_different_ones_do_not():
    from metarl_jax.envs.environment import Environment

    assert TabularMDP(3, 2, 4) == TabularMDP(3, 2, 4)
    assert hash(TabularMDP(3, 2, 4)) == hash(TabularMDP(3, 2, 4))
    assert TabularMDP(3, 2, 4) != TabularMDP(3, 2, 5)
    assert Navigation2D(normalized_actions=True) != Navigation2D()
    assert BernoulliBandit(3) != GaussianBandit(3)  # same attributes, different class
    unhashable = BernoulliBandit(3)
    unhashable.table = [1, 2]  # an unhashable attribute: equal only to itself
    assert unhashable == unhashable and unhashable != BernoulliBandit(3)
    hash(unhashable)

    # a second make() of the same env reuses the first one's compiled step
    first, second = make("navigation2d").env, make("navigation2d").env
    assert first is not second
    key = jax.random.PRNGKey(0)
    obs, state = first.reset(key, first.default_params)
    action = jnp.zeros((2,), jnp.float32)
    first.step(key, state, action, first.default_params)
    compiled = Environment.step._cache_size()
    out = second.step(key, state, action, second.default_params)
    assert Environment.step._cache_size() == compiled
    np.testing.assert_array_equal(out[0], first.step(key, state, action, first.default_params)[0])
    Navigation2D(normalized_actions=True).step(key, state, action, first.default_params)
    assert Environment.step._cache_size() == compiled + 1
