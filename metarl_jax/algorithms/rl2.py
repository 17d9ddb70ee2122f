"""RL²: fast reinforcement learning via slow reinforcement learning.

Duan et al. 2016, arXiv:1611.02779. A recurrent policy is trained across many
*trials*; a trial is ``trial_episodes`` episodes of one task (one bandit
instance, one MDP, one CartPole variant). The recurrent state is carried
across the episode boundaries inside a trial and reset only when the task
changes, so the network itself becomes the learning algorithm: what it has
seen in earlier episodes of the trial shapes how it acts in later ones.

One ``update(state, key)`` is one PPO iteration (Schulman et al. 2017, used
here instead of the paper's TRPO):

1. sample ``meta_batch_size`` tasks from the family's train split and run one
   trial on each (``vmap`` over trials of a ``lax.scan`` over the trial's
   ``trial_episodes * horizon`` steps; the env's auto-reset starts each new
   episode, the GRU state runs on);
2. GAE (Schulman et al. 2016) over the whole trial: the trial is RL²'s
   "episode", so bootstrapping is cut only at the trial's end, never at the
   inner episode boundaries (Duan et al. 2016, Sec. 2.2);
3. ``num_epochs`` epochs of PPO-clip on minibatches of trials (or of
   truncated-BPTT chunks of ``bptt_length`` steps, each restarted from the
   hidden state the rollout had at its start), with a value loss, an entropy
   bonus, gradient clipping and Adam.

The policy's input at step ``t`` is ``[obs_t, a_{t-1}, r_{t-1}, d_{t-1}]``:
the observation, the previous action (one-hot for discrete spaces, the action
vector for continuous ones), the previous reward and the previous
episode-done flag (Duan et al. 2016, Fig. 1); all three are zero at the start
of a trial. With ``previous_obs_input=True`` the input also carries
``obs_{t-1}``, the observation ``a_{t-1}`` was taken in (zeros at a trial's
start), so the whole transition ``(obs_{t-1}, a_{t-1}, r_{t-1})`` is in one input.
With ``time_input=True`` it ends with ``t / T``, the fraction of the trial
played so far (``T`` steps in the trial being played): the Bayes-optimal
finite-horizon player's choice and the value of its belief both depend on
the pulls left, which the memory otherwise has to count itself.

The memory is the paper's GRU (``memory="gru"``) or, with
``memory="transformer"``, causal self-attention over every earlier step of the
trial (:class:`metarl_jax.nn.TransformerActorCritic`): the
"hidden state" is then a key/value cache of the trial so far, reset at every
trial start like the GRU state, and the PPO loss runs the whole trial through
the network at once instead of step by step.

Two variance reductions, both off by default (the paper's RL² has neither),
change only how the policy is *trained*, never what it sees:
``learning_reward="expected"`` computes advantages and value targets from the
env's expected reward ``E[r_t | s_t, a_t, task]`` instead of the sampled one
(unbiased: the score of ``a_t`` and of every earlier action is known once
``(s_t, a_t)`` is, so the sampled reward's noise only adds variance), and
``privileged_value=True`` lets the value head, and only it, read the task's
parameters (an asymmetric critic; the value is a baseline, so the policy
gradient stays unbiased whatever it reads).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.rollout import (MetaInputs, TrialBatch, episode_horizon, episode_returns,
                                     run_trials, task_features)
from metarl_jax.nn import memory
from metarl_jax.nn.memory import MEMORIES, GRUActorCritic, TransformerActorCritic
from metarl_jax.nn.spaces import action_spec
from metarl_jax.rl.losses import actor_critic_ppo_loss
from metarl_jax.rl.ppo import ppo_update
from metarl_jax.rl.returns import trial_gae
from metarl_jax.sharding import check_divisible, shard_tasks
from metarl_jax.utils import (check_bool, check_choice, check_in_unit_interval,
                              check_non_negative, check_positive, check_positive_int,
                              check_positive_int_tuple)

EVAL_POLICIES = ("sample", "mode")
LEARNING_REWARDS = ("sampled", "expected")
# the RL² names of the shared network classes
RL2Network, RL2Transformer = GRUActorCritic, TransformerActorCritic


# Config fields a population may give per member (used only arithmetically, so
# they can be traced scalars); every other field is static: see core.population.
HYPERPARAMETERS = ('learning_rate', 'max_grad_norm', 'gamma', 'gae_lambda', 'clip_eps',
                   'entropy_coef', 'value_coef', 'reward_scale')


@dataclasses.dataclass(frozen=True)
class Config:
    """RL² hyperparameters (defaults: the RL² bandit setting, PPO instead of TRPO).

    Sizes are static (they change array shapes); the rest could be swept.
    """

    trial_episodes: int = 10           # episodes per trial (n of the RL² tables)
    horizon: int | None = None         # steps per episode; None: the env's default
    meta_batch_size: int = 1024        # tasks per iteration, one trial each
    hidden_size: int = 256             # GRU units (the paper: 256)
    head_hidden_sizes: tuple[int, ...] = ()  # ReLU layers of the policy and value heads
                                       # on [GRU output, current input]; (): linear heads
    embed_hidden_sizes: tuple[int, ...] = ()  # ReLU layers on the input before the GRU
    previous_obs_input: bool = False   # also feed the observation the previous action
                                       # was taken in (the whole transition s, a, r)
    time_input: bool = False           # also feed t / T, the fraction of the trial played
    separate_value: bool = False       # the value has its own GRU (the paper's RNN
                                       # baseline) instead of sharing the policy's
    memory: str = "gru"                # "gru" | "transformer" (causal attention over
                                       # the trial; hidden_size is then its width)
    num_layers: int = 2                # transformer blocks (memory="transformer")
    num_heads: int = 4                 # attention heads; must divide hidden_size
    bptt_length: int | None = None     # truncated-BPTT chunk length; None: whole trial
    num_epochs: int = 4                # PPO epochs per iteration
    num_minibatches: int = 4           # minibatches per epoch (over trials or chunks)
    learning_rate: float = 1e-3        # Adam step size
    max_grad_norm: float = 1.0         # global gradient-norm clipping
    gamma: float = 0.99
    gae_lambda: float = 0.3
    clip_eps: float = 0.2              # PPO clipping range
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    reward_scale: float = 1.0          # rewards are multiplied by this for learning only
    normalize_advantages: bool = True
    eval_policy: str = "sample"        # "sample" | "mode" when evaluating
    eval_episodes: int | None = None   # episodes per evaluation trial; None: trial_episodes
    learning_reward: str = "sampled"   # "sampled" | "expected": advantages and value
                                       # targets use the env's info["expected_reward"]
                                       # (E[r | s, a, task]); the policy still sees only
                                       # sampled rewards. Unbiased, less variance; needs
                                       # an env that reports it (bandits, tabular MDPs)
    privileged_value: bool = False     # the value head also sees the task's parameters
                                       # (an asymmetric critic); the policy never does

    def __post_init__(self):
        for name in ("trial_episodes", "meta_batch_size", "hidden_size", "num_epochs",
                     "num_minibatches", "num_layers", "num_heads"):
            check_positive_int(name, getattr(self, name))
        for name in ("head_hidden_sizes", "embed_hidden_sizes"):
            check_positive_int_tuple(name, getattr(self, name))
        for name in ("previous_obs_input", "time_input", "separate_value", "privileged_value"):
            check_bool(name, getattr(self, name))
        for name in ("horizon", "bptt_length", "eval_episodes"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.meta_batch_size % self.num_minibatches:
            raise ValueError(
                f"meta_batch_size={self.meta_batch_size} must be divisible by "
                f"num_minibatches={self.num_minibatches}")
        for name in ("learning_rate", "max_grad_norm", "clip_eps", "reward_scale"):
            check_positive(name, getattr(self, name))
        for name in ("entropy_coef", "value_coef"):
            check_non_negative(name, getattr(self, name))
        for name in ("gamma", "gae_lambda"):
            check_in_unit_interval(name, getattr(self, name))
        check_choice("memory", self.memory, MEMORIES)
        if self.memory == "transformer":
            if self.hidden_size % self.num_heads:
                raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                                 f"num_heads={self.num_heads} (memory='transformer')")
            if self.bptt_length is not None:
                raise ValueError("memory='transformer' attends over the whole trial: "
                                 f"bptt_length must be None, got {self.bptt_length!r}")
            if self.separate_value:
                raise ValueError("separate_value is a GRU option; memory='transformer' "
                                 "shares its attention layers between policy and value")
        check_choice("learning_reward", self.learning_reward, LEARNING_REWARDS)
        check_choice("eval_policy", self.eval_policy, EVAL_POLICIES)


@struct.dataclass
class RL2State:
    """Learner state: network parameters, Adam state, iteration count."""

    params: Any
    opt_state: Any
    step: jax.Array


class Learner(NamedTuple):
    """The learner contract (:mod:`metarl_jax.core.learner`), plus RL²'s parts."""

    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: Any
    key_metric: str
    run_trials: Any     # (params, task_params, key, num_episodes, deterministic) -> TrialBatch
    advantages: Any     # TrialBatch -> (advantages, returns) [B, K * C]
    loss: Any           # the recurrent PPO loss on sequences
    sequence: Any       # (params, state, inputs [N, C, in]) -> (dist, value) [N, C]
    network: Any        # GRUActorCritic or TransformerActorCritic


