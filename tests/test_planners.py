"""MPC planners: random shooting, CEM and MPPI on quadratics with a known optimum.

Each test vmaps a planner over several targets/keys so one compile covers them;
``sequence_return`` is ``-sum_t ||a_t - target_t||^2``, whose box-constrained
maximiser is ``clip(target, low, high)``.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metarl_jax.rl import PlannerConfig, check_planner_config, plan, plan_discrete, shift_plan


def _quadratic(target):
    return lambda actions: -jnp.sum((actions - target) ** 2, axis=(-2, -1))


def _targets(seed, count, horizon, action_dim, low=-0.8, high=0.8):
    return jax.random.uniform(jax.random.key(seed), (count, horizon, action_dim),
                              minval=low, maxval=high)


# one config per kind on a 30-dimensional quadratic (horizon 10, 3 actions), shared by
# the tests below so each kind compiles once; the boxes and warm starts are arguments
SEARCH = dict(num_candidates=300, horizon=10, iterations=30, num_elites=60, temperature=0.5,
              min_std=1e-3)
BATCH = 4
BOX = (-jnp.ones(3), jnp.ones(3))


@functools.lru_cache(maxsize=None)
def _planner(config):
    """``jit(vmap(plan))`` of each target's quadratic over keys, targets and warm starts."""

    def one(key, target, low, high, init_mean):
        return plan(key, _quadratic(target), low, high, config, init_mean=init_mean)

    return jax.jit(jax.vmap(one, (0, 0, None, None, 0)))


def _search(kind, targets, box=BOX, init_mean=None, seed=0):
    if init_mean is None:
        init_mean = jnp.broadcast_to(0.5 * (box[0] + box[1]), targets.shape)  # the default
    keys = jax.random.split(jax.random.key(seed), targets.shape[0])
    return _planner(PlannerConfig(kind=kind, **SEARCH))(keys, targets, *box, init_mean)


def _check_returns(sequences, targets, info):
    """``info["return"]`` is the predicted return of the returned sequence."""
    np.testing.assert_allclose(info["return"], -jnp.sum((sequences - targets) ** 2, (1, 2)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_cem_and_mppi_find_the_optimum_of_a_quadratic(kind):
    targets = _targets(1, BATCH, 10, 3)
    sequences, info = _search(kind, targets)
    assert sequences.shape == targets.shape and sequences.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(sequences - targets))) < 1e-2
    _check_returns(sequences, targets, info)
    assert info["history"].shape == (BATCH, SEARCH["iterations"])


def test_random_shooting_finds_the_optimum_of_a_small_quadratic():
    config = PlannerConfig(kind="rs", num_candidates=300, horizon=3, iterations=2)
    targets = _targets(1, BATCH, 3, 1)

    def one(key, target):  # no warm start: candidates are all uniform samples
        return plan(key, _quadratic(target), -jnp.ones(1), jnp.ones(1), config)

    sequences, info = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), BATCH), targets)
    assert float(jnp.max(jnp.abs(sequences - targets))) < 0.3
    _check_returns(sequences, targets, info)


def test_cem_and_mppi_beat_random_shooting_at_equal_budget():
    targets = _targets(2, BATCH, 10, 3)
    returns = {}
    for kind in ("rs", "cem", "mppi"):  # 30 x 300 evaluated sequences each, common keys
        sequences, info = _search(kind, targets, seed=3)
        assert bool(jnp.all((sequences >= -1.0) & (sequences <= 1.0)))
        returns[kind] = float(jnp.mean(info["return"]))
    assert returns["cem"] > returns["rs"] and returns["mppi"] > returns["rs"], returns


@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_box_is_respected_and_an_outside_optimum_lands_on_the_edge(kind):
    low, high = jnp.array([-1.0, 0.0, -0.5]), jnp.array([0.5, 2.0, 0.5])
    inside = low + (high - low) * jax.random.uniform(jax.random.key(3), (BATCH, 10, 3),
                                                     minval=0.1, maxval=0.9)
    # steps 0 and 1 aim outside the box, above on some actions and below on others
    targets = inside.at[:, 0].set(jnp.array([3.0, -2.0, 5.0])).at[:, 1].set(
        jnp.array([-4.0, 5.0, -3.0]))
    sequences, info = _search(kind, targets, (low, high))
    assert bool(jnp.all((sequences >= low) & (sequences <= high)))
    assert bool(jnp.all((info["mean"] >= low) & (info["mean"] <= high)))
    optimum = jnp.clip(targets, low, high)
    np.testing.assert_allclose(sequences[:, :2], optimum[:, :2], atol=1e-3)
    # the pinned actions' steep slopes dominate the ranking, so the inner ones converge slower
    np.testing.assert_allclose(sequences, optimum, atol=0.1)


def test_random_shooting_keeps_an_optimal_warm_start_exactly():
    targets = _targets(4, BATCH, 10, 3)
    sequences, info = _search("rs", targets, init_mean=targets)
    np.testing.assert_array_equal(sequences, targets)
    np.testing.assert_array_equal(info["return"], 0.0)


