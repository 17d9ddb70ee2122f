"""Context-conditioned actor-critic networks: PEARL's encoder, SAC's actor and twin critic.

After Rakelly et al. 2019 (arXiv:1903.08254), Sec. 4 and the reference code
``katerakelly/oyster``:

* :class:`ContextEncoder`: an MLP mapping each context transition
  ``(s, a, r[, s'])`` to a Gaussian factor ``N(mu_i, sigma_i^2)`` over the
  latent (variance through a softplus);
* :func:`product_of_gaussians`: the factors multiplied into the posterior
  ``q(z | c) ∝ prod_i N(mu_i, sigma_i^2)``, permutation invariant, with a
  mask so a fixed-size context array can hold fewer real transitions (a
  masked factor has zero precision; with none left it is the prior ``N(0, 1)``);
* :class:`SquashedGaussianActor`: ``(s, z) -> tanh``-Gaussian policy;
* :class:`TwinQ`: two independent Q-networks ``(s, a, z) -> [2]`` in one
  module (``nn.vmap`` over a parameter axis), for clipped double-Q, or
  ``(s, z) -> [A, 2]`` for discrete actions, with :class:`CategoricalActor`.

And for Meta-Q-Learning's context-conditioned value learner (Fakoor et al.
2020, Sec. 4.1), which summarises the recent history with a GRU:

* :class:`WindowGRU`: a GRU over a fixed-size window of recent transitions
  (oldest first) with a mask, so one shape holds shorter histories (a
  masked step leaves the state unchanged; an empty window gives zeros);
* :class:`ContextQNetwork`: ``(s, window, mask) -> Q [A]``, an MLP on the
  observation and the GRU's summary of the window.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metarl_jax.nn.distributions import Categorical, TanhGaussian
from metarl_jax.nn.mlp import MLP

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0   # SAC's clamp on the actor's log std
MIN_VARIANCE = 1e-7                     # the reference's clamp on each factor's variance


def product_of_gaussians(mu: jax.Array, var: jax.Array, mask: jax.Array | None = None):
    """Posterior mean and variance ``[..., L]`` from factors ``[..., N, L]``.

    ``var = 1 / sum_i (1 / var_i)``, ``mean = var * sum_i (mu_i / var_i)``, each
    ``var_i`` clamped at ``MIN_VARIANCE`` as in the reference; ``mask [..., N]``
    drops factors (zero precision). With every factor masked (no context yet)
    the result is the prior ``N(0, 1)``.
    """
    precision = 1.0 / jnp.maximum(var, MIN_VARIANCE)
    if mask is not None:
        precision = precision * mask[..., None].astype(precision.dtype)
    total = jnp.sum(precision, axis=-2)
    empty = total <= 0.0
    safe_total = jnp.where(empty, 1.0, total)
    mean = jnp.where(empty, 0.0, jnp.sum(mu * precision, axis=-2) / safe_total)
    return mean, jnp.where(empty, 1.0, 1.0 / safe_total)


def standard_normal_kl(mean: jax.Array, var: jax.Array) -> jax.Array:
    """``KL(N(mean, var) || N(0, I))`` summed over the last axis."""
    return 0.5 * jnp.sum(var + jnp.square(mean) - 1.0 - jnp.log(var), axis=-1)


class ContextEncoder(nn.Module):
    """``transitions [..., N, d] -> (mu, var)`` factors ``[..., N, latent_dim]``."""

    hidden_sizes: Sequence[int]
    latent_dim: int

    @nn.compact
    def __call__(self, transitions: jax.Array):
        h = MLP(self.hidden_sizes, "relu", name="torso")(transitions)
        out = nn.Dense(2 * self.latent_dim, name="factor")(h)
        mu, raw_var = jnp.split(out, 2, axis=-1)
        return mu, jax.nn.softplus(raw_var)


class SquashedGaussianActor(nn.Module):
    """``[s, z] -> TanhGaussian`` over ``action_dim`` actions in ``(-1, 1)``."""

    hidden_sizes: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> TanhGaussian:
        h = MLP(self.hidden_sizes, "relu", name="torso")(x)
        mean = nn.Dense(self.action_dim, name="mean")(h)
        log_std = nn.Dense(self.action_dim, name="log_std")(h)
        return TanhGaussian(mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))


class CategoricalActor(nn.Module):
    """``[s, z] -> Categorical`` over ``num_actions`` (PEARL's discrete-action variant)."""

    hidden_sizes: Sequence[int]
    num_actions: int

    @nn.compact
    def __call__(self, x: jax.Array) -> Categorical:
        h = MLP(self.hidden_sizes, "relu", name="torso")(x)
        return Categorical(nn.Dense(self.num_actions, name="logits")(h))


class _Q(nn.Module):
    hidden_sizes: Sequence[int]
    num_outputs: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = MLP(self.hidden_sizes, "relu", name="torso")(x)
        if self.num_outputs:
            return nn.Dense(self.num_outputs, name="out")(h)
        return nn.Dense(1, name="out")(h)[..., 0]


class TwinQ(nn.Module):
    """Two Q-networks with independent parameters: ``[s, a, z] -> [..., 2]``, or with
    ``num_actions > 0`` (discrete actions) ``[s, z] -> [..., num_actions, 2]``."""

    hidden_sizes: Sequence[int]
    num_actions: int = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        twins = nn.vmap(_Q, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=None, out_axes=-1, axis_size=2)
        return twins(self.hidden_sizes, self.num_actions, name="twins")(x)


class _MaskedGRUCell(nn.Module):
    features: int

    @nn.compact
    def __call__(self, hidden, inputs):
        x, present = inputs
        new, _ = nn.GRUCell(self.features, name="cell")(hidden, x)
        return jnp.where(present[..., None], new, hidden), None


class WindowGRU(nn.Module):
    """``(window [..., W, d], mask [..., W]) -> summary [..., features]``.

    The GRU reads the window oldest first from a zero state, skipping masked
    steps, so a window of ``k`` real transitions padded with masked ones
    summarises to exactly what the ``k`` transitions alone give.
    """

    features: int

    @nn.compact
    def __call__(self, window: jax.Array, mask: jax.Array) -> jax.Array:
        lead = window.shape[:-2]
        flat = window.reshape((-1,) + window.shape[-2:])
        flat_mask = mask.reshape((-1, mask.shape[-1]))
        scan = nn.scan(_MaskedGRUCell, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=1, out_axes=1)
        hidden = jnp.zeros((flat.shape[0], self.features), jnp.float32)
        hidden, _ = scan(self.features, name="gru")(hidden, (flat, flat_mask))
        return hidden.reshape(lead + (self.features,))


class ContextQNetwork(nn.Module):
    """``(obs [..., o], window [..., W, d], mask [..., W]) -> Q [..., num_actions]``.

    An empty window (``W = 0``) drops the context: a plain DQN.
    """

    hidden_sizes: Sequence[int]
    num_actions: int
    context_size: int

    @nn.compact
    def __call__(self, obs: jax.Array, window: jax.Array, mask: jax.Array) -> jax.Array:
        x = obs
        if window.shape[-2]:
            x = jnp.concatenate([obs, WindowGRU(self.context_size, name="context")(window, mask)],
                                axis=-1)
        h = MLP(self.hidden_sizes, "relu", name="torso")(x)
        return nn.Dense(self.num_actions, name="q")(h)


def context_summary(network: ContextQNetwork, params, window: jax.Array,
                    mask: jax.Array) -> jax.Array:
    """The GRU's summary ``[..., context_size]`` of ``window`` in ``network``'s
    parameters (MQL's propensity features)."""
    return WindowGRU(network.context_size).apply({"params": params["params"]["context"]},
                                                 window, mask)
