"""Meta-Q-Learning for discrete actions: a context-conditioned double DQN with MQL's adaptation.

After Fakoor et al., "Meta-Q-Learning", ICLR 2020 (arXiv:1910.00125),
implemented from the paper (its code is under a non-commercial licence),
with MQL's TD3 replaced by double DQN (van Hasselt et al. 2016) because
the tasks here have discrete actions.

* **Context.** The Q-network ``Q(s, c)`` sees the observation and a GRU's
  summary of the last ``context_length`` transitions ``(s, a, r, s', done)``
  of the current *trial* (``trial_episodes`` consecutive episodes of one
  task; the context is empty at a trial's start). The paper's finding, that
  this multi-task agent is already a competitive meta-learner, is the
  ``metaq`` curve of :func:`make`'s ``evaluate``.
* **Meta-training.** A fixed set of ``num_train_tasks`` tasks, one replay
  buffer each (:mod:`metarl_jax.rl.replay`), filled by ``num_initial_trials``
  uniformly random trials per task in ``init``. Each ``update`` plays one
  epsilon-greedy trial on each of ``num_tasks_sample`` distinct train tasks
  (epsilon annealed linearly over iterations) and takes ``num_train_steps``
  double-DQN steps on ``meta_batch_size`` tasks x ``batch_size`` transitions
  (Huber loss, Adam, Polyak-averaged target network). Trials are stored in
  order, so each transition's context window is rebuilt from the items stored
  before it (:func:`~metarl_jax.rl.replay.sample_sequences`), masked to its
  own trial: training contexts are exactly the ones the agent acted on.
* **Adaptation** (MQL, Sec. 4.2). On a new task, after the first
  ``adapt_after_episodes`` episodes, the meta-parameters ``theta_meta`` take
  ``adapt_steps`` Adam steps on
  ``mean_new TD + mean_old beta * TD + lambda ||theta - theta_meta||^2``:
  the new task's transitions plus ``adapt_old_size`` transitions re-used from
  the train buffers, each weighted by its propensity score ``beta``
  (:mod:`metarl_jax.rl.propensity`: a logistic classifier on the context
  summaries tells new from old), with ``lambda = 1 - ESS`` of the weights
  unless ``proximal`` fixes it.

``evaluate`` returns per-episode greedy returns on held-out tasks:
``metaq`` (context only), ``mql`` (after the adaptation step; episodes
before it are shared with ``metaq``, same keys) and ``no_context`` (the same
network with an empty context: what the context is worth).
:func:`per_task_dqn` trains a plain DQN from scratch on each given task (the
no-meta baseline), with this module's pieces.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from gymnax.environments import spaces

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import (WindowedEpisodes, episode_horizon, push_transition,
                                     run_windowed, transition_vector, window_dim, with_horizon)
from metarl_jax.nn.context import ContextQNetwork, context_summary
from metarl_jax.nn.spaces import action_spec
from metarl_jax.rl import replay
from metarl_jax.rl.dqn import double_q_target, epsilon_greedy_probs, linear_schedule
from metarl_jax.rl.propensity import propensity_weights
from metarl_jax.rl.sac import polyak
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (tree_axpy, tree_vdot, check_bool, check_in_unit_interval, check_int_at_least,
                              check_non_negative, check_positive, check_positive_int,
                              check_positive_int_tuple)


# Config fields a population may give per member (used only arithmetically, so
# they can be traced scalars); every other field is static: see core.population.
HYPERPARAMETERS = ('learning_rate', 'gamma', 'tau', 'huber_delta', 'max_grad_norm', 'reward_scale',
                   'adapt_learning_rate')


@dataclasses.dataclass(frozen=True)
class Config:
    """Meta-Q-Learning (discrete) hyperparameters.

    ``context_length`` (30) and the GRU context follow MQL; the DQN settings
    are the usual small-network ones. ``context_length=0`` is a multi-task
    DQN without context.
    """

    num_train_tasks: int = 40
    context_length: int = 30            # transitions of the trial the Q-network sees
    context_size: int = 32              # GRU units summarising them
    hidden_sizes: tuple[int, ...] = (64, 64)
    trial_episodes: int = 1             # episodes sharing one context (bandits: the pulls)
    horizon: int | None = None          # steps per episode; None: the env's default
    num_initial_trials: int = 2         # per train task, uniform random actions
    num_tasks_sample: int = 8           # train tasks played on per iteration, a trial each
    num_train_steps: int = 50           # gradient steps per iteration
    meta_batch_size: int = 8            # tasks per gradient step
    batch_size: int = 64                # transitions per task per step
    replay_capacity: int = 10_000       # transitions kept per task
    learning_rate: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.01                   # target-network soft update
    double_q: bool = True
    huber_delta: float = 1.0
    max_grad_norm: float = 10.0
    reward_scale: float = 1.0
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_iterations: int = 100
    eval_episodes: int = 2              # episodes of the adaptation curve
    # MQL's adaptation step (adapt_steps = 0: none, no "mql" curve)
    adapt_after_episodes: int = 1       # new-task episodes played before adapting
    adapt_steps: int = 25
    adapt_batch_size: int = 64          # new and old transitions per adaptation step
    adapt_old_size: int = 256           # old transitions re-used (propensity-weighted)
    adapt_learning_rate: float = 3e-4
    proximal: float | None = None       # lambda; None: 1 - ESS of the propensity weights
    beta_clip: float = 10.0
    propensity_steps: int = 200

    def __post_init__(self):
        for name in ("num_train_tasks", "context_size", "trial_episodes", "num_initial_trials",
                     "num_tasks_sample", "num_train_steps", "meta_batch_size", "batch_size",
                     "replay_capacity", "epsilon_decay_iterations", "eval_episodes",
                     "adapt_batch_size", "adapt_old_size", "propensity_steps"):
            check_positive_int(name, getattr(self, name))
        for name in ("context_length", "adapt_steps", "adapt_after_episodes"):
            check_int_at_least(name, getattr(self, name), 0)
        check_positive_int_tuple("hidden_sizes", self.hidden_sizes)
        check_bool("double_q", self.double_q)
        if self.horizon is not None:
            check_positive_int("horizon", self.horizon)
        for name in ("learning_rate", "huber_delta", "max_grad_norm", "reward_scale",
                     "adapt_learning_rate", "beta_clip"):
            check_positive(name, getattr(self, name))
        for name in ("gamma", "tau", "epsilon_start", "epsilon_end"):
            check_in_unit_interval(name, getattr(self, name))
        if self.proximal is not None:
            check_non_negative("proximal", self.proximal)
        if self.num_tasks_sample > self.num_train_tasks:
            raise ValueError(f"num_tasks_sample={self.num_tasks_sample} exceeds "
                             f"num_train_tasks={self.num_train_tasks} (tasks are drawn "
                             "without replacement)")
        if self.replay_capacity < self.batch_size:
            raise ValueError(f"replay_capacity={self.replay_capacity} is smaller than "
                             f"batch_size={self.batch_size}")
        if self.adapt_steps and not 1 <= self.adapt_after_episodes < self.eval_episodes:
            raise ValueError(f"adapt_after_episodes={self.adapt_after_episodes} must be in "
                             f"[1, eval_episodes={self.eval_episodes}): the adaptation step "
                             "needs new-task data before it and episodes after it")


@struct.dataclass
class MetaQState:
    """Q-network, target network, Adam state, the train tasks and their buffers."""

    params: Any
    target_params: Any
    opt_state: Any
    train_tasks: Any        # env params with a leading [num_train_tasks] axis
    replay: replay.ReplayBuffer
    step: jax.Array
    env_steps: jax.Array


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus Meta-Q-Learning's parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    network: ContextQNetwork
    td_errors: Any      # (params, target_params, batch) -> per-transition Huber losses
    play: Any           # (params, tasks [B], key, episodes, epsilon, start=None, use_context=True)
    adapt: Any          # (state, one task's WindowedEpisodes, key) -> (params, diagnostics)
    batch_from_runs: Any
    train_step: Any     # ((params, target_params, opt_state, buffer), key) -> (carry, metrics)


def make(config: Config, family, mesh=None) -> Learner:
    """Build Meta-Q-Learning for ``family`` (``Discrete`` actions).

    Raises ``TypeError`` for a wrong config type or a family without discrete
    actions, and ``ValueError`` for a context longer than a trial, a buffer
    that cannot hold a trial, a batch larger than the initial data can be or a
    meta-batch that does not divide over ``mesh``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a metaq.Config, got {type(config).__name__}")
    check_divisible(config.meta_batch_size, mesh)
    env = family.env
    params0 = family.sample_params(jax.random.PRNGKey(0))
    horizon = episode_horizon(family, config.horizon, "metaq")
    action_space = env.action_space(params0)
    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(f"family {family.name!r} has {type(action_space).__name__} actions; "
                        "metaq needs Discrete actions (for Box actions use pearl)")
    num_actions = int(action_space.n)
    obs_dim = math.prod(env.observation_space(params0).shape)
    trial_length = config.trial_episodes * horizon
    window = config.context_length
    if window > trial_length:
        raise ValueError(f"context_length={window} is longer than a trial "
                         f"({config.trial_episodes} episode(s) x {horizon} steps)")
    if config.replay_capacity < trial_length:
        raise ValueError(f"replay_capacity={config.replay_capacity} cannot hold one trial "
                         f"of {trial_length} steps")
    if config.batch_size > config.num_initial_trials * trial_length:
        raise ValueError(f"batch_size={config.batch_size} is larger than the "
                         f"num_initial_trials={config.num_initial_trials} x {trial_length} "
                         "transitions the initial trials can collect per task")
    spec = action_spec(action_space)
    item_dim = window_dim(obs_dim, spec)
    network = ContextQNetwork(tuple(config.hidden_sizes), num_actions, config.context_size)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(config.learning_rate))
    adapt_optimizer = optax.adam(config.adapt_learning_rate)

    # -- context windows ----------------------------------------------------------------

    def item_vector(item) -> jax.Array:
        return transition_vector(item, spec)

    def batch_from_runs(runs, present):
        """A training batch from runs of ``window + 1`` stored items (leaves
        ``[..., window + 1, ...]``): the last item and its context windows
        before (for ``s``) and after it (for ``s'``), masked to its trial."""
        item = jax.tree.map(lambda x: x[..., -1] if x.ndim == present.ndim else x[..., -1, :],
                            runs)
        vectors = item_vector(runs)                                # [..., W + 1, d]
        t = item["t"][..., None]
        back = jnp.arange(window, 0, -1)                           # steps back from s
        return {
            "obs": item["obs"], "action": item["action"], "reward": item["reward"],
            "next_obs": item["next_obs"], "terminated": item["terminated"],
            "done": item["done"],
            "window": vectors[..., :window, :],
            "mask": present[..., :window] & (back <= t),
            "next_window": vectors[..., 1:, :],
            "next_mask": present[..., 1:] & (back - 1 <= t),
        }

    # -- the loss -----------------------------------------------------------------------

    def td_errors(params, target_params, batch):
        """Huber losses ``[...]`` of the double-DQN targets of ``batch``."""
        q = network.apply(params, batch["obs"], batch["window"], batch["mask"])
        q_taken = jnp.take_along_axis(q, batch["action"][..., None], axis=-1)[..., 0]
        next_online = network.apply(params, batch["next_obs"], batch["next_window"],
                                    batch["next_mask"])
        next_target = network.apply(target_params, batch["next_obs"], batch["next_window"],
                                    batch["next_mask"])
        target = double_q_target(config.reward_scale * batch["reward"], batch["terminated"],
                                 next_online, next_target, config.gamma, config.double_q)
        return optax.huber_loss(q_taken, target, delta=config.huber_delta), q_taken

    def loss(params, target_params, batch):
        errors, q = td_errors(params, target_params, batch)
        return jnp.mean(errors), {"q_mean": jnp.mean(q)}

    # -- acting ---------------------------------------------------------------------------

    def epsilon_greedy(epsilon):
        def act(params, obs, win, mask, key):
            q = network.apply(params, obs, win, mask)
            return jax.random.categorical(key, jnp.log(epsilon_greedy_probs(q, epsilon)))
        return act

    def play(params, task, key, num_episodes: int, epsilon, start=None,
             use_context: bool = True) -> WindowedEpisodes:
        """``num_episodes`` epsilon-greedy episodes on one task (horizon set), from a
        fresh trial or continuing from ``start`` (a previous play's ``carry``)."""
        return run_windowed(env, epsilon_greedy(epsilon), params, task, key,
                            num_episodes=num_episodes, horizon=horizon, window=window,
                            action_spec=spec, trial_episodes=config.trial_episodes,
                            start=start, use_context=use_context)

    def play_tasks(params, tasks, key, num_episodes, epsilon, start=None, use_context=True):
        """:func:`play` on each task of ``tasks [B]`` (``start``: a batch of carries)."""
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        tasks = with_horizon(tasks, horizon)
        return jax.vmap(lambda p, k, c: play(params, p, k, num_episodes, epsilon, c,
                                             use_context),
                        in_axes=(0, 0, 0 if start is not None else None))(tasks, keys, start)

    # -- training -------------------------------------------------------------------------

    def train_step(carry, key):
        params, target_params, opt_state, buffer = carry
        k_tasks, k_batch = jax.random.split(key)
        task_ids = jax.random.randint(k_tasks, (config.meta_batch_size,), 0,
                                      config.num_train_tasks)
        runs, present = replay.sample_sequences(buffer, k_batch, task_ids, config.batch_size,
                                                window + 1)
        batch = shard_tasks(batch_from_runs(runs, present), mesh)
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params, target_params,
                                                                     batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        target_params = polyak(target_params, params, config.tau)
        return (params, target_params, opt_state, buffer), {"td_loss": value, **aux}

    def init(key: jax.Array, train_tasks=None) -> MetaQState:
        """The Q-network, the train tasks (``train_tasks``, or drawn from the
        family's train split), and buffers filled with ``num_initial_trials``
        uniformly random trials per task."""
        k_net, k_tasks, k_collect = jax.random.split(key, 3)
        params = network.init(k_net, jnp.zeros((obs_dim,), jnp.float32),
                              jnp.zeros((window, item_dim), jnp.float32),
                              jnp.zeros((window,), bool))
        if train_tasks is None:
            train_tasks = family.sample(k_tasks, config.num_train_tasks, "train")
        num_tasks = jax.tree.leaves(train_tasks)[0].shape[0]
        if num_tasks != config.num_train_tasks:
            raise ValueError(f"train_tasks has {num_tasks} tasks; num_train_tasks="
                             f"{config.num_train_tasks}")
        example = {"obs": jnp.zeros((obs_dim,), jnp.float32), "action": jnp.zeros((), jnp.int32),
                   "reward": jnp.zeros((), jnp.float32),
                   "next_obs": jnp.zeros((obs_dim,), jnp.float32),
                   "terminated": jnp.zeros((), jnp.float32), "done": jnp.zeros((), jnp.float32),
                   "t": jnp.zeros((), jnp.int32)}
        buffer = replay.init(example, num_tasks, config.replay_capacity)
        steps = jnp.zeros((), jnp.int32)
        for k in jax.random.split(k_collect, config.num_initial_trials):
            played = play_tasks(params, train_tasks, k, config.trial_episodes, 1.0)
            buffer = replay.add_all(buffer, played.items, played.valid)
            steps = steps + jnp.sum(played.valid)
        return MetaQState(params=params, target_params=params,
                          opt_state=optimizer.init(params), train_tasks=train_tasks,
                          replay=buffer, step=jnp.zeros((), jnp.int32),
                          env_steps=steps.astype(jnp.int32))

    def update(state: MetaQState, key: jax.Array):
        """One iteration: an epsilon-greedy trial on ``num_tasks_sample`` train tasks,
        then ``num_train_steps`` double-DQN steps (pure, jit-able)."""
        k_ids, k_play, k_train = jax.random.split(key, 3)
        epsilon = linear_schedule(config.epsilon_start, config.epsilon_end,
                                  config.epsilon_decay_iterations, state.step)
        task_ids = jax.random.permutation(k_ids, config.num_train_tasks)[
            :config.num_tasks_sample]
        tasks = jax.tree.map(lambda x: x[task_ids], state.train_tasks)
        played = play_tasks(state.params, tasks, k_play, config.trial_episodes, epsilon)
        buffer = replay.add(state.replay, task_ids, played.items, played.valid)
        steps = jnp.sum(played.valid).astype(jnp.int32)
        carry = (state.params, state.target_params, state.opt_state, buffer)
        carry, aux = jax.lax.scan(train_step, carry,
                                  jax.random.split(k_train, config.num_train_steps))
        params, target_params, opt_state, buffer = carry
        metrics = {"collect_return": jnp.mean(jnp.sum(played.returns, axis=-1)),
                   "epsilon": epsilon,
                   "env_steps": steps.astype(jnp.float32),
                   **{name: jnp.mean(v) for name, v in aux.items()}}
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return MetaQState(params=params, target_params=target_params, opt_state=opt_state,
                          train_tasks=state.train_tasks, replay=buffer, step=state.step + 1,
                          env_steps=state.env_steps + steps), metrics

    # -- MQL's adaptation ----------------------------------------------------------------

    def features(params, batch):
        """Propensity features: the context summary after the transition (it
        includes the transition itself), or the transition without context."""
        if window:
            return context_summary(network, params, batch["next_window"], batch["next_mask"])
        return item_vector(batch)

    def new_batch(played: WindowedEpisodes):
        """A new task's play (one task, leaves ``[T, ...]``) as a batch with both windows."""
        items = played.items
        next_window, next_mask = jax.vmap(push_transition)(played.window, played.mask,
                                                           item_vector(items))
        return {"obs": items["obs"], "action": items["action"], "reward": items["reward"],
                "next_obs": items["next_obs"], "terminated": items["terminated"],
                "done": items["done"], "window": played.window, "mask": played.mask,
                "next_window": next_window, "next_mask": next_mask}

    def adapt(state: MetaQState, played: WindowedEpisodes, key):
        """MQL's adaptation on one new task from what was played on it (``played``,
        one task's :class:`~metarl_jax.core.rollout.WindowedEpisodes`).

        Returns the adapted parameters and ``{"ess", "proximal"}``.
        """
        k_old, k_steps = jax.random.split(key)
        theta_meta = state.params
        new = new_batch(played)
        valid = played.valid
        old_ids = jax.random.randint(k_old, (config.adapt_old_size,), 0, config.num_train_tasks)
        runs, present = replay.sample_sequences(state.replay, jax.random.fold_in(k_old, 1),
                                                old_ids, 1, window + 1)
        old = jax.tree.map(lambda x: x[:, 0], batch_from_runs(runs, present))
        beta, ess = propensity_weights(features(theta_meta, new), features(theta_meta, old),
                                       valid, beta_clip=config.beta_clip,
                                       steps=config.propensity_steps)
        lam = (jnp.asarray(config.proximal, jnp.float32) if config.proximal is not None
               else 1.0 - ess)
        weights = valid.astype(jnp.float32)

        def objective(params, k):
            k_new, k_o = jax.random.split(k)
            i_new = jax.random.categorical(k_new, jnp.log(weights + 1e-12),
                                           shape=(config.adapt_batch_size,))
            i_old = jax.random.randint(k_o, (config.adapt_batch_size,), 0, config.adapt_old_size)
            err_new, _ = td_errors(params, state.target_params,
                                   jax.tree.map(lambda x: x[i_new], new))
            err_old, _ = td_errors(params, state.target_params,
                                   jax.tree.map(lambda x: x[i_old], old))
            diff = tree_axpy(-1.0, theta_meta, params)
            distance = tree_vdot(diff, diff)
            return jnp.mean(err_new) + jnp.mean(beta[i_old] * err_old) + lam * distance

        def step(carry, k):
            params, opt = carry
            grads = jax.grad(objective)(params, k)
            updates, opt = adapt_optimizer.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), None

        (params, _), _ = jax.lax.scan(step, (theta_meta, adapt_optimizer.init(theta_meta)),
                                      jax.random.split(k_steps, config.adapt_steps))
        return params, {"ess": ess, "proximal": lam}

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(state: MetaQState, task_params, key: jax.Array,
                 num_steps: int | None = None) -> AdaptationCurves:
        """Greedy return per episode on held-out tasks ``[B]``: ``metaq``,
        ``mql`` (with ``adapt_steps > 0``) and ``no_context`` (with a context),
        ``[B, n]`` for ``n = num_steps`` or ``eval_episodes``."""
        if num_steps is not None:
            check_positive_int("num_steps (evaluation episodes)", num_steps)
        n = num_steps or config.eval_episodes
        k_first, k_rest, k_adapt, k_blind = jax.random.split(key, 4)
        curves = {}
        first = min(config.adapt_after_episodes, n - 1) if config.adapt_steps else 0
        if first:
            before = play_tasks(state.params, task_params, k_first, first, 0.0)
            after = play_tasks(state.params, task_params, k_rest, n - first, 0.0, before.carry)
            num = before.returns.shape[0]
            adapted, _ = jax.vmap(adapt, in_axes=(None, 0, 0))(
                state, before, jax.random.split(k_adapt, num))
            tasks = with_horizon(task_params, horizon)
            # the same keys as ``after`` (play_tasks splits k_rest per task this way)
            after_mql = jax.vmap(lambda p, t, k, c: play(p, t, k, n - first, 0.0, c))(
                adapted, tasks, jax.random.split(k_rest, num), before.carry)
            curves["metaq"] = jnp.concatenate([before.returns, after.returns], axis=1)
            curves["mql"] = jnp.concatenate([before.returns, after_mql.returns], axis=1)
        else:
            curves["metaq"] = play_tasks(state.params, task_params, k_first, n, 0.0).returns
        if window:
            curves["no_context"] = play_tasks(state.params, task_params, k_blind, n, 0.0,
                                              use_context=False).returns
        return make_curves(curves, range(1, n + 1), "episode on the task", learner="metaq")

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="collect_return", network=network, td_errors=td_errors,
                   play=play_tasks, adapt=adapt, batch_from_runs=batch_from_runs,
                   train_step=train_step)


