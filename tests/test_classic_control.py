"""Classic-control envs against Gymnasium and gymnax, auto-reset, task families.

Reference tests set Gymnasium's ``unwrapped.state`` to each of >= 1,000 random
states, step once, and compare next state, observation, reward, terminated
and truncated (through Gymnasium's own ``TimeLimit``) with our vmapped step.
"""

from __future__ import annotations

import dataclasses

import chex
import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments.classic_control import cartpole as gymnax_cartpole
from gymnax.environments.classic_control import continuous_mountain_car as gymnax_mcc
from gymnax.environments.classic_control import mountain_car as gymnax_mc
from gymnax.environments.classic_control import pendulum as gymnax_pendulum
from gymnax.wrappers.purerl import LogWrapper
from scipy import stats

import metarl_jax
from metarl_jax.envs import CartPole, MountainCar, MountainCarContinuous, Pendulum
from metarl_jax.envs.environment import (
    key_hash_bits,
    reset_uniform,
    split_key,
    uniform_from_bits,
)

NUM_STATES = 1000


# -- Gymnasium reference ---------------------------------------------------------


def _cartpole_sample(rng, n, params):
    state = np.stack(
        [
            rng.uniform(-2.6, 2.6, n),
            rng.uniform(-3.0, 3.0, n),
            rng.uniform(-0.25, 0.25, n),
            rng.uniform(-3.0, 3.0, n),
        ],
        -1,
    ).astype(np.float32)
    return state, rng.integers(0, 2, n).astype(np.int32)


def _mountain_car_sample(rng, n, params, continuous):
    position = rng.uniform(-1.2, 0.6, n).astype(np.float32)
    velocity = rng.uniform(-0.07, 0.07, n).astype(np.float32)
    # a tenth at the left wall moving left, to exercise the wall's velocity reset
    wall = rng.random(n) < 0.1
    position[wall] = np.float32(params.min_position)
    velocity[wall] = -np.abs(velocity[wall])
    if continuous:  # beyond [-1, 1] too: the force is clipped, the reward is not
        action = rng.uniform(-1.5, 1.5, (n, 1)).astype(np.float32)
    else:
        action = rng.integers(0, 3, n).astype(np.int32)
    return np.stack([position, velocity], -1), action


def _pendulum_sample(rng, n, params):
    state = np.stack(
        [rng.uniform(-2 * np.pi, 2 * np.pi, n), rng.uniform(-8.0, 8.0, n)], -1
    ).astype(np.float32)
    return state, rng.uniform(-3.0, 3.0, (n, 1)).astype(np.float32)


def _cartpole_state(s, t):
    return metarl_jax.envs.CartPoleState(
        x=s[:, 0], x_dot=s[:, 1], theta=s[:, 2], theta_dot=s[:, 3], time=t
    )


def _car_state(s, t):
    return metarl_jax.envs.MountainCarState(position=s[:, 0], velocity=s[:, 1], time=t)


def _pendulum_state(s, t):
    return metarl_jax.envs.PendulumState(
        theta=s[:, 0], theta_dot=s[:, 1], last_u=jnp.zeros_like(s[:, 0]), time=t
    )


def _cartpole_gym_params(unwrapped, p):
    for field in ("gravity", "masscart", "masspole", "length", "force_mag", "tau"):
        setattr(unwrapped, field, float(getattr(p, field)))
    unwrapped.total_mass = unwrapped.masspole + unwrapped.masscart
    unwrapped.polemass_length = unwrapped.masspole * unwrapped.length


def _fields_gym_params(*fields):
    def configure(unwrapped, p):
        for field in fields:
            setattr(unwrapped, field, float(getattr(p, field)))

    return configure


