"""Model-Agnostic Meta-Learning for RL (Finn et al. 2017, arXiv:1703.03400).

One meta-iteration is one pure function ``update(state, key)``:

1. sample ``meta_batch_size`` tasks from the family's train split;
2. per task (``vmap``): roll out ``inner_episodes`` episodes with the current
   policy, take ``num_inner_steps`` policy-gradient steps, each on *fresh*
   trajectories sampled with the policy adapted so far, and finally roll out
   the adapted policy to get the validation trajectories;
3. the outer loss is the surrogate of the adapted policy on the validation
   trajectories, as a function of the meta-parameters: the adaptation is
   recomputed differentiably from the (fixed) sampled trajectories, so
   ``jax.grad`` of it is the exact second-order meta-gradient
   (``first_order=True`` stops the gradient through the inner gradients);
4. the outer optimiser takes a step: Adam on the policy-gradient surrogate,
   PPO-clip epochs (as in ProMP, Rothfuss et al. 2019) or a TRPO step with the
   KL of the *adapted* policies as constraint (as in the MAML paper and
   pytorch-maml-rl).

The same outer step with zero inner steps trains the "pretrained" baseline of
the MAML paper's figure (multi-task policy gradient on the same tasks) inside
the same compiled update, so one run gives MAML and its baseline.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import Trajectory, rollout
from metarl_jax.nn.mlp import make_policy, policy_sample_fn
from metarl_jax.rl.baselines import linear_feature_baseline
from metarl_jax.rl.losses import dice_loss, ppo_clip_loss
from metarl_jax.rl.ppo import ppo_update
from metarl_jax.rl.returns import discounted_returns, gae, masked_mean, normalize_advantages
from metarl_jax.rl.trpo import gauss_newton_fvp, trpo_step
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (check_choice, check_in_unit_interval, check_int_at_least,
                              check_positive, check_positive_int, check_positive_int_tuple,
                              tree_axpy)

OUTER_OPTIMIZERS = ("adam", "ppo", "trpo")
INNER_ESTIMATORS = ("vpg", "dice")
ACTIVATIONS = ("relu", "tanh")
DEFAULT_EVAL_STEPS = 3  # inner steps an evaluation curve spans unless asked otherwise


# Config fields a population may give per member (used only arithmetically, so
# they can be traced scalars); every other field is static: see core.population.
HYPERPARAMETERS = ('inner_lr', 'outer_lr', 'max_kl', 'clip_eps', 'gamma', 'gae_lambda')


@dataclasses.dataclass(frozen=True)
class Config:
    """MAML hyperparameters.

    Defaults are pytorch-maml-rl's 2D-navigation configuration (one inner step
    of 0.1, TRPO with max KL 0.01, 2x64 tanh policy, 100-step trajectories)
    at half its batch (meta-batch 10 of 10 trajectories instead of 20 of 20),
    so that ``metarl train maml --family navigation2d`` is a few minutes on a
    laptop CPU; ``benchmarks/maml_speed.py`` times the full reference batch.

    Sizes are static (they change array shapes); the rest could be swept.
    ``ppo_epochs`` and ``ppo_clip`` were renamed ``num_epochs`` and
    ``clip_eps`` (the names RL² uses); config files and checkpoints with the
    old keys still load, with a ``DeprecationWarning``.
    """

    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"ppo_epochs": "num_epochs",
                                                "ppo_clip": "clip_eps"}

    meta_batch_size: int = 10          # tasks per meta-iteration
    num_inner_steps: int = 1           # inner policy-gradient steps (static)
    inner_lr: float = 0.1              # inner step size alpha
    learn_inner_lr: bool = False       # Meta-SGD: learn a per-parameter alpha
    inner_episodes: int = 10           # trajectories per inner step (and validation)
    horizon: int = 100                 # steps per trajectory
    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize_advantages: bool = True
    inner_estimator: str = "vpg"       # "vpg" (as the paper) or "dice" (unbiased 2nd order)
    first_order: bool = False          # FOMAML: no gradient through inner gradients
    remat_inner_steps: bool = False    # jax.checkpoint each inner step (memory for many steps)
    outer_optimizer: str = "trpo"      # "adam" | "ppo" | "trpo"
    outer_lr: float = 1e-3             # Adam / PPO learning rate
    num_epochs: int = 5                # PPO epochs per outer step
    clip_eps: float = 0.2              # PPO clipping range
    max_kl: float = 0.01               # TRPO trust region
    cg_iters: int = 10
    cg_damping: float = 1e-5
    line_search_steps: int = 15
    line_search_backtrack: float = 0.8
    hidden_sizes: tuple[int, ...] = (64, 64)   # pytorch-maml-rl's navigation policy
    activation: str = "tanh"
    init_log_std: float = 0.0
    eval_episodes: int = 40            # trajectories per step when evaluating
    eval_inner_lrs: tuple[float, ...] = ()  # evaluation step sizes; last repeats; () = inner_lr
    train_pretrained: bool = True      # also train the multi-task "pretrained" baseline

    def __post_init__(self):
        for name in ("meta_batch_size", "inner_episodes", "horizon", "eval_episodes",
                     "num_epochs", "cg_iters", "line_search_steps"):
            check_positive_int(name, getattr(self, name))
        check_int_at_least("num_inner_steps", self.num_inner_steps, 0)
        check_choice("outer_optimizer", self.outer_optimizer, OUTER_OPTIMIZERS)
        check_choice("inner_estimator", self.inner_estimator, INNER_ESTIMATORS)
        check_choice("activation", self.activation, ACTIVATIONS)
        for name in ("outer_lr", "max_kl", "clip_eps"):
            check_positive(name, getattr(self, name))
        if not 0 < self.line_search_backtrack < 1:
            raise ValueError("line_search_backtrack must be in (0, 1)")
        for name in ("gamma", "gae_lambda"):
            check_in_unit_interval(name, getattr(self, name))
        check_positive_int_tuple("hidden_sizes", tuple(self.hidden_sizes), allow_empty=False)
        if any(not lr >= 0 for lr in self.eval_inner_lrs):
            raise ValueError("eval_inner_lrs must be non-negative")


@struct.dataclass
class MAMLState:
    """Learner state: meta-parameters, optimiser state, the pretrained baseline."""

    meta_params: Any        # {"policy": params, "inner_lr": per-parameter alphas or None}
    opt_state: Any
    pretrained_params: Any  # {"policy": params} of the multi-task baseline (or None)
    pretrained_opt_state: Any
    random_init_params: Any  # {"policy": params} of a fixed fresh initialisation (baseline)
    step: jax.Array

    @property
    def params(self) -> Any:
        """``meta_params`` under the name every learner's state gives what it learns
        (the checkpointed field keeps its name, so old checkpoints restore)."""
        return self.meta_params


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus MAML's parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    adapt: Any          # one task's adaptation curve [K + 1] (see select_eval_lrs)
    sample: Any         # (meta_params, task_params, key) -> [(D_0, w_0), ..., (D_K, adv_K)]
    meta_loss: Any      # (meta_params, batches) -> the differentiable meta-objective
    advantages: Any     # Trajectory [episodes, T] -> normalised GAE advantages (one task)
    sample_adaptation: Any  # (meta_params, env_params, key, K) -> (batches, adapted policy), one task


def inner_step_config(config, num_inner_steps: int | None = None) -> Config:
    """The ``Config`` whose inner step another learner borrows (Reptile, ES-MAML).

    ``config`` is that learner's config: it has MAML's rollout, policy and
    inner-step fields (``meta_batch_size``, ``inner_episodes``, ``horizon``,
    ``normalize_advantages``, ``hidden_sizes``, ``activation``,
    ``init_log_std``, ``eval_episodes``, ``inner_lr``, ``gamma``,
    ``gae_lambda``); ``num_inner_steps`` defaults to its own. The fields a
    population may trace (``inner_lr``, ``gamma``, ``gae_lambda``) are set
    after construction: ``Config``'s validators compare them (a tracer cannot
    be compared), and the borrowing learner checked them while they were
    concrete.
    """
    inner = Config(meta_batch_size=config.meta_batch_size,
                   num_inner_steps=(config.num_inner_steps if num_inner_steps is None
                                    else num_inner_steps),
                   inner_episodes=config.inner_episodes, horizon=config.horizon,
                   normalize_advantages=config.normalize_advantages,
                   hidden_sizes=tuple(config.hidden_sizes), activation=config.activation,
                   init_log_std=config.init_log_std, eval_episodes=config.eval_episodes,
                   outer_optimizer="adam", train_pretrained=False)
    for name in ("inner_lr", "gamma", "gae_lambda"):
        object.__setattr__(inner, name, getattr(config, name))
    return inner


def make(config: Config, family, mesh=None) -> Learner:
    """Build the MAML learner for ``family`` (a :class:`metarl_jax.tasks.TaskFamily`)."""
    if not isinstance(config, Config):
        raise TypeError(f"config must be a maml.Config, got {type(config).__name__}")
    check_divisible(config.meta_batch_size, mesh)
    env = family.env
    env_params0 = env.default_params
    policy = make_policy(env.action_space(env_params0), tuple(config.hidden_sizes),
                         config.activation, config.init_log_std)
    sample_action = policy_sample_fn(policy)
    obs_shape = env.observation_space(env_params0).shape
    episodes, horizon = config.inner_episodes, config.horizon

    # -- losses on fixed trajectories ------------------------------------------

    def advantages(traj: Trajectory):
        """Advantages from the linear feature baseline fitted on ``traj``."""
        returns = discounted_returns(traj.reward, traj.valid, config.gamma)
        values = linear_feature_baseline(traj.obs, returns, traj.valid)
        next_values = jnp.concatenate(
            [values[:, 1:] * traj.valid[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
        adv, _ = gae(traj.reward, values, next_values, traj.terminated, traj.valid,
                     config.gamma, config.gae_lambda)
        if config.normalize_advantages:
            adv = normalize_advantages(adv, traj.valid)
        return jax.lax.stop_gradient(adv)

    def log_prob(policy_params, traj: Trajectory):
        dist = policy.apply(policy_params, traj.obs)
        return dist.log_prob(jax.lax.stop_gradient(traj.action))

    def inner_weights(traj: Trajectory):
        """What the inner loss weights log-probs with: advantages (VPG) or the
        baseline values (DiCE). Constants, computed once per sampled batch."""
        if config.inner_estimator == "dice":
            returns = discounted_returns(traj.reward, traj.valid, config.gamma)
            return jax.lax.stop_gradient(linear_feature_baseline(traj.obs, returns, traj.valid))
        return advantages(traj)

    def inner_loss(policy_params, traj: Trajectory, weights):
        logp = log_prob(policy_params, traj)
        if config.inner_estimator == "dice":
            return dice_loss(logp, traj.reward, traj.valid, config.gamma, baseline=weights)
        return -masked_mean(logp * weights, traj.valid)

    def inner_step(meta_params, policy_params, batch, lr):
        """One adaptation step on ``batch = (trajectory, inner weights)``."""
        grads = jax.grad(inner_loss)(policy_params, *batch)
        if config.first_order:
            grads = jax.lax.stop_gradient(grads)
        if meta_params["inner_lr"] is not None:
            return tree_axpy(jax.tree.map(jnp.negative, meta_params["inner_lr"]), grads,
                             policy_params)
        return tree_axpy(-lr, grads, policy_params)

    if config.remat_inner_steps:
        inner_step = jax.checkpoint(inner_step)

    # -- sampling (no gradient) and differentiable re-adaptation ---------------

    def sample_adaptation(meta_params, env_params, key, num_steps):
        """Sample D_0..D_K with the policy adapted along the way (one task).

        Returns ``[(D_0, w_0), ..., (D_{K-1}, w_{K-1}), (D_K, advantages_K)]``
        (inner weights and outer advantages are constants of the data) and
        the adapted policy params.
        """
        policy_params = meta_params["policy"]
        batches = []
        for k in range(num_steps + 1):
            key, sub = jax.random.split(key)
            traj = rollout(env, sample_action, policy_params, env_params, sub, episodes, horizon)
            traj = jax.lax.stop_gradient(traj)
            if k < num_steps:
                batches.append((traj, inner_weights(traj)))
                policy_params = jax.lax.stop_gradient(
                    inner_step(meta_params, policy_params, batches[-1], config.inner_lr))
            else:
                batches.append((traj, advantages(traj)))
        return batches, policy_params

    def readapt(meta_params, batches):
        """The adapted policy params as a differentiable function of meta_params."""
        policy_params = meta_params["policy"]
        for batch in batches[:-1]:
            policy_params = inner_step(meta_params, policy_params, batch, config.inner_lr)
        return policy_params

    def collect(meta_params, task_params, key, num_steps):
        """Per-task data for an outer step: trajectories, advantages, old log-probs."""
        keys = shard_tasks(jax.random.split(key, config.meta_batch_size), mesh)
        trajs, adapted = jax.vmap(sample_adaptation, in_axes=(None, 0, 0, None))(
            meta_params, task_params, keys, num_steps)
        valid_traj, adv = trajs[-1]
        old_logp = jax.vmap(log_prob)(adapted, valid_traj)
        old_dist = jax.vmap(lambda p, t: policy.apply(p, t.obs))(adapted, valid_traj)
        return trajs, adv, jax.lax.stop_gradient(old_logp), jax.lax.stop_gradient(old_dist)

    def new_dists_and_logp(meta_params, trajs):
        """Adapted policies' distributions and log-probs on D_K, per task (leading axis)."""
        def per_task(task_batches):
            adapted = readapt(meta_params, task_batches)
            valid_traj = task_batches[-1][0]
            dist = policy.apply(adapted, valid_traj.obs)
            return dist, dist.log_prob(valid_traj.action)

        return jax.vmap(per_task)(trajs)

    def sample(meta_params, task_params, key):
        """Batches ``[(D_0, w_0), ..., (D_K, adv_K)]`` of a task batch (no gradient)."""
        keys = jax.random.split(key, jax.tree.leaves(task_params)[0].shape[0])
        trajs, _ = jax.vmap(sample_adaptation, in_axes=(None, 0, 0, None))(
            meta_params, task_params, keys, config.num_inner_steps)
        return trajs

    def meta_loss(meta_params, trajs):
        """Policy-gradient meta-objective on fixed trajectories (differentiable in
        ``meta_params`` through the inner steps; its gradient is the MAML
        meta-gradient estimator)."""
        valid_traj, adv = trajs[-1]
        _, logp = new_dists_and_logp(meta_params, trajs)
        return -masked_mean(logp * adv, valid_traj.valid)

    # -- outer optimisers ---------------------------------------------------------

    optimizer = optax.adam(config.outer_lr)

    def outer_step(meta_params, opt_state, task_params, key, num_steps):
        """One outer update from data sampled with ``meta_params``."""
        trajs, adv, old_logp, old_dist = collect(meta_params, task_params, key, num_steps)
        valid = trajs[-1][0].valid

        def surrogate(mp):  # importance-weighted PG surrogate (gradient = PG at mp = old)
            _, logp = new_dists_and_logp(mp, trajs)
            return -masked_mean(jnp.exp(logp - old_logp) * adv, valid)

        if config.outer_optimizer == "adam":
            loss, grads = jax.value_and_grad(surrogate)(meta_params)
            updates, opt_state = optimizer.update(grads, opt_state, meta_params)
            meta_params = optax.apply_updates(meta_params, updates)
            info = {"outer_loss": loss, "grad_norm": optax.tree.norm(grads)}
        elif config.outer_optimizer == "ppo":
            def ppo_loss(mp):  # full batch: the outer loss is a mean over the task batch
                _, logp = new_dists_and_logp(mp, trajs)
                return ppo_clip_loss(logp, old_logp, adv, valid, config.clip_eps), {}

            meta_params, opt_state, (losses, _) = ppo_update(
                ppo_loss, optimizer, meta_params, opt_state, (), None,
                num_epochs=config.num_epochs)
            info = {"outer_loss": losses[0], "outer_loss_final": losses[-1]}
        else:
            def kl_of_dist(dist):
                return masked_mean(jax.vmap(lambda od, nd: od.kl(nd))(old_dist, dist), valid)

            def adapted_dist(mp):
                return new_dists_and_logp(mp, trajs)[0]

            meta_params, trpo_info = trpo_step(
                surrogate, lambda mp: kl_of_dist(adapted_dist(mp)), meta_params,
                max_kl=config.max_kl, damping=config.cg_damping, cg_iters=config.cg_iters,
                backtrack_ratio=config.line_search_backtrack,
                max_backtracks=config.line_search_steps, line_search="sequential",
                fisher_vector_product=gauss_newton_fvp(adapted_dist, kl_of_dist, meta_params))
            info = {"outer_loss": trpo_info["loss_before"], "kl": trpo_info["kl"],
                    "step_fraction": trpo_info["step_fraction"]}
        returns = [jnp.mean(t.episode_returns) for t, _ in trajs]
        return meta_params, opt_state, returns, info

    # -- learner functions ------------------------------------------------------

    def init(key: jax.Array) -> MAMLState:
        """Initial meta-parameters (and the pretrained baseline's, from the same init)."""
        init_key, random_key = jax.random.split(key)
        policy_params = policy.init(init_key, jnp.zeros(obs_shape, jnp.float32))
        inner_lrs = (jax.tree.map(lambda p: jnp.full_like(p, config.inner_lr), policy_params)
                     if config.learn_inner_lr else None)
        meta_params = {"policy": policy_params, "inner_lr": inner_lrs}
        pretrained = {"policy": policy_params, "inner_lr": None} if config.train_pretrained else None
        return MAMLState(
            meta_params=meta_params,
            opt_state=optimizer.init(meta_params),
            pretrained_params=pretrained,
            pretrained_opt_state=optimizer.init(pretrained) if pretrained is not None else None,
            random_init_params={"policy": policy.init(random_key, jnp.zeros(obs_shape, jnp.float32)),
                                "inner_lr": None},
            step=jnp.zeros((), jnp.int32),
        )

    def update(state: MAMLState, key: jax.Array):
        """One meta-iteration: sample tasks, adapt, outer step (pure, jit-able)."""
        task_key, maml_key, pre_key = jax.random.split(key, 3)
        task_params = shard_tasks(family.sample(task_key, config.meta_batch_size, "train"), mesh)
        meta_params, opt_state, returns, info = outer_step(
            state.meta_params, state.opt_state, task_params, maml_key, config.num_inner_steps)
        metrics = {
            "pre_adaptation_return": returns[0],
            "post_adaptation_return": returns[-1],
            **info,
        }
        pre_params, pre_opt = state.pretrained_params, state.pretrained_opt_state
        if pre_params is not None:
            pre_params, pre_opt, pre_returns, _ = outer_step(
                pre_params, pre_opt, task_params, pre_key, 0)
            metrics["pretrained_return"] = pre_returns[0]
        new_state = state.replace(meta_params=meta_params, opt_state=opt_state,
                                  pretrained_params=pre_params, pretrained_opt_state=pre_opt,
                                  step=state.step + 1)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return new_state, metrics

    eval_lrs = tuple(config.eval_inner_lrs) or (config.inner_lr,)

    def adapt(meta_params, env_params, key, num_steps: int, num_episodes=None,
              inner_lrs=None):
        """Adaptation curve of one task: mean return after 0..num_steps steps ``[K+1]``.

        Step ``k`` (1-based) uses ``lrs[min(k, len(lrs)) - 1]`` with ``lrs =
        inner_lrs`` if given (a sequence or a 1-D array, which may be traced),
        else ``config.eval_inner_lrs`` (as the MAML paper evaluates: 0.1 for
        the first step, 0.05 after), unless per-parameter step sizes were
        meta-learned.
        """
        n = num_episodes or config.eval_episodes
        lrs = eval_lrs if inner_lrs is None else inner_lrs
        if len(lrs) == 0:
            raise ValueError("inner_lrs must hold at least one step size, got an empty one")
        policy_params = meta_params["policy"]
        curve = []
        for k in range(num_steps + 1):
            key, sub = jax.random.split(key)
            traj = rollout(env, sample_action, policy_params, env_params, sub, n, horizon)
            curve.append(jnp.mean(traj.episode_returns))
            if k < num_steps:
                lr = lrs[min(k, len(lrs) - 1)]
                policy_params = inner_step(meta_params, policy_params,
                                           (traj, inner_weights(traj)), lr)
        return jnp.stack(curve)

    def evaluate(state: MAMLState, task_params, key: jax.Array, num_steps: int | None = None,
                 inner_lrs=None) -> AdaptationCurves:
        """Per-task returns after 0..num_steps inner steps, ``{name: [tasks, K+1]}``.

        ``num_steps`` defaults to ``DEFAULT_EVAL_STEPS``; x is ``0..K``.

        Curves: ``"maml"``, ``"pretrained"`` (multi-task baseline, fine-tuned
        with the same steps) and ``"random_init"`` (a fresh initialisation,
        drawn once in ``init`` so every evaluation of a run uses the same one).
        ``inner_lrs``: the evaluation step sizes, ``None`` for
        ``config.eval_inner_lrs``, one sequence for every curve, or a dict
        from curve name to sequence (a curve it does not name uses the config's);
        see :func:`select_eval_lrs`.
        """
        num_steps = DEFAULT_EVAL_STEPS if num_steps is None else num_steps
        check_int_at_least("num_steps", num_steps, 0)
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]
        task_keys = jax.random.split(key, num_tasks)
        if isinstance(inner_lrs, dict):
            unknown = set(inner_lrs) - {"maml", "pretrained", "random_init"}
            if unknown:
                raise ValueError(f"inner_lrs names unknown curves {sorted(unknown)}; "
                                 "expected 'maml', 'pretrained' or 'random_init'")
            lrs_of = inner_lrs.get
        else:
            def lrs_of(name):
                return inner_lrs

        def curves(name, meta_params):
            return jax.vmap(adapt, in_axes=(None, 0, 0, None, None, None))(
                meta_params, task_params, task_keys, num_steps, None, lrs_of(name))

        out = {"maml": curves("maml", state.meta_params)}
        if state.pretrained_params is not None:
            out["pretrained"] = curves("pretrained", state.pretrained_params)
        out["random_init"] = curves("random_init", state.random_init_params)
        return make_curves(out, range(num_steps + 1), "inner gradient steps")

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="post_adaptation_return", adapt=adapt, sample=sample,
                   meta_loss=meta_loss, advantages=advantages,
                   sample_adaptation=sample_adaptation)


