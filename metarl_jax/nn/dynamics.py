"""Learned dynamics-and-reward models for model-based RL, with their normalisation.

After Nagabandi, Clavera et al., "Learning to Adapt in Dynamic, Real-World
Environments through Meta-Reinforcement Learning" (ICLR 2019, reference code
``iclavera/learning_to_adapt``): a model maps an observation and an action to
the *change* of the observation and the reward, both normalised, because
state deltas are small and of very different scales across dimensions (the
reference's 3 x 512 ReLU MLP predicts normalised deltas the same way).

* :class:`Normalizer`: per-dimension mean and std of the inputs ``[s, a]``,
  the deltas ``s' - s`` and the reward, fitted on the data
  (:func:`fit_normalizer`) and kept *with* the model's parameters, so a
  checkpointed model predicts in real units without the data it was fitted on.
* :class:`DynamicsMLP`: ``x_norm [..., s + a] -> [..., s + 1]`` (normalised
  delta and reward); an ensemble is the same module with a leading member
  axis on its parameters (:func:`init_ensemble`), each member fitted on its
  own bootstrap resample.
* :class:`ContextDynamics`: ReBAL's recurrent model, a GRU over the recent
  transitions (:class:`~metarl_jax.nn.context.WindowGRU`) whose summary
  conditions the same MLP: adaptation happens in the hidden state instead of
  in the weights.

:func:`predict` turns raw outputs into the next observation and the reward.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from metarl_jax.nn.context import WindowGRU
from metarl_jax.nn.mlp import MLP

STD_FLOOR = 1e-6   # a constant feature normalises to 0 instead of dividing by 0


@struct.dataclass
class Normalizer:
    """Means and stds of the model's inputs ``[s, a]``, deltas ``s' - s`` and reward."""

    input_mean: jax.Array    # [s + a]
    input_std: jax.Array
    delta_mean: jax.Array    # [s]
    delta_std: jax.Array
    reward_mean: jax.Array   # []
    reward_std: jax.Array

    def inputs(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        """Normalised model input ``[..., s + a]`` of an observation and an encoded action."""
        x = jnp.concatenate([obs, action], axis=-1)
        return (x - self.input_mean) / self.input_std

    def targets(self, obs: jax.Array, next_obs: jax.Array, reward: jax.Array) -> jax.Array:
        """Normalised regression target ``[..., s + 1]``: delta, then reward."""
        delta = (next_obs - obs - self.delta_mean) / self.delta_std
        r = (reward - self.reward_mean) / self.reward_std
        return jnp.concatenate([delta, r[..., None]], axis=-1)

    def outputs(self, obs: jax.Array, out: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(next_obs, reward)`` in real units from a normalised output ``[..., s + 1]``."""
        delta = out[..., :-1] * self.delta_std + self.delta_mean
        return obs + delta, out[..., -1] * self.reward_std + self.reward_mean


def identity_normalizer(obs_dim: int, action_dim: int) -> Normalizer:
    """Zero means and unit stds: what a model uses before it has seen data."""
    zeros = lambda n: jnp.zeros((n,), jnp.float32)  # noqa: E731
    ones = lambda n: jnp.ones((n,), jnp.float32)    # noqa: E731
    return Normalizer(zeros(obs_dim + action_dim), ones(obs_dim + action_dim), zeros(obs_dim),
                      ones(obs_dim), jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32))


def _weighted_moments(x: jax.Array, weight: jax.Array):
    """Mean and std over all leading axes of ``x [..., d]`` weighted by ``weight [...]``."""
    w = weight.astype(jnp.float32)[..., None]
    total = jnp.maximum(jnp.sum(w), 1.0)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.sum(w * x, axis=axes) / total
    var = jnp.sum(w * jnp.square(x - mean), axis=axes) / total
    return mean, jnp.maximum(jnp.sqrt(var), STD_FLOOR)


def fit_normalizer(obs: jax.Array, action: jax.Array, next_obs: jax.Array, reward: jax.Array,
                   weight: jax.Array | None = None) -> Normalizer:
    """Fit a :class:`Normalizer` on transitions with leading axes ``[...]``
    (``weight [...]``, e.g. a valid mask; default all ones)."""
    if weight is None:
        weight = jnp.ones(reward.shape, jnp.float32)
    input_mean, input_std = _weighted_moments(jnp.concatenate([obs, action], axis=-1), weight)
    delta_mean, delta_std = _weighted_moments(next_obs - obs, weight)
    reward_mean, reward_std = _weighted_moments(reward[..., None], weight)
    return Normalizer(input_mean, input_std, delta_mean, delta_std, reward_mean[0],
                      reward_std[0])


class DynamicsMLP(nn.Module):
    """``x_norm [..., s + a] -> [..., s + 1]``: normalised state delta and reward."""

    hidden_sizes: Sequence[int]
    obs_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = MLP(self.hidden_sizes, "relu", name="torso")(x)
        return nn.Dense(self.obs_dim + 1, name="out")(h)


class ContextDynamics(nn.Module):
    """ReBAL's recurrent model: ``(x_norm, window [..., W, d], mask [..., W]) -> [..., s + 1]``.

    ``window`` holds the recent transitions as normalised ``[input, target]``
    rows (:func:`context_rows`), oldest first; the GRU's summary of them is
    the model's belief about the current dynamics.
    """

    hidden_sizes: Sequence[int]
    obs_dim: int
    context_size: int

    @nn.compact
    def __call__(self, x: jax.Array, window: jax.Array, mask: jax.Array) -> jax.Array:
        summary = WindowGRU(self.context_size, name="context")(window, mask)
        summary = jnp.broadcast_to(summary, x.shape[:-1] + summary.shape[-1:])
        h = MLP(self.hidden_sizes, "relu", name="torso")(jnp.concatenate([x, summary], -1))
        return nn.Dense(self.obs_dim + 1, name="out")(h)


def context_rows(norm: Normalizer, obs, action, next_obs, reward) -> jax.Array:
    """Transitions as :class:`ContextDynamics` window rows ``[..., s + a + s + 1]``."""
    return jnp.concatenate([norm.inputs(obs, action), norm.targets(obs, next_obs, reward)], -1)


def init_ensemble(module: nn.Module, key: jax.Array, size: int, *example):
    """Parameters of ``size`` independently initialised members (leading ``[size]`` axis)."""
    return jax.vmap(lambda k: module.init(k, *example))(jax.random.split(key, size))


def predict(module: nn.Module, params, norm: Normalizer, obs: jax.Array, action: jax.Array,
            *context) -> tuple[jax.Array, jax.Array]:
    """``(next_obs, reward)`` the model predicts for ``obs [..., s]``, ``action [..., a]``
    (encoded); ``context`` is ``(window, mask)`` for :class:`ContextDynamics`."""
    out = module.apply(params, norm.inputs(obs, action), *context)
    return norm.outputs(obs, out)
