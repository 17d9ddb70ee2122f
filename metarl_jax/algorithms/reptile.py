"""Reptile for RL (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning
Algorithms", arXiv:1803.02999).

Reptile learns an initialisation ``theta`` like MAML, without a meta-gradient:
it adapts to each task with ordinary inner steps and moves ``theta`` towards
the adapted parameters,

    theta  <-  theta + eps * mean_task(theta'_task - theta),

so nothing is differentiated through the inner loop (first order, and the
cost of one outer step is that of the inner steps alone).

One meta-iteration is one pure function ``update(state, key)``:

1. sample ``meta_batch_size`` tasks from the family's train split;
2. per task (``vmap``): ``num_inner_steps`` (K) inner steps from ``theta``,
   each on *fresh* trajectories of the policy adapted so far, then one more
   rollout of the adapted policy ``theta'`` (it only measures the
   post-adaptation return). The inner step (``inner_algorithm``) is

   * ``"pg"``: MAML's policy-gradient step (its inner loss, linear feature
     baseline and step size ``inner_lr``), taken from
     :mod:`metarl_jax.algorithms.maml`, so Reptile and MAML adapt alike;
   * ``"ppo"``: ``num_epochs`` epochs of the PPO-clip surrogate on the step's
     batch (``num_minibatches`` minibatches of episodes), plain SGD of size
     ``inner_lr``, through :func:`metarl_jax.rl.ppo.ppo_update`;

3. the pseudo-gradient ``g = theta - mean_task(theta'_task)`` goes through
   the outer rule: ``outer_optimizer="sgd"`` is Reptile's own step
   ``theta - eps_t g`` (``eps_t = outer_lr``, linearly annealed to 0 over
   ``anneal_iterations`` as in the paper when that is positive);
   ``"adam"`` feeds ``g`` to Adam (scaled by the same ``eps_t``), as the
   paper suggests (treat ``theta - theta'`` as a gradient for an adaptive
   optimiser).

Why it meta-learns (the paper's section 5): with plain SGD of step ``alpha``,
``(theta - theta_K) / alpha = sum_{k<K} grad L_k(theta_k)``, the sum of the
inner-loss gradients along the path. With K = 1 that is ``grad L_0(theta)``,
the gradient of the task-mean loss: joint (multi-task) training. From K = 2
on, the later terms are gradients at adapted parameters on fresh data; the
term ``grad L_1(theta_1)`` is exactly first-order MAML's direction with one
inner step, and to second order in ``alpha`` the sum's expectation adds the
term that maximises the inner product of gradients of different batches of
a task, which is what makes fast adaptation possible.
``tests/test_reptile.py`` checks the identity against
:mod:`metarl_jax.algorithms.maml` 's first-order meta-gradient on the same
rollouts.

The "pretrained" baseline (``train_pretrained``) is the K = 1 case on the
pooled loss: multi-task policy gradient with the same outer rule, one
rollout per task per iteration (MAML's zero-step learner gives its
gradient), inside the same compiled update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from metarl_jax.algorithms import maml
from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import rollout
from metarl_jax.nn.mlp import make_policy, policy_sample_fn
from metarl_jax.rl.losses import ppo_clip_loss
from metarl_jax.rl.ppo import ppo_update
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (check_bool, check_choice, check_in_unit_interval,
                              check_int_at_least, check_positive, check_positive_int,
                              check_positive_int_tuple)

INNER_ALGORITHMS = ("pg", "ppo")
OUTER_OPTIMIZERS = ("sgd", "adam")
ACTIVATIONS = maml.ACTIVATIONS
DEFAULT_EVAL_STEPS = maml.DEFAULT_EVAL_STEPS

# Config fields a population may give per member: used only arithmetically, so
# they can be traced scalars; every other field is static (see core.population).
# Not init_log_std: make_policy turns it into a Python float.
HYPERPARAMETERS = ("inner_lr", "outer_lr", "gamma", "gae_lambda", "clip_eps")


@dataclasses.dataclass(frozen=True)
class Config:
    """Reptile hyperparameters.

    The fields shared with MAML default to MAML's navigation configuration
    (inner step 0.1, 2x64 tanh policy, meta-batch 10 of 10 trajectories of
    100 steps); three inner steps (with one, Reptile is joint training), so
    ``metarl train reptile --family navigation2d`` takes a few CPU minutes.

    Sizes, ``inner_algorithm`` and ``outer_optimizer`` are static;
    :data:`HYPERPARAMETERS` may be traced.
    """

    meta_batch_size: int = 10          # tasks per meta-iteration
    num_inner_steps: int = 3           # inner steps K (static); K = 1 is joint training
    inner_algorithm: str = "pg"        # "pg" (MAML's inner step) or "ppo" (PPO-clip epochs)
    inner_lr: float = 0.1              # inner step size alpha (SGD, both inner algorithms)
    inner_episodes: int = 10           # trajectories per inner step (and the final rollout)
    horizon: int = 100                 # steps per trajectory
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    num_epochs: int = 4                # PPO epochs per inner step ("ppo")
    num_minibatches: int = 1           # PPO minibatches of episodes per epoch ("ppo")
    clip_eps: float = 0.2              # PPO clipping range ("ppo")
    outer_optimizer: str = "sgd"       # "sgd": theta + eps (theta' - theta); "adam"
    outer_lr: float = 1.0              # step size eps; for "adam" Adam's (e.g. 1e-3)
    anneal_iterations: int = 0         # eps decays linearly to 0 over these iterations; 0: constant
    hidden_sizes: tuple[int, ...] = (64, 64)   # MAML's navigation policy
    activation: str = "tanh"
    init_log_std: float = 0.0
    eval_episodes: int = 40            # trajectories per step when evaluating
    train_pretrained: bool = True      # also train the multi-task "pretrained" baseline

    def __post_init__(self):
        for name in ("meta_batch_size", "num_inner_steps", "inner_episodes", "horizon",
                     "num_epochs", "num_minibatches", "eval_episodes"):
            check_positive_int(name, getattr(self, name))
        check_int_at_least("anneal_iterations", self.anneal_iterations, 0)
        for name in ("inner_lr", "outer_lr", "clip_eps"):
            check_positive(name, getattr(self, name))
        for name in ("gamma", "gae_lambda"):
            check_in_unit_interval(name, getattr(self, name))
        for name in ("normalize_advantages", "train_pretrained"):
            check_bool(name, getattr(self, name))
        check_choice("inner_algorithm", self.inner_algorithm, INNER_ALGORITHMS)
        check_choice("outer_optimizer", self.outer_optimizer, OUTER_OPTIMIZERS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_positive_int_tuple("hidden_sizes", tuple(self.hidden_sizes), allow_empty=False)
        if self.inner_episodes % self.num_minibatches:
            raise ValueError(f"num_minibatches ({self.num_minibatches}) must divide "
                             f"inner_episodes ({self.inner_episodes})")


@struct.dataclass
class ReptileState:
    """Learner state: the initialisation, outer-rule state, the baselines."""

    meta_params: Any          # {"policy": params, "inner_lr": None}, MAML's layout
    opt_state: Any            # Adam's moments ("adam") or empty ("sgd")
    pretrained_params: Any    # same layout: the multi-task baseline (or None)
    pretrained_opt_state: Any
    random_init_params: Any   # same layout: a fresh initialisation (the baseline curve)
    step: jax.Array

    @property
    def params(self) -> Any:
        """``meta_params`` under the name every learner's state gives what it learns."""
        return self.meta_params


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus Reptile's parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    adapt: Any          # (meta_params, env_params, key, K, num_episodes) -> curve [K + 1], one task
    adapt_tasks: Any    # (meta_params, task_params, key) -> (adapted, returns, env steps) per task
    outer_step_size: Any  # step -> eps_t


