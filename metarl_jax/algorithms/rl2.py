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
trial (:class:`RL2Transformer`, as in transformer-based in-context RL): the
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

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from gymnax.environments import spaces

from metarl_jax.networks import Categorical, DiagGaussian
from metarl_jax.rl.losses import ppo_clip_loss
from metarl_jax.rl.returns import gae, masked_mean, normalize_advantages
from metarl_jax.sharding import check_divisible, shard_tasks

EVAL_POLICIES = ("sample", "mode")
MEMORIES = ("gru", "transformer")
LEARNING_REWARDS = ("sampled", "expected")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


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
            _check_positive_int(name, getattr(self, name))
        for name in ("head_hidden_sizes", "embed_hidden_sizes"):
            sizes = getattr(self, name)
            if not isinstance(sizes, tuple) or any(
                    isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes):
                raise ValueError(f"{name} must be a tuple of positive integers, got {sizes!r}")
        for name in ("previous_obs_input", "time_input", "separate_value", "privileged_value"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in ("horizon", "bptt_length", "eval_episodes"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if self.meta_batch_size % self.num_minibatches:
            raise ValueError(
                f"meta_batch_size={self.meta_batch_size} must be divisible by "
                f"num_minibatches={self.num_minibatches}")
        for name in ("learning_rate", "max_grad_norm", "clip_eps", "reward_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("entropy_coef", "value_coef"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.memory not in MEMORIES:
            raise ValueError(f"memory must be one of {MEMORIES}, got {self.memory!r}")
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
        if self.learning_reward not in LEARNING_REWARDS:
            raise ValueError(f"learning_reward must be one of {LEARNING_REWARDS}, "
                             f"got {self.learning_reward!r}")
        if self.eval_policy not in EVAL_POLICIES:
            raise ValueError(
                f"eval_policy must be one of {EVAL_POLICIES}, got {self.eval_policy!r}")


def split_privileged(inputs: jax.Array, privileged_dim: int):
    """``inputs [..., in + F] -> (inputs [..., in], privileged [..., F])``, ``F = privileged_dim``."""
    if not privileged_dim:
        return inputs, None
    return inputs[..., :-privileged_dim], inputs[..., -privileged_dim:]


def task_features(task_params) -> jax.Array:
    """The task's parameters as one float32 vector (the privileged value's input).

    Every floating-point leaf of the env params, flattened in pytree order, except
    ``max_steps_in_episode`` (the horizon, the same for every task of a learner):
    one task's params give ``[F]`` (``vmap`` it over a batch).
    """
    leaves = [x for path, x in jax.tree_util.tree_leaves_with_path(task_params)
              if "max_steps_in_episode" not in jax.tree_util.keystr(path)
              and jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    if not leaves:
        raise TypeError("privileged_value needs env params with floating-point fields "
                        f"(the task's parameters), got {type(task_params).__name__}")
    return jnp.concatenate([jnp.ravel(jnp.asarray(x, jnp.float32)) for x in leaves])


class RL2Network(nn.Module):
    """GRU policy and value network of RL² (Duan et al. 2016, Sec. 3).

    ``__call__(hidden [..., H], inputs [..., in]) -> (hidden', dist, value [...])``:
    one step of a GRU (``flax.linen.GRUCell``) shared by a policy head
    (categorical logits, or the mean of a diagonal Gaussian with a learned
    state-independent ``log_std``) and a value head. The heads are linear on
    the GRU output (the paper's network) unless ``head_hidden_sizes`` is
    non-empty: then each head is its own ReLU MLP on the GRU output
    concatenated with the current input, which lets the action depend on the
    current state and the memory jointly rather than through one GRU update
    (a tabular MDP's best action is such a function). ``embed_hidden_sizes``
    puts a ReLU MLP on the input before the GRU. With ``separate_value`` the
    value has its own GRU (``value_gru``, the paper's recurrent baseline) and
    ``hidden`` is ``[..., 2 H]``: the policy GRU's state, then the value GRU's.
    With ``privileged_dim = F > 0`` the last ``F`` entries of ``inputs`` are
    privileged task features that only the value head reads (through a ReLU
    layer of ``hidden_size`` units on ``[value features, task features]``).
    """

    hidden_size: int
    action_dim: int
    discrete: bool
    head_hidden_sizes: tuple[int, ...] = ()
    embed_hidden_sizes: tuple[int, ...] = ()
    separate_value: bool = False
    privileged_dim: int = 0

    @property
    def state_size(self) -> int:
        """Length of the recurrent state carried between steps."""
        return self.hidden_size * (2 if self.separate_value else 1)

    def initial_state(self, shape: tuple[int, ...] = ()) -> jax.Array:
        """The zero state of a trial's start, ``[*shape, state_size]``."""
        return jnp.zeros(shape + (self.state_size,), jnp.float32)

    @nn.compact
    def __call__(self, hidden: jax.Array, inputs: jax.Array):
        inputs, privileged = split_privileged(inputs, self.privileged_dim)
        gru_inputs = inputs
        for i, size in enumerate(self.embed_hidden_sizes):
            gru_inputs = nn.relu(nn.Dense(size, name=f"embed_{i}")(gru_inputs))
        if self.separate_value:
            policy_hidden, value_hidden = jnp.split(hidden, 2, axis=-1)
            policy_hidden, features = nn.GRUCell(self.hidden_size, name="gru")(
                policy_hidden, gru_inputs)
            value_hidden, value_gru_features = nn.GRUCell(self.hidden_size, name="value_gru")(
                value_hidden, gru_inputs)
            hidden = jnp.concatenate([policy_hidden, value_hidden], axis=-1)
        else:
            hidden, features = nn.GRUCell(self.hidden_size, name="gru")(hidden, gru_inputs)
            value_gru_features = features
        policy_features, value_features = features, value_gru_features
        if self.head_hidden_sizes:
            policy_features = jnp.concatenate([features, inputs], axis=-1)
            value_features = jnp.concatenate([value_gru_features, inputs], axis=-1)
            for i, size in enumerate(self.head_hidden_sizes):
                policy_features = nn.relu(nn.Dense(size, name=f"policy_hidden_{i}")(
                    policy_features))
                value_features = nn.relu(nn.Dense(size, name=f"value_hidden_{i}")(
                    value_features))
        if self.privileged_dim:
            value_features = nn.relu(nn.Dense(self.hidden_size, name="privileged_value")(
                jnp.concatenate([value_features, privileged], axis=-1)))
        head = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01),
                        name="policy")(policy_features)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0),
                         name="value")(value_features)[..., 0]
        if self.discrete:
            dist = Categorical(head)
        else:
            log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,),
                                 jnp.float32)
            dist = DiagGaussian(head, log_std)
        return hidden, dist, value


