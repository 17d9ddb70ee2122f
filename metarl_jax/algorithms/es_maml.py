"""ES-MAML: Hessian-free meta-learning with evolution strategies (Song et al. 2020,
arXiv:1910.01215).

MAML's meta-objective is the return after adaptation,
``J(theta) = E_task[ f_task(U(theta, task)) ]``. ES-MAML never differentiates
it: the meta-gradient is the antithetic ES estimate of the gradient of its
Gaussian smoothing ``J_sigma(theta) = E_eps[ J(theta + sigma eps) ]``,

    g = 1 / (2 sigma N) * sum_j (J(theta + sigma eps_j) - J(theta - sigma eps_j)) eps_j,

so no second derivative (and no score-function estimate of one) is needed,
and the adaptation operator ``U`` need not be differentiable.

One meta-iteration is one pure function ``update(state, key)``:

1. sample ``meta_batch_size`` tasks from the train split and one rollout key
   per task;
2. draw ``num_perturbations`` directions ``eps_j``; the population
   ``[theta, theta + sigma eps_1.., theta - sigma eps_1..]`` is ``vmap`` ped
   inside the same compiled update. Every member adapts on the *same* tasks
   with the *same* keys (common random numbers), so the difference of a pair
   carries the effect of the perturbation, not of the draw of tasks and
   episodes; ``theta`` itself is member 0, which gives the metrics at
   ``theta`` on those draws for ``1 / (2N + 1)`` of the cost;
3. ``J`` of a member is the mean over the tasks of the return after
   ``num_inner_steps`` adaptation steps; optionally the ``2N`` returns are
   replaced by their centred ranks (``fitness_shaping``);
4. Adam (``outer_lr``) ascends the estimate.

The metrics include ``env_steps``, the iteration's environment steps counted
as MAML's benchmarks count MAML's (every step slot of every rollout, all
``2N + 1`` members: :func:`env_steps_per_iteration`).

Adaptation operators (``adaptation``):

* ``"pg"``: MAML's policy-gradient inner step (the paper's simplest
  operator), taken from :mod:`metarl_jax.algorithms.maml` (its ``adapt``
  gives the return after 0..K steps, so its last point is ``f_task(U)``);
* ``"es"``: the paper's ES adaptation: each step is an ascent step of size
  ``inner_lr`` along the antithetic ES estimate (``adaptation_perturbations``
  pairs of scale ``adaptation_sigma``) of the task's return, with the same
  :func:`antithetic_gradient` on the task's own rollouts;
* ``"hill_climbing"``: the paper's non-smooth operator: each step proposes
  ``theta_k + adaptation_sigma * g`` and keeps it only if its return beats
  ``theta_k`` 's on the same rollouts (both are rolled out with one key, so
  the comparison is not one of episode draws: two rollouts per step).

Each operator's step is a module-level function of a task-return function
(:func:`es_step`, :func:`hill_climbing_step`), so the tests check them on
closed forms as well as on rollouts.

The estimator is written here (:func:`antithetic_gradient`, :func:`centered_ranks`),
not taken from ``evosax``: what ES-MAML needs is antithetic sampling, an
optional rank transform and one matrix-vector product, about twenty lines,
while evosax's strategies keep their own ask/tell state and parameter
reshaping, and are not installed here. A pure function of
``(objective, params, key)`` is also what the tests check against closed
forms and what a population ``vmap`` s over.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from metarl_jax.algorithms import maml
from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import rollout
from metarl_jax.nn.mlp import make_policy, policy_sample_fn
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (check_bool, check_choice, check_in_unit_interval,
                              check_int_at_least, check_non_negative, check_positive,
                              check_positive_int, check_positive_int_tuple, tree_axpy)

ADAPTATIONS = ("pg", "es", "hill_climbing")
ACTIVATIONS = maml.ACTIVATIONS
DEFAULT_EVAL_STEPS = maml.DEFAULT_EVAL_STEPS

# Config fields a population may give per member: used only arithmetically, so
# they can be traced scalars; every other field is static (see core.population).
HYPERPARAMETERS = ("sigma", "outer_lr", "inner_lr", "adaptation_sigma", "gamma", "gae_lambda")


@dataclasses.dataclass(frozen=True)
class Config:
    """ES-MAML hyperparameters.

    The fields shared with MAML default to MAML's navigation configuration
    (one inner step of 0.1, 2x64 tanh policy, meta-batch 10 of 10
    trajectories of 100 steps); the population (16 antithetic pairs, so 33
    adaptations per task) keeps ``metarl train es_maml --family
    navigation2d`` to minutes on a laptop CPU.

    Sizes and ``adaptation`` are static; :data:`HYPERPARAMETERS` may be traced.
    """

    meta_batch_size: int = 10          # tasks per meta-iteration, shared by every perturbation
    num_perturbations: int = 16        # antithetic pairs N (2N + 1 adaptations per task)
    sigma: float = 0.1                 # scale of the meta-parameter perturbations
    fitness_shaping: bool = False      # centred ranks of the 2N returns instead of the returns
    outer_lr: float = 1e-2             # Adam step size (ascending the ES estimate)
    adaptation: str = "pg"             # "pg" (MAML's inner step), "es" or "hill_climbing"
    num_inner_steps: int = 1           # adaptation steps (static)
    inner_lr: float = 0.1              # inner step size alpha ("pg" and "es")
    adaptation_perturbations: int = 8  # antithetic pairs per "es" adaptation step
    adaptation_sigma: float = 0.1      # perturbation scale of "es" / "hill_climbing" steps
    inner_episodes: int = 10           # trajectories per adaptation step (and the final one)
    horizon: int = 100                 # steps per trajectory
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    init_log_std: float = 0.0
    eval_episodes: int = 40            # trajectories per step when evaluating

    def __post_init__(self):
        for name in ("meta_batch_size", "num_perturbations", "adaptation_perturbations",
                     "inner_episodes", "horizon", "eval_episodes"):
            check_positive_int(name, getattr(self, name))
        check_int_at_least("num_inner_steps", self.num_inner_steps, 0)
        for name in ("sigma", "outer_lr", "adaptation_sigma"):
            check_positive(name, getattr(self, name))
        check_non_negative("inner_lr", self.inner_lr)
        for name in ("gamma", "gae_lambda"):
            check_in_unit_interval(name, getattr(self, name))
        check_bool("fitness_shaping", self.fitness_shaping)
        check_bool("normalize_advantages", self.normalize_advantages)
        check_choice("adaptation", self.adaptation, ADAPTATIONS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_positive_int_tuple("hidden_sizes", tuple(self.hidden_sizes), allow_empty=False)


# -- the estimator -------------------------------------------------------------------------


class Estimate(NamedTuple):
    """What :func:`antithetic_gradient` returns."""

    gradient: Any        # like params: the ES estimate of grad J_sigma
    fitness: jax.Array   # [2N + 1]: J at params, then at params + sigma eps_j, then - sigma eps_j
    aux: Any             # the objective's aux per member (leading axis 2N + 1), or None


def centered_ranks(x: jax.Array) -> jax.Array:
    """Ranks of ``x [n]`` mapped to ``[-0.5, 0.5]``, ties sharing their mean rank.

    Tied values get equal ranks so that a constant (or pairwise symmetric)
    objective still gives an estimate of exactly zero.
    """
    n = x.shape[0]
    ordered = jnp.sort(x)
    low = jnp.searchsorted(ordered, x, side="left")
    high = jnp.searchsorted(ordered, x, side="right") - 1
    ranks = (low + high).astype(jnp.float32) / 2
    return ranks / max(n - 1, 1) - 0.5


def antithetic_gradient(objective: Callable, params: Any, key: jax.Array, sigma,
                        num_perturbations: int, fitness_shaping: bool = False,
                        has_aux: bool = False) -> Estimate:
    """Antithetic ES estimate of the gradient of ``E_eps[objective(params + sigma eps)]``.

    ``objective(params) -> fitness`` (or ``(fitness, aux)`` with ``has_aux``)
    is ``vmap`` ped over the ``2 * num_perturbations + 1`` members
    ``params, params + sigma eps_1..N, params - sigma eps_1..N``
    (``eps_j ~ N(0, I)`` over the flattened parameters); anything the
    objective closes over (tasks, rollout keys) is therefore common to every
    member. The estimate is ``sum_j (F+_j - F-_j) eps_j / (2 sigma N)`` with
    ``F`` the fitness, or its centred ranks over the ``2N`` perturbed members
    (``fitness_shaping``). ``sigma`` may be traced.
    """
    check_positive_int("num_perturbations", num_perturbations)
    if not isinstance(sigma, jax.core.Tracer):  # a traced sigma was checked where it was set
        check_positive("sigma", float(sigma))
    flat, unravel = ravel_pytree(params)
    eps = jax.random.normal(key, (num_perturbations,) + flat.shape, flat.dtype)
    members = jnp.concatenate([flat[None], flat + sigma * eps, flat - sigma * eps])
    out = jax.vmap(lambda f: objective(unravel(f)))(members)
    fitness, aux = out if has_aux else (out, None)
    fitness = jnp.asarray(fitness, jnp.float32)
    perturbed = fitness[1:]
    if fitness_shaping:
        perturbed = centered_ranks(perturbed)
    plus, minus = perturbed[:num_perturbations], perturbed[num_perturbations:]
    flat_grad = (plus - minus) @ eps / (2 * sigma * num_perturbations)
    return Estimate(unravel(flat_grad.astype(flat.dtype)), fitness, aux)


def es_step(task_return: Callable, params: Any, key: jax.Array, step_size, sigma,
            num_perturbations: int) -> tuple[Any, jax.Array]:
    """The "es" adaptation step: ``params + step_size * g`` with ``g`` the antithetic
    estimate of ``grad task_return`` (:func:`antithetic_gradient`).

    ``task_return(params) -> scalar`` closes over its rollouts, so every
    member is scored on the same episodes. Returns ``(new params, task_return(params))``.
    """
    estimate = antithetic_gradient(task_return, params, key, sigma, num_perturbations)
    return tree_axpy(step_size, estimate.gradient, params), estimate.fitness[0]


def hill_climbing_step(task_return: Callable, params: Any, key: jax.Array, sigma
                       ) -> tuple[Any, jax.Array]:
    """The "hill_climbing" adaptation step: propose ``params + sigma * g``
    (``g ~ N(0, I)``), keep it only if its return beats ``params`` '.

    Both are scored by the same ``task_return`` (same rollouts), so the kept
    parameters never return less than ``params`` on them. Returns
    ``(new params, task_return(params))``.
    """
    flat, unravel = ravel_pytree(params)
    candidate = flat + sigma * jax.random.normal(key, flat.shape, flat.dtype)
    current, proposed = jax.vmap(lambda f: task_return(unravel(f)))(
        jnp.stack([flat, candidate]))
    return unravel(jnp.where(proposed > current, candidate, flat)), current


def rollouts_per_adaptation(config: Config) -> int:
    """Rollouts of ``inner_episodes`` episodes one adaptation of one task takes
    (``num_inner_steps`` steps and the final rollout of the adapted policy)."""
    per_step = {"pg": 1, "es": 2 * config.adaptation_perturbations + 1,
                "hill_climbing": 2}[config.adaptation]
    return config.num_inner_steps * per_step + 1


def env_steps_per_iteration(config: Config) -> int:
    """Environment steps one meta-iteration takes, counted as MAML's benchmarks count
    theirs (``episodes * horizon`` per rollout, every step slot of a trajectory):
    ``2N + 1`` members adapting on ``meta_batch_size`` tasks each."""
    return ((2 * config.num_perturbations + 1) * config.meta_batch_size
            * rollouts_per_adaptation(config) * config.inner_episodes * config.horizon)


# -- the learner -----------------------------------------------------------------------------


@struct.dataclass
class ESMAMLState:
    """Learner state: meta-parameters, optimiser state, a fixed random initialisation."""

    meta_params: Any         # {"policy": params, "inner_lr": None}, MAML's layout
    opt_state: Any
    random_init_params: Any  # same layout: a fresh initialisation (the baseline curve)
    step: jax.Array

    @property
    def params(self) -> Any:
        """``meta_params`` under the name every learner's state gives what it learns."""
        return self.meta_params


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus ES-MAML's parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    adapt: Any           # (meta_params, env_params, key, num_steps, num_episodes) -> [K + 1]
    objective: Any       # (meta_params, task_params, task_keys) -> (J, mean curve [K + 1])
    meta_gradient: Any   # (meta_params, task_params, task_keys, key) -> Estimate


