"""MAML: exact meta-gradients, first vs second order, config errors, learning."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import metarl_jax
from metarl_jax.algorithms import maml

TINY = dict(meta_batch_size=2, inner_episodes=4, horizon=8, hidden_sizes=(8,),
            activation="tanh", eval_episodes=4, cg_iters=3, line_search_steps=4)


@pytest.fixture(scope="module")
def nav():
    return metarl_jax.make("navigation2d")


def _directional_fd(f, params, direction, eps):
    flat, unravel = ravel_pytree(params)
    plus = f(unravel(flat + eps * direction))
    minus = f(unravel(flat - eps * direction))
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("num_inner_steps", [1, 2])
def test_meta_gradient_matches_finite_differences(nav, num_inner_steps):
    config = maml.Config(num_inner_steps=num_inner_steps, inner_lr=0.5, **TINY)
    learner = maml.make(config, nav)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = nav.sample(jax.random.PRNGKey(1), 2)
    trajs = jax.jit(learner.sample)(state.meta_params, tasks, jax.random.PRNGKey(2))
    loss = jax.jit(learner.meta_loss)
    grad = jax.grad(learner.meta_loss)(state.meta_params, trajs)
    flat_grad, _ = ravel_pytree(grad)
    rng = np.random.default_rng(0)
    for _ in range(3):
        direction = jnp.asarray(rng.normal(size=flat_grad.shape), jnp.float32)
        direction = direction / jnp.linalg.norm(direction)
        fd = _directional_fd(lambda p: loss(p, trajs), state.meta_params, direction, 1e-2)
        analytic = jnp.dot(flat_grad, direction)
        np.testing.assert_allclose(analytic, fd, rtol=3e-2, atol=3e-4)


def test_first_order_differs_from_second_order_unless_hessian_term_vanishes(nav):
    def meta_grad(first_order, inner_lr):
        config = maml.Config(first_order=first_order, inner_lr=inner_lr, **TINY)
        learner = maml.make(config, nav)
        state = learner.init(jax.random.PRNGKey(0))
        tasks = nav.sample(jax.random.PRNGKey(1), 2)
        trajs = learner.sample(state.meta_params, tasks, jax.random.PRNGKey(2))
        return ravel_pytree(jax.grad(learner.meta_loss)(state.meta_params, trajs))[0]

    # inner_lr = 0: theta' = theta, the second-order term alpha * H vanishes
    np.testing.assert_allclose(meta_grad(True, 0.0), meta_grad(False, 0.0), rtol=1e-5, atol=1e-7)
    first, second = meta_grad(True, 1.0), meta_grad(False, 1.0)
    rel = jnp.linalg.norm(first - second) / jnp.linalg.norm(second)
    assert rel > 1e-2, f"first- and second-order meta-gradients agree (rel diff {rel})"


@pytest.mark.parametrize("outer", ["adam", "ppo", "trpo"])
def test_update_runs_without_retracing(nav, outer):
    config = maml.Config(outer_optimizer=outer, **TINY)
    learner = maml.make(config, nav)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state, key):
        return learner.update(state, key)

    state = learner.init(jax.random.PRNGKey(0))
    for i in range(3):
        state, metrics = update(state, jax.random.PRNGKey(10 + i))
    assert int(state.step) == 3
    for name in ("pre_adaptation_return", "post_adaptation_return", "pretrained_return"):
        assert np.isfinite(float(metrics[name])), name
    if outer == "trpo":  # the accepted step satisfies the trust region
        assert 0.0 <= float(metrics["kl"]) <= config.max_kl
        assert float(metrics["step_fraction"]) > 0.0


def test_evaluate_gives_adaptation_curves(nav):
    config = maml.Config(eval_inner_lrs=(0.1, 0.05), **TINY)
    learner = maml.make(config, nav)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = nav.sample(jax.random.PRNGKey(3), 5, split="test")
    curves = jax.jit(learner.evaluate, static_argnums=3)(state, tasks, jax.random.PRNGKey(4), 3)
    assert set(curves) == {"maml", "pretrained", "random_init"}
    for curve in curves.values():
        chex.assert_shape(curve, (5, 4))
        assert np.all(np.isfinite(curve))
    # before any training the meta-parameters equal the pretrained ones
    np.testing.assert_allclose(curves["maml"], curves["pretrained"], rtol=1e-5)


def test_evaluate_takes_step_sizes_per_call_and_per_curve(nav):
    learner = maml.make(maml.Config(eval_inner_lrs=(0.1, 0.05), **TINY), nav)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = nav.sample(jax.random.PRNGKey(3), 3, split="test")
    key = jax.random.PRNGKey(4)
    evaluate = jax.jit(learner.evaluate, static_argnums=3)
    from_config = evaluate(state, tasks, key, 2)
    # the config's schedule passed explicitly (as a traced array) gives the same curves
    explicit = evaluate(state, tasks, key, 2, jnp.asarray([0.1, 0.05]))
    for name in from_config:
        np.testing.assert_allclose(explicit[name], from_config[name], rtol=1e-5)
    # a per-curve dict: step size 0 changes only the curve it names;
    # and curves it does not name keep the config's schedule
    frozen = evaluate(state, tasks, key, 2, {"maml": jnp.asarray([0.0])})
    np.testing.assert_allclose(frozen["pretrained"], from_config["pretrained"], rtol=1e-5)
    assert not np.allclose(frozen["maml"], from_config["maml"])
    with pytest.raises(ValueError, match="unknown curves"):
        learner.evaluate(state, tasks, key, 1, {"mamll": (0.1,)})
    with pytest.raises(ValueError, match="at least one step size"):
        learner.evaluate(state, tasks, key, 1, ())


def test_select_eval_lrs_picks_the_best_validation_size_per_step(nav):
    learner = maml.make(maml.Config(**TINY), nav)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = nav.sample(jax.random.PRNGKey(5), 4, split="train")
    key = jax.random.PRNGKey(6)
    candidates = (0.0, 0.5, 2.0)
    chosen, scores = maml.select_eval_lrs(learner, state.meta_params, tasks, key, 2, candidates)
    assert len(chosen) == 2 and np.shape(scores) == (2, 3)
    evaluate = jax.jit(learner.evaluate, static_argnums=3)
    for step in (1, 2):
        assert chosen[step - 1] == candidates[int(np.argmax(scores[step - 1]))]
        for lr, score in zip(candidates, scores[step - 1]):
            # each score is the mean return after `step` steps, earlier steps at the chosen sizes
            curve = evaluate(state, tasks, key, step, list(chosen[:step - 1]) + [lr])["maml"]
            np.testing.assert_allclose(float(curve[:, step].mean()), score, rtol=1e-4)
    # the pretrained parameter set reuses the compiled curves: no retrace
    compiled = maml._mean_curve._cache_size()
    maml.select_eval_lrs(learner, state.pretrained_params, tasks, key, 2, candidates)
    assert maml._mean_curve._cache_size() == compiled
    for bad in (dict(num_steps=0), dict(candidates=()), dict(candidates=(0.1, -0.1))):
        args = dict(num_steps=1, candidates=candidates) | bad
        with pytest.raises(ValueError, match="num_steps|candidates"):
            maml.select_eval_lrs(learner, state.meta_params, tasks, key, **args)
    meta_sgd = maml.make(maml.Config(learn_inner_lr=True, **TINY), nav)
    with pytest.raises(ValueError, match="learn_inner_lr"):
        maml.select_eval_lrs(meta_sgd, meta_sgd.init(key).meta_params, tasks, key, 1, candidates)


def test_learned_inner_lr_is_meta_trained(nav):
    config = maml.Config(learn_inner_lr=True, outer_optimizer="adam", outer_lr=1e-2, **TINY)
    learner = maml.make(config, nav)
    state = learner.init(jax.random.PRNGKey(0))
    new_state, _ = jax.jit(learner.update)(state, jax.random.PRNGKey(1))
    before = ravel_pytree(state.meta_params["inner_lr"])[0]
    after = ravel_pytree(new_state.meta_params["inner_lr"])[0]
    assert not np.allclose(before, after)


def test_remat_gives_the_same_meta_gradient(nav):
    def grad(remat):
        config = maml.Config(num_inner_steps=2, remat_inner_steps=remat, **TINY)
        learner = maml.make(config, nav)
        state = learner.init(jax.random.PRNGKey(0))
        tasks = nav.sample(jax.random.PRNGKey(1), 2)
        trajs = learner.sample(state.meta_params, tasks, jax.random.PRNGKey(2))
        return ravel_pytree(jax.grad(learner.meta_loss)(state.meta_params, trajs))[0]

    np.testing.assert_allclose(grad(True), grad(False), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("meta_batch_size", 0, "meta_batch_size"),
    ("inner_episodes", -1, "inner_episodes"),
    ("horizon", 0, "horizon"),
    ("num_inner_steps", -1, "num_inner_steps"),
    ("outer_optimizer", "sgd", "outer_optimizer"),
    ("inner_estimator", "magic", "inner_estimator"),
    ("max_kl", 0.0, "max_kl"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        maml.Config(**{field: value})


def test_meta_batch_must_divide_over_devices(nav):
    from metarl_jax.sharding import task_mesh

    mesh = task_mesh(jax.devices()[:1])
    maml.make(maml.Config(**TINY), nav, mesh=mesh)  # 2 tasks over 1 device is fine
    with pytest.raises(TypeError, match="maml.Config"):
        maml.make({"meta_batch_size": 2}, nav)


@pytest.mark.slow
def test_maml_learns_to_adapt_on_navigation(nav, in_ci):
    """Post-adaptation return improves clearly within a few dozen meta-iterations."""
    iterations = 30 if in_ci else 60
    config = maml.Config(meta_batch_size=10, inner_episodes=10, horizon=50,
                         outer_optimizer="trpo", train_pretrained=False)
    learner = maml.make(config, nav)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    history = []
    for i in range(iterations):
        state, metrics = update(state, jax.random.fold_in(jax.random.PRNGKey(1), i))
        history.append(float(metrics["post_adaptation_return"]))
    first, last = np.mean(history[:5]), np.mean(history[-5:])
    assert last > first + 0.25 * abs(first), (first, last)