def per_task_dqn(config: Config, family, task_params, key: jax.Array, num_iterations: int,
                 eval_every: int, eval_episodes: int = 1):
    """A plain DQN trained from scratch on each task of ``task_params [B]`` (no meta-learning).

    ``config``'s DQN settings with one task per learner and no context; the
    ``B`` learners run vmapped in one program. Returns ``(returns [B, K],
    env_steps [B, K])``: the greedy return (mean of ``eval_episodes`` episodes)
    and the env steps spent on the task after every ``eval_every`` iterations.
    """
    check_positive_int("num_iterations", num_iterations)
    check_positive_int("eval_every", eval_every)
    if num_iterations % eval_every:
        raise ValueError(f"num_iterations={num_iterations} is not a multiple of "
                         f"eval_every={eval_every}")
    single = dataclasses.replace(config, num_train_tasks=1, num_tasks_sample=1,
                                 meta_batch_size=1, context_length=0, adapt_steps=0)
    learner = make(single, family)

    def run(task, key):
        k_init, k_train = jax.random.split(key)
        state = learner.init(k_init, jax.tree.map(lambda x: x[None], task))

        def block(state, k):
            k_up, k_eval = jax.random.split(k)
            state, _ = jax.lax.scan(lambda s, kk: (learner.update(s, kk)[0], None), state,
                                    jax.random.split(k_up, eval_every))
            returns = learner.play(state.params, jax.tree.map(lambda x: x[None], task),
                                   k_eval, eval_episodes, 0.0).returns
            return state, (jnp.mean(returns), state.env_steps)

        _, (returns, steps) = jax.lax.scan(block, state,
                                           jax.random.split(k_train, num_iterations // eval_every))
        return returns, steps

    num = jax.tree.leaves(task_params)[0].shape[0]
    return jax.jit(jax.vmap(run))(task_params, jax.random.split(key, num))
