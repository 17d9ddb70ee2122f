"""Reptile: the first-order relation to MAML, the outer step, learning, no retrace,
config errors, populations."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import metarl_jax
from metarl_jax.algorithms import maml, reptile
from metarl_jax.core.population import make_population, population_members

SIZES = dict(meta_batch_size=2, inner_episodes=4, horizon=8, hidden_sizes=(8,),
             activation="tanh", eval_episodes=4)


@pytest.fixture(scope="module")
def nav():
    return metarl_jax.make("navigation2d")


def _flat(tree):
    return ravel_pytree(tree)[0]


@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_direction_is_the_sum_of_inner_gradients_and_contains_fomaml(nav, num_inner_steps):
    """With plain SGD inner steps of size alpha, Reptile's direction on one task is

        (theta - theta_K) / alpha = sum_{k<K} grad L_k(theta_k),

    the inner-loss gradients along the path, L_k the policy-gradient loss on
    the fresh rollouts D_k of theta_k. Each term is first-order MAML's
    meta-gradient with k inner steps on the same rollouts (FOMAML's
    meta-gradient is the outer-loss gradient at the adapted point, and with
    the same keys maml samples the same D_0..D_k). So:

    * K = 1: the direction is grad L_0(theta), the gradient at theta itself:
      joint multi-task training (Nichol et al. 2018), *not* FOMAML's
      one-step direction grad L_1(theta_1), taken at the adapted point;
    * K = 2: grad L_0(theta) + grad L_1(theta_1): the joint-training gradient
      plus exactly FOMAML's one-step direction.

    This is the exact sense in which Reptile reduces to / contains
    first-order MAML's update direction.
    """
    alpha = 0.5
    learner = reptile.make(reptile.Config(num_inner_steps=num_inner_steps, inner_lr=alpha,
                                          **SIZES), nav)
    theta = learner.init(jax.random.PRNGKey(0)).meta_params
    task = nav.sample(jax.random.PRNGKey(1), 1)
    key = jax.random.PRNGKey(2)
    adapted, _, _ = jax.jit(learner.adapt_tasks)(theta, task, key)
    direction = (_flat(theta) - _flat(jax.tree.map(lambda x: x[0], adapted))) / alpha

    def fomaml_direction(k):
        """First-order MAML's meta-gradient with k inner steps, same rollouts."""
        fo = maml.make(maml.Config(num_inner_steps=k, first_order=True, inner_lr=alpha,
                                   outer_optimizer="adam", train_pretrained=False, **SIZES), nav)
        trajs = jax.jit(fo.sample)(theta, task, key)
        return _flat(jax.jit(jax.grad(fo.meta_loss))(theta, trajs))

    terms = [fomaml_direction(k) for k in range(num_inner_steps)]
    scale = float(jnp.max(jnp.abs(direction)))
    assert scale > 1e-3  # a non-trivial direction
    np.testing.assert_allclose(direction, sum(terms), rtol=1e-4, atol=1e-4 * scale)
    one_step_fomaml = terms[1] if num_inner_steps == 2 else fomaml_direction(1)
    if num_inner_steps == 1:
        # the "K = 1 reduces to FOMAML" holds only in this corrected sense:
        # the gradient at theta (K = 1) and at theta_1 (FOMAML) differ on real data
        assert not np.allclose(direction, one_step_fomaml, rtol=1e-2, atol=1e-2 * scale)
    else:
        np.testing.assert_allclose(direction - terms[0], one_step_fomaml, rtol=1e-4,
                                   atol=1e-4 * scale)


def test_outer_step_lands_on_the_task_mean_and_anneals(nav):
    """eps = 1 (plain "sgd") moves theta onto the mean of the adapted parameters;
    annealed over one iteration, eps is 0 at the second and theta stays put;
    "adam" 's first step is theta - eps * sign(theta - mean theta')."""
    config = reptile.Config(num_inner_steps=2, outer_lr=1.0, anneal_iterations=1,
                            train_pretrained=False, **SIZES)
    learner = reptile.make(config, nav)
    state = learner.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(5)
    task_key, adapt_key, _ = jax.random.split(key, 3)  # as update splits it
    tasks = nav.sample(task_key, config.meta_batch_size, "train")
    adapted, returns, _ = jax.jit(learner.adapt_tasks)(state.meta_params, tasks, adapt_key)
    chex.assert_shape(returns, (config.meta_batch_size, config.num_inner_steps + 1))
    target = _flat(jax.tree.map(lambda x: jnp.mean(x, axis=0), adapted))
    update = jax.jit(learner.update)
    new_state, metrics = update(state, key)
    np.testing.assert_allclose(_flat(new_state.meta_params), target, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["post_adaptation_return"], np.mean(returns[:, -1]),
                               rtol=1e-5)
    assert float(metrics["outer_step_size"]) == 1.0
    assert not np.allclose(target, _flat(state.meta_params))
    later, metrics = update(new_state, jax.random.PRNGKey(6))
    assert float(metrics["outer_step_size"]) == 0.0
    np.testing.assert_array_equal(_flat(later.meta_params), _flat(new_state.meta_params))

    adam = reptile.make(dataclasses.replace(config, outer_optimizer="adam", outer_lr=1e-2), nav)
    stepped, _ = jax.jit(adam.update)(adam.init(jax.random.PRNGKey(0)), key)
    pseudo_grad = _flat(state.meta_params) - target
    big = np.abs(pseudo_grad) > 1e-4  # Adam's epsilon matters only for tiny components
    np.testing.assert_allclose((_flat(state.meta_params) - _flat(stepped.meta_params))[big],
                               1e-2 * np.sign(pseudo_grad[big]), rtol=1e-3)


