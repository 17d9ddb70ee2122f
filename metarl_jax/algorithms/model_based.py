"""Model-based meta-RL: a learned dynamics-and-reward model, adapted online, with MPC.

After Nagabandi, Clavera et al., "Learning to Adapt in Dynamic, Real-World
Environments through Meta-Reinforcement Learning", ICLR 2019
(arXiv:1803.11347; reference code ``iclavera/learning_to_adapt``). One module
holds the five learners, which differ only in how the model is trained and
adapted (``Config.adaptation``); ``metarl train NAME`` picks the preset:

==============  ===============  =============================================================
name            adaptation       model training / adaptation at every control step
==============  ===============  =============================================================
``mb``          ``"none"``       one model for all training tasks; never adapted
``mb_de``       ``"finetune"``   the same model; ``inner_steps`` gradient steps on the
                                 last ``past_length`` transitions (dynamic evaluation)
``grbal``       ``"gradient"``   MAML on the model: meta-trained so that the gradient steps
                                 on ``past_length`` transitions predict the next
                                 ``future_length`` well (second order; ``first_order``)
``rebal``       ``"recurrent"``  a GRU over the last ``past_length`` transitions conditions
                                 the model; trained to predict the next ``future_length``
``mbml_policy`` ``"gradient"``   GrBAL's model plus a parametric policy trained by gradients
                (``policy``)     through the adapted model's imagined rollouts
==============  ===============  =============================================================

Every iteration (``update``) collects ``episodes_per_task`` episodes on
``tasks_per_iteration`` freshly drawn training tasks with the current
controller (``init`` collects ``initial_random_episodes`` with uniform random
actions), adds them to a replay buffer of real transitions
(:mod:`metarl_jax.rl.replay`, one ring per parallel slot), refits the
normalisation on everything stored, and takes ``train_steps`` Adam steps on
segments of ``past_length + future_length`` consecutive transitions of one
episode (:func:`~metarl_jax.rl.model_learning.sample_segments`), as the
reference alternates rollouts and model epochs on all data.

The controller (:func:`make`'s ``act``) is MPC: at every step the model is
adapted from its trained parameters on the most recent ``past_length``
transitions of the episode (the sliding window of
:func:`~metarl_jax.core.rollout.run_windowed`), then a planner
(:mod:`metarl_jax.rl.planners`: random shooting, CEM, MPPI) picks the
action sequence with the best imagined return and the first action is
taken. The return is the model's reward head (``reward="learned"``, the
default) or the env's reward function of observations
(``reward="known"``, as the reference code plans).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import WindowedEpisodes, episode_horizon, run_windowed, with_horizon
from metarl_jax.nn.dynamics import (ContextDynamics, DynamicsMLP, Normalizer, context_rows,
                                    fit_normalizer, identity_normalizer, init_ensemble)
from metarl_jax.nn.mlp import MLP
from metarl_jax.nn.spaces import action_spec
from metarl_jax.rl import replay
from metarl_jax.rl.model_learning import (bootstrap_weights, gradient_adapt, imagined_return,
                                          model_error, sample_segments)
from metarl_jax.rl.planners import PlannerConfig, check_planner_config, plan, plan_discrete
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (check_bool, check_choice, check_int_at_least, check_positive,
                              check_positive_int, check_positive_int_tuple)

ADAPTATIONS = ("none", "finetune", "gradient", "recurrent")
REWARDS = ("learned", "known")


# Config fields a population may give per member (used only arithmetically, so
# they can be traced scalars); every other field is static: see core.population.
HYPERPARAMETERS = ('inner_lr', 'learning_rate', 'max_grad_norm', 'policy_lr', 'policy_adapt_lr')


@dataclasses.dataclass(frozen=True)
class Config:
    """Model-based meta-RL hyperparameters (defaults: the reference's sizes).

    The reference's model is 3 x 512 ReLU, ``past_length = future_length =
    16``, one inner step of 1e-3 (the CPU benchmarks use smaller settings, named
    in their results); its planner is random shooting, 500 candidates x
    horizon 10 (``planner``).
    """

    adaptation: str = "gradient"
    hidden_sizes: tuple[int, ...] = (512, 512, 512)
    ensemble_size: int = 1              # > 1: bootstrap ensemble, planning on the mean return
    context_size: int = 32              # recurrent: GRU units
    past_length: int = 16               # M: transitions the model adapts on
    future_length: int = 16             # K: transitions the adapted model is trained to predict
    inner_lr: float = 1e-3
    inner_steps: int = 1
    first_order: bool = False
    learn_inner_lr: bool = False        # gradient: meta-learn the inner step size too
    tasks_per_iteration: int = 8        # parallel slots: a fresh train task each per iteration
    episodes_per_task: int = 1
    horizon: int | None = None          # steps per episode; None: the env's default
    initial_random_episodes: int = 1    # per slot, collected by init with random actions
    train_steps: int = 100              # model Adam steps per iteration
    batch_size: int = 64                # segments per step
    learning_rate: float = 1e-3
    max_grad_norm: float = 100.0
    replay_capacity: int = 20_000       # transitions kept per slot
    reward: str = "learned"             # "learned" (the model's) or "known" (the env's)
    planner: PlannerConfig = PlannerConfig()
    eval_episodes: int = 1
    # mbml_policy: a policy trained through the adapted model
    policy: bool = False
    policy_hidden_sizes: tuple[int, ...] = (64, 64)
    policy_horizon: int = 10            # imagined steps per policy loss
    policy_train_steps: int = 50
    policy_lr: float = 1e-3
    policy_adapt_steps: int = 1         # test-time policy steps through the adapted model
    policy_adapt_lr: float = 1e-2

    def __post_init__(self):
        check_choice("adaptation", self.adaptation, ADAPTATIONS)
        check_choice("reward", self.reward, REWARDS)
        for name in ("ensemble_size", "context_size", "past_length", "future_length",
                     "tasks_per_iteration", "episodes_per_task", "initial_random_episodes",
                     "train_steps", "batch_size", "replay_capacity", "eval_episodes",
                     "policy_horizon", "policy_train_steps"):
            check_positive_int(name, getattr(self, name))
        for name in ("inner_steps", "policy_adapt_steps"):
            check_int_at_least(name, getattr(self, name), 0)
        for name in ("hidden_sizes", "policy_hidden_sizes"):
            check_positive_int_tuple(name, getattr(self, name))
        for name in ("first_order", "learn_inner_lr", "policy"):
            check_bool(name, getattr(self, name))
        for name in ("inner_lr", "learning_rate", "max_grad_norm", "policy_lr",
                     "policy_adapt_lr"):
            check_positive(name, getattr(self, name))
        if self.horizon is not None:
            check_positive_int("horizon", self.horizon)
        if not isinstance(self.planner, PlannerConfig):
            raise TypeError(f"planner must be a PlannerConfig, got {type(self.planner).__name__}")
        check_planner_config(self.planner)
        if self.adaptation in ("finetune", "gradient") and self.inner_steps == 0:
            raise ValueError(f"adaptation={self.adaptation!r} needs inner_steps >= 1")
        if self.policy and self.adaptation != "gradient":
            raise ValueError("policy=True (mbml_policy) trains through GrBAL's adapted model: "
                             f"it needs adaptation='gradient', got {self.adaptation!r}")


@struct.dataclass
class ModelBasedState:
    """The model (parameters, its normalisation), Adam states, the buffer, counters."""

    model: Any              # {"net": params (leading [ensemble] axis), "log_inner_lr": []}
    norm: Normalizer
    opt_state: Any
    policy: Any             # policy parameters ({} without a policy)
    policy_opt_state: Any
    replay: replay.ReplayBuffer
    step: jax.Array
    env_steps: jax.Array


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus the model-based parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    name: str
    model_loss: Any         # (model, norm, segments, valid, key) -> loss
    adapted_step: Any       # (state.model, norm, window, mask) -> step(obs, action) per member
    play: Any               # (state, tasks [B], key, episodes, mode, use_context=True)
    prediction_errors: Any  # (state, played [B]) -> {"adapted", "unadapted"}: [B, T]
    train_model: Any        # (state, key) -> (state, metrics): one model Adam step
    controller: Any         # mode -> act((state, task), obs, window, mask, key) -> action


def make(config: Config, family, mesh=None, name: str | None = None) -> Learner:
    """Build the model-based learner ``config`` describes for ``family``.

    Raises ``TypeError`` for a wrong config type, and ``ValueError`` for
    ``past_length + future_length`` longer than an episode, ``reward="known"``
    on an env without a reward function of observations, a policy on
    discrete actions, or slots that do not divide over ``mesh``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be a model_based.Config, got {type(config).__name__}")
    name = name or {"none": "mb", "finetune": "mb_de", "gradient": "grbal",
                    "recurrent": "rebal"}[config.adaptation]
    if config.policy:
        name = "mbml_policy" if name == "grbal" else name
    check_divisible(config.tasks_per_iteration, mesh)
    env = family.env
    params0 = family.sample_params(jax.random.PRNGKey(0))
    horizon = episode_horizon(family, config.horizon, name)
    segment = config.past_length + config.future_length
    if segment > horizon:
        raise ValueError(f"past_length + future_length = {segment} is longer than an "
                         f"episode ({horizon} steps)")
    if config.reward == "known" and not getattr(env, "has_observation_reward", False):
        raise ValueError(f"reward='known' needs the env's reward function of observations; "
                         f"{env.name} has none (use reward='learned')")
    spec = action_spec(env.action_space(params0))
    if config.policy and spec.discrete:
        raise ValueError("mbml_policy needs Box actions (its policy is deterministic and "
                         f"differentiable); {family.name!r} has Discrete actions")
    obs_dim = math.prod(env.observation_space(params0).shape)
    act_dim = spec.dim
    M, K, E = config.past_length, config.future_length, config.ensemble_size
    recurrent = config.adaptation == "recurrent"
    if recurrent:
        network = ContextDynamics(tuple(config.hidden_sizes), obs_dim, config.context_size)
    else:
        network = DynamicsMLP(tuple(config.hidden_sizes), obs_dim)
    row_dim = 2 * obs_dim + act_dim + 1
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(config.learning_rate))
    policy_net = MLP(tuple(config.policy_hidden_sizes), "tanh")
    policy_head = nn.Dense(act_dim)
    policy_optimizer = optax.adam(config.policy_lr)

    # -- the model --------------------------------------------------------------------

    def apply(net, x, context=()):
        return network.apply(net, x, *context)

    def inner_lr(model):
        if config.learn_inner_lr:
            return jnp.exp(model["log_inner_lr"])
        return jnp.asarray(config.inner_lr, jnp.float32)

    def split_window(win):
        """A run_windowed window ``[W, 2s + a + 2]`` as ``(obs, action, reward, next_obs)``."""
        o = win[..., :obs_dim]
        a = win[..., obs_dim:obs_dim + act_dim]
        r = win[..., obs_dim + act_dim]
        o2 = win[..., obs_dim + act_dim + 1:2 * obs_dim + act_dim + 1]
        return o, a, r, o2

    def adapt_member(net, lr, norm, obs, action, reward, next_obs, weight):
        """One member's parameters (or ``(net, context)``) after adapting on the given
        transitions (leaves ``[n, ...]``; ``weight [n]`` masks the missing ones)."""
        if recurrent:
            return net, (context_rows(norm, obs, action, next_obs, reward), weight > 0)
        if config.adaptation == "none":
            return net, ()
        inputs, targets = norm.inputs(obs, action), norm.targets(obs, next_obs, reward)
        loss = lambda p: model_error(apply(p, inputs), targets, weight)  # noqa: E731
        return gradient_adapt(loss, net, lr, config.inner_steps, config.first_order), ()

    def adapted_step(model, norm, win, mask):
        """``step(obs [E, s], encoded action [E, a]) -> (next_obs [E, s], reward [E])``:
        each ensemble member, adapted on the window's transitions, steps its own state."""
        o, a, r, o2 = split_window(win)
        weight = mask.astype(jnp.float32)
        nets, contexts = jax.vmap(adapt_member, in_axes=(0, None, None, None, None, None, None,
                                                         None))(model["net"], inner_lr(model),
                                                                norm, o, a, r, o2, weight)

        def step(obs, action):
            def one(net, context, obs, action):
                return norm.outputs(obs, apply(net, norm.inputs(obs, action), context))
            return jax.vmap(one)(nets, contexts, obs, action)
        return step

    def model_loss(model, norm, runs, valid, key):
        """The training loss on segments (leaves ``[B, M + K, ...]``, ``valid [B]``),
        summed over ensemble members (each on its own bootstrap resample)."""
        o, a, r, o2 = runs["obs"], runs["action_enc"], runs["reward"], runs["next_obs"]
        weights = valid.astype(jnp.float32)[None] * (
            bootstrap_weights(key, E, valid.shape) if E > 1 else jnp.ones((1,) + valid.shape))

        def member(net, w):
            if config.adaptation in ("none", "finetune"):
                return model_error(apply(net, norm.inputs(o, a)), norm.targets(o, o2, r),
                                   w[:, None] * jnp.ones(r.shape))

            def segment_loss(o, a, r, o2):
                past = (o[:M], a[:M], r[:M], o2[:M])
                adapted, context = adapt_member(net, inner_lr(model), norm, *past,
                                                jnp.ones((M,), jnp.float32))
                future = apply(adapted, norm.inputs(o[M:], a[M:]), context)
                return model_error(future, norm.targets(o[M:], o2[M:], r[M:]),
                                   jnp.ones((K,), jnp.float32))
            losses = jax.vmap(segment_loss)(o, a, r, o2)
            return jnp.sum(w * losses) / jnp.maximum(jnp.sum(w), 1.0)

        return jnp.sum(jax.vmap(member)(model["net"], weights))

    # -- the policy (mbml_policy) -----------------------------------------------------

    def policy_apply(policy, obs):
        h = policy_net.apply(policy["torso"], obs)
        squashed = jnp.tanh(policy_head.apply(policy["head"], h))
        return spec.low + 0.5 * (squashed + 1.0) * (spec.high - spec.low)

    def policy_return(policy, step, obs, reward_fn):
        """Imagined return of the policy from ``obs [s]`` through ``step``, each ensemble
        member rolling out its own trajectory (mean over members)."""
        def body(o, _):
            action = jax.vmap(policy_apply, in_axes=(None, 0))(policy, o)
            next_o, r = step(o, action)
            if reward_fn is not None:
                r = jax.vmap(reward_fn)(o, action, next_o)
            return next_o, jnp.mean(r)
        start = jnp.broadcast_to(obs, (E,) + obs.shape)
        _, rewards = jax.lax.scan(body, start, None, length=config.policy_horizon)
        return jnp.sum(rewards)

    def adapt_policy(policy, step, obs, reward_fn):
        loss = lambda p: -policy_return(p, step, obs, reward_fn)  # noqa: E731
        return gradient_adapt(loss, policy, config.policy_adapt_lr, config.policy_adapt_steps)

    # -- acting -------------------------------------------------------------------------

    def reward_function(task):
        if config.reward == "known":
            return lambda o, a, o2: env.observation_reward(o, a, o2, task)
        return None

    def sequence_returns(step, obs, reward_fn):
        """``actions [N, H(, a)] -> [N]``: the ensemble's mean imagined return."""
        def member_step(o, action):
            return step(o, jnp.broadcast_to(spec.encode(action), (E, act_dim)))

        def member_reward(o, action, o2):
            return jax.vmap(lambda oo, oo2: reward_fn(oo, action, oo2))(o, o2)

        def one(actions):
            start = jnp.broadcast_to(obs, (E,) + obs.shape)
            total = imagined_return(member_step, start, actions,
                                    None if reward_fn is None else member_reward)
            return total / E
        return jax.vmap(one)

    def controller(mode: str):
        """``act((state, task), obs, window, mask, key) -> action`` for run_windowed.

        ``mode``: ``"random"`` (uniform actions), ``"mpc"`` (the planner on the
        adapted model), ``"policy"`` (the adapted policy alone), ``"policy_mpc"``
        (the planner warm-started from the adapted policy's plan).
        """
        def act(carry, obs, win, mask, key):
            state, task = carry
            if mode == "random":
                if spec.discrete:
                    return jax.random.randint(key, (), 0, spec.dim)
                return jax.random.uniform(key, (act_dim,), jnp.float32, spec.low, spec.high)
            step = adapted_step(state.model, state.norm, win, mask)
            reward_fn = reward_function(task)
            if mode in ("policy", "policy_mpc"):
                policy = adapt_policy(state.policy, step, obs, reward_fn)
                if mode == "policy":
                    return policy_apply(policy, obs)
                init_mean = policy_plan(policy, step, obs)
            else:
                init_mean = None
            returns = sequence_returns(step, obs, reward_fn)
            if spec.discrete:
                sequence, _ = plan_discrete(key, returns, spec.dim, config.planner)
            else:
                sequence, _ = plan(key, returns, spec.low, spec.high, config.planner,
                                   init_mean=init_mean)
            return sequence[0]
        return act

    def policy_plan(policy, step, obs):
        """The policy's own action sequence ``[H, a]`` through the first member (warm start)."""
        def body(o, _):
            action = policy_apply(policy, o[0])
            next_o, _ = step(o, jnp.broadcast_to(action, (E, act_dim)))
            return jnp.broadcast_to(next_o[0], o.shape), action
        start = jnp.broadcast_to(obs, (E,) + obs.shape)
        _, actions = jax.lax.scan(body, start, None, length=config.planner.horizon)
        return actions

    def play(state, tasks, key, num_episodes: int, mode: str, use_context: bool = True,
             start=None) -> WindowedEpisodes:
        """``num_episodes`` episodes on each task of ``tasks [B]`` with a controller."""
        keys = jax.random.split(key, jax.tree.leaves(tasks)[0].shape[0])
        tasks = shard_tasks(with_horizon(tasks, horizon), mesh)
        return jax.vmap(lambda task, k, c: run_windowed(
            env, controller(mode), (state, task), task, k, num_episodes=num_episodes,
            horizon=horizon, window=M, action_spec=spec, start=c, use_context=use_context),
            in_axes=(0, 0, 0 if start is not None else None))(tasks, keys, start)

    collect_mode = "policy_mpc" if config.policy else "mpc"

    # -- data and training ----------------------------------------------------------------

    def store(buffer, played: WindowedEpisodes):
        items = dict(played.items)
        items["action_enc"] = jax.vmap(jax.vmap(spec.encode))(items["action"])
        return replay.add_all(buffer, items, played.valid)

    def refit_normalizer(buffer) -> Normalizer:
        data = buffer.data
        stored = jnp.arange(buffer.capacity)[None] < buffer.size[:, None]
        return fit_normalizer(data["obs"], data["action_enc"], data["next_obs"], data["reward"],
                              stored)

    def train_model(state: ModelBasedState, key):
        k_seg, k_boot = jax.random.split(key)
        runs, valid = sample_segments(state.replay, k_seg, config.batch_size, segment)
        loss, grads = jax.value_and_grad(model_loss)(state.model, state.norm, runs, valid,
                                                     k_boot)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.model)
        model = optax.apply_updates(state.model, updates)
        return state.replace(model=model, opt_state=opt_state), {"model_loss": loss / E}

    def policy_loss(policy, state, runs, valid):
        """Minus the imagined return from the state after each segment's first ``M``
        transitions, through the model adapted on them (the learned reward: the buffer
        does not keep the tasks a known reward would need)."""
        def one(o, a, r, o2):
            win = jnp.concatenate([o[:M], a[:M], r[:M, None], o2[:M],
                                   jnp.zeros((M, 1), jnp.float32)], -1)
            step = adapted_step(state.model, state.norm, win, jnp.ones((M,), bool))
            return -policy_return(policy, step, o[M], None)
        losses = jax.vmap(one)(runs["obs"], runs["action_enc"], runs["reward"],
                               runs["next_obs"])
        w = valid.astype(jnp.float32)
        return jnp.sum(w * losses) / jnp.maximum(jnp.sum(w), 1.0)

    def train_policy(state: ModelBasedState, key):
        runs, valid = sample_segments(state.replay, key, config.batch_size, M + 1)
        loss, grads = jax.value_and_grad(policy_loss)(state.policy, state, runs, valid)
        updates, opt_state = policy_optimizer.update(grads, state.policy_opt_state, state.policy)
        return state.replace(policy=optax.apply_updates(state.policy, updates),
                             policy_opt_state=opt_state), {"policy_return": -loss}

    def init(key: jax.Array) -> ModelBasedState:
        """Initial model and policy, and a buffer holding ``initial_random_episodes`` per
        slot of uniformly random play on fresh train tasks."""
        k_model, k_policy, k_collect = jax.random.split(key, 3)
        x = jnp.zeros((obs_dim + act_dim,), jnp.float32)
        example = (x, jnp.zeros((M, row_dim), jnp.float32), jnp.ones((M,), bool)) if recurrent \
            else (x,)
        model = {"net": init_ensemble(network, k_model, E, *example),
                 "log_inner_lr": jnp.log(jnp.asarray(config.inner_lr, jnp.float32))}
        policy = {}
        if config.policy:
            k_torso, k_head = jax.random.split(k_policy)
            torso = policy_net.init(k_torso, jnp.zeros((obs_dim,), jnp.float32))
            head = policy_head.init(k_head, jnp.zeros((config.policy_hidden_sizes[-1],)))
            policy = {"torso": torso, "head": head}
        item = {"obs": jnp.zeros((obs_dim,), jnp.float32),
                "action": (jnp.zeros((), jnp.int32) if spec.discrete
                           else jnp.zeros((act_dim,), jnp.float32)),
                "reward": jnp.zeros((), jnp.float32), "next_obs": jnp.zeros((obs_dim,)),
                "terminated": jnp.zeros(()), "done": jnp.zeros(()),
                "t": jnp.zeros((), jnp.int32), "action_enc": jnp.zeros((act_dim,))}
        item = jax.tree.map(lambda v: jnp.asarray(v, jnp.int32 if v.dtype == jnp.int32
                                                  else jnp.float32), item)
        buffer = replay.init(item, config.tasks_per_iteration, config.replay_capacity)
        state = ModelBasedState(model=model, norm=identity_normalizer(obs_dim, act_dim),
                                opt_state=optimizer.init(model), policy=policy,
                                policy_opt_state=policy_optimizer.init(policy), replay=buffer,
                                step=jnp.zeros((), jnp.int32), env_steps=jnp.zeros((), jnp.int32))
        return jax.jit(collect_random)(state, k_collect)

    def collect_random(state, key):
        k_tasks, k_play = jax.random.split(key)
        tasks = family.sample(k_tasks, config.tasks_per_iteration, "train")
        played = play(state, tasks, k_play, config.initial_random_episodes, "random")
        buffer = store(state.replay, played)
        return state.replace(replay=buffer, norm=refit_normalizer(buffer),
                             env_steps=jnp.sum(played.valid).astype(jnp.int32))

    def update(state: ModelBasedState, key: jax.Array):
        """One iteration: fit the model (and policy) on all data so far, then collect
        ``episodes_per_task`` episodes per slot on fresh train tasks with the controller."""
        k_train, k_policy, k_tasks, k_play = jax.random.split(key, 4)
        state = state.replace(norm=refit_normalizer(state.replay))
        state, aux = jax.lax.scan(train_model, state,
                                  jax.random.split(k_train, config.train_steps))
        metrics = {"model_loss": jnp.mean(aux["model_loss"]),
                   "final_model_loss": aux["model_loss"][-1]}
        if config.policy:
            state, paux = jax.lax.scan(train_policy, state,
                                       jax.random.split(k_policy, config.policy_train_steps))
            metrics["policy_return"] = jnp.mean(paux["policy_return"])
        tasks = family.sample(jax.random.fold_in(k_tasks, state.step),
                              config.tasks_per_iteration, "train")
        played = play(state, tasks, k_play, config.episodes_per_task, collect_mode)
        buffer = store(state.replay, played)
        steps = jnp.sum(played.valid).astype(jnp.int32)
        metrics.update(collect_return=jnp.mean(played.returns), env_steps=steps)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return state.replace(replay=buffer, step=state.step + 1,
                             env_steps=state.env_steps + steps), metrics

    # -- evaluation -----------------------------------------------------------------------

    def prediction_errors(state: ModelBasedState, played: WindowedEpisodes):
        """Squared error (normalised units, summed over delta and reward) of predicting
        each played transition with the model adapted on the window it was played
        on (``adapted``) and with the trained model unadapted (``unadapted``): ``[B, T]``."""
        def one(items, win, mask):
            def err(o, a, r, o2, w, m):
                step = adapted_step(state.model, state.norm, w, m)
                pred, pred_r = step(jnp.broadcast_to(o, (E,) + o.shape),
                                    jnp.broadcast_to(a, (E,) + a.shape))
                # both in normalised units, so every dimension counts alike
                out = state.norm.targets(o, pred, pred_r)
                target = state.norm.targets(o, o2, r)
                return jnp.mean(jnp.sum(jnp.square(out - target), -1))
            enc = jax.vmap(spec.encode)(items["action"])
            args = (items["obs"], enc, items["reward"], items["next_obs"])
            adapted = jax.vmap(err)(*args, win, mask)
            unadapted = jax.vmap(err)(*args, win, jnp.zeros_like(mask))
            return adapted, unadapted
        adapted, unadapted = jax.vmap(one)(played.items, played.window, played.mask)
        return {"adapted": adapted, "unadapted": unadapted}

    def evaluate(state: ModelBasedState, task_params, key: jax.Array,
                 num_steps: int | None = None) -> AdaptationCurves:
        """Return per episode on held-out tasks ``[B]``: the learner's controller, the same
        without online adaptation (``no_adaptation``, adaptive learners), the policy
        alone (``policy``, mbml_policy) and uniform random actions (``random``); the same
        keys for all, ``[B, n]`` for ``n = num_steps`` or ``eval_episodes``."""
        if num_steps is not None:
            check_positive_int("num_steps (evaluation episodes)", num_steps)
        n = num_steps or config.eval_episodes
        curves = {name: play(state, task_params, key, n, collect_mode).returns}
        if config.adaptation != "none":
            curves["no_adaptation"] = play(state, task_params, key, n, collect_mode,
                                           use_context=False).returns
        if config.policy:
            curves["policy"] = play(state, task_params, key, n, "policy").returns
        curves["random"] = play(state, task_params, key, n, "random").returns
        return make_curves(curves, range(1, n + 1), "episode on the task", learner=name)

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="collect_return", name=name, model_loss=model_loss,
                   adapted_step=adapted_step, play=play, prediction_errors=prediction_errors,
                   train_model=train_model, controller=controller)
