"""Action distributions as pytrees (``flax.struct.PyTreeNode``).

They pass through ``jit``, ``vmap`` and ``lax.scan`` like any other pytree:

* :class:`Categorical` for ``Discrete`` action spaces (actions int32 ``[...]``),
* :class:`DiagGaussian` for 1-D ``Box`` action spaces (actions float32
  ``[..., action_dim]``), with a log standard deviation that broadcasts
  against the mean (state-independent in every shipped policy);
* :class:`TanhGaussian`, a diagonal Gaussian squashed by ``tanh`` into
  ``(-1, 1)`` (SAC's policy, Haarnoja et al. 2018, Appendix C), sampled
  with its log-density in one call because the density needs the
  pre-squash sample.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

_LOG_2PI = math.log(2.0 * math.pi)

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


class TanhGaussian(struct.PyTreeNode):
    """``tanh(u)`` with ``u ~ N(mean, exp(log_std)^2)`` per coordinate of ``[..., d]``."""

    mean: jax.Array
    log_std: jax.Array

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A reparameterised sample ``[..., d]`` and its log-density ``[...]``.

        ``log p(a) = log N(u) - sum_i log(1 - tanh(u_i)^2)``, the last term
        written as ``2 (log 2 - u - softplus(-2u))`` so it stays finite where
        ``tanh(u)`` rounds to +-1.
        """
        gaussian = DiagGaussian(self.mean, self.log_std)
        u = gaussian.sample(key)
        correction = jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)), axis=-1)
        return jnp.tanh(u), gaussian.log_prob(u) - correction

    def mode(self) -> jax.Array:
        """``tanh(mean)``, the action a deterministic evaluation takes."""
        return jnp.tanh(self.mean)


Distribution = Categorical | DiagGaussian