class RL2Transformer(nn.Module):
    """Causal-attention memory for RL²: a pre-LayerNorm transformer over the trial.

    The same contract as :class:`RL2Network`:
    ``__call__(hidden, inputs [..., in]) -> (hidden', dist, value [...])`` is
    one step, where ``hidden`` (:meth:`initial_state`) holds every layer's
    attention keys and values of the trial's earlier steps (one ``[...,
    max_len, d]`` array per layer each) and the number of steps taken
    (``count``, int32); the all-zero state is an empty memory, so the
    trial-start reset is the GRU's. Each step embeds its input (an optional
    ReLU MLP, then a linear token plus a learned embedding of its position in
    the trial), runs ``num_layers`` blocks of ``num_heads``-head causal
    self-attention over itself and the cached steps followed by a ReLU MLP of
    width ``2 d``, and reads the policy and value from the final LayerNorm's
    output with the same heads as the GRU network.

    :meth:`sequence` computes the same outputs for a whole trial at once
    (``[..., C, in]`` from an empty memory, ``C <= max_len``), which is how the
    PPO loss runs it. ``privileged_dim`` works as in :class:`RL2Network`.
    """

    d_model: int
    num_layers: int
    num_heads: int
    max_len: int
    action_dim: int
    discrete: bool
    head_hidden_sizes: tuple[int, ...] = ()
    embed_hidden_sizes: tuple[int, ...] = ()
    privileged_dim: int = 0

    def initial_state(self, shape: tuple[int, ...] = ()) -> dict:
        """The empty memory of a trial's start, for a batch of ``shape`` trials."""
        cache = tuple(jnp.zeros(shape + (self.max_len, self.d_model), jnp.float32)
                      for _ in range(self.num_layers))
        return {"keys": cache, "values": cache, "count": jnp.zeros(shape, jnp.int32)}

    def setup(self):
        d = self.d_model
        self.embed = [nn.Dense(size, name=f"embed_{i}")
                      for i, size in enumerate(self.embed_hidden_sizes)]
        self.token = nn.Dense(d, name="token")
        self.position = self.param("position", nn.initializers.normal(0.02),
                                   (self.max_len, d), jnp.float32)
        self.ln_attention = [nn.LayerNorm(name=f"ln_attention_{i}")
                             for i in range(self.num_layers)]
        self.qkv = [nn.Dense(3 * d, name=f"qkv_{i}") for i in range(self.num_layers)]
        self.attention_out = [nn.Dense(d, name=f"attention_out_{i}")
                              for i in range(self.num_layers)]
        self.ln_mlp = [nn.LayerNorm(name=f"ln_mlp_{i}") for i in range(self.num_layers)]
        self.mlp_in = [nn.Dense(2 * d, name=f"mlp_in_{i}") for i in range(self.num_layers)]
        self.mlp_out = [nn.Dense(d, name=f"mlp_out_{i}") for i in range(self.num_layers)]
        self.ln_final = nn.LayerNorm(name="ln_final")
        self.policy_hidden = [nn.Dense(size, name=f"policy_hidden_{i}")
                              for i, size in enumerate(self.head_hidden_sizes)]
        self.value_hidden = [nn.Dense(size, name=f"value_hidden_{i}")
                             for i, size in enumerate(self.head_hidden_sizes)]
        self.policy = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01),
                               name="policy")
        self.value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value")
        if self.privileged_dim:
            self.privileged_value = nn.Dense(d, name="privileged_value")
        if not self.discrete:
            self.log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,),
                                      jnp.float32)

    def _tokens(self, inputs):
        x = inputs
        for layer in self.embed:
            x = nn.relu(layer(x))
        return self.token(x)

    def _split_heads(self, x):  # [..., d] -> [..., heads, d / heads]
        return x.reshape(x.shape[:-1] + (self.num_heads, self.d_model // self.num_heads))

    def _mlp(self, i, x):
        return x + self.mlp_out[i](nn.relu(self.mlp_in[i](self.ln_mlp[i](x))))

    def _heads(self, x, inputs, privileged):
        features = self.ln_final(x)
        policy_features = value_features = features
        if self.head_hidden_sizes:
            policy_features = value_features = jnp.concatenate([features, inputs], axis=-1)
            for policy_layer, value_layer in zip(self.policy_hidden, self.value_hidden):
                policy_features = nn.relu(policy_layer(policy_features))
                value_features = nn.relu(value_layer(value_features))
        if self.privileged_dim:
            value_features = nn.relu(self.privileged_value(
                jnp.concatenate([value_features, privileged], axis=-1)))
        head = self.policy(policy_features)
        value = self.value(value_features)[..., 0]
        dist = Categorical(head) if self.discrete else DiagGaussian(head, self.log_std)
        return dist, value

    def __call__(self, hidden, inputs: jax.Array):
        inputs, privileged = split_privileged(inputs, self.privileged_dim)
        d, length = self.d_model, self.max_len
        count = hidden["count"]
        t = jnp.minimum(count, length - 1)                           # this step's slot
        visible = (jnp.arange(length) <= t[..., None])[..., :, None]  # [..., L, 1]
        x = self._tokens(inputs) + jnp.take(self.position, t, axis=0)

        def write(cache, row):  # cache [..., L, d], row [..., d]: row into slot t
            if count.ndim == 0:  # one trial (vmapped in rollouts): an in-place update
                return jax.lax.dynamic_update_slice(cache, row[None], (t, 0))
            return jnp.where((jnp.arange(length) == t[..., None])[..., None],
                             row[..., None, :], cache)

        new_keys, new_values = [], []
        for i in range(self.num_layers):
            q, k, v = jnp.split(self.qkv[i](self.ln_attention[i](x)), 3, axis=-1)
            keys = write(hidden["keys"][i], k)
            values = write(hidden["values"][i], v)
            new_keys.append(keys)
            new_values.append(values)
            # one query against the cache: multiply-and-sum (memory-bound reductions that
            # XLA fuses) rather than a batch of matrix-vector products
            scores = jnp.sum(self._split_heads(q)[..., None, :, :] * self._split_heads(keys),
                             axis=-1) / math.sqrt(d // self.num_heads)          # [..., L, h]
            weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-2)
            attended = jnp.sum(weights[..., None] * self._split_heads(values), axis=-3)
            x = x + self.attention_out[i](attended.reshape(attended.shape[:-2] + (d,)))
            x = self._mlp(i, x)
        hidden = {"keys": tuple(new_keys), "values": tuple(new_values), "count": count + 1}
        dist, value = self._heads(x, inputs, privileged)
        return hidden, dist, value

    def sequence(self, inputs: jax.Array):
        """Outputs at every step of trials ``[..., C, in]`` that start from an empty memory."""
        c = inputs.shape[-2]
        if c > self.max_len:
            raise ValueError(f"a sequence of {c} steps exceeds the memory's max_len="
                             f"{self.max_len}")
        inputs, privileged = split_privileged(inputs, self.privileged_dim)
        d = self.d_model
        x = self._tokens(inputs) + self.position[:c]
        causal = jnp.tril(jnp.ones((c, c), bool))
        for i in range(self.num_layers):
            q, k, v = jnp.split(self.qkv[i](self.ln_attention[i](x)), 3, axis=-1)
            scores = jnp.einsum("...thc,...lhc->...htl", self._split_heads(q),
                                self._split_heads(k)) / math.sqrt(d // self.num_heads)
            weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
            attended = jnp.einsum("...htl,...lhc->...thc", weights, self._split_heads(v))
            x = x + self.attention_out[i](attended.reshape(attended.shape[:-2] + (d,)))
            x = self._mlp(i, x)
        return self._heads(x, inputs, privileged)


@struct.dataclass
class TrialBatch:
    """Trials in truncated-BPTT chunks: ``B`` trials, ``K`` chunks of ``C`` steps.

    ``K * C >= trial_episodes * horizon``; steps after the trial's last episode
    ended are padding with ``valid == False``. Shapes:

    * ``chunk_hidden``: ``[B, K, S]`` recurrent state at the start of each chunk
      (``S = H``, ``2 H`` with ``separate_value``; zeros for the first chunk: the
      state resets at every trial start); with ``memory="transformer"`` the
      empty attention memory (a dict of arrays with leading ``[B, 1]``)
    * ``inputs``: ``[B, K, C, in]`` network inputs ``[obs, a_prev, r_prev, d_prev]``
      (``[obs, obs_prev, a_prev, r_prev, d_prev]`` with ``previous_obs_input``),
      then ``t / T`` with ``time_input``,
      followed by the task features (:func:`task_features`) with ``privileged_value``
    * ``action``: ``[B, K, C, *action_shape]``
    * ``log_prob``, ``value``, ``reward``: ``[B, K, C]`` float32 (behaviour policy)
    * ``done``: ``[B, K, C]`` bool, the step ended an inner episode
    * ``valid``: ``[B, K, C]`` bool, the step belongs to the trial
    * ``episode``: ``[B, K, C]`` int32, index of the episode within the trial
    * ``learning_reward``: ``[B, K, C]`` float32, the reward PPO learns from:
      ``reward`` itself, or its expectation with ``learning_reward="expected"``
    """

    chunk_hidden: Any
    inputs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array
    done: jax.Array
    valid: jax.Array
    episode: jax.Array
    learning_reward: jax.Array

    def flat(self, x: jax.Array) -> jax.Array:
        """``[B, K, C, ...] -> [B, K * C, ...]``: the trial as one time axis."""
        return x.reshape(x.shape[:1] + (-1,) + x.shape[3:])


@struct.dataclass
class RL2State:
    """Learner state: network parameters, Adam state, iteration count."""

    params: Any
    opt_state: Any
    step: jax.Array


class Learner(NamedTuple):
    """The learner contract, plus RL²'s network, trial rollout, GAE and loss."""

    init: Any
    update: Any
    evaluate: Any
    run_trials: Any
    advantages: Any
    loss: Any
    sequence: Any
    network: Any  # RL2Network or RL2Transformer
    config: Config
    family: Any
    key_metric: str = "mean_trial_return"
    curve_xlabel: str = "episode in trial"


def episode_returns(trials: TrialBatch, num_episodes: int) -> jax.Array:
    """Undiscounted return of each episode of each trial, ``[B, num_episodes]``."""
    reward = trials.flat(trials.reward)
    episode = jnp.where(trials.flat(trials.valid), trials.flat(trials.episode), num_episodes)

    def per_trial(r, e):  # [T], [T] -> [num_episodes]; padding lands in the extra segment
        return jax.ops.segment_sum(r, e, num_segments=num_episodes + 1)[:num_episodes]

    return jax.vmap(per_trial)(reward, episode)


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
    if not hasattr(params0, "max_steps_in_episode"):
        raise TypeError(f"family {family.name!r}: RL² needs env params with a "
                        "max_steps_in_episode field (the episode horizon)")
    horizon = config.horizon or int(params0.max_steps_in_episode)
    action_space = env.action_space(params0)
    if isinstance(action_space, spaces.Discrete):
        discrete, action_dim = True, int(action_space.n)
    elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        discrete, action_dim = False, int(action_space.shape[0])
        action_low = jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), (action_dim,))
        action_high = jnp.broadcast_to(jnp.asarray(action_space.high, jnp.float32), (action_dim,))
    else:
        raise TypeError(
            f"family {family.name!r}: RL² supports Discrete and 1-D Box action spaces, "
            f"got {action_space!r}")
    obs_dim = math.prod(env.observation_space(params0).shape)
    privileged_dim = int(task_features(params0).shape[0]) if config.privileged_value else 0
    input_dim = (obs_dim * (2 if config.previous_obs_input else 1) + action_dim + 2
                 + (1 if config.time_input else 0))
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
        network = RL2Transformer(config.hidden_size, config.num_layers, config.num_heads,
                                 max_len, action_dim, discrete,
                                 tuple(config.head_hidden_sizes),
                                 tuple(config.embed_hidden_sizes), privileged_dim)
    else:
        network = RL2Network(config.hidden_size, action_dim, discrete,
                             tuple(config.head_hidden_sizes), tuple(config.embed_hidden_sizes),
                             config.separate_value, privileged_dim)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                            optax.adam(config.learning_rate))

    def with_horizon(task_params):
        """Episodes of every task are truncated after exactly ``horizon`` steps."""
        return task_params.replace(
            max_steps_in_episode=jnp.full_like(jnp.asarray(task_params.max_steps_in_episode),
                                               horizon))

    def action_input(action):
        if discrete:
            return jax.nn.one_hot(action, action_dim, dtype=jnp.float32)
        return jnp.clip(action, action_low, action_high)

    # -- trial rollout ------------------------------------------------------------

    def run_trials(params, task_params, key, num_episodes: int, deterministic: bool = False):
        """One trial of ``num_episodes`` episodes on each task (leading axis ``B``).

        The GRU state starts at zero and is carried through every step of the
        trial, episode boundaries included. Returns a :class:`TrialBatch`.
        """
        total = num_episodes * horizon
        if config.memory == "transformer" and total > network.max_len:
            raise ValueError(
                f"a trial of {num_episodes} episodes x {horizon} steps = {total} steps exceeds "
                f"the transformer memory's {network.max_len} slots (max of trial_episodes and "
                "eval_episodes, times the horizon)")
        chunk = config.bptt_length or total
        num_chunks = -(-total // chunk)
        task_params = with_horizon(task_params)
        num_tasks = jax.tree.leaves(task_params)[0].shape[0]

        def one_trial(env_params, key):
            privileged = [task_features(env_params)] if config.privileged_value else []
            reset_key, scan_key = jax.random.split(key)
            obs, env_state = env.reset(reset_key, env_params)
            flat_obs = jnp.reshape(obs, (-1,)).astype(jnp.float32)
            carry = (obs, env_state, network.initial_state(),
                     jnp.zeros((action_dim,), jnp.float32), jnp.zeros((), jnp.float32),
                     jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32),
                     jnp.zeros_like(flat_obs), jnp.zeros((), jnp.int32))

            def step(carry, step_key):
                (obs, env_state, hidden, prev_action, prev_reward, prev_done, episode,
                 prev_obs, t) = carry
                flat_obs = jnp.reshape(obs, (-1,)).astype(jnp.float32)
                # prev_obs: the observation a_prev was taken in (zeros at the trial's start)
                obs_part = ([flat_obs, prev_obs] if config.previous_obs_input else [flat_obs])
                elapsed = ([(t.astype(jnp.float32) / total)[None]]
                           if config.time_input else [])
                inputs = jnp.concatenate(obs_part + [prev_action, prev_reward[None],
                                                     prev_done[None]] + elapsed + privileged)
                hidden, dist, value = network.apply(params, hidden, inputs)
                policy_key, env_key = jax.random.split(step_key)
                action = dist.mode() if deterministic else dist.sample(policy_key)
                obs, env_state, reward, terminated, truncated, info = env.step(
                    env_key, env_state, action, env_params)
                reward = jnp.asarray(reward, jnp.float32)
                signal = (jnp.asarray(info["expected_reward"], jnp.float32)
                          if config.learning_reward == "expected" else reward)
                done = jnp.logical_or(terminated, truncated)
                out = (inputs, action, dist.log_prob(action), value, reward, done,
                       episode < num_episodes, episode, signal)
                carry = (obs, env_state, hidden, action_input(action), reward,
                         done.astype(jnp.float32), episode + done.astype(jnp.int32),
                         flat_obs, t + 1)
                return carry, out

            def run_chunk(carry, chunk_keys):
                chunk_start_hidden = carry[2]
                carry, outs = jax.lax.scan(step, carry, chunk_keys)
                return carry, (chunk_start_hidden, outs)

            keys = jax.random.split(scan_key, num_chunks * chunk).reshape(
                (num_chunks, chunk) + scan_key.shape)
            _, (chunk_hidden, outs) = jax.lax.scan(run_chunk, carry, keys)
            return TrialBatch(chunk_hidden, *outs)

        keys = shard_tasks(jax.random.split(key, num_tasks), mesh)
        trials = jax.vmap(one_trial)(task_params, keys)
        return shard_tasks(trials, mesh)

    # -- PPO ---------------------------------------------------------------------

    def sequence(params, hidden, inputs):
        """Policy distributions and values at every step of ``N`` sequences.

        ``hidden [N, S]`` is the recurrent state at each sequence's start and
        ``inputs [N, C, in]``; returns ``(dist, value)`` with leading axes
        ``[N, C]``. The GRU runs step by step from ``hidden``; the transformer
        attends over the whole sequence at once, from the empty memory of a
        trial's start (its sequences are whole trials: ``bptt_length`` is None).
        """
        if config.memory == "transformer":
            del hidden
            return network.apply(params, inputs, method=RL2Transformer.sequence)

        def step(h, x):
            h, dist, value = network.apply(params, h, x)
            return h, (dist, value)

        _, (dist, value) = jax.lax.scan(step, hidden, jnp.swapaxes(inputs, 0, 1))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), (dist, value))

    def loss(params, hidden, inputs, action, old_log_prob, advantages, returns, valid):
        """Recurrent PPO loss on ``N`` sequences of ``C`` steps (Schulman et al. 2017).

        ``hidden [N, S]`` is the recurrent state at each sequence's start, the other
        arguments are ``[N, C, ...]``. Returns ``(loss, aux)`` with the clipped
        surrogate, ``value_coef`` times half the squared error of the value
        against the GAE returns, and ``entropy_coef`` times the entropy bonus.
        """
        dist, value = sequence(params, hidden, inputs)
        log_prob = dist.log_prob(action)
        policy_loss = ppo_clip_loss(log_prob, old_log_prob, advantages, valid, config.clip_eps)
        value_loss = 0.5 * masked_mean(jnp.square(value - returns), valid)
        entropy = masked_mean(dist.entropy(), valid)
        total = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy
        log_ratio = log_prob - old_log_prob
        aux = {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": masked_mean(jnp.expm1(log_ratio) - log_ratio, valid),
            "clip_fraction": masked_mean(jnp.abs(log_ratio) > jnp.log1p(config.clip_eps),
                                         valid),
        }
        return total, aux

    def trial_advantages(trials: TrialBatch):
        """GAE over each whole trial, ``[B, K * C]``: cut only at the trial's end."""
        valid = trials.flat(trials.valid)
        value = trials.flat(trials.value)
        next_value = jnp.concatenate([value[:, 1:], jnp.zeros_like(value[:, :1])], axis=1)
        next_valid = jnp.concatenate([valid[:, 1:], jnp.zeros_like(valid[:, :1])], axis=1)
        trial_end = valid & ~next_valid
        reward = trials.flat(trials.learning_reward) * config.reward_scale
        adv, returns = gae(reward, value, next_value, trial_end, valid,
                           config.gamma, config.gae_lambda)
        if config.normalize_advantages:
            adv = normalize_advantages(adv, valid)
        return adv, returns

    def init(key: jax.Array) -> RL2State:
        """Initial network parameters and optimiser state."""
        params = network.init(key, network.initial_state(),
                              jnp.zeros((input_dim + privileged_dim,), jnp.float32))
        return RL2State(params=params, opt_state=optimizer.init(params),
                        step=jnp.zeros((), jnp.int32))

    def update(state: RL2State, key: jax.Array):
        """One PPO iteration on fresh trials of train tasks (pure, jit-able)."""
        task_key, trial_key, perm_key = jax.random.split(key, 3)
        task_params = shard_tasks(
            family.sample(task_key, config.meta_batch_size, "train"), mesh)
        trials = run_trials(state.params, task_params, trial_key, config.trial_episodes)
        adv, returns = trial_advantages(trials)
        b, k, c = trials.valid.shape

        def chunked(x):  # [B, K, C, ...] -> [B * K, C, ...]: chunks are the PPO sequences
            return x.reshape((b * k, c) + x.shape[3:])

        # the transformer's sequences start from the empty memory: no state to shuffle
        hidden = None if config.memory == "transformer" else jax.tree.map(
            lambda x: x.reshape((b * k,) + x.shape[2:]), trials.chunk_hidden)
        data = (hidden, chunked(trials.inputs),
                chunked(trials.action), chunked(trials.log_prob),
                adv.reshape(b * k, c), returns.reshape(b * k, c), chunked(trials.valid))
        grad_fn = jax.value_and_grad(loss, has_aux=True)

        def minibatch_step(carry, batch):
            params, opt_state = carry
            (_, aux), grads = grad_fn(params, *batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            aux = {**aux, "grad_norm": optax.tree.norm(grads)}
            return (optax.apply_updates(params, updates), opt_state), aux

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, b * k)
            batches = jax.tree.map(
                lambda x: x[order].reshape((config.num_minibatches, -1) + x.shape[1:]), data)
            return jax.lax.scan(minibatch_step, carry, batches)

        (params, opt_state), aux = jax.lax.scan(
            epoch, (state.params, state.opt_state),
            jax.random.split(perm_key, config.num_epochs))
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

    def evaluate(state: RL2State, task_params, key: jax.Array, num_steps: int | None = None):
        """Return of each episode of one trial per held-out task, ``{"rl2": [tasks, n]}``.

        RL² adapts inside a trial, without gradient steps, so the curve has
        one point per episode: ``n = eval_episodes`` (default
        ``trial_episodes``, as trained). ``num_steps`` is part of the learner
        contract (MAML's number of inner steps) and has no meaning here. The
        policy samples its actions or takes the most likely one, as
        ``eval_policy`` says.
        """
        del num_steps
        num_episodes = config.eval_episodes or config.trial_episodes
        trials = run_trials(state.params, task_params, key, num_episodes,
                            deterministic=config.eval_policy == "mode")
        return {"rl2": episode_returns(trials, num_episodes)}

    return Learner(init=init, update=update, evaluate=evaluate, run_trials=run_trials,
                   advantages=trial_advantages, loss=loss, sequence=sequence,
                   network=network, config=config,
                   family=family)
