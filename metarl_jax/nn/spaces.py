"""The one action-space dispatch: what a gymnax action space means to a network.

Every network and rollout asks :func:`action_spec` instead of inspecting
spaces itself, so the supported spaces and the error for the others are the
same everywhere.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import spaces


@struct.dataclass
class ActionSpec:
    """``Discrete(n)``: ``discrete=True, dim=n``; a 1-D ``Box(d)``: ``dim=d`` with bounds."""

    discrete: bool = struct.field(pytree_node=False)
    dim: int = struct.field(pytree_node=False)
    low: Any = None    # [dim] float32 (Box only)
    high: Any = None   # [dim] float32 (Box only)

    def encode(self, action: jax.Array) -> jax.Array:
        """An action as a network input ``[dim]``: one-hot, or clipped to the box."""
        if self.discrete:
            return jax.nn.one_hot(action, self.dim, dtype=jnp.float32)
        return jnp.clip(action, self.low, self.high)


def action_spec(action_space: Any) -> ActionSpec:
    """The :class:`ActionSpec` of a gymnax ``Discrete`` or 1-D ``Box`` space.

    Raises ``TypeError`` for any other space.
    """
    if isinstance(action_space, spaces.Discrete):
        return ActionSpec(True, int(action_space.n))
    if isinstance(action_space, spaces.Box):
        shape = tuple(action_space.shape)
        if len(shape) != 1:
            raise TypeError(f"action_space: only 1-D Box spaces are supported, got shape {shape}")
        dim = int(shape[0])
        return ActionSpec(False, dim,
                          jnp.broadcast_to(jnp.asarray(action_space.low, jnp.float32), (dim,)),
                          jnp.broadcast_to(jnp.asarray(action_space.high, jnp.float32), (dim,)))
    raise TypeError(
        f"action_space must be a gymnax Discrete or Box space, got {type(action_space).__name__}")