# name: (env, param overrides, gymnasium id, sampler, state builder, gym param setter)
REFERENCE_CASES = {
    "cartpole": (CartPole(), {}, "CartPole-v1", _cartpole_sample, _cartpole_state,
                 _cartpole_gym_params),
    "cartpole-varied": (
        CartPole(),
        dict(length=0.8, masspole=0.3, masscart=1.6, force_mag=12.5, gravity=9.0, tau=0.03,
             max_steps_in_episode=50),
        "CartPole-v1", _cartpole_sample, _cartpole_state, _cartpole_gym_params,
    ),
    "mountaincar": (MountainCar(), {}, "MountainCar-v0",
                    lambda r, n, p: _mountain_car_sample(r, n, p, False), _car_state,
                    _fields_gym_params()),
    "mountaincar-varied": (
        MountainCar(), dict(force=0.0013, gravity=0.0021, goal_velocity=0.01),
        "MountainCar-v0", lambda r, n, p: _mountain_car_sample(r, n, p, False), _car_state,
        _fields_gym_params("force", "gravity", "goal_velocity"),
    ),
    "mountaincar-continuous": (
        MountainCarContinuous(), {}, "MountainCarContinuous-v0",
        lambda r, n, p: _mountain_car_sample(r, n, p, True), _car_state, _fields_gym_params(),
    ),
    # Gymnasium hard-codes the continuous version's gravity, so only power varies here
    "mountaincar-continuous-varied": (
        MountainCarContinuous(), dict(power=0.0011, goal_velocity=0.005),
        "MountainCarContinuous-v0", lambda r, n, p: _mountain_car_sample(r, n, p, True),
        _car_state, _fields_gym_params("power", "goal_velocity"),
    ),
    "pendulum": (Pendulum(), {}, "Pendulum-v1", _pendulum_sample, _pendulum_state,
                 _fields_gym_params()),
    "pendulum-varied": (
        Pendulum(), dict(m=1.4, l=0.7, g=9.81, dt=0.04, max_steps_in_episode=30),
        "Pendulum-v1", _pendulum_sample, _pendulum_state,
        _fields_gym_params("m", "l", "g", "dt"),
    ),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_CASES))
def test_one_step_equals_gymnasium(case):
    env, overrides, gym_id, sample, build_state, configure = REFERENCE_CASES[case]
    params = env.default_params.replace(**overrides)
    env.validate_params(params)
    rng = np.random.default_rng(sum(map(ord, case)))
    states, actions = sample(rng, NUM_STATES, params)
    max_steps = int(params.max_steps_in_episode)
    # time steps taken so far; a fifth of them one step before the time limit
    times = rng.integers(0, max_steps, NUM_STATES).astype(np.int32)
    times[rng.random(NUM_STATES) < 0.2] = max_steps - 1

    step = jax.jit(jax.vmap(env.step_no_reset, in_axes=(0, 0, 0, None)))
    keys = jax.random.split(jax.random.key(0), NUM_STATES)
    obs, next_state, reward, terminated, truncated, _ = step(
        keys, build_state(jnp.asarray(states), jnp.asarray(times)), jnp.asarray(actions), params
    )
    ours = np.stack(
        [np.asarray(leaf) for leaf in dataclasses.astuple(next_state)[: states.shape[1]]], -1
    )

    gym_env = gymnasium.make(gym_id, disable_env_checker=True, max_episode_steps=max_steps)
    gym_env.reset(seed=0)
    unwrapped = gym_env.unwrapped
    configure(unwrapped, params)
    ref_state, ref_obs, ref = [], [], []
    for state, action, time in zip(states, actions, times):
        unwrapped.state = state.astype(np.float64)
        if hasattr(unwrapped, "steps_beyond_terminated"):
            unwrapped.steps_beyond_terminated = None
        gym_env._elapsed_steps = int(time)
        action = int(action) if action.ndim == 0 else action
        o, r, te, tr, _ = gym_env.step(action)
        ref_state.append(np.asarray(unwrapped.state, np.float64))
        ref_obs.append(o)
        ref.append((r, te, tr))
    ref_reward, ref_terminated, ref_truncated = map(np.array, zip(*ref))

    np.testing.assert_allclose(ours, np.array(ref_state), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(obs), np.array(ref_obs), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(reward), ref_reward, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(terminated), ref_terminated)
    np.testing.assert_array_equal(np.asarray(truncated), ref_truncated)
    assert obs.dtype == jnp.float32 and reward.dtype == jnp.float32
    # the samples reach every branch: some episodes end, some do not
    if case.startswith(("cartpole", "mountaincar")):
        assert 0 < ref_terminated.sum() < NUM_STATES
    assert 0 < ref_truncated.sum() < NUM_STATES
    if case.startswith("mountaincar"):
        assert np.any(ours[:, 1] == 0.0)  # left-wall velocity resets happened