def make(config: Config, family, mesh=None) -> Learner:
    """Build the Reptile learner for ``family`` (a :class:`metarl_jax.tasks.TaskFamily`)."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a reptile.Config, got {type(config).__name__}")
    check_divisible(config.meta_batch_size, mesh)
    env = family.env
    env_params0 = env.default_params
    policy = make_policy(env.action_space(env_params0), tuple(config.hidden_sizes),
                         config.activation, config.init_log_std)
    sample_action = policy_sample_fn(policy)
    obs_shape = env.observation_space(env_params0).shape
    num_steps = config.num_inner_steps
    pg = maml.make(maml.inner_step_config(config, num_steps), family)
    joint = maml.make(maml.inner_step_config(config, 0), family)  # its meta-loss is the pooled PG loss

    # -- inner adaptation ---------------------------------------------------------------------

    def ppo_loss(policy_params, traj, adv, old_log_prob):
        log_prob = policy.apply(policy_params, traj.obs).log_prob(traj.action)
        return ppo_clip_loss(log_prob, old_log_prob, adv, traj.valid, config.clip_eps), {}

    inner_sgd = optax.sgd(config.inner_lr)

    def ppo_adaptation(policy_params, env_params, key, steps: int, episodes: int):
        """``steps`` PPO inner steps, each on fresh trajectories; returns the adapted
        policy params and the ``steps + 1`` trajectory batches (the last one of the
        adapted policy)."""
        trajs = []
        for k in range(steps + 1):
            key, rollout_key, epoch_key = jax.random.split(key, 3)
            traj = jax.lax.stop_gradient(rollout(env, sample_action, policy_params, env_params,
                                                 rollout_key, episodes, config.horizon))
            trajs.append(traj)
            if k < steps:
                # recomputed on the whole batch, as the loss computes it, so that the
                # first epoch's ratios are exactly 1 (its gradient is the PG step's)
                old_log_prob = jax.lax.stop_gradient(
                    policy.apply(policy_params, traj.obs).log_prob(traj.action))
                # full-batch epochs need no permutation key; minibatches do
                perm_key = epoch_key if config.num_minibatches > 1 else None
                policy_params, _, _ = ppo_update(
                    ppo_loss, inner_sgd, policy_params, inner_sgd.init(policy_params),
                    (traj, pg.advantages(traj), old_log_prob), perm_key,
                    num_epochs=config.num_epochs, num_minibatches=config.num_minibatches)
        return policy_params, trajs

    def adapt_task(meta_params, env_params, key):
        """One task's K inner steps from ``meta_params``: (adapted meta-params,
        mean return of each of the K + 1 rollouts ``[K + 1]``, env steps taken)."""
        if config.inner_algorithm == "pg":
            batches, adapted = pg.sample_adaptation(meta_params, env_params, key, num_steps)
            trajs = [traj for traj, _ in batches]
        else:
            adapted, trajs = ppo_adaptation(meta_params["policy"], env_params, key, num_steps,
                                            config.inner_episodes)
        returns = jnp.stack([jnp.mean(traj.episode_returns) for traj in trajs])
        env_steps = sum(jnp.sum(traj.valid) for traj in trajs)
        return {**meta_params, "policy": adapted}, returns, env_steps

    def adapt_tasks(meta_params, task_params, key):
        """:func:`adapt_task` for a batch of tasks (leading axis), one key each, split
        from ``key`` as :attr:`maml.Learner.sample` splits it (same key, same rollouts)."""
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]
        keys = shard_tasks(jax.random.split(key, num_tasks), mesh)
        return jax.vmap(adapt_task, in_axes=(None, 0, 0))(meta_params, task_params, keys)

    def adapt(meta_params, env_params, key, steps: int, num_episodes: int | None = None):
        """One task's adaptation curve: mean return after 0..steps inner steps ``[K + 1]``,
        each step on ``num_episodes`` (default ``eval_episodes``) fresh trajectories."""
        episodes = num_episodes or config.eval_episodes
        if config.inner_algorithm == "pg":
            return pg.adapt(meta_params, env_params, key, steps, episodes, (config.inner_lr,))
        _, trajs = ppo_adaptation(meta_params["policy"], env_params, key, steps, episodes)
        return jnp.stack([jnp.mean(traj.episode_returns) for traj in trajs])

    # -- outer rule ---------------------------------------------------------------------------

    # "sgd" uses the pseudo-gradient as it is; "adam" rescales it by its moments
    direction = optax.scale_by_adam() if config.outer_optimizer == "adam" else optax.identity()

    def outer_step_size(step):
        """``eps_t``: ``outer_lr``, linearly annealed to 0 over ``anneal_iterations``."""
        if config.anneal_iterations == 0:
            return jnp.asarray(config.outer_lr, jnp.float32)
        remaining = 1.0 - step.astype(jnp.float32) / config.anneal_iterations
        return config.outer_lr * jnp.clip(remaining, 0.0, 1.0)

    def outer_step(meta_params, opt_state, pseudo_grad, step_size):
        """``theta - eps_t * D(g)`` with ``D`` the identity ("sgd") or Adam's scaling."""
        updates, opt_state = direction.update(pseudo_grad, opt_state, meta_params)
        new_params = jax.tree.map(lambda p, u: p - step_size * u, meta_params, updates)
        return new_params, opt_state

    # -- learner functions --------------------------------------------------------------------

    def init(key: jax.Array) -> ReptileState:
        """Initial meta-parameters (the pretrained baseline starts from the same ones)."""
        init_key, random_key = jax.random.split(key)
        dummy = jnp.zeros(obs_shape, jnp.float32)
        meta_params = {"policy": policy.init(init_key, dummy), "inner_lr": None}
        pretrained = meta_params if config.train_pretrained else None
        return ReptileState(
            meta_params=meta_params,
            opt_state=direction.init(meta_params),
            pretrained_params=pretrained,
            pretrained_opt_state=direction.init(pretrained) if pretrained is not None else None,
            random_init_params={"policy": policy.init(random_key, dummy), "inner_lr": None},
            step=jnp.zeros((), jnp.int32),
        )

    def update(state: ReptileState, key: jax.Array):
        """One meta-iteration: sample tasks, adapt each, move towards the mean (pure)."""
        task_key, adapt_key, pretrained_key = jax.random.split(key, 3)
        task_params = shard_tasks(family.sample(task_key, config.meta_batch_size, "train"), mesh)
        adapted, returns, env_steps = adapt_tasks(state.meta_params, task_params, adapt_key)
        # theta - mean(theta'): the adapted params are constants (no second-order terms)
        pseudo_grad = jax.tree.map(lambda p, a: p - jnp.mean(jax.lax.stop_gradient(a), axis=0),
                                   state.meta_params, adapted)
        step_size = outer_step_size(state.step)
        meta_params, opt_state = outer_step(state.meta_params, state.opt_state, pseudo_grad,
                                            step_size)
        metrics = {
            "pre_adaptation_return": jnp.mean(returns[:, 0]),
            "post_adaptation_return": jnp.mean(returns[:, -1]),
            "pseudo_grad_norm": optax.tree.norm(pseudo_grad),
            "outer_step_size": step_size,
            # valid steps: the slots after an episode ended are not counted
            "env_steps": jnp.sum(env_steps),
        }
        pre_params, pre_opt = state.pretrained_params, state.pretrained_opt_state
        if pre_params is not None:
            # K = 1 on the pooled loss: theta - theta' = alpha * grad (joint training)
            batches = joint.sample(pre_params, task_params, pretrained_key)
            grads = jax.grad(joint.meta_loss)(pre_params, batches)
            pre_params, pre_opt = outer_step(
                pre_params, pre_opt, jax.tree.map(lambda g: config.inner_lr * g, grads),
                step_size)
            traj = batches[0][0]
            metrics["pretrained_return"] = jnp.mean(traj.episode_returns)
            metrics["env_steps"] = metrics["env_steps"] + jnp.sum(traj.valid)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return state.replace(meta_params=meta_params, opt_state=opt_state,
                             pretrained_params=pre_params, pretrained_opt_state=pre_opt,
                             step=state.step + 1), metrics

    def evaluate(state: ReptileState, task_params, key: jax.Array,
                 num_steps: int | None = None) -> AdaptationCurves:
        """Per-task returns after 0..num_steps inner steps, ``{name: [tasks, K+1]}``.

        ``num_steps`` defaults to ``DEFAULT_EVAL_STEPS``; x is ``0..K``, each
        step the training inner step (``inner_algorithm``, ``inner_lr``) on
        ``eval_episodes`` fresh trajectories. Curves, on the same tasks with
        the same keys: ``"reptile"``, ``"pretrained"`` (the multi-task
        baseline, adapted with the same steps; when ``train_pretrained``) and
        ``"random_init"`` (a fresh initialisation drawn once in ``init``).
        """
        num_steps = DEFAULT_EVAL_STEPS if num_steps is None else num_steps
        check_int_at_least("num_steps", num_steps, 0)
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]
        task_keys = jax.random.split(key, num_tasks)

        def curves(meta_params):
            return jax.vmap(adapt, in_axes=(None, 0, 0, None, None))(
                meta_params, task_params, task_keys, num_steps, config.eval_episodes)

        out = {"reptile": curves(state.meta_params)}
        if state.pretrained_params is not None:
            out["pretrained"] = curves(state.pretrained_params)
        out["random_init"] = curves(state.random_init_params)
        return make_curves(out, range(num_steps + 1), "inner gradient steps")

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="post_adaptation_return", adapt=adapt, adapt_tasks=adapt_tasks,
                   outer_step_size=outer_step_size)
