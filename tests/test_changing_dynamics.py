"""Dynamics changing within an episode, and the envs' rewards of observations.

``ChangingDynamics`` is checked step by step against the plain env stepped
with the piece that should be in force; the families' change options against
their ranges; ``observation_reward`` against the step reward on random
states, actions and sampled tasks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
from metarl_jax.envs import (
    BernoulliBandit,
    CartPole,
    ChangingDynamics,
    MountainCar,
    MountainCarContinuous,
    Navigation2D,
    Pendulum,
)
from metarl_jax.envs.cartpole import CartPoleState
from metarl_jax.envs.mountain_car import MountainCarState
from metarl_jax.envs.navigation import NavigationState
from metarl_jax.envs.pendulum import PendulumState
from metarl_jax.tasks import family_options

N = 512
REWARD_FAMILIES = ("cartpole", "pendulum", "mountaincar-continuous", "navigation2d")


# -- observation_reward of the plain envs ----------------------------------------------


def _random_transitions(name, rng, n):
    """``(states, actions)`` of ``n`` random transitions of family ``name``'s env."""
    t = jnp.asarray(rng.integers(0, 50, n), jnp.int32)

    def u(low, high, shape=(n,)):
        return jnp.asarray(rng.uniform(low, high, shape), jnp.float32)

    if name == "cartpole":
        state = CartPoleState(x=u(-2.6, 2.6), x_dot=u(-3, 3), theta=u(-0.25, 0.25),
                              theta_dot=u(-3, 3), time=t)
        return state, jnp.asarray(rng.integers(0, 2, n), jnp.int32)
    if name == "pendulum":
        state = PendulumState(theta=u(-2 * np.pi, 2 * np.pi), theta_dot=u(-8, 8),
                              last_u=jnp.zeros(n), time=t)
        return state, u(-3, 3, (n, 1))
    if name == "mountaincar-continuous":  # half of them next to the flag, to reach it
        near = rng.random(n) < 0.5
        position = np.where(near, rng.uniform(0.4, 0.6, n), rng.uniform(-1.2, 0.6, n))
        state = MountainCarState(position=jnp.asarray(position, jnp.float32),
                                 velocity=u(-0.07, 0.07), time=t)
        return state, u(-1.5, 1.5, (n, 1))
    return NavigationState(position=u(-1, 1, (n, 2)), time=t), u(-0.3, 0.3, (n, 2))


def _tasks(name, n, split, **options):
    return metarl_jax.make(name, **options).sample(jax.random.key(1), n, split)