# -- truncation and auto-reset ---------------------------------------------------


def _scan_steps(env, params, key, num_steps, policy):
    """``num_steps`` auto-resetting steps from a reset; returns per-step outputs."""
    key_reset, key_steps = jax.random.split(key)
    obs, state = env.reset(key_reset, params)

    def body(carry, step_key):
        obs, state = carry
        action = policy(obs)
        obs_next, state_next, reward, terminated, truncated, info = env.step(
            step_key, state, action, params
        )
        no_reset = env.step_no_reset(step_key, state, action, params)
        reset_obs, reset_state = env.reset(step_key, params)
        out = dict(
            obs=obs_next, time=state_next.time, terminated=terminated, truncated=truncated,
            final=info["final_observation"], no_reset_obs=no_reset[0], reset_obs=reset_obs,
        )
        return (obs_next, state_next), out

    return jax.lax.scan(body, (obs, state), jax.random.split(key_steps, num_steps))[1]


@pytest.mark.parametrize(
    "env, policy",
    [
        (Pendulum(), lambda obs: -obs[2:3]),
        (MountainCar(), lambda obs: jnp.int32(2)),
        (MountainCarContinuous(), lambda obs: jnp.ones(1, jnp.float32)),
    ],
    ids=["pendulum", "mountaincar", "mountaincar-continuous"],
)
def test_truncation_at_max_steps_and_reset(env, policy):
    # 7 steps are far too few to reach MountainCar's flag: only truncation ends them
    params = env.default_params.replace(max_steps_in_episode=7)
    out = jax.jit(lambda k: _scan_steps(env, params, k, 22, policy))(jax.random.key(1))
    truncated = np.asarray(out["truncated"])
    np.testing.assert_array_equal(np.flatnonzero(truncated), [6, 13, 20])
    assert not np.asarray(out["terminated"]).any()
    np.testing.assert_array_equal(np.asarray(out["time"])[:8], [1, 2, 3, 4, 5, 6, 0, 1])
    _check_auto_reset(out)


def test_cartpole_auto_reset_after_termination():
    env = CartPole()
    params = env.default_params
    out = jax.jit(lambda k: _scan_steps(env, params, k, 300, lambda o: jnp.int32(0)))(
        jax.random.key(2)
    )
    terminated = np.asarray(out["terminated"])
    assert terminated.sum() >= 5  # always pushing left ends episodes quickly
    assert not np.asarray(out["truncated"]).any()
    _check_auto_reset(out)


def _check_auto_reset(out):
    done = np.asarray(out["terminated"]) | np.asarray(out["truncated"])
    obs, final = np.asarray(out["obs"]), np.asarray(out["final"])
    # the pre-reset observation is reported in info, whether or not the episode ended
    np.testing.assert_array_equal(final, np.asarray(out["no_reset_obs"]))
    # after the end the next observation is a fresh reset, drawn from the step's key
    np.testing.assert_array_equal(obs[done], np.asarray(out["reset_obs"])[done])
    np.testing.assert_array_equal(obs[~done], final[~done])
    assert np.all(np.asarray(out["time"])[done] == 0)


# -- batches of tasks, no retracing ----------------------------------------------

FAMILIES = ("cartpole", "mountaincar", "mountaincar-continuous", "pendulum")


def _random_actions(env, key, n):
    space = env.action_space(env.default_params)
    return jax.vmap(space.sample)(jax.random.split(key, n))


@pytest.mark.parametrize("name", FAMILIES)
def test_task_batch_equals_tasks_one_by_one_without_retracing(name):
    family = metarl_jax.make(name)
    env, num_tasks = family.env, 4
    key_params, key_reset, key_actions, key_step = jax.random.split(jax.random.key(3), 4)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched_step(keys, states, actions, params):
        return jax.vmap(env.step)(keys, states, actions, params)

    reset = jax.jit(jax.vmap(env.reset))
    single_step = jax.jit(env.step)
    for i, split in enumerate(("train", "test", "ood")):
        params = family.sample(jax.random.fold_in(key_params, i), num_tasks, split)
        _, states = reset(jax.random.split(key_reset, num_tasks), params)
        actions = _random_actions(env, key_actions, num_tasks)
        keys = jax.random.split(key_step, num_tasks)
        batched = batched_step(keys, states, actions, params)
        if split != "train":
            continue  # new params of the same shape: checked not to retrace
        for task in range(num_tasks):
            def pick(tree, task=task):
                return jax.tree.map(lambda leaf: leaf[task], tree)

            single = single_step(keys[task], pick(states), actions[task], pick(params))
            chex.assert_trees_all_close(pick(batched), single, rtol=1e-6, atol=1e-7)