def make(config: Config, family, mesh=None) -> Learner:
    """Build the RL² learner for ``family`` (a :class:`metarl_jax.tasks.TaskFamily`).

    Raises ``TypeError`` for a wrong config type or an unsupported action
    space and ``ValueError`` if the batch does not divide over ``mesh``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config must be an rl2.Config, got {type(config).__name__}")
    check_divisible(config.meta_batch_size, mesh)
    env = family.env
    params0 = family.sample_params(jax.random.PRNGKey(0))
    horizon = episode_horizon(family, config.horizon, "RL²")
    action_space = env.action_space(params0)
    try:
        spec = action_spec(action_space)
    except TypeError as error:
        raise TypeError(f"family {family.name!r}: RL² supports Discrete and 1-D Box action "
                        f"spaces ({error})") from None
    obs_dim = math.prod(env.observation_space(params0).shape)
    meta_inputs = MetaInputs(previous_obs=config.previous_obs_input, time=config.time_input,
                             privileged=config.privileged_value)
    privileged_dim = int(task_features(params0).shape[0]) if config.privileged_value else 0
    input_dim = meta_inputs.size(obs_dim, spec.dim)
    if config.learning_reward == "expected":
        _, _, _, _, _, info0 = jax.eval_shape(
            env.step, jax.random.PRNGKey(0), env.reset(jax.random.PRNGKey(0), params0)[1],
            action_space.sample(jax.random.PRNGKey(0)), params0)
        if "expected_reward" not in info0:
            raise TypeError(
                f"family {family.name!r}: learning_reward='expected' needs an env whose "
                "step reports info['expected_reward'] (the bandits and tabular MDPs do); "
                "use learning_reward='sampled'")
    if config.memory == "transformer":
        # one cache slot per step of the longest trial this learner plays
        max_len = max(config.trial_episodes, config.eval_episodes or 0) * horizon
        network = TransformerActorCritic(
            config.hidden_size, config.num_layers, config.num_heads, max_len, spec.dim,
            spec.discrete, tuple(config.head_hidden_sizes), tuple(config.embed_hidden_sizes),
            privileged_dim)
    else:
        network = GRUActorCritic(config.hidden_size, spec.dim, spec.discrete,
                                 tuple(config.head_hidden_sizes),
                                 tuple(config.embed_hidden_sizes), config.separate_value,
                                 privileged_dim)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(config.learning_rate))

    def policy_step(params, hidden, inputs):
        return memory.step(network, params, hidden, inputs)

    def trials_of(params, task_params, key, num_episodes: int, deterministic: bool = False):
        """One trial of ``num_episodes`` episodes on each task (leading axis ``B``).

        The memory starts empty and is carried through every step of the
        trial, episode boundaries included. Returns a :class:`TrialBatch`.
        """
        total = num_episodes * horizon
        if config.memory == "transformer" and total > network.max_len:
            raise ValueError(
                f"a trial of {num_episodes} episodes x {horizon} steps = {total} steps exceeds "
                f"the transformer memory's {network.max_len} slots (max of trial_episodes and "
                "eval_episodes, times the horizon)")
        return run_trials(env, policy_step, network.init_state(), params, task_params, key,
                          horizon=horizon, mesh=mesh, num_episodes=num_episodes,
                          action_spec=spec, inputs=meta_inputs,
                          chunk_length=config.bptt_length, deterministic=deterministic,
                          expected_reward=config.learning_reward == "expected")

    # -- PPO ---------------------------------------------------------------------

    def sequence(params, hidden, inputs):
        """Policy distributions and values at every step of ``N`` sequences
        (:func:`metarl_jax.nn.memory.sequence`)."""
        return memory.sequence(network, params, hidden, inputs)

    def loss(params, hidden, inputs, action, old_log_prob, advantages, returns, valid):
        """Recurrent PPO loss on ``N`` sequences of ``C`` steps (Schulman et al. 2017).

        ``hidden [N, S]`` is the recurrent state at each sequence's start, the other
        arguments are ``[N, C, ...]``. Returns ``(loss, aux)`` with the clipped
        surrogate, ``value_coef`` times half the squared error of the value
        against the GAE returns, and ``entropy_coef`` times the entropy bonus.
        """
        dist, value = sequence(params, hidden, inputs)
        return actor_critic_ppo_loss(dist, value, action, old_log_prob, advantages, returns,
                                     valid, clip_eps=config.clip_eps,
                                     value_coef=config.value_coef,
                                     entropy_coef=config.entropy_coef)

    def trial_advantages(trials: TrialBatch):
        """GAE over each whole trial, ``[B, K * C]``: cut only at the trial's end."""
        reward = trials.flat(trials.learning_reward) * config.reward_scale
        return trial_gae(reward, trials.flat(trials.value), trials.flat(trials.valid),
                         config.gamma, config.gae_lambda, config.normalize_advantages)

    def init(key: jax.Array) -> RL2State:
        """Initial network parameters and optimiser state."""
        params = network.init(key, network.init_state(),
                              jnp.zeros((input_dim + privileged_dim,), jnp.float32))
        return RL2State(params=params, opt_state=optimizer.init(params),
                        step=jnp.zeros((), jnp.int32))

    def update(state: RL2State, key: jax.Array):
        """One PPO iteration on fresh trials of train tasks (pure, jit-able)."""
        task_key, trial_key, perm_key = jax.random.split(key, 3)
        task_params = shard_tasks(
            family.sample(task_key, config.meta_batch_size, "train"), mesh)
        trials = trials_of(state.params, task_params, trial_key, config.trial_episodes)
        adv, returns = trial_advantages(trials)
        b, k, c = trials.valid.shape

        def chunked(x):  # [B, K, C, ...] -> [B * K, C, ...]: chunks are the PPO sequences
            return x.reshape((b * k, c) + x.shape[3:])

        # the transformer's sequences start from the empty memory: no state to shuffle
        hidden = None if config.memory == "transformer" else jax.tree.map(
            lambda x: x.reshape((b * k,) + x.shape[2:]), trials.chunk_state)
        data = (hidden, chunked(trials.inputs),
                chunked(trials.action), chunked(trials.log_prob),
                adv.reshape(b * k, c), returns.reshape(b * k, c), chunked(trials.valid))
        params, opt_state, (_, aux) = ppo_update(
            loss, optimizer, state.params, state.opt_state, data, perm_key,
            num_epochs=config.num_epochs, num_minibatches=config.num_minibatches)
        per_episode = episode_returns(trials, config.trial_episodes)  # [B, n]
        metrics = {
            "mean_trial_return": jnp.mean(jnp.sum(per_episode, axis=1)),
            "first_episode_return": jnp.mean(per_episode[:, 0]),
            "last_episode_return": jnp.mean(per_episode[:, -1]),
            "env_steps": jnp.sum(trials.valid),
            **{name: jnp.mean(value) for name, value in aux.items()},
        }
        metrics = {name: jnp.asarray(v, jnp.float32) for name, v in metrics.items()}
        return RL2State(params=params, opt_state=opt_state, step=state.step + 1), metrics

    def evaluate(state: RL2State, task_params, key: jax.Array,
                 num_steps: int | None = None) -> AdaptationCurves:
        """Return of each episode of one trial per held-out task, ``{"rl2": [tasks, n]}``.

        RL² adapts inside a trial, without gradient steps, so the curve has
        one point per episode (x = ``1..n``): ``n = num_steps`` episodes, by
        default ``eval_episodes`` (or ``trial_episodes``, as trained). The
        policy samples its actions or takes the most likely one, as
        ``eval_policy`` says.
        """
        if num_steps is not None:
            check_positive_int("num_steps (episodes of the evaluation trial)", num_steps)
        num_episodes = num_steps or config.eval_episodes or config.trial_episodes
        trials = trials_of(state.params, task_params, key, num_episodes,
                           deterministic=config.eval_policy == "mode")
        return make_curves({"rl2": episode_returns(trials, num_episodes)},
                           range(1, num_episodes + 1), "episode in trial")

    return Learner(init=init, update=update, evaluate=evaluate, config=config, family=family,
                   key_metric="mean_trial_return", run_trials=trials_of,
                   advantages=trial_advantages, loss=loss, sequence=sequence, network=network)
