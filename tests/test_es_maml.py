"""ES-MAML: the antithetic estimator on closed forms, against exact meta-gradients,
the zeroth-order adaptation operators, compile-once updates, config errors,
populations over ``sigma`` and a learning check on navigation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import metarl_jax
from metarl_jax.algorithms import es_maml
from metarl_jax.core.population import make_population, population_members
from metarl_jax.core.rollout import rollout
from metarl_jax.nn.mlp import make_policy, policy_sample_fn

TINY = dict(meta_batch_size=2, num_perturbations=2, inner_episodes=2, horizon=8,
            hidden_sizes=(4,), adaptation_perturbations=2, eval_episodes=2)


@pytest.fixture(scope="module")
def nav():
    return metarl_jax.make("navigation2d")


def _mean_estimate(objective, x, sigma, num_perturbations, num_keys, seed=0):
    """The estimate averaged over ``num_keys`` independent keys (one compiled vmap),
    and the standard error of that mean per component."""
    keys = jax.random.split(jax.random.PRNGKey(seed), num_keys)
    estimates = jax.jit(jax.vmap(lambda k: es_maml.antithetic_gradient(
        objective, x, k, sigma, num_perturbations).gradient))(keys)
    return jnp.mean(estimates, axis=0), jnp.std(estimates, axis=0) / np.sqrt(num_keys)


def _cosine(a, b):
    return float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))


# -- the estimator on closed forms -------------------------------------------------------------


def test_centered_ranks_share_ties_and_span_minus_half_to_half():
    ranks = es_maml.centered_ranks(jnp.asarray([3.0, -1.0, 7.0, 3.0, 10.0]))
    # sorted: -1, 3, 3, 7, 10 -> ranks 0, 1.5, 1.5, 3, 4 over n - 1 = 4, minus 0.5
    np.testing.assert_allclose(ranks, [-0.125, -0.5, 0.25, -0.125, 0.5], atol=1e-7)
    x = jax.random.normal(jax.random.PRNGKey(0), (101,))
    ranks = es_maml.centered_ranks(x)
    assert float(ranks.min()) == -0.5 and float(ranks.max()) == 0.5
    np.testing.assert_allclose(float(jnp.sum(ranks)), 0.0, atol=1e-5)
    np.testing.assert_array_equal(jnp.argsort(ranks), jnp.argsort(x))  # order preserved
    np.testing.assert_array_equal(es_maml.centered_ranks(jnp.full((6,), 2.5)), jnp.zeros(6))


def test_linear_objective_estimate_is_unbiased_and_quadratic_terms_cancel():
    a = jnp.asarray([2.0, -1.0, 0.5, 3.0], jnp.float32)
    x = jnp.asarray([0.3, -0.2, 1.0, 0.0], jnp.float32)
    num_perturbations, num_keys = 8, 4000
    mean, _ = _mean_estimate(lambda p: a @ p + 1.5, x, 0.1, num_perturbations, num_keys)
    # one estimate is (1/N) sum_j (a . eps_j) eps_j: component i has variance
    # (|a|^2 + a_i^2) / N, so the mean over keys has std <= |a| sqrt(2 / (N K)); allow 5 std
    tolerance = 5 * float(jnp.linalg.norm(a)) * np.sqrt(2 / (num_perturbations * num_keys))
    np.testing.assert_allclose(mean, a, atol=tolerance)
    # antithetic pairs cancel every even term: for a quadratic the estimate with one key
    # is the linear estimate of its gradient at x, whatever sigma
    hessian = jnp.asarray([[2.0, 0.5, 0, 0], [0.5, 1.0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 0.2]])

    def quadratic(p):
        return 0.5 * p @ hessian @ p + a @ p - 4.0

    key = jax.random.PRNGKey(7)
    gradient = hessian @ x + a
    linear = es_maml.antithetic_gradient(lambda p: gradient @ p, x, key, 0.1, 8).gradient
    for sigma in (0.01, 0.1, 1.0):
        estimate = es_maml.antithetic_gradient(quadratic, x, key, sigma, 8).gradient
        np.testing.assert_allclose(estimate, linear, rtol=2e-3, atol=2e-3)


def test_expected_estimate_is_the_gradient_of_the_gaussian_smoothed_objective():
    # f(x) = sum cos(x_i): E[f(x + sigma eps)] = exp(-sigma^2 / 2) f(x), so the smoothed
    # gradient is exp(-sigma^2 / 2) (-sin x), 0.61 times grad f at sigma = 1
    x = jnp.asarray([0.3, -1.2, 2.0, 0.9], jnp.float32)
    sigma = 1.0
    mean, stderr = _mean_estimate(lambda p: jnp.sum(jnp.cos(p)), x, sigma, 16, 4000)
    smoothed = np.exp(-sigma ** 2 / 2) * -np.sin(np.asarray(x))
    # within 5 standard errors (measured over the 4000 keys) of the smoothed gradient...
    assert np.all(np.abs(np.asarray(mean) - smoothed) < 5 * np.asarray(stderr)), (
        mean, smoothed, stderr)
    # ...which is far, in those units, from grad f itself (0.1 to 0.36 apart here)
    assert np.max(np.abs(np.asarray(mean) + np.sin(np.asarray(x)))) > 20 * float(stderr.max())


def test_constant_objective_gives_exactly_zero_with_and_without_shaping():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
    for shaping in (False, True):
        estimate = es_maml.antithetic_gradient(
            lambda p: (jnp.float32(-7.0), jnp.sum(p["w"])), params, jax.random.PRNGKey(0),
            0.3, 5, fitness_shaping=shaping, has_aux=True)
        for leaf in jax.tree.leaves(estimate.gradient):
            np.testing.assert_array_equal(leaf, jnp.zeros_like(leaf))
        chex.assert_shape(estimate.fitness, (11,))
        chex.assert_shape(estimate.aux, (11,))
        assert float(estimate.aux[0]) == 6.0  # member 0 is the unperturbed params


def test_fitness_shaping_is_invariant_to_monotone_transforms():
    x = jnp.asarray([0.5, -0.3, 1.2], jnp.float32)
    key = jax.random.PRNGKey(3)

    def f(p):
        return -jnp.sum((p - 1.0) ** 2)

    plain = es_maml.antithetic_gradient(f, x, key, 0.2, 16, fitness_shaping=True).gradient
    warped = es_maml.antithetic_gradient(lambda p: jnp.exp(3 * f(p)), x, key, 0.2, 16,
                                         fitness_shaping=True).gradient
    np.testing.assert_allclose(plain, warped, rtol=1e-6)
    # without ranks the estimate does depend on the scale of the fitness
    raw = es_maml.antithetic_gradient(lambda p: jnp.exp(3 * f(p)), x, key, 0.2, 16).gradient
    assert not np.allclose(raw, plain)
    # the ranked estimate still points uphill
    assert float(plain @ (-2 * (x - 1.0))) > 0


# -- against exact meta-gradients -------------------------------------------------------------


def _far_goals(family, num_tasks, key):
    """Goals the point cannot reach within 8 steps (the ood annulus, doubled: one
    coordinate beyond 1.0 while a step moves at most 0.1): no episode terminates, so
    the return is smooth in the policy (termination would make it jump)."""
    tasks = family.sample(key, num_tasks, "ood")
    return tasks.replace(goal=2 * tasks.goal)


def test_es_estimate_correlates_with_the_exact_meta_gradient():
    """MAML's objective where the adaptation is differentiable: the task return with
    reparameterised actions and fixed rollout keys is a smooth function of the policy
    (normalised actions, std 0.22, goals out of reach: no termination, little clipping).
    The adaptation is one gradient-ascent step on it, ``theta' = theta + alpha grad R``,
    and J is the return after it. jax.grad through the step is the exact second-order
    meta-gradient of J; the ES estimate is of J sigma-smoothed, which at sigma = 0.03 is
    J to within the noise (J is near-linear at that scale, checked below).

    Why the threshold: for a locally linear J the estimate is
    (1/N) sum_j eps_j eps_j^T g, whose error has squared norm (d + 1)|g|^2 / N in
    expectation, so its cosine with g is about 1 / sqrt(1 + (d + 1) / N): 0.96 for d = 44
    parameters and N = 512 pairs. 0.9 needs an error 2.6 times its expected square, a
    chi-square tail on ~45 degrees of freedom far below 1e-6. The projection on g checks
    the scale (1 in expectation; its std is about sqrt(2 / N) = 0.06).
    """
    family = metarl_jax.make("navigation2d", normalized_actions=True)
    env = family.env
    policy = make_policy(env.action_space(env.default_params), (8,), "tanh", -1.5)
    params = policy.init(jax.random.PRNGKey(0), jnp.zeros((2,), jnp.float32))
    tasks = _far_goals(family, 4, jax.random.PRNGKey(1))
    task_keys = jax.random.split(jax.random.PRNGKey(2), 4)
    alpha = 0.05

    def act(p, obs, key):  # reparameterised: the action is differentiable in p
        return policy.apply(p, obs).sample(key)

    def task_return(p, task, key):
        return jnp.mean(rollout(env, act, p, task, key, 4, 8).episode_returns)

    def meta_objective(p):
        def one(task, key):
            inner_key, outer_key = jax.random.split(key)
            adapted = jax.tree.map(lambda w, g: w + alpha * g, p,
                                   jax.grad(task_return)(p, task, inner_key))
            return task_return(adapted, task, outer_key)
        return jnp.mean(jax.vmap(one)(tasks, task_keys))

    objective = jax.jit(meta_objective)
    assert float(objective(params)) == float(objective(params))  # fixed keys: deterministic
    exact = ravel_pytree(jax.jit(jax.grad(meta_objective))(params))[0]
    estimate = jax.jit(lambda p, k: es_maml.antithetic_gradient(
        meta_objective, p, k, 0.03, 512).gradient)(params, jax.random.PRNGKey(3))
    estimate = ravel_pytree(estimate)[0]
    assert exact.shape == (44,)
    cosine = _cosine(estimate, exact)
    assert cosine > 0.9, cosine
    projection = float(estimate @ exact / (exact @ exact))
    assert 0.75 < projection < 1.25, projection
    # and J is near-linear on the perturbation scale: a central difference along g
    flat, unravel = ravel_pytree(params)
    direction = exact / jnp.linalg.norm(exact)
    slope = (objective(unravel(flat + 0.03 * direction))
             - objective(unravel(flat - 0.03 * direction))) / 0.06
    np.testing.assert_allclose(float(slope), float(jnp.linalg.norm(exact)), rtol=0.05)


def test_learners_meta_gradient_correlates_with_finite_differences():
    """The learner itself ("pg" operator): its adaptation samples actions without a
    gradient path (a score-function step), so jax.grad of its objective is not the
    gradient of J; J is still a deterministic, piecewise-smooth function of theta with
    the tasks and keys fixed, and central finite differences over every parameter
    (h = 0.01, 88 evaluations) give its gradient. Same threshold argument as above
    (expected cosine 0.96 at d = 44, N = 512), less margin for the kinks of the
    action clip: 0.85."""
    family = metarl_jax.make("navigation2d", normalized_actions=True)
    config = es_maml.Config(meta_batch_size=4, num_perturbations=512, sigma=0.01,
                            inner_episodes=4, horizon=8, hidden_sizes=(8,), init_log_std=-1.5)
    learner = es_maml.make(config, family)
    meta_params = learner.init(jax.random.PRNGKey(0)).meta_params
    tasks = _far_goals(family, 4, jax.random.PRNGKey(1))
    task_keys = jax.random.split(jax.random.PRNGKey(2), 4)
    objective = jax.jit(lambda p: learner.objective(p, tasks, task_keys)[0])
    assert float(objective(meta_params)) == float(objective(meta_params))
    flat, unravel = ravel_pytree(meta_params)
    h, eye = 1e-2, jnp.eye(flat.shape[0], dtype=jnp.float32)
    values = jax.jit(jax.vmap(lambda f: learner.objective(unravel(f), tasks, task_keys)[0]))(
        jnp.concatenate([flat + h * eye, flat - h * eye]))
    finite_differences = (values[:flat.shape[0]] - values[flat.shape[0]:]) / (2 * h)
    estimate = jax.jit(learner.meta_gradient)(meta_params, tasks, task_keys,
                                              jax.random.PRNGKey(3))
    np.testing.assert_allclose(estimate.fitness[0], objective(meta_params), rtol=1e-5)
    flat_estimate = ravel_pytree(estimate.gradient)[0]
    cosine = _cosine(flat_estimate, finite_differences)
    assert cosine > 0.85, cosine
    projection = float(flat_estimate @ finite_differences
                       / (finite_differences @ finite_differences))
    assert 0.7 < projection < 1.3, projection


# -- the zeroth-order adaptation operators ----------------------------------------------------


def test_hill_climbing_never_decreases_the_return_on_its_own_rollouts(nav):
    policy = make_policy(nav.env.action_space(nav.env.default_params), (8,), "tanh", 0.0)
    sample_action = policy_sample_fn(policy)
    params = policy.init(jax.random.PRNGKey(0), jnp.zeros((2,), jnp.float32))
    tasks = nav.sample(jax.random.PRNGKey(1), 64, "train")
    keys = jax.random.split(jax.random.PRNGKey(2), 64)

    def one(task, key):
        rollout_key, noise_key = jax.random.split(key)

        def task_return(p):  # fixed rollout key: the step's own rollouts
            return jnp.mean(rollout(nav.env, sample_action, p, task, rollout_key, 4, 20)
                            .episode_returns)

        new, before = es_maml.hill_climbing_step(task_return, params, noise_key, 0.3)
        moved = ravel_pytree(new)[0] != ravel_pytree(params)[0]
        return before, task_return(new), jnp.any(moved)

    before, after, moved = jax.jit(jax.vmap(one))(tasks, keys)
    # batched and unbatched rollouts may round differently: a float32 tolerance
    assert np.all(np.asarray(after) >= np.asarray(before) - 1e-4 * np.abs(before))
    # not vacuous: some proposals were taken (and improved), some refused (and kept)
    moved = np.asarray(moved)
    assert 0 < int(moved.sum()) < 64
    gain = np.asarray(after) - np.asarray(before)
    assert np.all(gain[moved] > -1e-4) and np.mean(gain[moved]) > 0
    np.testing.assert_allclose(gain[~moved], 0.0, atol=1e-4)


def test_es_step_is_an_ascent_step_along_the_estimate():
    x = jnp.asarray([0.5, -0.3, 1.2], jnp.float32)
    key = jax.random.PRNGKey(5)

    def f(p):
        return -jnp.sum((p - 1.0) ** 2)

    new, before = es_maml.es_step(f, x, key, 0.05, 0.1, 32)
    estimate = es_maml.antithetic_gradient(f, x, key, 0.1, 32)
    np.testing.assert_allclose(new, x + 0.05 * estimate.gradient, rtol=1e-6)
    assert float(before) == float(f(x))
    assert float(f(new)) > float(f(x))


# -- the learner --------------------------------------------------------------------------------


@pytest.mark.parametrize("adaptation", es_maml.ADAPTATIONS)
def test_update_runs_without_retracing(nav, adaptation):
    config = es_maml.Config(adaptation=adaptation, **TINY)
    learner = es_maml.make(config, nav)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(state, key):
        return learner.update(state, key)

    state = learner.init(jax.random.PRNGKey(0))
    before = ravel_pytree(state.meta_params)[0]
    for i in range(3):
        state, metrics = update(state, jax.random.PRNGKey(10 + i))
    assert int(state.step) == 3
    assert not np.allclose(ravel_pytree(state.meta_params)[0], before)
    for name in ("pre_adaptation_return", "post_adaptation_return", "population_return",
                 "population_return_std", "grad_norm"):
        assert np.isfinite(float(metrics[name])), name
    # 2N + 1 members x 2 tasks x rollouts x 2 episodes x 8 steps; rollouts per adaptation:
    # pg 1 + 1, es (2 * 2 + 1) + 1, hill climbing 2 + 1
    rollouts = {"pg": 2, "es": 6, "hill_climbing": 3}[adaptation]
    assert float(metrics["env_steps"]) == 5 * 2 * rollouts * 2 * 8
    assert es_maml.env_steps_per_iteration(config) == 5 * 2 * rollouts * 2 * 8
    curves = jax.jit(learner.evaluate, static_argnums=3)(
        state, nav.sample(jax.random.PRNGKey(3), 3, "test"), jax.random.PRNGKey(4), 2)
    assert set(curves) == {"es_maml", "random_init"}
    for curve in curves.values():
        chex.assert_shape(curve, (3, 3))
        assert np.all(np.isfinite(curve))
    np.testing.assert_array_equal(curves.x, [0, 1, 2])


def test_pg_adaptation_is_mamls_inner_step(nav):
    """The "pg" operator's curve is MAML's adapt with the same step size and keys."""
    from metarl_jax.algorithms import maml

    learner = es_maml.make(es_maml.Config(inner_lr=0.3, **TINY), nav)
    reference = maml.make(maml.Config(meta_batch_size=2, inner_episodes=2, horizon=8,
                                      hidden_sizes=(4,), eval_episodes=2), nav)
    meta_params = learner.init(jax.random.PRNGKey(0)).meta_params
    task = jax.tree.map(lambda x: x[0], nav.sample(jax.random.PRNGKey(1), 1))
    ours = learner.adapt(meta_params, task, jax.random.PRNGKey(2), 2)
    theirs = reference.adapt(meta_params, task, jax.random.PRNGKey(2), 2, 2, (0.3,))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("meta_batch_size", 0, "meta_batch_size"),
    ("num_perturbations", 0, "num_perturbations"),
    ("num_perturbations", -2, "num_perturbations"),
    ("adaptation_perturbations", 0, "adaptation_perturbations"),
    ("horizon", 0, "horizon"),
    ("inner_episodes", -1, "inner_episodes"),
    ("num_inner_steps", -1, "num_inner_steps"),
    ("sigma", 0.0, "sigma"),
    ("sigma", -0.1, "sigma"),
    ("adaptation_sigma", 0.0, "adaptation_sigma"),
    ("outer_lr", 0.0, "outer_lr"),
    ("inner_lr", -0.1, "inner_lr"),
    ("adaptation", "newton", "adaptation"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        es_maml.Config(**{field: value})


def test_wrong_config_type_and_estimator_arguments_raise(nav):
    from metarl_jax.algorithms import maml

    with pytest.raises(TypeError, match="es_maml.Config"):
        es_maml.make(maml.Config(), nav)
    with pytest.raises(TypeError, match="es_maml.Config"):
        es_maml.make({"sigma": 0.1}, nav)
    x = jnp.zeros((3,), jnp.float32)
    for sigma in (0.0, -1.0):
        with pytest.raises(ValueError, match="sigma"):
            es_maml.antithetic_gradient(jnp.sum, x, jax.random.PRNGKey(0), sigma, 4)
    with pytest.raises(ValueError, match="num_perturbations"):
        es_maml.antithetic_gradient(jnp.sum, x, jax.random.PRNGKey(0), 0.1, 0)


def test_population_of_two_sigmas_runs_and_members_differ(nav):
    config = es_maml.Config(**TINY)
    population = make_population(es_maml, config, nav,
                                 population_members([0], {"sigma": [0.02, 0.5]}))
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)  # one seed: only sigma differs
    state = population.init(keys)
    state, metrics = jax.jit(population.update)(state, keys)
    chex.assert_shape(metrics["grad_norm"], (2,))
    assert np.all(np.asarray(state.alive))
    first, second = (ravel_pytree(population.member_state(state, i).meta_params)[0]
                     for i in range(2))
    assert not np.allclose(first, second)
    # same init, key and tasks: the centre member's returns agree, the population's do not
    np.testing.assert_allclose(metrics["post_adaptation_return"][0],
                               metrics["post_adaptation_return"][1], rtol=1e-5)
    assert float(metrics["population_return_std"][1]) > float(
        metrics["population_return_std"][0])


@pytest.mark.slow
def test_es_maml_learns_to_adapt_on_navigation(nav, in_ci):
    """Post-adaptation return on the iteration's tasks improves clearly: about
    -10.4 -> -4.3 over 300 iterations at this size (10 s to compile, 6 s to train)."""
    iterations = 150 if in_ci else 300
    config = es_maml.Config(meta_batch_size=10, num_perturbations=16, inner_episodes=4,
                            horizon=20, hidden_sizes=(16,), outer_lr=0.02)
    learner = es_maml.make(config, nav)
    update = jax.jit(learner.update)
    state = learner.init(jax.random.PRNGKey(0))
    history = []
    for i in range(iterations):
        state, metrics = update(state, jax.random.fold_in(jax.random.PRNGKey(1), i))
        history.append(float(metrics["post_adaptation_return"]))
    first, last = np.mean(history[:20]), np.mean(history[-20:])
    assert last > first + 0.25 * abs(first), (first, last)