@pytest.mark.parametrize("inner_algorithm, outer_optimizer, minibatches",
                         [("pg", "sgd", 1), ("ppo", "adam", 2)])
def test_update_runs_without_retracing_and_evaluates(nav, inner_algorithm, outer_optimizer,
                                                     minibatches):
    config = reptile.Config(inner_algorithm=inner_algorithm, outer_optimizer=outer_optimizer,
                            num_minibatches=minibatches, num_epochs=2, outer_lr=0.5, **SIZES)
    learner = reptile.make(config, nav)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state, key):
        return learner.update(state, key)

    state = learner.init(jax.random.PRNGKey(0))
    for i in range(3):
        state, metrics = update(state, jax.random.PRNGKey(10 + i))
    assert int(state.step) == 3
    for name in ("pre_adaptation_return", "post_adaptation_return", "pretrained_return",
                 "pseudo_grad_norm", "env_steps"):
        assert metrics[name].dtype == jnp.float32 and np.isfinite(float(metrics[name])), name
    # K + 1 rollouts per task, plus one per task for the pretrained baseline, at most
    # horizon steps per episode (navigation episodes end at the goal)
    most = config.meta_batch_size * config.inner_episodes * config.horizon * (
        config.num_inner_steps + 2)
    assert 0 < float(metrics["env_steps"]) <= most
    tasks = nav.sample(jax.random.PRNGKey(3), 3, split="test")
    curves = jax.jit(learner.evaluate, static_argnums=3)(state, tasks, jax.random.PRNGKey(4), 2)
    assert list(curves) == ["reptile", "pretrained", "random_init"]
    assert curves.x == (0, 1, 2) and curves.xlabel == "inner gradient steps"
    for curve in curves.values():
        chex.assert_shape(curve, (3, 3))
        assert np.all(np.isfinite(curve))


@pytest.mark.slow
def test_reptile_learns_to_adapt_on_navigation(nav, in_ci):
    """Post-adaptation return improves clearly over the initialisation's."""
    iterations = 15 if in_ci else 40
    config = reptile.Config(meta_batch_size=10, inner_episodes=10, horizon=50,
                            train_pretrained=False)
    learner = reptile.make(config, nav)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    history = []
    for i in range(iterations):
        state, metrics = update(state, jax.random.fold_in(jax.random.PRNGKey(1), i))
        history.append(float(metrics["post_adaptation_return"]))
    first, last = np.mean(history[:3]), np.mean(history[-3:])
    assert last > first + 0.25 * abs(first), (first, last)


@pytest.mark.parametrize("field, value, message", [
    ("meta_batch_size", 0, "meta_batch_size"),
    ("num_inner_steps", 0, "num_inner_steps"),
    ("inner_episodes", -1, "inner_episodes"),
    ("horizon", 0, "horizon"),
    ("num_epochs", 0, "num_epochs"),
    ("inner_lr", 0.0, "inner_lr"),
    ("outer_lr", -1.0, "outer_lr"),
    ("anneal_iterations", -1, "anneal_iterations"),
    ("gamma", 1.5, "gamma"),
    ("inner_algorithm", "trpo", "inner_algorithm"),
    ("outer_optimizer", "rmsprop", "outer_optimizer"),
    ("num_minibatches", 3, "num_minibatches .3. must divide inner_episodes .10."),
    ("hidden_sizes", (), "hidden_sizes"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        reptile.Config(**{field: value})


def test_make_rejects_another_config_and_evaluate_negative_steps(nav):
    with pytest.raises(TypeError, match="reptile.Config"):
        reptile.make(maml.Config(), nav)
    learner = reptile.make(reptile.Config(**SIZES), nav)
    state = learner.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="num_steps"):
        learner.evaluate(state, nav.sample(jax.random.PRNGKey(1), 2, "test"),
                         jax.random.PRNGKey(2), -1)


@pytest.mark.parametrize("inner_algorithm", ["pg", "ppo"])
def test_population_members_train_with_their_own_hyperparameters(nav, inner_algorithm):
    """Two members from the same seed and keys that differ only in ``inner_lr``
    diverge after one update; every other HYPERPARAMETERS field is traced too."""
    config = reptile.Config(inner_algorithm=inner_algorithm, anneal_iterations=10, **SIZES)
    sweep = {"inner_lr": [0.05, 0.1], "outer_lr": [0.5], "gamma": [0.95], "gae_lambda": [0.9],
             "clip_eps": [0.3]}
    assert set(sweep) == set(reptile.HYPERPARAMETERS)
    population = make_population(reptile, config, nav, population_members(1, sweep))
    assert len(population.members) == 2
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    state = population.init(keys)
    np.testing.assert_array_equal(*[_flat(population.member_state(state, i).meta_params)
                                    for i in range(2)])
    state, metrics = jax.jit(population.update)(state, jnp.stack([jax.random.PRNGKey(1)] * 2))
    assert bool(jnp.all(state.alive))
    chex.assert_shape(metrics["post_adaptation_return"], (2,))
    first, second = [_flat(population.member_state(state, i).meta_params) for i in range(2)]
    assert np.all(np.isfinite(first)) and not np.allclose(first, second)