def make(config: Config, family, mesh=None) -> Learner:
    """Build the ES-MAML learner for ``family`` (a :class:`metarl_jax.tasks.TaskFamily`)."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be an es_maml.Config, got {type(config).__name__}")
    check_divisible(config.meta_batch_size, mesh)
    env = family.env
    env_params0 = env.default_params
    policy = make_policy(env.action_space(env_params0), tuple(config.hidden_sizes),
                         config.activation, config.init_log_std)
    sample_action = policy_sample_fn(policy)
    obs_shape = env.observation_space(env_params0).shape
    pg_adapt = maml.make(maml.inner_step_config(config), family).adapt

    def zeroth_order_adapt(policy_params, env_params, key, num_steps, episodes):
        """Curve of the "es" / "hill_climbing" operators; point k is the return of
        the k-times adapted policy on the rollouts of step k."""
        curve = []
        for k in range(num_steps + 1):
            key, rollout_key, noise_key = jax.random.split(key, 3)

            def task_return(p, rollout_key=rollout_key):
                traj = rollout(env, sample_action, p, env_params, rollout_key, episodes,
                               config.horizon)
                return jnp.mean(traj.episode_returns)

            if k == num_steps:
                curve.append(task_return(policy_params))
            elif config.adaptation == "es":
                policy_params, current = es_step(task_return, policy_params, noise_key,
                                                 config.inner_lr, config.adaptation_sigma,
                                                 config.adaptation_perturbations)
                curve.append(current)
            else:
                policy_params, current = hill_climbing_step(task_return, policy_params,
                                                            noise_key, config.adaptation_sigma)
                curve.append(current)
        return jnp.stack(curve)

    def adapt(meta_params, env_params, key, num_steps: int, num_episodes: int | None = None):
        """One task's adaptation curve: mean return after 0..num_steps steps ``[K + 1]``."""
        episodes = num_episodes or config.inner_episodes
        if config.adaptation == "pg":
            return pg_adapt(meta_params, env_params, key, num_steps, episodes,
                            (config.inner_lr,))
        return zeroth_order_adapt(meta_params["policy"], env_params, key, num_steps, episodes)

    def objective(meta_params, task_params, task_keys):
        """``J``: the task-mean return after ``num_inner_steps`` steps, and the mean curve."""
        curves = jax.vmap(adapt, in_axes=(None, 0, 0, None))(
            meta_params, task_params, task_keys, config.num_inner_steps)
        return jnp.mean(curves[:, -1]), jnp.mean(curves, axis=0)

    def meta_gradient(meta_params, task_params, task_keys, key) -> Estimate:
        """The ES estimate of grad J at ``meta_params``, every member on these tasks and keys."""
        return antithetic_gradient(lambda mp: objective(mp, task_params, task_keys),
                                   meta_params, key, config.sigma, config.num_perturbations,
                                   config.fitness_shaping, has_aux=True)

    optimizer = optax.adam(config.outer_lr)
    env_steps = env_steps_per_iteration(config)  # a static count: every shape is fixed

    def init(key: jax.Array) -> ESMAMLState:
        """Initial meta-parameters and the fixed random initialisation of the baseline."""
        init_key, random_key = jax.random.split(key)
        dummy = jnp.zeros(obs_shape, jnp.float32)
        meta_params = {"policy": policy.init(init_key, dummy), "inner_lr": None}
        return ESMAMLState(
            meta_params=meta_params,
            opt_state=optimizer.init(meta_params),
            random_init_params={"policy": policy.init(random_key, dummy), "inner_lr": None},
            step=jnp.zeros((), jnp.int32),
        )

    def update(state: ESMAMLState, key: jax.Array):
        """One meta-iteration: sample tasks, evaluate the population, Adam step (pure)."""
        task_key, rollout_key, noise_key = jax.random.split(key, 3)
        task_params = shard_tasks(family.sample(task_key, config.meta_batch_size, "train"), mesh)
        task_keys = shard_tasks(jax.random.split(rollout_key, config.meta_batch_size), mesh)
        estimate = meta_gradient(state.meta_params, task_params, task_keys, noise_key)
        ascent = jax.tree.map(jnp.negative, estimate.gradient)  # optax descends
        updates, opt_state = optimizer.update(ascent, state.opt_state, state.meta_params)
        meta_params = optax.apply_updates(state.meta_params, updates)
        centre_curve = estimate.aux[0]
        metrics = {
            "post_adaptation_return": estimate.fitness[0],
            "pre_adaptation_return": centre_curve[0],
            "population_return": jnp.mean(estimate.fitness[1:]),
            "population_return_std": jnp.std(estimate.fitness[1:]),
            "grad_norm": optax.tree.norm(estimate.gradient),
            "env_steps": env_steps,
        }
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return state.replace(meta_params=meta_params, opt_state=opt_state,
                             step=state.step + 1), metrics

    def evaluate(state: ESMAMLState, task_params, key: jax.Array,
                 num_steps: int | None = None) -> AdaptationCurves:
        """Per-task returns after 0..num_steps adaptation steps, ``{name: [tasks, K+1]}``.

        ``num_steps`` defaults to ``DEFAULT_EVAL_STEPS``; x is ``0..K``, the
        step sizes are the training ones, each step on ``eval_episodes``
        trajectories. Curves: ``"es_maml"`` and ``"random_init"`` (a fresh
        initialisation drawn once in ``init``), on the same tasks and keys.
        """
        num_steps = DEFAULT_EVAL_STEPS if num_steps is None else num_steps
        check_int_at_least("num_steps", num_steps, 0)
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]
        task_keys = jax.random.split(key, num_tasks)

        def curves(meta_params):
            return jax.vmap(adapt, in_axes=(None, 0, 0, None, None))(
                meta_params, task_params, task_keys, num_steps, config.eval_episodes)

        return make_curves({"es_maml": curves(state.meta_params),
                            "random_init": curves(state.random_init_params)},
                           range(num_steps + 1),
                           "inner gradient steps" if config.adaptation == "pg"
                           else "adaptation steps")

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="post_adaptation_return", adapt=adapt, objective=objective,
                   meta_gradient=meta_gradient)
