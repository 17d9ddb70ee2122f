"""Memories for policies that adapt inside a trial: a GRU and a causal transformer.

Both are actor-critics with one interface, so a learner (RL², VariBAD's
policy, PEARL-style context encoders) swaps one for the other with a config
field:

* ``network.init_state(shape=())``: the empty memory of a trial's start for
  a batch of ``shape`` trials (the all-zero pytree);
* :func:`step`: ``(params, hidden, inputs [..., in]) -> (hidden', dist, value [...])``,
  one step;
* :func:`sequence`: ``(params, hidden [N, ...], inputs [N, C, in]) -> (dist, value)``
  with leading axes ``[N, C]``, every step of ``N`` sequences at once (the
  GRU steps through them with ``lax.scan`` from ``hidden``; the transformer
  attends over each whole sequence from an empty memory).

With ``privileged_dim = F > 0`` the last ``F`` input entries are privileged
task features that only the value head reads (an asymmetric critic). The
heads keep flax's default initialisation with orthogonal output layers
(gain 0.01 for the policy, 1 for the value), as the RL² results were
trained with; the feed-forward policies of :mod:`metarl_jax.nn.mlp` use
pytorch-maml-rl's Xavier scheme.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metarl_jax.nn.distributions import Categorical, DiagGaussian

MEMORIES = ("gru", "transformer")


def split_privileged(inputs: jax.Array, privileged_dim: int):
    """``inputs [..., in + F] -> (inputs [..., in], privileged [..., F])``, ``F = privileged_dim``."""
    if not privileged_dim:
        return inputs, None
    return inputs[..., :-privileged_dim], inputs[..., -privileged_dim:]


class GRUActorCritic(nn.Module):
    """GRU memory with a policy and a value head (the RL² network, Duan et al. 2016, Sec. 3).

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

    def init_state(self, shape: tuple[int, ...] = ()) -> jax.Array:
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
            # full shape, so a scan over steps (``sequence``) stacks it like the mean
            dist = DiagGaussian(head, jnp.broadcast_to(log_std, head.shape))
        return hidden, dist, value


class TransformerActorCritic(nn.Module):
    """Causal-attention memory with policy and value heads: a pre-LayerNorm transformer
    over the trial (as in transformer-based in-context RL).

    The same contract as :class:`GRUActorCritic`:
    ``__call__(hidden, inputs [..., in]) -> (hidden', dist, value [...])`` is
    one step, where ``hidden`` (:meth:`init_state`) holds every layer's
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
    PPO loss runs it. ``privileged_dim`` works as in :class:`GRUActorCritic`.
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

    def init_state(self, shape: tuple[int, ...] = ()) -> dict:
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


Memory = GRUActorCritic | TransformerActorCritic


def step(network: Memory, params: Any, hidden: Any, inputs: jax.Array):
    """One step: ``(hidden', dist, value)``."""
    return network.apply(params, hidden, inputs)


def sequence(network: Memory, params: Any, hidden: Any, inputs: jax.Array):
    """Policy distributions and values at every step of ``N`` sequences.

    ``hidden [N, S]`` is the memory at each sequence's start and ``inputs
    [N, C, in]``; returns ``(dist, value)`` with leading axes ``[N, C]``.
    The GRU runs step by step from ``hidden``; the transformer attends over
    the whole sequence at once from the empty memory (``hidden`` is unused:
    its sequences are whole trials).
    """
    if isinstance(network, TransformerActorCritic):
        return network.apply(params, inputs, method=TransformerActorCritic.sequence)

    def one_step(h, x):
        h, dist, value = network.apply(params, h, x)
        return h, (dist, value)

    _, (dist, value) = jax.lax.scan(one_step, hidden, jnp.swapaxes(inputs, 0, 1))
    return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), (dist, value))
