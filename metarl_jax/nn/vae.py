"""VariBAD's networks: a recurrent posterior over a task embedding and decoders of the trial.

After Zintgraf et al. 2020 (arXiv:1910.08348), Sec. 4 and the reference
code's defaults (``lmzintgraf/varibad``):

* :class:`BeliefEncoder`: each transition ``(s', a, r, done)`` is embedded
  (one ReLU layer per part), a GRU aggregates the trial, and a linear layer
  gives the Gaussian posterior ``q(z | trial so far) = N(mean, exp(logvar))``
  over a latent of ``latent_dim``; one step at a time (``__call__``) or a
  whole sequence (:func:`encode_sequence`).
* :class:`MultiHeadRewardDecoder`: ``z -> [cells]`` Bernoulli logits, the
  probability that each cell pays the goal reward (GridNavi, whose reward
  depends only on the cell reached).
* :class:`RewardDecoder`: ``(z, s, a, s') -> r``, an MLP (any family).
* :class:`StateDecoder`: ``(z, s, a) -> s'``, an MLP.
* :class:`BeliefPolicy`: an actor-critic MLP on ``[obs, mean, logvar]``.
* :func:`gaussian_kl`: ``KL(N(m1, v1) || N(m2, v2))`` of diagonal Gaussians.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metarl_jax.nn.distributions import Categorical, DiagGaussian
from metarl_jax.nn.mlp import MLP


def gaussian_kl(mean_q, logvar_q, mean_p, logvar_p) -> jax.Array:
    """``KL(N(mean_q, e^logvar_q) || N(mean_p, e^logvar_p))`` summed over the last axis."""
    return DiagGaussian(mean_q, 0.5 * logvar_q).kl(DiagGaussian(mean_p, 0.5 * logvar_p))


class BeliefEncoder(nn.Module):
    """GRU posterior ``(hidden [..., H], transition [..., s' + a + 2]) -> (hidden', mean, logvar)``.

    The transition is ``[s', a (encoded), r, done]`` with the state first
    (``state_dim`` entries) and the action next (``action_dim``); zero sizes
    of an embedding feed that part in raw.
    """

    hidden_size: int
    latent_dim: int
    state_dim: int
    action_dim: int
    state_embed: int = 32
    action_embed: int = 16
    reward_embed: int = 8

    def init_state(self, shape: tuple[int, ...] = ()) -> jax.Array:
        return jnp.zeros(shape + (self.hidden_size,), jnp.float32)

    @nn.compact
    def __call__(self, hidden, transition):
        s, a = self.state_dim, self.action_dim
        parts = [(transition[..., :s], self.state_embed, "state"),
                 (transition[..., s:s + a], self.action_embed, "action"),
                 (transition[..., s + a:], self.reward_embed, "reward")]
        embedded = [nn.relu(nn.Dense(size, name=f"embed_{name}")(x)) if size else x
                    for x, size, name in parts]
        hidden, out = nn.GRUCell(self.hidden_size, name="gru")(
            hidden, jnp.concatenate(embedded, axis=-1))
        moments = nn.Dense(2 * self.latent_dim, name="posterior")(out)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return hidden, mean, logvar


def encode_sequence(encoder: BeliefEncoder, params, transitions: jax.Array):
    """Posteriors after every step of sequences ``[N, T, in]`` from the empty memory:
    ``(mean, logvar)``, each ``[N, T, latent_dim]``."""
    def one_step(h, x):
        h, mean, logvar = encoder.apply(params, h, x)
        return h, (mean, logvar)

    hidden = encoder.init_state(transitions.shape[:1])
    _, (mean, logvar) = jax.lax.scan(one_step, hidden, jnp.swapaxes(transitions, 0, 1))
    return jnp.swapaxes(mean, 0, 1), jnp.swapaxes(logvar, 0, 1)


class MultiHeadRewardDecoder(nn.Module):
    """``z [..., L] -> [..., num_cells]``: logit that each cell pays the goal reward."""

    num_cells: int
    hidden_sizes: Sequence[int] = (32, 32)

    @nn.compact
    def __call__(self, z):
        return nn.Dense(self.num_cells, name="heads")(MLP(self.hidden_sizes, "relu",
                                                          name="torso")(z))


class RewardDecoder(nn.Module):
    """``[z, s, a, s'] -> r`` (``[...]``), a ReLU MLP trained by squared error."""

    hidden_sizes: Sequence[int] = (32, 32)

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, name="output")(MLP(self.hidden_sizes, "relu", name="torso")(x))[..., 0]


class StateDecoder(nn.Module):
    """``[z, s, a] -> s'`` (``[..., state_dim]``), a ReLU MLP trained by squared error."""

    state_dim: int
    hidden_sizes: Sequence[int] = (32, 32)

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.state_dim, name="output")(
            MLP(self.hidden_sizes, "relu", name="torso")(x))


class BeliefPolicy(nn.Module):
    """Actor-critic on ``[obs, mean, logvar]``: ``x [..., in] -> (dist, value [...])``.

    Separate MLPs for the policy and the value (``activation``, VariBAD's
    tanh by default); categorical logits or a diagonal Gaussian with a learned
    state-independent ``log_std``. Output layers are orthogonal with gains
    0.01 (policy) and 1 (value), as the recurrent actor-critics.
    """

    action_dim: int
    discrete: bool
    hidden_sizes: Sequence[int] = (32, 32)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        head = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01),
                        name="policy")(MLP(self.hidden_sizes, self.activation,
                                           name="policy_torso")(x))
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0), name="value")(
            MLP(self.hidden_sizes, self.activation, name="value_torso")(x))[..., 0]
        if self.discrete:
            return Categorical(head), value
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,), jnp.float32)
        return DiagGaussian(head, log_std), value