# -- reset distribution and the fused random numbers ----------------------------


def test_split_key_is_bit_identical_to_jax_random_split():
    for key in (jax.random.key(0), jax.random.key(2**31 + 5), jax.random.PRNGKey(7)):
        ours, ref = jax.jit(split_key, static_argnums=1)(key, 3), jax.random.split(key, 3)
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            assert jnp.issubdtype(ours.dtype, jax.dtypes.prng_key)
            ours, ref = jax.random.key_data(ours), jax.random.key_data(ref)
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    # other PRNG implementations fall back to jax.random
    rbg = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(
        jax.random.key_data(split_key(rbg)), jax.random.key_data(jax.random.split(rbg))
    )


def _numpy_triple32(x):
    x = x.astype(np.uint64)
    for shift, multiplier in ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB)):
        x = ((x ^ (x >> shift)) * multiplier) % 2**32
    return x ^ (x >> 14)


def test_reset_uniform_is_the_documented_hash_and_jax_float_conversion():
    keys = jax.random.split(jax.random.key(11), 64)
    words = np.asarray(jax.random.key_data(keys), np.uint64)  # [64, 2]
    stride = np.arange(1, 6, dtype=np.uint64) * 0x9E3779B9 % 2**32
    expected_bits = _numpy_triple32(words[:, :1] ^ _numpy_triple32(words[:, 1:] ^ stride))
    bits = jax.jit(jax.vmap(lambda k: key_hash_bits(jax.random.key_data(k), 5)))(keys)
    np.testing.assert_array_equal(np.asarray(bits), expected_bits.astype(np.uint32))
    draws = jax.jit(jax.vmap(lambda k: reset_uniform(k, (5,), -2.0, 3.0)))(keys)
    np.testing.assert_array_equal(draws, jax.jit(uniform_from_bits)(bits, -2.0, 3.0))
    # the float conversion is jax.random.uniform's, bit for bit
    key = jax.random.key(12)
    bits = jax.random.bits(key, (1000,), jnp.uint32)
    np.testing.assert_array_equal(
        jax.jit(uniform_from_bits)(bits, -1.0, 1.0),
        jax.random.uniform(key, (1000,), jnp.float32, -1.0, 1.0),
    )
    # other PRNG implementations fall back to jax.random.uniform
    rbg = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(
        reset_uniform(rbg, (3,), -1.0, 1.0), jax.random.uniform(rbg, (3,), jnp.float32, -1.0, 1.0)
    )


