"""PEARL: probabilistic embeddings for actor-critic meta-RL.

Rakelly et al. 2019, arXiv:1903.08254; reference code ``katerakelly/oyster``.
An off-policy meta-learner: SAC whose actor and critics are conditioned on a
latent task variable ``z`` inferred from *context*, transitions
``c = (s, a, r[, s'])`` of the current task.

* **Inference.** An MLP maps every context transition to a Gaussian factor;
  the posterior ``q(z | c)`` is their product
  (:func:`~metarl_jax.nn.context.product_of_gaussians`), permutation
  invariant, regularised by ``kl_weight * KL(q(z | c) || N(0, I))`` summed
  over the meta-batch (the information bottleneck).
* **Learning.** Per gradient step, ``meta_batch_size`` train tasks; for each a
  context batch from its *encoder* buffer and an RL batch from its replay
  buffer; ``z ~ q(z | c)`` by reparameterisation. The encoder is trained
  only through the critics' Bellman loss (and the KL); the actor and the
  targets get ``stop_gradient(z)``, as in the paper.
* **Data.** A fixed set of ``num_train_tasks`` tasks, each with two buffers
  (:mod:`metarl_jax.rl.replay`). ``init`` fills both with
  ``num_initial_steps`` per task under ``z ~ N(0, I)``. Each ``update`` (one
  iteration of the reference's loop) picks ``num_tasks_sample`` distinct
  tasks, clears their encoder buffers and collects ``num_steps_prior`` steps
  with ``z`` from the prior, ``num_steps_posterior`` with ``z`` from the
  posterior of context drawn from the encoder buffer (re-inferred after every
  episode; the first episode of a collection uses the prior, as the
  reference's ``clear_z``), both into both buffers, and
  ``num_extra_rl_steps_posterior`` posterior steps into the replay buffer
  only; then ``num_train_steps`` gradient steps (one ``lax.scan``). Step
  counts are rounded up to whole episodes, as the reference collects whole
  trajectories.
* **Adaptation** (``evaluate``): on a held-out task the first
  ``num_exploration_episodes`` episodes sample ``z`` from the prior; after
  that, before every episode, ``z`` is drawn from the posterior of all
  context collected so far (posterior sampling). Actions are the actor's
  mode (``tanh`` of its mean), as the reference evaluates.

SAC here is the clipped double-Q form with target critics (Haarnoja et al.
2018b) instead of the reference's separate state-value network, with the
entropy temperature ``alpha`` fixed (the reference's setting: ``alpha = 1``
and rewards multiplied by ``reward_scale``) or learned toward
``target_entropy`` (``learn_alpha=True``). The actor acts in ``(-1, 1)``;
its actions are mapped affinely onto the env's ``Box`` bounds, as rlkit's
``NormalizedBoxEnv``.

**Discrete actions** (CartPole, MountainCar, bandits): the same learner with
soft actor-critic for discrete actions (Christodoulou 2019): a categorical
actor, critics that output every action's value ``Q(s, z) [A]``, and the
expectations over actions in the target and the actor loss taken exactly
(:func:`~metarl_jax.rl.sac.discrete_soft_td_target`); actions are one-hot in
the buffers and the context, and the default ``target_entropy`` is half the
uniform policy's ``log A``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from gymnax.environments import spaces

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import Trajectory, episode_horizon, rollout, with_horizon
from metarl_jax.nn.context import (CategoricalActor, ContextEncoder, SquashedGaussianActor,
                                   TwinQ, product_of_gaussians, standard_normal_kl)
from metarl_jax.rl import replay
from metarl_jax.rl.sac import (discrete_soft_td_target, polyak, soft_td_target,
                              temperature_loss)
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (check_bool, check_choice, check_in_unit_interval,
                              check_int_at_least, check_non_negative, check_positive,
                              check_positive_int, check_positive_int_tuple)

CRITIC_REWARDS = ("env", "dense")


# Config fields a population may give per member (used only arithmetically, so
# they can be traced scalars); every other field is static: see core.population.
HYPERPARAMETERS = ('learning_rate', 'gamma', 'tau', 'reward_scale', 'kl_weight', 'policy_mean_reg',
                   'policy_std_reg')


@dataclasses.dataclass(frozen=True)
class Config:
    """PEARL hyperparameters; defaults are the reference's ``configs/default.py``.

    Step counts are per task and rounded up to whole episodes.
    """

    num_train_tasks: int = 80           # the fixed set of meta-training tasks
    latent_dim: int = 5
    encoder_hidden_sizes: tuple[int, ...] = (200, 200, 200)
    hidden_sizes: tuple[int, ...] = (300, 300, 300)   # actor and each critic
    use_next_obs_in_context: bool = False
    horizon: int | None = None          # steps per episode; None: the env's default
    num_initial_steps: int = 2000       # per train task, z ~ prior, before training
    num_tasks_sample: int = 5           # tasks collected for in each iteration
    num_steps_prior: int = 400
    num_steps_posterior: int = 0
    num_extra_rl_steps_posterior: int = 400
    num_train_steps: int = 2000         # gradient steps per iteration
    meta_batch_size: int = 16           # tasks per gradient step
    batch_size: int = 256               # RL transitions per task per step
    context_batch_size: int = 64        # context transitions per task per step
    replay_capacity: int = 10_000       # transitions kept per task (the RL buffer)
    learning_rate: float = 3e-4         # Adam, every network (the reference's lrs are equal)
    gamma: float = 0.99
    tau: float = 0.005                  # target-critic soft update
    reward_scale: float = 5.0           # rewards x this in the Bellman target
    alpha: float = 1.0                  # entropy temperature (initial value if learned)
    learn_alpha: bool = False
    target_entropy: float | None = None  # None: -action_dim (discrete: 0.5 log A)
    kl_weight: float = 0.1
    policy_mean_reg: float = 1e-3       # the reference's penalties on the actor's
    policy_std_reg: float = 1e-3        # pre-squash mean and log std
    critic_reward: str = "env"          # "dense": the critic learns from the env's
                                        # info["dense_reward"] (the sparse point robot's
                                        # reference setting); context always has the env's
    eval_episodes: int = 3              # episodes of the adaptation curve
    num_exploration_episodes: int = 1   # eval episodes with z ~ prior before inference

    def __post_init__(self):
        for name in ("num_train_tasks", "latent_dim", "num_initial_steps", "num_tasks_sample",
                     "num_train_steps", "meta_batch_size", "batch_size",
                     "context_batch_size", "replay_capacity", "eval_episodes"):
            check_positive_int(name, getattr(self, name))
        for name in ("num_steps_prior", "num_steps_posterior", "num_extra_rl_steps_posterior",
                     "num_exploration_episodes"):
            check_int_at_least(name, getattr(self, name), 0)
        for name in ("encoder_hidden_sizes", "hidden_sizes"):
            check_positive_int_tuple(name, getattr(self, name))
        for name in ("use_next_obs_in_context", "learn_alpha"):
            check_bool(name, getattr(self, name))
        if self.horizon is not None:
            check_positive_int("horizon", self.horizon)
        for name in ("learning_rate", "reward_scale", "alpha"):
            check_positive(name, getattr(self, name))
        for name in ("kl_weight", "policy_mean_reg", "policy_std_reg"):
            check_non_negative(name, getattr(self, name))
        for name in ("gamma", "tau"):
            check_in_unit_interval(name, getattr(self, name))
        check_choice("critic_reward", self.critic_reward, CRITIC_REWARDS)
        if self.num_tasks_sample > self.num_train_tasks:
            raise ValueError(f"num_tasks_sample={self.num_tasks_sample} exceeds "
                             f"num_train_tasks={self.num_train_tasks} (tasks are drawn "
                             "without replacement)")
        if self.num_steps_prior + self.num_steps_posterior == 0:
            raise ValueError("num_steps_prior + num_steps_posterior must be > 0: the encoder "
                             "buffer of a sampled task is cleared and refilled from them")
        if self.replay_capacity < self.batch_size:
            raise ValueError(f"replay_capacity={self.replay_capacity} is smaller than "
                             f"batch_size={self.batch_size}")
        if self.num_initial_steps < self.batch_size:
            raise ValueError(f"batch_size={self.batch_size} is larger than the "
                             f"num_initial_steps={self.num_initial_steps} transitions "
                             "collected per task before training")
        if self.num_exploration_episodes >= self.eval_episodes:
            raise ValueError(f"num_exploration_episodes={self.num_exploration_episodes} "
                             f"leaves none of the eval_episodes={self.eval_episodes} "
                             "to posterior sampling")


@struct.dataclass
class PEARLState:
    """Networks, target critics, Adam state, the train tasks and their buffers."""

    params: Any             # {"encoder", "actor", "critic", "log_alpha"}
    target_critic: Any
    opt_state: Any
    train_tasks: Any        # env params with a leading [num_train_tasks] axis
    replay: replay.ReplayBuffer
    encoder_replay: replay.ReplayBuffer
    step: jax.Array
    env_steps: jax.Array


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus PEARL's parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    loss: Any           # (params, target_critic, context, batch, key) -> (loss, aux)
    posterior: Any      # (encoder_params, context [..., N, d], mask) -> (mean, var)
    collect: Any        # data collection on chosen train tasks (see update)
    adapt: Any          # (state, task_params [B], key, episodes, infer) -> returns [B, n]
    context_of: Any     # transition items -> context vectors
    train_step: Any     # ((params, target_critic, opt_state, rl_buffer, enc_buffer), key) -> (carry, aux)


def _episodes(steps: int, horizon: int) -> int:
    return -(-steps // horizon)


def make(config: Config, family, mesh=None) -> Learner:
    """Build PEARL for ``family`` (1-D ``Box`` or ``Discrete`` actions).

    Raises ``TypeError`` for a wrong config type, another action space or
    ``critic_reward="dense"`` on an env that reports no dense reward, and
    ``ValueError`` if the meta-batch does not divide over ``mesh``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a pearl.Config, got {type(config).__name__}")
    check_divisible(config.meta_batch_size, mesh)
    env = family.env
    params0 = family.sample_params(jax.random.PRNGKey(0))
    horizon = episode_horizon(family, config.horizon, "PEARL")
    action_space = env.action_space(params0)
    discrete = isinstance(action_space, spaces.Discrete)
    if not discrete and (not isinstance(action_space, spaces.Box)
                         or len(action_space.shape) != 1):
        raise TypeError(f"family {family.name!r} has {type(action_space).__name__} actions; "
                        "PEARL needs Discrete or 1-D Box actions")
    obs_dim = math.prod(env.observation_space(params0).shape)
    if discrete:
        action_dim = int(action_space.n)     # actions are one-hot in buffers and context
        example_action = jnp.zeros((), jnp.int32)
    else:
        action_dim = int(action_space.shape[0])
        low = jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), (action_dim,))
        high = jnp.broadcast_to(jnp.asarray(action_space.high, jnp.float32), (action_dim,))
        if not (np.all(np.isfinite(np.asarray(low)))
                and np.all(np.isfinite(np.asarray(high)))):
            raise TypeError(f"family {family.name!r}: PEARL needs finite action bounds")
        example_action = jnp.zeros((action_dim,), jnp.float32)
    obs0, state0 = env.reset(jax.random.PRNGKey(0), params0)
    info0 = jax.eval_shape(env.step, jax.random.PRNGKey(0), state0, example_action,
                           params0)[-1]
    if config.critic_reward == "dense" and "dense_reward" not in info0:
        raise TypeError(f"family {family.name!r}: critic_reward='dense' needs an env that "
                        "reports info['dense_reward'] (point-robot-sparse does); use 'env'")
    if config.target_entropy is not None:
        target_entropy = float(config.target_entropy)
    else:   # continuous: SAC's -dim(A); discrete: half the uniform policy's entropy
        target_entropy = 0.5 * math.log(action_dim) if discrete else -float(action_dim)
    context_dim = obs_dim * (2 if config.use_next_obs_in_context else 1) + action_dim + 1
    initial_episodes = _episodes(config.num_initial_steps, horizon)
    prior_episodes = _episodes(config.num_steps_prior, horizon)
    posterior_episodes = _episodes(config.num_steps_posterior, horizon)
    extra_episodes = _episodes(config.num_extra_rl_steps_posterior, horizon)
    encoder_capacity = max(initial_episodes, prior_episodes + posterior_episodes) * horizon

    info_keys = ("dense_reward",) if config.critic_reward == "dense" else ()
    encoder = ContextEncoder(tuple(config.encoder_hidden_sizes), config.latent_dim)
    if discrete:
        actor = CategoricalActor(tuple(config.hidden_sizes), action_dim)
        critic = TwinQ(tuple(config.hidden_sizes), action_dim)
    else:
        actor = SquashedGaussianActor(tuple(config.hidden_sizes), action_dim)
        critic = TwinQ(tuple(config.hidden_sizes))
    optimizer = optax.adam(config.learning_rate)

    def to_env(action):    # (-1, 1) -> [low, high]; discrete: the index itself
        return action if discrete else low + 0.5 * (action + 1.0) * (high - low)

    def from_env(action):  # the inverse, for the buffer (the actor's scale, or one-hot)
        if discrete:
            return jax.nn.one_hot(action, action_dim, dtype=jnp.float32)
        return jnp.clip(2.0 * (action.astype(jnp.float32) - low) / (high - low) - 1.0,
                        -1.0, 1.0)

    # -- context and inference -------------------------------------------------------

    def context_of(items) -> jax.Array:
        """Context vectors ``[..., d]`` = ``[s, a, r(, s')]`` of transition items."""
        parts = [items["obs"], items["action"], items["reward"][..., None]]
        if config.use_next_obs_in_context:
            parts.append(items["next_obs"])
        return jnp.concatenate(parts, axis=-1)

    def posterior(encoder_params, context, mask=None):
        """``q(z | context)``: mean and variance ``[..., L]`` of the product of the
        factors of ``context [..., N, d]`` (``mask [..., N]`` drops transitions)."""
        mu, var = encoder.apply(encoder_params, context)
        return product_of_gaussians(mu, var, mask)

    def sample_z(key, mean, var):
        return mean + jnp.sqrt(var) * jax.random.normal(key, mean.shape, jnp.float32)

    # -- acting ----------------------------------------------------------------------

    def policy_fn(deterministic: bool):
        def act(actor_and_z, obs, key):
            actor_params, z = actor_and_z
            dist = actor.apply(actor_params, jnp.concatenate(
                [jnp.reshape(obs, (-1,)).astype(jnp.float32), z]))
            if deterministic:
                action = dist.mode()
            else:
                action = dist.sample(key) if discrete else dist.sample_and_log_prob(key)[0]
            return to_env(action)
        return act

    def episode_items(traj: Trajectory, critic_rewards):
        """The transitions of one episode per task (leaves ``[B, H, ...]``) and ``valid``."""
        items = {
            "obs": traj.obs.reshape(traj.obs.shape[:2] + (-1,)).astype(jnp.float32),
            "action": from_env(traj.action),
            "reward": traj.reward,
            "critic_reward": critic_rewards,
            "next_obs": traj.next_obs.reshape(traj.next_obs.shape[:2] + (-1,))
                        .astype(jnp.float32),
            "terminated": traj.terminated.astype(jnp.float32),
        }
        return items, traj.valid

    def play_episode(actor_params, task_params, z, key, deterministic: bool):
        """One episode on each task ``[B]`` with latent ``z [B, L]``: items and returns."""
        act = policy_fn(deterministic)
        task_params = with_horizon(task_params, horizon)

        def one(p, zz, k):
            traj = rollout(env, act, (actor_params, zz), p, k, 1, horizon, info_keys)
            return jax.tree.map(lambda x: x[0], traj)

        traj = jax.vmap(one)(task_params, z, jax.random.split(key, z.shape[0]))
        critic_rewards = (traj.info["dense_reward"] if config.critic_reward == "dense"
                          else traj.reward)
        return traj, critic_rewards.astype(jnp.float32)

    # -- data collection on train tasks ---------------------------------------------

    def collect(params, buffers, train_tasks, task_ids, key, num_episodes: int,
                use_posterior: bool, to_encoder: bool, context_batch: int):
        """``num_episodes`` episodes on each train task ``task_ids [S]`` (distinct).

        With ``use_posterior`` every episode after the first draws ``z`` from the
        posterior of a context batch of the task's encoder buffer; otherwise (and
        for the first) from the prior. Transitions go to the replay buffer, and
        to the encoder buffer with ``to_encoder``. Returns ``(buffers, returns [S, E])``.
        """
        tasks = jax.tree.map(lambda x: x[task_ids], train_tasks)
        num = task_ids.shape[0]

        def episode(buffers, inputs):
            index, key = inputs
            rl_buffer, enc_buffer = buffers
            k_ctx, k_z, k_play = jax.random.split(key, 3)
            mean = jnp.zeros((num, config.latent_dim), jnp.float32)
            var = jnp.ones_like(mean)
            if use_posterior:
                context = context_of(replay.sample(enc_buffer, k_ctx, task_ids, context_batch))
                post_mean, post_var = posterior(params["encoder"], context)
                first = index == 0
                mean = jnp.where(first, mean, post_mean)
                var = jnp.where(first, var, post_var)
            z = sample_z(k_z, mean, var)
            traj, critic_rewards = play_episode(params["actor"], tasks, z, k_play, False)
            items, valid = episode_items(traj, critic_rewards)
            rl_buffer = replay.add(rl_buffer, task_ids, items, valid)
            if to_encoder:
                enc_buffer = replay.add(enc_buffer, task_ids, items, valid)
            return (rl_buffer, enc_buffer), (traj.episode_returns, jnp.sum(valid, axis=1))

        keys = jax.random.split(key, num_episodes)
        buffers, (returns, steps) = jax.lax.scan(
            episode, buffers, (jnp.arange(num_episodes), keys))
        return buffers, returns.T, jnp.sum(steps)

    # -- the SAC + inference loss ------------------------------------------------------

    def loss(params, target_critic, context, batch, key):
        """PEARL's loss on ``M`` tasks: context ``[M, Nc, d]``, RL batch leaves ``[M, B, ...]``.

        One scalar whose gradient reaches each network only through its own
        term: the critics and the encoder through the Bellman loss, the
        encoder also through ``kl_weight * sum_M KL``, the actor through its
        soft policy loss (critics and ``z`` stopped), ``log_alpha`` through the
        temperature loss (when learned).
        """
        k_z, k_next, k_new = jax.random.split(key, 3)
        mean, var = posterior(params["encoder"], context)            # [M, L]
        z = sample_z(k_z, mean, var)
        kl = jnp.sum(standard_normal_kl(mean, var))
        batch_z = jnp.broadcast_to(z[:, None, :], batch["obs"].shape[:2] + z.shape[-1:])
        fixed_z = jax.lax.stop_gradient(batch_z)
        alpha = jnp.exp(params["log_alpha"])
        alpha_sg = jax.lax.stop_gradient(alpha)

        reward = config.reward_scale * batch["critic_reward"]
        critic_sg = jax.lax.stop_gradient(params["critic"])
        actor_sg = jax.lax.stop_gradient(params["actor"])
        next_dist = actor.apply(actor_sg, jnp.concatenate([batch["next_obs"], fixed_z], -1))
        dist = actor.apply(params["actor"], jnp.concatenate([batch["obs"], fixed_z], -1))
        if discrete:
            # every action's value at once, expectations over actions exact
            q_all = critic.apply(params["critic"], jnp.concatenate([batch["obs"], batch_z], -1))
            q = jnp.sum(q_all * batch["action"][..., None], axis=-2)           # [M, B, 2]
            next_q = critic.apply(target_critic,
                                  jnp.concatenate([batch["next_obs"], fixed_z], -1))
            target = discrete_soft_td_target(reward, batch["terminated"], next_q,
                                             next_dist.log_probs, alpha_sg, config.gamma)
            log_probs = dist.log_probs
            new_q = jnp.min(critic.apply(critic_sg, jnp.concatenate([batch["obs"], fixed_z],
                                                                    -1)), axis=-1)
            actor_loss = jnp.mean(jnp.sum(jnp.exp(log_probs) * (alpha_sg * log_probs - new_q),
                                          axis=-1))
            log_prob = -dist.entropy()          # E[log pi], for the temperature and metrics
        else:
            q = critic.apply(params["critic"],
                             jnp.concatenate([batch["obs"], batch["action"], batch_z], -1))
            next_action, next_log_prob = next_dist.sample_and_log_prob(k_next)
            next_q = critic.apply(target_critic,
                                  jnp.concatenate([batch["next_obs"], next_action, fixed_z], -1))
            target = soft_td_target(reward, batch["terminated"], next_q, next_log_prob,
                                    alpha_sg, config.gamma)
            new_action, log_prob = dist.sample_and_log_prob(k_new)
            new_q = critic.apply(critic_sg,
                                 jnp.concatenate([batch["obs"], new_action, fixed_z], -1))
            actor_loss = (jnp.mean(alpha_sg * log_prob - jnp.min(new_q, axis=-1))
                          + config.policy_mean_reg * jnp.mean(jnp.square(dist.mean))
                          + config.policy_std_reg * jnp.mean(jnp.square(dist.log_std)))
        critic_loss = jnp.sum(jnp.mean(jnp.square(q - target[..., None]), axis=(0, 1)))
        alpha_loss = (temperature_loss(params["log_alpha"], log_prob, target_entropy)
                      if config.learn_alpha else jnp.zeros((), jnp.float32))
        total = critic_loss + config.kl_weight * kl + actor_loss + alpha_loss
        aux = {"critic_loss": critic_loss, "actor_loss": actor_loss, "kl": kl,
               "alpha": alpha, "alpha_loss": alpha_loss, "entropy": -jnp.mean(log_prob),
               "q_mean": jnp.mean(q), "z_var": jnp.mean(var)}
        return total, aux

    def train_step(carry, key):
        params, target_critic, opt_state, rl_buffer, enc_buffer = carry
        k_tasks, k_ctx, k_batch, k_loss = jax.random.split(key, 4)
        task_ids = jax.random.randint(k_tasks, (config.meta_batch_size,), 0,
                                      config.num_train_tasks)
        context = shard_tasks(context_of(replay.sample(enc_buffer, k_ctx, task_ids,
                                                       config.context_batch_size)), mesh)
        batch = shard_tasks(replay.sample(rl_buffer, k_batch, task_ids, config.batch_size),
                            mesh)
        grads, aux = jax.grad(loss, has_aux=True)(params, target_critic, context, batch,
                                                  k_loss)
        if not config.learn_alpha:
            grads = {**grads, "log_alpha": jnp.zeros_like(grads["log_alpha"])}
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        target_critic = polyak(target_critic, params["critic"], config.tau)
        return (params, target_critic, opt_state, rl_buffer, enc_buffer), aux

    # -- the contract ----------------------------------------------------------------

    def init(key: jax.Array) -> PEARLState:
        """Networks, the train tasks, and both buffers filled with
        ``num_initial_steps`` per task under the prior."""
        k_enc, k_actor, k_critic, k_tasks, k_collect = jax.random.split(key, 5)
        obs = jnp.zeros((obs_dim,), jnp.float32)
        z = jnp.zeros((config.latent_dim,), jnp.float32)
        critic_params = critic.init(k_critic, jnp.zeros(
            (obs_dim + (0 if discrete else action_dim) + config.latent_dim,)))
        params = {
            "encoder": encoder.init(k_enc, jnp.zeros((1, context_dim), jnp.float32)),
            "actor": actor.init(k_actor, jnp.concatenate([obs, z])),
            "critic": critic_params,
            "log_alpha": jnp.asarray(math.log(config.alpha), jnp.float32),
        }
        train_tasks = family.sample(k_tasks, config.num_train_tasks, "train")
        example = {"obs": obs, "action": jnp.zeros((action_dim,), jnp.float32),
                   "reward": jnp.zeros((), jnp.float32),
                   "critic_reward": jnp.zeros((), jnp.float32), "next_obs": obs,
                   "terminated": jnp.zeros((), jnp.float32)}
        buffers = (replay.init(example, config.num_train_tasks, config.replay_capacity),
                   replay.init(example, config.num_train_tasks, encoder_capacity))
        buffers, _, steps = collect(params, buffers, train_tasks,
                                    jnp.arange(config.num_train_tasks), k_collect,
                                    initial_episodes, False, True, config.context_batch_size)
        return PEARLState(params=params, target_critic=critic_params,
                          opt_state=optimizer.init(params), train_tasks=train_tasks,
                          replay=buffers[0], encoder_replay=buffers[1],
                          step=jnp.zeros((), jnp.int32), env_steps=steps.astype(jnp.int32))

    def update(state: PEARLState, key: jax.Array):
        """One PEARL iteration: collect on ``num_tasks_sample`` train tasks, then
        ``num_train_steps`` gradient steps (pure, jit-able)."""
        k_ids, k_prior, k_post, k_extra, k_train = jax.random.split(key, 5)
        task_ids = jax.random.permutation(k_ids, config.num_train_tasks)[
            :config.num_tasks_sample]
        buffers = (state.replay, replay.clear(state.encoder_replay, task_ids))
        steps, returns = jnp.zeros((), jnp.int32), []
        for episodes, k, use_post, to_enc in ((prior_episodes, k_prior, False, True),
                                              (posterior_episodes, k_post, True, True),
                                              (extra_episodes, k_extra, True, False)):
            if episodes:
                buffers, r, n = collect(state.params, buffers, state.train_tasks, task_ids,
                                        k, episodes, use_post, to_enc,
                                        config.context_batch_size)
                steps, returns = steps + n, returns + [r]
        carry = (state.params, state.target_critic, state.opt_state) + buffers
        carry, aux = jax.lax.scan(train_step, carry,
                                  jax.random.split(k_train, config.num_train_steps))
        params, target_critic, opt_state, rl_buffer, enc_buffer = carry
        returns = jnp.concatenate(returns, axis=1)
        metrics = {"collect_return": jnp.mean(returns),
                   "env_steps": steps.astype(jnp.float32),
                   **{name: jnp.mean(v) for name, v in aux.items()}}
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new_state = PEARLState(params=params, target_critic=target_critic,
                               opt_state=opt_state, train_tasks=state.train_tasks,
                               replay=rl_buffer, encoder_replay=enc_buffer,
                               step=state.step + 1, env_steps=state.env_steps + steps)
        return new_state, metrics

    def adapt(state: PEARLState, task_params, key, num_episodes: int, infer: bool = True,
              z_mode: str = "sample"):
        """Return of each of ``num_episodes`` episodes on each task ``[B]``, ``[B, n]``.

        Episodes ``>= num_exploration_episodes`` draw ``z`` from the posterior
        of every transition collected so far on that task (``infer=False``:
        always from the prior, the no-inference baseline); with
        ``z_mode="mean"`` they act on the posterior's mean instead of a sample
        (exploration episodes still sample the prior). Actions are the actor's
        mode.
        """
        if z_mode not in ("sample", "mean"):
            raise ValueError(f"z_mode must be 'sample' or 'mean', got {z_mode!r}")
        num = jax.tree.leaves(task_params)[0].shape[0]
        length = num_episodes * horizon
        context = jnp.zeros((num, length, context_dim), jnp.float32)
        mask = jnp.zeros((num, length), bool)

        def episode(carry, inputs):
            context, mask = carry
            index, key = inputs
            k_z, k_play = jax.random.split(key)
            mean, var = posterior(state.params["encoder"], context, mask)
            use_posterior = infer & (index >= config.num_exploration_episodes)
            mean = jnp.where(use_posterior, mean, 0.0)
            var = jnp.where(use_posterior, var, 1.0)
            z = sample_z(k_z, mean, var)
            if z_mode == "mean":
                z = jnp.where(use_posterior, mean, z)
            traj, critic_rewards = play_episode(state.params["actor"], task_params, z,
                                                k_play, True)
            items, valid = episode_items(traj, critic_rewards)
            start = index * horizon
            context = jax.lax.dynamic_update_slice_in_dim(context, context_of(items), start, 1)
            mask = jax.lax.dynamic_update_slice_in_dim(mask, valid, start, 1)
            return (context, mask), traj.episode_returns

        keys = jax.random.split(key, num_episodes)
        _, returns = jax.lax.scan(episode, (context, mask), (jnp.arange(num_episodes), keys))
        return returns.T

    def evaluate(state: PEARLState, task_params, key: jax.Array,
                 num_steps: int | None = None) -> AdaptationCurves:
        """Return per episode of accumulated context on held-out tasks:
        ``{"pearl", "posterior_mean", "prior_z"}``, each ``[tasks, n]`` (x = episodes
        ``1..n``, ``n = num_steps`` or ``eval_episodes``). ``pearl`` is posterior
        sampling; ``posterior_mean`` acts on the posterior's mean with the same keys
        (what sampling costs or gains); ``prior_z`` never infers."""
        if num_steps is not None:
            check_positive_int("num_steps (evaluation episodes)", num_steps)
        num_episodes = num_steps or config.eval_episodes
        k_post, k_prior = jax.random.split(key)
        return make_curves(
            {"pearl": adapt(state, task_params, k_post, num_episodes),
             "posterior_mean": adapt(state, task_params, k_post, num_episodes, z_mode="mean"),
             "prior_z": adapt(state, task_params, k_prior, num_episodes, False)},
            range(1, num_episodes + 1), "episode of context")

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="collect_return", loss=loss, posterior=posterior,
                   collect=collect, adapt=adapt, context_of=context_of, train_step=train_step)