@partial(jax.jit, static_argnums=(0, 1))
def _mean_curve(adapt, num_steps, meta_params, task_params, task_keys, lrs):
    """Task-mean adaptation curve ``[num_steps + 1]`` with step sizes ``lrs``.

    Module-level and jitted on ``(adapt, num_steps)``: every parameter set of
    one learner (MAML, pretrained, random init) and every candidate share a
    compilation, and no array is baked into the program as a constant.
    """
    curve = jax.vmap(adapt, in_axes=(None, 0, 0, None, None, None))(
        meta_params, task_params, task_keys, num_steps, None, lrs)
    return jnp.mean(curve, axis=0)


def select_eval_lrs(learner: Learner, meta_params, task_params, key: jax.Array,
                    num_steps: int, candidates) -> tuple[tuple[float, ...], list[list[float]]]:
    """Choose the evaluation step size of each adaptation step on validation tasks.

    Greedy, one step at a time: step ``k``'s size is the candidate that gives
    the highest mean return after ``k`` steps, with steps ``1..k-1`` at the
    sizes already chosen. Every candidate is scored on the same tasks with
    the same keys (common random numbers), so the comparison is not drowned
    in sampling noise. Use tasks that are not the test tasks (e.g. a fresh
    draw from the train split): the chosen sizes are hyperparameters.

    ``meta_params`` is any of a :class:`MAMLState`'s parameter sets
    (``state.meta_params``, ``state.pretrained_params``...), so a baseline
    can be given the same tuning. Returns ``(sizes, scores)``: the chosen
    sizes, one per step, and ``scores[k][i]``, the validation mean return
    after ``k + 1`` steps with candidate ``i`` at step ``k + 1``.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    candidates = tuple(float(c) for c in candidates)
    if not candidates or any(not c >= 0 for c in candidates):
        raise ValueError(f"candidates must be non-empty and non-negative, got {candidates!r}")
    if meta_params.get("inner_lr") is not None:
        raise ValueError("these parameters carry meta-learned per-parameter step sizes "
                         "(learn_inner_lr=True); evaluation step sizes are not used")
    num_tasks = jax.tree.leaves(task_params)[0].shape[0]
    task_keys = jax.random.split(key, num_tasks)
    chosen, scores = [], []
    for step in range(1, num_steps + 1):
        row = [float(_mean_curve(learner.adapt, step, meta_params, task_params, task_keys,
                                 jnp.asarray(chosen + [c], jnp.float32))[step])
               for c in candidates]
        scores.append(row)
        chosen.append(candidates[max(range(len(row)), key=row.__getitem__)])
    return tuple(chosen), scores
