"""Feed-forward networks: the MLP torso, the MLP policy of MAML, a value MLP.

A policy maps observations ``[..., *obs_shape]`` to a distribution of
:mod:`metarl_jax.nn.distributions` with batch shape ``[...]``. Layers are
initialised as in pytorch-maml-rl (Xavier-uniform weights, zero biases) so
learning curves are comparable with that reference.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metarl_jax.nn.distributions import Categorical, DiagGaussian, Distribution
from metarl_jax.nn.spaces import action_spec

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
    spec = action_spec(action_space)
    return MLPPolicy(spec.dim, spec.discrete, hidden_sizes, activation, float(init_log_std))


def policy_sample_fn(policy: MLPPolicy) -> Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """``policy_fn(params, obs, key) -> (action, log_prob)`` for :func:`metarl_jax.core.rollout.rollout`.

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
