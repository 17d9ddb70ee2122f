"""Conjugate gradient, Hessian-vector products, mean KL and the TRPO step."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from metarl_jax.nn import Categorical
from metarl_jax.rl import conjugate_gradient, hessian_vector_product, mean_kl, trpo_step


def _spd(n, seed=0):
    m = jax.random.normal(jax.random.PRNGKey(seed), (n, n))
    return m.T @ m / n + 0.5 * jnp.eye(n)


# -- conjugate gradient ---------------------------------------------------------------


def test_cg_solves_spd_system():
    a = _spd(8)
    b = jax.random.normal(jax.random.PRNGKey(1), (8,))
    x = jax.jit(lambda b: conjugate_gradient(lambda v: a @ v, b, num_iters=8))(b)
    np.testing.assert_allclose(x, jnp.linalg.solve(a, b), rtol=2e-3, atol=2e-4)
    # extra iterations after convergence are masked: still finite and accurate
    x_long = conjugate_gradient(lambda v: a @ v, b, num_iters=40, residual_tol=1e-10)
    assert np.all(np.isfinite(x_long))
    np.testing.assert_allclose(x_long, jnp.linalg.solve(a, b), rtol=1e-3, atol=1e-4)


def test_cg_on_pytrees_and_early_stop():
    a1, a2 = _spd(3, 2), _spd(2, 3)
    b = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3, 0.7])}
    x = conjugate_gradient(lambda v: {"w": a1 @ v["w"], "b": a2 @ v["b"]}, b, num_iters=10)
    np.testing.assert_allclose(x["w"], jnp.linalg.solve(a1, b["w"]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x["b"], jnp.linalg.solve(a2, b["b"]), rtol=1e-4, atol=1e-5)
    # zero right-hand side: converged before the first iteration, no 0/0
    zero = conjugate_gradient(lambda v: a1 @ v, jnp.zeros(3), num_iters=5)
    np.testing.assert_array_equal(zero, 0.0)
    # a huge tolerance stops immediately at x = 0
    np.testing.assert_array_equal(conjugate_gradient(lambda v: a1 @ v, b["w"], 5, residual_tol=1e6), 0.0)
    # exactly one iteration is one steepest-descent step with exact line search
    r = b["w"]
    one = conjugate_gradient(lambda v: a1 @ v, r, num_iters=1)
    np.testing.assert_allclose(one, (r @ r) / (r @ a1 @ r) * r, rtol=1e-5)


def test_cg_is_differentiable():
    a = _spd(5, 4)
    b = jax.random.normal(jax.random.PRNGKey(5), (5,))
    grad = jax.grad(lambda b: jnp.sum(conjugate_gradient(lambda v: a @ v, b, num_iters=15)))(b)
    np.testing.assert_allclose(grad, jnp.linalg.solve(a.T, jnp.ones(5)), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="num_iters"):
        conjugate_gradient(lambda v: a @ v, b, num_iters=0)


# -- Hessian-vector products -------------------------------------------------------------


def _mlp_loss(params):
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.sum(jnp.sin(h @ params["w2"])) + 0.1 * jnp.sum(params["w1"] ** 4)


@pytest.fixture(scope="module")
def mlp_params():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    return {"w1": jax.random.normal(k1, (3, 5)), "b1": jax.random.normal(k2, (5,)) * 0.1,
            "w2": jax.random.normal(k3, (5, 2))}


def test_hvp_matches_finite_differences_and_hessian(mlp_params):
    vector = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=jnp.float32)).reshape(p.shape), mlp_params)
    hvp = jax.jit(lambda p, v: hessian_vector_product(_mlp_loss, p, v))(mlp_params, vector)
    chex.assert_trees_all_equal_shapes(hvp, mlp_params)
    # central differences of the gradient
    h = 1e-2
    g = jax.grad(_mlp_loss)
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * h),
                      g(jax.tree.map(lambda p, v: p + h * v, mlp_params, vector)),
                      g(jax.tree.map(lambda p, v: p - h * v, mlp_params, vector)))
    flat_hvp, unravel = ravel_pytree(hvp)
    flat_fd = ravel_pytree(fd)[0]
    np.testing.assert_allclose(flat_hvp, flat_fd, atol=5e-3 * float(jnp.abs(flat_fd).max()))
    # and the explicit Hessian
    flat_params, unravel = ravel_pytree(mlp_params)
    hess = jax.hessian(lambda f: _mlp_loss(unravel(f)))(flat_params)
    np.testing.assert_allclose(flat_hvp, hess @ ravel_pytree(vector)[0], rtol=1e-4, atol=1e-4)


# -- KL and a small categorical policy -----------------------------------------------------

NUM_STATES, OBS_DIM, NUM_ACTIONS = 64, 4, 3


@pytest.fixture(scope="module")
def policy_problem():
    """A linear softmax policy, a batch of states/actions/advantages, and the
    TRPO surrogate (importance-weighted advantage) and mean KL."""
    ks = jax.random.split(jax.random.PRNGKey(7), 5)
    params = {"w": 0.3 * jax.random.normal(ks[0], (OBS_DIM, NUM_ACTIONS)), "b": jnp.zeros((NUM_ACTIONS,))}
    obs = jax.random.normal(ks[1], (NUM_STATES, OBS_DIM))
    valid = jax.random.uniform(ks[2], (NUM_STATES,)) < 0.9

    def dist(p):
        return Categorical(obs @ p["w"] + p["b"])

    actions = dist(params).sample(ks[3])
    adv = jax.random.normal(ks[4], (NUM_STATES,)) + (actions == 0)  # action 0 is better
    old_dist = dist(params)
    old_logp = old_dist.log_prob(actions)

    def loss_fn(p):
        ratio = jnp.exp(dist(p).log_prob(actions) - old_logp)
        return -jnp.sum(ratio * adv * valid) / jnp.sum(valid)

    def kl_fn(p):
        return mean_kl(old_dist, dist(p), valid)

    return params, loss_fn, kl_fn, dist, valid


def test_mean_kl_zero_and_fisher_at_old_params(policy_problem):
    params, _, kl_fn, dist, valid = policy_problem
    np.testing.assert_allclose(kl_fn(params), 0.0, atol=1e-7)
    grads = jax.grad(kl_fn)(params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-6
    # Hessian of the mean KL w.r.t. the logits is the Fisher diag(p) - p p^T
    logits = dist(params).logits
    hess = jax.hessian(lambda lg: mean_kl(Categorical(logits), Categorical(lg), valid))(logits)
    p = np.asarray(jax.nn.softmax(logits), np.float64)
    fisher = (np.einsum("sa,ab->sab", p, np.eye(NUM_ACTIONS)) - np.einsum("sa,sb->sab", p, p))
    fisher *= (np.asarray(valid) / np.asarray(valid).sum())[:, None, None]
    diag = np.asarray(hess)[np.arange(NUM_STATES), :, np.arange(NUM_STATES), :]
    np.testing.assert_allclose(diag, fisher, atol=1e-6)


@pytest.mark.parametrize("line_search", ["parallel", "sequential"])
def test_trpo_step_respects_kl_and_improves(policy_problem, line_search):
    params, loss_fn, kl_fn, _, _ = policy_problem
    max_kl = 0.01
    chex.clear_trace_counter()  # each parametrisation defines its own `step`

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(p, max_kl):
        return trpo_step(loss_fn, kl_fn, p, max_kl=max_kl, line_search=line_search)

    new_params, info = step(params, jnp.float32(max_kl))
    assert set(info) == {"kl", "loss_before", "loss_after", "step_fraction", "accepted"}
    assert info["accepted"] == 1.0
    assert 0.0 < info["kl"] <= max_kl
    assert info["loss_after"] < info["loss_before"]
    np.testing.assert_allclose(info["loss_after"], loss_fn(new_params), rtol=1e-5)
    np.testing.assert_allclose(info["kl"], kl_fn(new_params), rtol=1e-5)
    np.testing.assert_allclose(info["loss_before"], loss_fn(params), rtol=1e-6)
    # the trust region is nearly used up by a full (quadratic-model) step
    assert info["step_fraction"] == 1.0 and info["kl"] > 0.5 * max_kl
    # a second step (new max_kl, same shapes) reuses the compiled function
    _, info2 = step(new_params, jnp.float32(0.005))
    assert info2["kl"] <= 0.005


def test_trpo_direction_is_natural_gradient(policy_problem):
    params, loss_fn, kl_fn, _, _ = policy_problem
    damping = 0.1
    new_params, info = trpo_step(loss_fn, kl_fn, params, max_kl=1e-4, damping=damping, cg_iters=40)
    flat, unravel = ravel_pytree(params)
    fisher = jax.hessian(lambda f: kl_fn(unravel(f)))(flat) + damping * jnp.eye(flat.size)
    grad = ravel_pytree(jax.grad(loss_fn)(params))[0]
    direction = np.asarray(jnp.linalg.solve(fisher, grad), np.float64)
    step = np.asarray(flat - ravel_pytree(new_params)[0], np.float64)
    cosine = step @ direction / (np.linalg.norm(step) * np.linalg.norm(direction))
    assert cosine > 0.999
    # and its length makes the damped quadratic KL model equal max_kl (times fraction^2)
    quad = 0.5 * step @ np.asarray(fisher, np.float64) @ step
    np.testing.assert_allclose(quad, 1e-4 * float(info["step_fraction"]) ** 2, rtol=1e-3)


@pytest.mark.parametrize("line_search", ["parallel", "sequential"])
def test_trpo_backtracks_when_kl_model_is_optimistic(line_search):
    """KL = |p|^2 / 2 + 10 |p|^4: the full step's true KL exceeds max_kl, half of it fits."""
    params = jnp.zeros(3)
    new, info = trpo_step(lambda p: -jnp.sum(p), lambda p: 0.5 * jnp.sum(p**2) + 10 * jnp.sum(p**2) ** 2,
                          params, max_kl=0.01, damping=0.0, line_search=line_search)
    assert info["accepted"] == 1.0 and info["step_fraction"] == 0.5
    np.testing.assert_allclose(new, np.full(3, 0.5 * np.sqrt(0.02 / 3)), rtol=1e-5)
    assert info["kl"] <= 0.01