def test_shift_plan_drops_the_first_action_and_appends_the_centre():
    low, high = jnp.array([-1.0, 0.0]), jnp.array([3.0, 1.0])
    sequence = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(shift_plan(sequence, low, high),
                                  [[2.0, 3.0], [4.0, 5.0], [1.0, 0.5]])


def _table_return(table):
    """``sum_t table[t, a_t]`` of int sequences ``[N, horizon]``."""
    def sequence_return(actions):
        return jnp.sum(jnp.take_along_axis(table[None], actions[..., None], -1)[..., 0], -1)
    return sequence_return


@pytest.mark.parametrize("kind, horizon, num_actions", [
    ("rs", 3, 3), ("cem", 8, 5), ("mppi", 8, 5),
])
def test_plan_discrete_finds_the_best_sequence_of_a_reward_table(kind, horizon, num_actions):
    config = PlannerConfig(kind=kind, num_candidates=200, horizon=horizon,
                           iterations=2 if kind == "rs" else 10, num_elites=20, temperature=0.5)
    tables = jax.random.normal(jax.random.key(5), (3, horizon, num_actions))

    def one(key, table):
        return plan_discrete(key, _table_return(table), num_actions, config)

    sequences, info = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(6), 3), tables)
    assert sequences.dtype == jnp.int32 and sequences.shape == (3, horizon)
    np.testing.assert_array_equal(sequences, jnp.argmax(tables, -1))
    np.testing.assert_allclose(info["return"], jnp.sum(jnp.max(tables, -1), -1), rtol=1e-5)


def test_plan_discrete_keeps_an_optimal_warm_start():
    table = jax.random.normal(jax.random.key(7), (12, 4))
    best = jnp.argmax(table, -1)
    config = PlannerConfig(kind="rs", num_candidates=50, horizon=12)
    sequence, _ = plan_discrete(jax.random.key(0), _table_return(table), 4, config,
                                init_sequence=best)
    np.testing.assert_array_equal(sequence, best)


def test_jit_and_vmap_over_tasks_without_retracing():
    low, high = -jnp.ones(2), jnp.ones(2)
    config = PlannerConfig(kind="cem", num_candidates=64, horizon=5, iterations=3, num_elites=8)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def plan_tasks(keys, targets, init_means):
        def one(key, target, init_mean):
            return plan(key, _quadratic(target), low, high, config, init_mean=init_mean)
        return jax.vmap(one)(keys, targets, init_means)

    keys = jax.random.split(jax.random.key(0), 4)
    first, _ = plan_tasks(keys, _targets(8, 4, 5, 2), jnp.zeros((4, 5, 2)))
    warm = jax.vmap(shift_plan, (0, None, None))(first, low, high)
    second, _ = plan_tasks(keys, _targets(9, 4, 5, 2), warm)
    assert first.shape == second.shape == (4, 5, 2)
    chex.clear_trace_counter()


@pytest.mark.parametrize("field, value, message", [
    ("kind", "ilqr", "kind must be one of ('rs', 'cem', 'mppi')"),
    ("num_candidates", 0, "num_candidates"),
    ("horizon", -1, "horizon"),
    ("iterations", 2.0, "iterations"),
    ("num_elites", 0, "num_elites"),
    ("smoothing", 1.0, "smoothing"),
    ("temperature", 0.0, "temperature"),
    ("init_std", -0.1, "init_std"),
    ("min_std", float("nan"), "min_std"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PlannerConfig(**{field: value})


def test_more_elites_than_candidates_is_an_error_for_cem_only():
    with pytest.raises(ValueError, match="num_elites must be <= num_candidates"):
        PlannerConfig(kind="cem", num_candidates=10, num_elites=11)
    config = PlannerConfig(kind="rs", num_candidates=10, num_elites=11)
    check_planner_config(config)  # unused by rs
    with pytest.raises(ValueError, match="num_elites"):
        check_planner_config(_Duck(kind="cem", num_candidates=10, num_elites=11))


class _Duck:
    """A config-like object that skipped ``PlannerConfig.__post_init__``."""

    def __init__(self, **fields):
        defaults = {f.name: f.default for f in PlannerConfig.__dataclass_fields__.values()}
        self.__dict__.update(defaults, **fields)


def test_bad_shapes_are_errors_naming_the_argument():
    config = PlannerConfig(num_candidates=8, horizon=3)
    low, high = -jnp.ones(2), jnp.ones(2)
    with pytest.raises(ValueError, match="init_mean"):
        plan(jax.random.key(0), _quadratic(jnp.zeros((3, 2))), low, high, config,
             init_mean=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="low and high"):
        plan(jax.random.key(0), _quadratic(jnp.zeros((3, 2))), low, jnp.ones(3), config)
    with pytest.raises(ValueError, match="sequence_return"):
        plan(jax.random.key(0), lambda a: jnp.zeros((8, 1)), low, high, config)
    with pytest.raises(ValueError, match="num_actions"):
        plan_discrete(jax.random.key(0), lambda a: jnp.zeros(8), 0, config)
