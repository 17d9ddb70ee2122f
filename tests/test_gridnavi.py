"""GridNavi (VariBAD): dynamics, goal set, reward, the exact Bayes-optimal planner and players."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
from metarl_jax.envs.gridnavi import MOVES, GridNavi, goal_cells
from metarl_jax.players import gridnavi


def expectimax(size, horizon, episodes):
    """Bayes-optimal value by expectimax over belief states (independent of the planner)."""
    goals = frozenset(tuple(map(int, g)) for g in goal_cells(size))

    def move(p, a):
        return tuple(min(max(p[i] + int(MOVES[a][i]), 0), size - 1) for i in range(2))

    @functools.lru_cache(maxsize=None)
    def value(e, t, pos, candidates, goal):
        if e == episodes:
            return 0.0
        if t == horizon:
            return value(e + 1, 0, (0, 0), candidates, goal)
        best = -np.inf
        for a in range(5):
            nxt = move(pos, a)
            if goal is not None:
                v = (1.0 if nxt == goal else -0.1) + value(e, t + 1, nxt, candidates, goal)
            elif nxt in candidates:
                p = 1.0 / len(candidates)
                v = (p * (1.0 + value(e, t + 1, nxt, frozenset(), nxt))
                     + (1 - p) * (-0.1 + value(e, t + 1, nxt, candidates - {nxt}, None)))
            else:
                v = -0.1 + value(e, t + 1, nxt, candidates, None)
            best = max(best, v)
        return best

    return value(0, 0, (0, 0), goals, None)


def test_goal_set_excludes_start_and_neighbours():
    cells = {tuple(c) for c in goal_cells(5)}
    assert len(cells) == 21
    assert cells == set(itertools.product(range(5), repeat=2)) - {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert len(goal_cells(3)) == 5
    with pytest.raises(ValueError, match="size >= 3"):
        goal_cells(2)
    with pytest.raises(ValueError, match="size >= 3"):
        metarl_jax.make("gridnavi", size=2)
    with pytest.raises(ValueError, match="episode_length"):
        metarl_jax.make("gridnavi", episode_length=0)


def test_dynamics_walls_and_reward():
    env = GridNavi(5, 15)
    params = env.default_params.replace(goal=jnp.array([2, 0]))
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    key = jax.random.PRNGKey(1)
    expected = [(4, (0, 0), -0.1), (3, (0, 0), -0.1), (1, (0, 1), -0.1), (2, (1, 1), -0.1),
                (3, (1, 0), -0.1), (2, (2, 0), 1.0), (0, (2, 0), 1.0), (2, (3, 0), -0.1)]
    for action, position, reward in expected:
        obs, state, r, terminated, truncated, _ = env.step(key, state, jnp.int32(action), params)
        np.testing.assert_array_equal(obs, position)
        assert float(r) == pytest.approx(reward)
        assert not bool(terminated)
    # the episode ends by truncation after 15 steps and restarts at the corner
    for _ in range(15 - len(expected) - 1):
        obs, state, *_ = env.step(key, state, jnp.int32(1), params)
    obs, state, r, terminated, truncated, info = env.step(key, state, jnp.int32(1), params)
    assert bool(truncated) and not bool(terminated)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    np.testing.assert_array_equal(info["final_observation"], [3.0, 4.0])


def test_family_samples_every_goal_cell_and_validates():
    family = metarl_jax.make("gridnavi")
    goals = np.asarray(family.sample(jax.random.PRNGKey(0), 2000, "test").goal)
    assert {tuple(g) for g in goals} == {tuple(c) for c in goal_cells(5)}
    with pytest.raises(ValueError, match="not a goal cell"):
        family.env.validate_params(family.env.default_params.replace(goal=np.array([1, 1])))


@pytest.mark.parametrize("setting", [(3, 4, 2), (3, 6, 3), (4, 6, 2), (4, 8, 3)])
def test_bayes_optimal_plan_matches_expectimax(setting):
    assert gridnavi.bayes_optimal_plan(*setting).value == pytest.approx(expectimax(*setting),
                                                                        abs=1e-9)


@pytest.mark.parametrize("setting", [(3, 6, 4), (4, 8, 3), (5, 15, 4)])
def test_bayes_optimal_policy_earns_the_planned_value_on_the_real_env(setting):
    size, horizon, episodes = setting
    plan = gridnavi.bayes_optimal_plan(size, horizon, episodes)
    returns = np.asarray(gridnavi.evaluate("bayes_optimal", goal_cells(size),
                                           jax.random.PRNGKey(0), size=size,
                                           episode_length=horizon, num_episodes=episodes))
    # every goal once: the average is the exact expectation under the uniform prior
    assert returns.sum(axis=1).mean() == pytest.approx(plan.value, abs=1e-4)


def test_players_order_and_oracle_value():
    size, horizon, episodes = 5, 15, 4
    goals = np.repeat(goal_cells(size), 40, axis=0)
    scores = {name: np.asarray(gridnavi.evaluate(name, goals, jax.random.PRNGKey(3),
                                                 num_episodes=episodes)).sum(axis=1).mean()
              for name in gridnavi.PLAYERS}
    exact = gridnavi.bayes_optimal_plan(size, horizon, episodes).value
    oracle = np.mean([gridnavi.known_goal_return(int(x + y), horizon) for x, y in goal_cells(5)])
    assert scores["known_goal"] == pytest.approx(episodes * oracle, abs=1e-4)
    assert scores["random"] < scores["belief_greedy"] <= exact + 0.15 < scores["known_goal"]


def test_belief_update_rules_out_visited_cells():
    env = GridNavi(3, 6)
    state = gridnavi._empty_belief(env)
    # arrived at (2, 0) with -0.1: that cell is ruled out, the goal is still unknown
    x = jnp.array([2, 0, 2, 0, 0, 0, 1, 0, 0, -0.1, 0.0], jnp.float32)
    visited, goal = gridnavi._belief_update(env, state, x)
    assert bool(visited[env.cell_of(jnp.array([2, 0]))]) and int(goal) == -1
    assert int(visited.sum()) == 1
    # arrived at (2, 1) with +1: the goal is found
    x = jnp.array([2, 1, 2, 1, 0, 1, 0, 0, 0, 1.0, 0.0], jnp.float32)
    _, goal = gridnavi._belief_update(env, (visited, goal), x)
    assert int(goal) == int(env.cell_of(jnp.array([2, 1])))


def test_bad_player_input():
    with pytest.raises(ValueError, match="unknown GridNavi player"):
        gridnavi.evaluate("psrl", goal_cells(5), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="not a goal cell"):
        gridnavi.evaluate("random", np.array([[0, 0]]), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="shape"):
        gridnavi.evaluate("random", np.array([1, 2]), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="episode_length"):
        gridnavi.bayes_optimal_plan(5, 0, 4)
