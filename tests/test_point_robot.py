"""PEARL's point robot against a NumPy transcription of oyster's PointEnv / SparsePointEnv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl_jax import tasks
from metarl_jax.envs.point_robot import PointRobot


def _reference_step(position, action, goal, sparse, radius=0.2):
    """oyster: NormalizedBoxEnv maps [-1, 1] onto [-0.1, 0.1]; reward after the move."""
    position = position + 0.1 * np.clip(action, -1, 1)
    dense = -np.sqrt(np.sum((position - goal) ** 2))
    if not sparse:
        return position, dense
    sparse_reward = dense * (dense >= -radius)
    if dense >= -radius:
        sparse_reward += 1
    return position, sparse_reward


@pytest.mark.parametrize("sparse", [False, True])
def test_dynamics_and_reward_match_the_reference(sparse):
    family = tasks.make("point-robot-sparse" if sparse else "point-robot")
    rng = np.random.default_rng(0)
    for task in range(5):
        params = family.sample_params(jax.random.PRNGKey(task))
        obs, state = family.env.reset(jax.random.PRNGKey(100 + task), params)
        position = np.asarray(obs, np.float64)
        if sparse:
            np.testing.assert_array_equal(obs, [0.0, 0.0])
        else:
            assert np.all(np.abs(position) <= 1.0)
        goal = np.asarray(params.goal, np.float64)
        # head for the goal half the time so the sparse reward is exercised
        for t in range(20):
            if t % 2:
                action = np.clip((goal - position) * 10, -1, 1)
            else:
                action = rng.uniform(-1.5, 1.5, 2)
            obs, state, reward, terminated, truncated, info = family.env.step(
                jax.random.PRNGKey(t), state, jnp.asarray(action, jnp.float32), params)
            position, expected = _reference_step(position, action, goal, sparse)
            if t < 19:
                np.testing.assert_allclose(obs, position, atol=1e-5)
            np.testing.assert_allclose(reward, expected, atol=1e-5)
            if sparse:
                np.testing.assert_allclose(info["dense_reward"],
                                           -np.sqrt(np.sum((position - goal) ** 2)), atol=1e-5)
            assert not bool(terminated)
            assert bool(truncated) == (t == 19)


def test_sparse_reward_is_paid_inside_the_radius_only():
    env = PointRobot(sparse=True)
    params = env.default_params.replace(goal=jnp.array([0.15, 0.0]))
    _, state = env.reset(jax.random.PRNGKey(0), params)
    _, state, reward, *_ = env.step(jax.random.PRNGKey(1), state, jnp.array([1.0, 0.0]), params)
    np.testing.assert_allclose(reward, 1.0 - 0.05, atol=1e-6)   # at 0.1, distance 0.05
    far = params.replace(goal=jnp.array([0.0, 0.35]))
    _, state = env.reset(jax.random.PRNGKey(0), far)
    _, state, reward, *_ = env.step(jax.random.PRNGKey(1), state, jnp.array([0.0, 1.0]), far)
    assert float(reward) == 0.0                                  # distance 0.25 > 0.2


def test_goal_sets_of_the_splits():
    dense = tasks.make("point-robot")
    goals = np.asarray(dense.sample(jax.random.PRNGKey(0), 500, "train").goal)
    assert np.all(np.abs(goals) <= 1.0) and goals.min() < -0.9 and goals.max() > 0.9
    ood = np.asarray(dense.sample(jax.random.PRNGKey(0), 500, "ood").goal)
    assert np.all(np.max(np.abs(ood), axis=1) > 1.0) and np.all(np.abs(ood) <= 1.5 + 1e-6)
    sparse = tasks.make("point-robot-sparse")
    for split, upper in (("train", True), ("test", True), ("ood", False)):
        goals = np.asarray(sparse.sample(jax.random.PRNGKey(1), 300, split).goal)
        np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0, atol=1e-5)
        assert np.all(goals[:, 1] >= -1e-6) if upper else np.all(goals[:, 1] <= 1e-6)
    assert float(sparse.sample_params(jax.random.PRNGKey(0)).goal_radius) == pytest.approx(0.2)


def test_bad_options_and_params():
    with pytest.raises(ValueError, match="goal_radius"):
        tasks.make("point-robot-sparse", goal_radius=0.0)
    with pytest.raises(ValueError, match="max_steps_in_episode"):
        tasks.make("point-robot", max_steps_in_episode=0)
    with pytest.raises(ValueError, match="sparse"):
        PointRobot(sparse=1)
    env = PointRobot()
    with pytest.raises(ValueError, match="goal"):
        env.validate_params(env.default_params.replace(goal=jnp.zeros((3,))))
    with pytest.raises(ValueError, match="goal_radius"):
        env.validate_params(env.default_params.replace(goal_radius=-1.0))