@pytest.mark.parametrize("line_search", ["parallel", "sequential"])
def test_trpo_keeps_params_when_no_step_improves(policy_problem, line_search):
    params, loss_fn, kl_fn, _, _ = policy_problem
    flat0 = ravel_pytree(params)[0]

    def impossible(p):  # gradient of loss_fn, but any move is penalised
        return loss_fn(p) + 1e3 * jnp.any(ravel_pytree(p)[0] != flat0)

    new_params, info = trpo_step(impossible, kl_fn, params, line_search=line_search)
    chex.assert_trees_all_equal(new_params, params)
    assert info["accepted"] == 0.0 and info["step_fraction"] == 0.0 and info["kl"] == 0.0
    assert info["loss_after"] == info["loss_before"]

    # at a minimum the gradient is zero: no step, no NaN
    at_min, info = trpo_step(lambda p: jnp.sum(p**2), lambda p: jnp.sum(p**2), jnp.zeros(4),
                             line_search=line_search)
    np.testing.assert_array_equal(at_min, 0.0)
    assert info["accepted"] == 0.0 and all(np.isfinite(float(v)) for v in info.values())


def test_trpo_argument_errors(policy_problem):
    params, loss_fn, kl_fn, _, _ = policy_problem
    for kwargs, match in [({"max_kl": 0.0}, "max_kl"), ({"cg_iters": 0}, "cg_iters"),
                          ({"backtrack_ratio": 1.5}, "backtrack_ratio"),
                          ({"max_backtracks": 0}, "max_backtracks"), ({"damping": -1.0}, "damping"),
                          ({"line_search": "golden"}, "line_search")]:
        with pytest.raises(ValueError, match=match):
            trpo_step(loss_fn, kl_fn, params, **kwargs)


def test_gauss_newton_fvp_equals_kl_hessian_vector_product():
    """At the old params the Gauss-Newton product is exactly the KL Hessian's."""
    from metarl_jax.nn import DiagGaussian
    from metarl_jax.rl.trpo import gauss_newton_fvp

    key = jax.random.PRNGKey(0)
    w = {"a": jax.random.normal(key, (3, 2)), "s": jnp.array([0.1, -0.2])}
    x = jax.random.normal(jax.random.fold_in(key, 1), (16, 3))

    def dist_fn(p):
        return DiagGaussian(jnp.tanh(x @ p["a"]) * 2.0, p["s"])

    old = dist_fn(w)

    def kl_of_dist(d):
        return jnp.mean(old.kl(d))

    v = {"a": jax.random.normal(jax.random.fold_in(key, 2), (3, 2)), "s": jnp.array([0.3, 0.7])}
    expected = hessian_vector_product(lambda p: kl_of_dist(dist_fn(p)), w, v)
    got = gauss_newton_fvp(dist_fn, kl_of_dist, w)(v)
    for leaf_got, leaf_expected in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(leaf_got, leaf_expected, rtol=1e-4, atol=1e-6)