def test_key_hash_avalanche():
    """Strict avalanche: flipping any key bit flips each output bit with probability 1/2."""
    num_keys = 2000
    words = jax.random.key_data(jax.random.split(jax.random.key(13), num_keys))
    flips = jnp.left_shift(jnp.uint32(1), jnp.arange(32, dtype=jnp.uint32))
    # [64 flipped key bits, keys, 2 words]
    zeros = jnp.zeros_like(flips)
    masks = jnp.concatenate([jnp.stack([flips, zeros], -1), jnp.stack([zeros, flips], -1)])
    flipped = words[None] ^ masks[:, None, :]

    @jax.jit
    def flip_rates(words, flipped):
        hash_words = jax.vmap(lambda w: key_hash_bits(w, 4))
        base = hash_words(words)  # [keys, 4]
        changed = jax.vmap(hash_words)(flipped) ^ base[None]  # [64, keys, 4]
        bits = (changed[..., None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
        return bits.mean(axis=1, dtype=jnp.float32)  # [64 input bits, 4 words, 32 bits]

    rates = np.asarray(flip_rates(words, flipped))
    assert np.all(np.abs(rates - 0.5) < 5 * np.sqrt(0.25 / num_keys))


NUM_RESETS = 20000


def _key_batches():
    """Per-env keys as a benchmark or learner may supply them."""
    base = jax.random.key(5)
    data = jax.random.key_data(base)
    return {
        "split": jax.random.split(base, NUM_RESETS),
        # consecutive integer seeds: low-entropy keys
        "seeds": jax.vmap(jax.random.key)(jnp.arange(NUM_RESETS)),
        # one key per step with the env index xor-ed in (benchmark's cheap scheme)
        "xor-index": jax.random.wrap_key_data(
            data[None, :] ^ jnp.stack(
                [jnp.zeros(NUM_RESETS, jnp.uint32), jnp.arange(NUM_RESETS, dtype=jnp.uint32)], 1
            )
        ),
    }


@pytest.mark.parametrize("key_scheme", ["split", "seeds", "xor-index"])
def test_cartpole_reset_is_uniform_and_independent(key_scheme):
    env = CartPole()
    keys = _key_batches()[key_scheme]
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, env.default_params)
    obs = np.asarray(obs, np.float64)
    assert obs.shape == (NUM_RESETS, 4) and np.all(np.asarray(state.time) == 0)
    assert obs.min() >= -0.05 and obs.max() < 0.05
    sigma = 0.1 / np.sqrt(12)
    for column in obs.T:
        # Kolmogorov-Smirnov against U(-0.05, 0.05)
        assert stats.kstest(column, "uniform", args=(-0.05, 0.1)).pvalue > 1e-3
        assert abs(column.mean()) < 5 * sigma / np.sqrt(NUM_RESETS)
        assert abs(column.var() / sigma**2 - 1) < 0.05
    bound = 5 / np.sqrt(NUM_RESETS)
    # no linear dependence between the four variables of one env ...
    within = np.corrcoef(obs.T)
    assert np.all(np.abs(within[np.triu_indices(4, 1)]) < bound)
    # ... nor between neighbouring envs
    for column in obs.T:
        assert abs(np.corrcoef(column[:-1], column[1:])[0, 1]) < bound
    # nor any dependence a 10 x 10 contingency table of neighbours can see
    cells = np.minimum(((obs[:, 0] + 0.05) * 100).astype(int), 9)
    table = np.zeros((10, 10))
    np.add.at(table, (cells[0::2], cells[1::2]), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-3


def test_mountain_car_and_pendulum_reset_ranges():
    keys = jax.random.split(jax.random.key(6), NUM_RESETS)
    for env in (MountainCar(), MountainCarContinuous()):
        obs, _ = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, env.default_params)
        position = np.asarray(obs[:, 0], np.float64)
        assert position.min() >= -0.6 and position.max() < -0.4
        assert np.all(np.asarray(obs[:, 1]) == 0)
        assert stats.kstest(position, "uniform", args=(-0.6, 0.2)).pvalue > 1e-3
    env = Pendulum()
    _, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, env.default_params)
    theta, theta_dot = np.asarray(state.theta, np.float64), np.asarray(state.theta_dot, np.float64)
    assert stats.kstest(theta, "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-3
    assert stats.kstest(theta_dot, "uniform", args=(-1.0, 2.0)).pvalue > 1e-3


# -- bad input -------------------------------------------------------------------


def test_bad_actions_raise():
    key = jax.random.key(0)
    env = CartPole()
    _, state = env.reset(key)
    with pytest.raises(ValueError, match=r"action has shape \(2,\)"):
        env.step(key, state, jnp.array([0, 1], jnp.int32))
    with pytest.raises(TypeError, match="integer dtype"):
        env.step(key, state, jnp.float32(1.0))
    for env in (MountainCarContinuous(), Pendulum()):
        _, state = env.reset(key)
        with pytest.raises(ValueError, match=r"action has shape \(\)"):
            env.step(key, state, jnp.float32(0.5))
        with pytest.raises(TypeError, match="floating dtype"):
            env.step(key, state, jnp.array([1], jnp.int32))


@pytest.mark.parametrize(
    "env, overrides, field",
    [
        (CartPole(), dict(length=-0.5), "params.length"),
        (CartPole(), dict(masspole=0.0), "params.masspole"),
        (CartPole(), dict(gravity=-9.8), "params.gravity"),
        (CartPole(), dict(max_steps_in_episode=0), "params.max_steps_in_episode"),
        (CartPole(), dict(max_steps_in_episode=10.5), "params.max_steps_in_episode"),
        (MountainCar(), dict(force=-0.001), "params.force"),
        (MountainCar(), dict(min_position=0.7), "params.min_position"),
        (MountainCar(), dict(goal_position=0.9), "params.goal_position"),
        (MountainCarContinuous(), dict(power=0.0), "params.power"),
        (MountainCarContinuous(), dict(min_action=1.0), "params.min_action"),
        (Pendulum(), dict(m=0.0), "params.m"),
        (Pendulum(), dict(l=-1.0), "params.l"),
    ],
)
def test_invalid_params_raise_naming_the_field(env, overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        env.validate_params(env.default_params.replace(**overrides))


# -- task families ---------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_family_splits_follow_their_ranges(name):
    family = metarl_jax.make(name)
    assert family.splits == ("train", "test", "ood")
    key = jax.random.key(8)
    train, test, ood = (family.sample(key, 200, split) for split in ("train", "test", "ood"))
    family.env.validate_params(family.env.default_params)
    for params in (train, test, ood):
        family.env.validate_params(params)
    for field, (low, high) in family.ranges["train"].items():
        for params in (train, test):
            values = np.asarray(getattr(params, field))
            assert values.shape == (200,) and values.dtype == np.float32
            assert values.min() >= np.float32(low) and values.max() <= np.float32(high)
        assert not np.any(np.asarray(getattr(train, field)) == np.asarray(getattr(test, field)))
        ood_low, ood_high = family.ranges["ood"][field]
        assert ood_low >= high or ood_high <= low  # disjoint from training
        values = np.asarray(getattr(ood, field))
        assert values.min() >= np.float32(ood_low) and values.max() <= np.float32(ood_high)
    # unvaried fields keep their defaults
    assert np.all(np.asarray(train.max_steps_in_episode) == family.env.default_params.max_steps_in_episode)


def test_cartpole_random_push_direction_reverses_the_actuator():
    family = metarl_jax.make("cartpole", random_push_direction=True)
    n = 2000
    for split in ("train", "test", "ood"):
        params = family.sample(jax.random.key(3), n, split)
        force = np.asarray(params.force_mag)
        low, high = family.ranges.get(split, family.ranges["train"])["force_mag"]
        assert np.all((np.abs(force) >= np.float32(low)) & (np.abs(force) <= np.float32(high)))
        # each task reversed with probability 1/2 (5 standard deviations)
        assert abs((force < 0).mean() - 0.5) < 5 * np.sqrt(0.25 / n)
        family.env.validate_params(params)
    # a reversed actuator is the same physics with the other action
    env = family.env
    params = env.default_params
    reversed_params = params.replace(force_mag=-params.force_mag)
    _, state = env.reset(jax.random.key(0), params)
    key = jax.random.key(1)
    for action in (0, 1):
        a = env.step_no_reset(key, state, jnp.int32(action), reversed_params)
        b = env.step_no_reset(key, state, jnp.int32(1 - action), params)
        np.testing.assert_array_equal(a[0], b[0])
    plain = metarl_jax.make("cartpole").sample(jax.random.key(3), n)
    assert np.all(np.asarray(plain.force_mag) > 0)
    with pytest.raises(ValueError, match="force_mag"):
        env.validate_params(params.replace(force_mag=0.0))
    with pytest.raises(ValueError, match="random_push_direction"):
        metarl_jax.make("cartpole", random_push_direction="yes")


def test_family_options_and_invalid_ranges():
    family = metarl_jax.make("cartpole", max_steps_in_episode=100)
    assert np.all(np.asarray(family.sample(jax.random.key(0), 3).max_steps_in_episode) == 100)
    narrow = metarl_jax.make("pendulum", ranges={"train": {"m": (2.0, 2.0)}})
    assert narrow.splits == ("train", "test")
    np.testing.assert_array_equal(narrow.sample(jax.random.key(0), 3).m, 2.0)
    with pytest.raises(ValueError, match="length"):
        metarl_jax.make("cartpole", ranges={"train": {"length": (-1.0, 0.5)}})
    with pytest.raises(ValueError, match="gravity"):
        metarl_jax.make("mountaincar", ranges={"train": {"gravity": (0.002, 0.003)},
                                               "ood": {"gravity": (-0.001, 0.0)}})
    with pytest.raises(ValueError, match="unknown parameter field 'mass'"):
        metarl_jax.make("pendulum", ranges={"train": {"mass": (1.0, 2.0)}})
    with pytest.raises(ValueError, match="max_steps_in_episode"):
        metarl_jax.make("mountaincar-continuous", max_steps_in_episode=0)
    with pytest.raises(ValueError, match="unknown option"):
        metarl_jax.make("cartpole", pole_length=1.0)


# -- gymnax interop --------------------------------------------------------------


def test_cartpole_inside_gymnax_log_wrapper():
    env = LogWrapper(CartPole())
    params = CartPole().default_params

    @jax.jit
    def run(key):
        key_reset, key_steps = jax.random.split(key)
        obs, state = env.reset(key_reset, params)

        def body(carry, step_key):
            obs, state = carry
            action = (obs[2] + 0.5 * obs[3] > 0).astype(jnp.int32)
            obs, state, reward, terminated, truncated, info = env.step(
                step_key, state, action, params
            )
            return (obs, state), (info["returned_episode"], info["returned_episode_returns"])

        return jax.lax.scan(body, (obs, state), jax.random.split(key_steps, 1200))[1]

    returned, returns = map(np.asarray, run(jax.random.key(9)))
    # a balancing policy reaches the 500-step limit: completed episodes of return 500
    assert returned.sum() >= 2
    np.testing.assert_array_equal(returns[returned], 500.0)


GYMNAX_CASES = {
    "cartpole": (
        CartPole(), gymnax_cartpole.CartPole(), gymnax_cartpole.EnvState,
        lambda p: gymnax_cartpole.EnvParams(
            **{f.name: getattr(p, f.name) for f in dataclasses.fields(p)},
            total_mass=p.masspole + p.masscart, polemass_length=p.masspole * p.length,
        ),
        dict(length=0.9, masspole=0.4),
    ),
    "mountaincar": (
        MountainCar(), gymnax_mc.MountainCar(), gymnax_mc.EnvState,
        lambda p: gymnax_mc.EnvParams(**dataclasses.asdict(p)), dict(force=0.0012),
    ),
    "mountaincar-continuous": (
        MountainCarContinuous(), gymnax_mcc.ContinuousMountainCar(), gymnax_mcc.EnvState,
        lambda p: gymnax_mcc.EnvParams(**dataclasses.asdict(p)), dict(power=0.002),
    ),
    "pendulum": (
        Pendulum(), gymnax_pendulum.Pendulum(), gymnax_pendulum.EnvState,
        lambda p: gymnax_pendulum.EnvParams(**dataclasses.asdict(p)), dict(m=1.3, l=0.8),
    ),
}


@pytest.mark.parametrize("name", sorted(GYMNAX_CASES))
def test_states_convert_to_and_from_gymnax(name):
    ours, theirs, their_state_cls, to_their_params, overrides = GYMNAX_CASES[name]
    params = ours.default_params.replace(**overrides)
    key = jax.random.key(10)
    _, state = ours.reset(key, params)
    for _ in range(3):  # move away from the reset state
        key, step_key = jax.random.split(key)
        action = ours.action_space(params).sample(step_key)
        _, state, *_ = ours.step(step_key, state, action, params)
    their_step = jax.jit(theirs.step_env)
    our_step = jax.jit(ours.step_no_reset)
    converted = their_state_cls(**dataclasses.asdict(state))
    _, their_next, *_ = their_step(key, converted, action, to_their_params(params))
    _, our_next, *_ = our_step(key, state, action, params)
    for field, value in dataclasses.asdict(our_next).items():
        np.testing.assert_allclose(
            np.squeeze(value), np.squeeze(getattr(their_next, field)), rtol=1e-6, atol=1e-6
        )
    # and back: gymnax's next state stepped by us equals gymnax stepping it
    back = type(state)(**{f: jnp.squeeze(v) for f, v in dataclasses.asdict(their_next).items()})
    _, ours_from_back, *_ = our_step(key, back, action, params)
    _, theirs_from_back, *_ = their_step(key, their_next, action, to_their_params(params))
    for field, value in dataclasses.asdict(ours_from_back).items():
        np.testing.assert_allclose(
            np.squeeze(value), np.squeeze(getattr(theirs_from_back, field)), rtol=1e-6, atol=1e-6
        )