def _compare_rewards(name, ours, reward):
    assert ours.dtype == jnp.float32 and ours.shape == reward.shape
    if name == "pendulum":  # the angle is recovered from (cos, sin) up to rounding
        np.testing.assert_allclose(ours, reward, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_array_equal(ours, reward)


@pytest.mark.parametrize("name", REWARD_FAMILIES)
@pytest.mark.parametrize("split", ["train", "ood"])
def test_observation_reward_equals_step_reward(name, split):
    family = metarl_jax.make(name)
    env = family.env
    assert env.has_observation_reward
    states, actions = _random_transitions(name, np.random.default_rng(0), N)
    params = family.sample(jax.random.key(2), N, split)
    keys = jax.random.split(jax.random.key(3), N)
    next_obs, _, reward, terminated, _, _ = jax.jit(jax.vmap(env.step_no_reset))(
        keys, states, actions, params)
    obs = jax.vmap(env.get_obs)(states)
    ours = jax.jit(jax.vmap(env.observation_reward))(obs, actions, next_obs, params)
    _compare_rewards(name, ours, reward)
    if name == "mountaincar-continuous":
        assert 0 < int(terminated.sum()) < N  # the goal bonus is exercised
    single = jax.tree.map(lambda x: x[0], (obs, actions, next_obs, params))
    assert env.observation_reward(*single).shape == ()


def test_navigation_reward_ignores_velocity_scale_and_default_is_the_old_env():
    env = Navigation2D()
    assert env.default_params.velocity_scale is None
    states, actions = _random_transitions("navigation2d", np.random.default_rng(1), N)
    goals = jnp.asarray(np.random.default_rng(2).uniform(-0.5, 0.5, (N, 2)), jnp.float32)
    plain = env.default_params.replace(goal=goals, max_steps_in_episode=jnp.full(N, 100))
    step = jax.jit(jax.vmap(env.step_no_reset, in_axes=(None, 0, 0, 0)))
    key = jax.random.key(0)
    ones = step(key, states, actions, plain.replace(velocity_scale=jnp.ones((N, 2))))
    jax.tree.map(np.testing.assert_array_equal, step(key, states, actions, plain), ones)
    scale = jnp.asarray(np.random.default_rng(3).uniform(-1, 1, (N, 2)), jnp.float32)
    scaled = plain.replace(velocity_scale=scale)
    next_obs, _, reward, *_ = step(key, states, actions, scaled)
    np.testing.assert_allclose(next_obs - states.position,
                               jnp.clip(actions, -0.1, 0.1) * scale, atol=1e-6)
    ours = jax.vmap(env.observation_reward)(states.position, actions, next_obs, scaled)
    np.testing.assert_array_equal(ours, reward)
    env.validate_params(scaled)
    with pytest.raises(ValueError, match="velocity_scale must be finite"):
        env.validate_params(scaled.replace(velocity_scale=scale.at[0, 1].set(jnp.nan)))
    with pytest.raises(ValueError, match=r"velocity_scale must have shape \[..., 2\]"):
        env.validate_params(scaled.replace(velocity_scale=jnp.ones(3)))


def test_envs_without_an_observation_reward_say_so():
    for env in (BernoulliBandit(3), MountainCar(), ChangingDynamics(MountainCar(), 2, 5)):
        assert not env.has_observation_reward
        with pytest.raises(NotImplementedError, match="no reward function of observations"):
            env.observation_reward(None, None, None, None)


# -- the wrapper, step by step -----------------------------------------------------------


def _rollout(env, params, key, num_steps, policy):
    """``num_steps`` auto-resetting steps from a reset: per-step dict of arrays."""
    key_reset, key_steps = jax.random.split(key)
    obs, state = env.reset(key_reset, params)

    def body(carry, step_key):
        obs, state = carry
        action = policy(jax.random.fold_in(step_key, 1))
        nobs, nstate, reward, terminated, truncated, info = env.step(step_key, state, action,
                                                                      params)
        out = dict(obs=obs, state=state, action=action, reward=reward, piece=info["piece"],
                   next_piece=nstate.piece, final=info["final_observation"],
                   done=terminated | truncated, next_obs=nobs)
        return (nobs, nstate), out

    return jax.lax.scan(body, (obs, state), jax.random.split(key_steps, num_steps))[1]


def _torque(key):
    return jax.random.uniform(key, (1,), jnp.float32, -2.0, 2.0)


def test_change_every_uses_piece_k_on_steps_50k_to_50k_plus_50():
    family = metarl_jax.make("pendulum", change_every=50)
    env, plain = family.env, Pendulum()
    assert env.num_pieces == 4 and env.name == "ChangingPendulum-v1"
    params = family.sample_params(jax.random.key(0))
    num_steps = 260  # one 200-step episode, then 60 steps of the next

    @jax.jit
    def run(key):
        out = _rollout(env, params, key, num_steps, _torque)
        t = out["state"].time
        expected = jnp.minimum(t // 50, 3)

        def plain_step(inner, action, piece):
            return plain.step_no_reset(key, inner, action,
                                       jax.tree.map(lambda x: x[piece], params.pieces))

        ref = jax.vmap(plain_step)(out["state"].inner, out["action"], expected)
        first = jax.vmap(plain_step, in_axes=(0, 0, None))(out["state"].inner, out["action"], 0)
        return out, expected, ref, first

    out, expected, ref, first = run(jax.random.key(1))
    t = np.asarray(out["state"].time)
    np.testing.assert_array_equal(t, np.r_[np.arange(200), np.arange(60)])
    np.testing.assert_array_equal(out["piece"], expected)
    np.testing.assert_array_equal(out["final"], ref[0])
    np.testing.assert_array_equal(out["reward"], ref[2])
    # the pieces really differ: piece 0's params would have stepped differently
    assert not np.allclose(np.asarray(first[0])[50:200], np.asarray(ref[0])[50:200])
    np.testing.assert_array_equal(np.asarray(first[0])[:50], np.asarray(ref[0])[:50])
    # auto-reset at the horizon: the next episode starts again in piece 0
    assert bool(out["done"][199]) and int(out["next_piece"][199]) == 0
    np.testing.assert_array_equal(np.asarray(out["piece"])[200:250], 0)


def test_change_prob_one_advances_every_step_and_resets_with_the_episode():
    family = metarl_jax.make("pendulum", max_steps_in_episode=10, change_prob=1.0, num_pieces=3)
    env = family.env
    assert env.step_uses_key and env.num_pieces == 3
    params = family.sample_params(jax.random.key(0))
    out = jax.jit(lambda k: _rollout(env, params, k, 35, _torque))(jax.random.key(2))
    t = np.asarray(out["state"].time)
    np.testing.assert_array_equal(t, np.arange(35) % 10)
    np.testing.assert_array_equal(out["piece"], t % 3)


def test_change_prob_changes_at_about_the_right_rate():
    p, num_envs, num_steps = 0.05, 64, 200
    family = metarl_jax.make("pendulum", change_prob=p)
    env = family.env
    assert env.num_pieces == 2
    params = family.sample(jax.random.key(0), num_envs)
    keys = jax.random.split(jax.random.key(3), num_envs)
    out = jax.jit(jax.vmap(lambda k, q: _rollout(env, q, k, num_steps, _torque)))(keys, params)
    piece, nxt, done = (np.asarray(out[k]) for k in ("piece", "next_piece", "done"))
    changed = (nxt != piece)[~done]
    sigma = np.sqrt(p * (1 - p) / changed.size)
    assert abs(changed.mean() - p) < 5 * sigma
    assert np.all(piece[:, 0] == 0) and np.all(np.isin(piece, [0, 1]))
    # the envs draw independently: their change times differ
    assert len({tuple(row) for row in piece}) > num_envs // 2


def test_piece_is_not_observed():
    family = metarl_jax.make("pendulum", change_prob=1.0)
    env, params = family.env, family.sample_params(jax.random.key(0))
    obs, state = env.reset(jax.random.key(1), params)
    assert env.observation_space(params).shape == Pendulum().observation_space().shape
    assert obs.shape == (3,)
    np.testing.assert_array_equal(env.get_obs(state, params),
                                  env.get_obs(state.replace(piece=jnp.int32(1)), params))
    action = jnp.array([0.5], jnp.float32)
    nobs, nstate, *_ , info = env.step(jax.random.key(2), state, action, params)
    assert int(nstate.piece) == 1 and int(info["piece"]) == 0
    np.testing.assert_array_equal(nobs, Pendulum().get_obs(nstate.inner))


# -- the families' change options -------------------------------------------------------------

PHYSICS = {
    "pendulum": {},
    "cartpole": {"random_push_direction": True},
    "mountaincar": {},
    "mountaincar-continuous": {},
}


@pytest.mark.parametrize("name", sorted(PHYSICS))
def test_sampled_pieces_redraw_the_varied_fields_within_ranges(name):
    plain = metarl_jax.make(name, **PHYSICS[name])
    family = metarl_jax.make(name, change_every=plain.sample_params(
        jax.random.key(0)).max_steps_in_episode // 3 + 1, **PHYSICS[name])
    assert family.env.num_pieces == 3
    assert "changing dynamics" in family.description
    assert family.ranges["train"]["change"].startswith(f"every {family.env.change_every} steps")
    for split in ("train", "ood"):
        params = family.sample(jax.random.key(4), 64, split)
        family.env.validate_params(params)
        pieces = params.pieces
        for field, (low, high) in plain.ranges[split].items():
            values = np.asarray(getattr(pieces, field))
            assert values.shape == (64, 3) and values.dtype == np.float32
            assert np.all(values[:, 1:] != values[:, :1])
            magnitude = np.abs(values) if field == "force_mag" else values
            assert magnitude.min() >= np.float32(low) and magnitude.max() <= np.float32(high)
        if name == "cartpole":  # each piece draws its own push direction
            signs = np.sign(np.asarray(pieces.force_mag))
            assert 0.3 < (signs[:, 1:] != signs[:, :1]).mean() < 0.7
        fixed = [f for f in ("max_speed", "goal_position", "dt", "tau")
                 if hasattr(pieces, f)]
        for field in fixed:
            values = np.asarray(getattr(pieces, field))
            np.testing.assert_array_equal(values, values[:, :1].repeat(3, 1))


def test_navigation_pieces_cripple_or_reverse_one_axis():
    family = metarl_jax.make("navigation2d", change_every=25)
    env = family.env
    assert env.num_pieces == 4
    diagonal = lambda key: jnp.full((2,), 0.1, jnp.float32)  # noqa: E731
    rollout = jax.jit(lambda k, task: _rollout(env, task, k, 100, diagonal))
    for split, (low, high) in (("train", (0.0, 0.5)), ("ood", (-1.0, -0.5))):
        params = family.sample(jax.random.key(5), 64, split)
        env.validate_params(params)
        scale, goal = np.asarray(params.pieces.velocity_scale), np.asarray(params.pieces.goal)
        np.testing.assert_array_equal(scale[:, 0], 1.0)
        np.testing.assert_array_equal(goal, goal[:, :1].repeat(4, 1))
        crippled = scale[:, 1:].min(-1)
        assert np.all((crippled >= low) & (crippled <= high))
        assert np.all(scale[:, 1:].max(-1) == 1.0)
        axes = scale[:, 1:].argmin(-1)
        assert 0.3 < axes.mean() < 0.7  # either axis breaks

        # moving diagonally at full speed: the crippled axis moves by 0.1 * scale
        task = jax.tree.map(lambda x: x[0], params)
        out = rollout(jax.random.key(6), task)
        moved = np.asarray(out["final"]) - np.asarray(out["obs"])
        piece = np.asarray(out["piece"])
        np.testing.assert_array_equal(piece, np.arange(100) // 25)
        expected = 0.1 * np.asarray(task.pieces.velocity_scale)[piece]
        np.testing.assert_allclose(moved, expected, atol=1e-6)
        later = moved[25:][np.arange(75), axes[0][piece[25:] - 1]]  # the piece's broken axis
        if split == "ood":
            assert np.all(later < 0)  # reversed
        else:
            assert np.all(later < 0.05 + 1e-6)  # slower than the intact 0.1


@pytest.mark.parametrize("name", REWARD_FAMILIES)
def test_wrapped_observation_reward_equals_step_reward(name):
    family = metarl_jax.make(name, change_prob=0.3, num_pieces=3)
    env = family.env
    assert env.has_observation_reward
    params = family.sample_params(jax.random.key(7), "ood")
    space = env.action_space(params)

    def run(key):
        out = _rollout(env, params, key, 300, lambda k: 2 * space.sample(k))
        ours = jax.vmap(env.observation_reward, in_axes=(0, 0, 0, None))(
            out["obs"], out["action"], out["final"], params)
        return ours, out["reward"], out["piece"]

    ours, reward, piece = jax.jit(run)(jax.random.key(8))
    _compare_rewards(name, ours, reward)
    assert len(np.unique(np.asarray(piece))) == 3


def test_default_families_are_unchanged_and_list_the_new_options():
    for name in ("cartpole", "pendulum", "mountaincar", "mountaincar-continuous",
                 "navigation2d"):
        options = family_options(name)
        assert {k: options[k] for k in ("change_every", "change_prob", "num_pieces")} == dict(
            change_every=None, change_prob=None, num_pieces=None)
        family = metarl_jax.make(name)
        assert not isinstance(family.env, ChangingDynamics)
        assert "change" not in family.ranges["train"]
    assert metarl_jax.make("pendulum").env == Pendulum()
    a = metarl_jax.make("pendulum", change_every=50).env
    assert a == ChangingDynamics(Pendulum(), 4, change_every=50)
    assert hash(a) == hash(ChangingDynamics(Pendulum(), 4, change_every=50))
    assert a != ChangingDynamics(Pendulum(), 4, change_prob=0.5)
    assert ChangingDynamics(Pendulum(), 2, change_prob=0.5) != ChangingDynamics(
        Pendulum(), 2, change_prob=0.25)


def test_wrapper_default_params_and_validation():
    env = ChangingDynamics(Navigation2D(), 3, change_every=5)
    obs, state = env.reset(jax.random.key(0))  # default params: every piece the default
    env.step(jax.random.key(1), state, jnp.zeros(2))
    family = metarl_jax.make("pendulum", change_every=100)
    params = family.sample_params(jax.random.key(0))
    family.env.validate_params(params)
    bad_m = params.replace(pieces=params.pieces.replace(m=params.pieces.m.at[1].set(-1.0)))
    with pytest.raises(ValueError, match=r"params\.m"):
        family.env.validate_params(bad_m)
    short = params.replace(pieces=jax.tree.map(lambda x: x[:1], params.pieces))
    with pytest.raises(ValueError, match="piece axis of size 2"):
        family.env.validate_params(short)
    with pytest.raises(ValueError, match="max_steps_in_episode differs"):
        family.env.validate_params(params.replace(max_steps_in_episode=jnp.int32(150)))


@pytest.mark.parametrize(
    "make_it, match",
    [
        (lambda: ChangingDynamics(Pendulum(), 2), "exactly one of change_every"),
        (lambda: ChangingDynamics(Pendulum(), 2, 5, 0.5), "exactly one of change_every"),
        (lambda: ChangingDynamics(Pendulum(), 0, 5), "num_pieces"),
        (lambda: ChangingDynamics(Pendulum(), 2, change_every=0), "change_every"),
        (lambda: ChangingDynamics(Pendulum(), 2, change_every=2.5), "change_every"),
        (lambda: ChangingDynamics(Pendulum(), 2, change_prob=0.0), "change_prob"),
        (lambda: ChangingDynamics(Pendulum(), 2, change_prob=1.5), "change_prob"),
        (lambda: metarl_jax.make("pendulum", change_every=50, change_prob=0.1),
         "exactly one of change_every"),
        (lambda: metarl_jax.make("pendulum", num_pieces=3), "exactly one of change_every"),
        (lambda: metarl_jax.make("pendulum", change_every=200), "never change"),
        (lambda: metarl_jax.make("navigation2d", change_every=-1), "change_every"),
        (lambda: metarl_jax.make("pendulum", change_every=50, num_pieces=3),
         r"num_pieces=3 is inconsistent.*= 4 pieces"),
        (lambda: metarl_jax.make("cartpole", change_prob=0.1, num_pieces=1), "num_pieces"),
        (lambda: metarl_jax.make("mountaincar-continuous", change_prob=-0.1), "change_prob"),
        (lambda: metarl_jax.make("bandit-bernoulli", change_every=10),
         r"unknown option\(s\) \['change_every'\]; valid options: \['arms', 'trial_pulls'\]"),
        (lambda: metarl_jax.make("tabular-mdp", change_prob=0.1), "valid options"),
    ],
)
def test_bad_change_options_raise(make_it, match):
    with pytest.raises(ValueError, match=match):
        make_it()


def test_wrapper_needs_one_of_our_envs():
    with pytest.raises(TypeError, match="Environment"):
        ChangingDynamics(object(), 2, change_every=1)
    env = ChangingDynamics(CartPole(), 2, change_every=3)
    assert env.num_actions == 2 and not env.step_uses_key
    assert ChangingDynamics(MountainCarContinuous(), 2, change_prob=0.5).step_uses_key
