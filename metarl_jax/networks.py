"""Policies and value networks (flax.linen) and their action distributions.

Distributions are ``flax.struct.PyTreeNode`` s, so they pass through ``jit``,
``vmap`` and ``lax.scan`` like any other pytree. A policy maps observations
``[..., *obs_shape]`` to a distribution with batch shape ``[...]``:

* :class:`Categorical` for ``Discrete`` action spaces (actions int32 ``[...]``),
* :class:`DiagGaussian` for 1-D ``Box`` action spaces (actions float32
  ``[..., action_dim]``) with a state-independent learned ``log_std``, as in
  the MAML (Finn et al. 2017) and RL² (Duan et al. 2016) policies.

Layers are initialised as in pytorch-maml-rl (Xavier-uniform weights, zero
biases) so learning curves are comparable with that reference.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces

_LOG_2PI = math.log(2.0 * math.pi)

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
}


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}"
        )
    return ACTIVATIONS[name]


def _check_hidden_sizes(hidden_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(hidden_sizes)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in sizes):
        raise ValueError(f"hidden_sizes must be positive integers, got {hidden_sizes!r}")
    return sizes


class Categorical(struct.PyTreeNode):
    """Categorical distribution over the last axis of ``logits [..., n]``.

    Unnormalised logits are fine; probabilities are ``softmax(logits)``.
    """

    logits: jax.Array

    @property
    def log_probs(self) -> jax.Array:
        """Normalised log-probabilities ``[..., n]``."""
        return jax.nn.log_softmax(self.logits, axis=-1)

    def sample(self, key: jax.Array) -> jax.Array:
        """One action per batch element, int32 ``[...]``."""
        return jax.random.categorical(key, self.logits, axis=-1).astype(jnp.int32)

    def log_prob(self, action: jax.Array) -> jax.Array:
        """``log pi(action)``, ``[...]``; ``action`` is an integer array ``[...]``."""
        action = jnp.asarray(action)
        if not jnp.issubdtype(action.dtype, jnp.integer):
            raise TypeError(f"Categorical.log_prob: action must be integer, got {action.dtype}")
        log_probs = self.log_probs
        batch = jnp.broadcast_shapes(log_probs.shape[:-1], action.shape)
        log_probs = jnp.broadcast_to(log_probs, batch + log_probs.shape[-1:])
        action = jnp.broadcast_to(action, batch)
        return jnp.take_along_axis(log_probs, action[..., None], axis=-1)[..., 0]

    def entropy(self) -> jax.Array:
        """Shannon entropy ``-sum_a p_a log p_a``, ``[...]``."""
        log_probs = self.log_probs
        probs = jnp.exp(log_probs)
        # 0 * log 0 = 0 without NaNs in the value or the gradient
        return -jnp.sum(probs * jnp.where(probs > 0, log_probs, 0.0), axis=-1)

    def kl(self, other: "Categorical") -> jax.Array:
        """``KL(self || other) = sum_a p_a (log p_a - log q_a)``, ``[...]``."""
        if not isinstance(other, Categorical):
            raise TypeError(f"Categorical.kl: other must be Categorical, got {type(other).__name__}")
        log_p, log_q = self.log_probs, other.log_probs
        probs = jnp.exp(log_p)
        return jnp.sum(probs * jnp.where(probs > 0, log_p - log_q, 0.0), axis=-1)

    def mode(self) -> jax.Array:
        """Most likely action, int32 ``[...]``."""
        return jnp.argmax(self.logits, axis=-1).astype(jnp.int32)


class DiagGaussian(struct.PyTreeNode):
    """Gaussian with diagonal covariance over the last axis of ``mean [..., d]``.

    ``log_std`` broadcasts against ``mean`` (e.g. a state-independent ``[d]``).
    """

    mean: jax.Array
    log_std: jax.Array

    def _full_log_std(self) -> jax.Array:
        return jnp.broadcast_to(self.log_std, jnp.broadcast_shapes(self.mean.shape, jnp.shape(self.log_std)))

    def sample(self, key: jax.Array) -> jax.Array:
        """``mean + exp(log_std) * eps``, float32 ``[..., d]``."""
        log_std = self._full_log_std()
        eps = jax.random.normal(key, log_std.shape, jnp.float32)
        return self.mean + jnp.exp(log_std) * eps

    def log_prob(self, action: jax.Array) -> jax.Array:
        """Log-density summed over the last axis, ``[...]``."""
        action = jnp.asarray(action)
        if not jnp.issubdtype(action.dtype, jnp.floating):
            raise TypeError(f"DiagGaussian.log_prob: action must be floating, got {action.dtype}")
        z = (action - self.mean) * jnp.exp(-self.log_std)
        return jnp.sum(-0.5 * jnp.square(z) - self._full_log_std() - 0.5 * _LOG_2PI, axis=-1)

    def entropy(self) -> jax.Array:
        """``sum_i (log_std_i + 0.5 log(2 pi e))``, ``[...]``."""
        return jnp.sum(self._full_log_std() + 0.5 * (_LOG_2PI + 1.0), axis=-1)

    def kl(self, other: "DiagGaussian") -> jax.Array:
        """Closed-form ``KL(self || other)`` summed over the last axis, ``[...]``."""
        if not isinstance(other, DiagGaussian):
            raise TypeError(f"DiagGaussian.kl: other must be DiagGaussian, got {type(other).__name__}")
        var_ratio = jnp.exp(2.0 * (self.log_std - other.log_std))
        mean_term = jnp.square((self.mean - other.mean) * jnp.exp(-other.log_std))
        per_dim = other.log_std - self.log_std + 0.5 * (var_ratio + mean_term - 1.0)
        shape = jnp.broadcast_shapes(self.mean.shape, other.mean.shape,
                                     jnp.shape(self.log_std), jnp.shape(other.log_std))
        return jnp.sum(jnp.broadcast_to(per_dim, shape), axis=-1)

    def mode(self) -> jax.Array:
        """The mean, ``[..., d]``."""
        return self.mean


Distribution = Categorical | DiagGaussian


def _dense(features: int, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.xavier_uniform(),
                    bias_init=nn.initializers.zeros, name=name)


class MLP(nn.Module):
    """Fully connected torso: ``hidden_sizes`` layers with ``activation``."""

    hidden_sizes: Sequence[int]
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        for i, size in enumerate(_check_hidden_sizes(self.hidden_sizes)):
            x = act(_dense(size, f"hidden_{i}")(x))
        return x


class MLPPolicy(nn.Module):
    """MLP policy of MAML (Finn et al. 2017, 2x100 ReLU) and its baselines.

    ``__call__(obs [..., obs_dim]) -> Categorical | DiagGaussian`` with batch
    shape ``[...]``. Observations with more than one axis must be flattened by
    the caller (the last axis is the feature axis). For a Gaussian policy the
    log standard deviation is a learned, state-independent parameter
    ``log_std [action_dim]`` initialised to ``init_log_std``.
    """

    action_dim: int
    discrete: bool
    hidden_sizes: Sequence[int] = (100, 100)
    activation: str = "relu"
    init_log_std: float = 0.0

    @nn.compact
    def __call__(self, obs: jax.Array) -> Distribution:
        if not isinstance(self.action_dim, int) or self.action_dim < 1:
            raise ValueError(f"action_dim must be a positive integer, got {self.action_dim!r}")
        x = MLP(self.hidden_sizes, self.activation, name="torso")(jnp.asarray(obs, jnp.float32))
        out = _dense(self.action_dim, "output")(x)
        if self.discrete:
            return Categorical(out)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,), jnp.float32
        )
        return DiagGaussian(out, log_std)


class ValueNetwork(nn.Module):
    """State-value MLP ``V(obs)``: ``obs [..., obs_dim] -> [...]``."""

    hidden_sizes: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = MLP(self.hidden_sizes, self.activation, name="torso")(jnp.asarray(obs, jnp.float32))
        return _dense(1, "output")(x)[..., 0]


def make_policy(
    action_space: Any,
    hidden_sizes: Sequence[int] = (100, 100),
    activation: str = "relu",
    init_log_std: float = 0.0,
) -> MLPPolicy:
    """The :class:`MLPPolicy` for a gymnax action space.

    ``Discrete(n)`` gives a categorical policy over ``n`` actions; a 1-D
    ``Box`` of shape ``(d,)`` gives a diagonal Gaussian over ``d`` dimensions
    (sampled actions are not clipped to the box; environments clip, as in
    rllab and pytorch-maml-rl, and log-probabilities refer to the sample).
    Anything else raises ``TypeError``.
    """
    hidden_sizes = _check_hidden_sizes(hidden_sizes)
    _activation(activation)
    if isinstance(action_space, spaces.Discrete):
        return MLPPolicy(int(action_space.n), True, hidden_sizes, activation, float(init_log_std))
    if isinstance(action_space, spaces.Box):
        shape = tuple(action_space.shape)
        if len(shape) != 1:
            raise TypeError(
                f"action_space: only 1-D Box spaces are supported, got shape {shape}"
            )
        return MLPPolicy(int(shape[0]), False, hidden_sizes, activation, float(init_log_std))
    raise TypeError(
        f"action_space must be a gymnax Discrete or Box space, got {type(action_space).__name__}"
    )


def policy_sample_fn(policy: MLPPolicy) -> Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """``policy_fn(params, obs, key) -> (action, log_prob)`` for :func:`metarl_jax.rollout.rollout`.

    The action is sampled without a gradient path (``stop_gradient``), so the
    returned ``log_prob`` is the score-function term ``log pi_theta(a|s)``
    whose gradient is the likelihood ratio of REINFORCE and DiCE; a
    reparameterised Gaussian sample would otherwise cancel it exactly.
    Actions are int32 ``[]`` (discrete) or float32 ``[action_dim]``.
    """
    if not isinstance(policy, MLPPolicy):
        raise TypeError(f"policy must be an MLPPolicy, got {type(policy).__name__}")

    def policy_fn(params: Any, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        dist = policy.apply(params, obs)
        action = jax.lax.stop_gradient(dist.sample(key))
        return action, dist.log_prob(action)

    return policy_fn
