"""Per-task replay buffers: one array pytree with a task axis, pure functions on it.

A :class:`ReplayBuffer` holds ``capacity`` items for each of ``num_tasks``
tasks: every leaf of ``data`` is ``[num_tasks, capacity, ...]``, and
``position``/``size`` are ``[num_tasks]``. Each task's rows are a ring: new
items overwrite the oldest once the task's buffer is full. Everything here is
a pure function of arrays, so a buffer is jitted, vmapped and checkpointed
like parameters (it is part of a learner's state; its size on disk is its
``nbytes``, :func:`nbytes`).

Why not ``flashbax``: its buffers are one stream each (a per-task set would be
a vmap over their states with their own add/sample conventions), while the
off-policy meta-learners need exactly four operations on a task axis —
masked add to chosen tasks, uniform sampling from chosen tasks (of items,
or of the runs of consecutive items that end at them, for context windows), clearing
chosen tasks, and a plain pytree for checkpoints — which fit in this module.

Adding takes a ``valid`` mask, so fixed-shape rollouts whose episodes ended
early (masked steps, :class:`~metarl_jax.core.rollout.Trajectory`) add only
their real transitions, in order. Sampling is uniform with replacement over
each task's stored items (single items, or runs of consecutive items ending
at one, :func:`sample_sequences`); sampling from an empty task is a caller error the
learners rule out by their config checks (a batch larger than the data
collected before training raises at ``make``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from metarl_jax.utils import check_positive_int


@struct.dataclass
class ReplayBuffer:
    """``data`` leaves ``[num_tasks, capacity, ...]``; ``position``, ``size``: ``[num_tasks]``."""

    data: Any
    position: jax.Array   # where each task's next item goes
    size: jax.Array       # how many items each task holds (<= capacity)

    @property
    def num_tasks(self) -> int:
        return int(self.position.shape[0])

    @property
    def capacity(self) -> int:
        return int(jax.tree.leaves(self.data)[0].shape[1])


def init(example_item: Any, num_tasks: int, capacity: int) -> ReplayBuffer:
    """An empty buffer for items shaped like ``example_item`` (one item, no batch axis)."""
    check_positive_int("num_tasks", num_tasks)
    check_positive_int("capacity", capacity)
    data = jax.tree.map(
        lambda x: jnp.zeros((num_tasks, capacity) + jnp.shape(x), jnp.asarray(x).dtype),
        example_item)
    zeros = jnp.zeros((num_tasks,), jnp.int32)
    return ReplayBuffer(data=data, position=zeros, size=zeros)


def _add_one(data, position, size, items, valid):
    """Append the valid ones of ``items`` (leaves ``[n, ...]``) to one task's ring."""
    capacity = jax.tree.leaves(data)[0].shape[0]
    valid = valid.astype(jnp.int32)
    offset = jnp.cumsum(valid) - valid          # rank of each valid item among the valid ones
    slot = (position + offset) % capacity
    # invalid items go to an out-of-range slot, which mode="drop" discards; if more
    # than ``capacity`` valid items come at once only the last ``capacity`` survive
    count = jnp.sum(valid)
    keep = (valid == 1) & (offset >= count - capacity)
    slot = jnp.where(keep, slot, capacity)
    data = jax.tree.map(lambda d, x: d.at[slot].set(x.astype(d.dtype), mode="drop"), data, items)
    return data, (position + count) % capacity, jnp.minimum(size + count, capacity)


def add(buffer: ReplayBuffer, task_ids: jax.Array, items: Any,
        valid: jax.Array | None = None) -> ReplayBuffer:
    """Append ``items`` (leaves ``[M, n, ...]``) to tasks ``task_ids [M]`` (distinct).

    ``valid [M, n]`` (default all True) says which items are real; they are
    stored in order, the invalid ones skipped. Repeated ids in ``task_ids``
    would race for the same rows: callers draw distinct tasks.
    """
    task_ids = jnp.asarray(task_ids, jnp.int32)
    n = jax.tree.leaves(items)[0].shape[1]
    if valid is None:
        valid = jnp.ones((task_ids.shape[0], n), bool)
    rows = jax.tree.map(lambda d: d[task_ids], buffer.data)
    rows, position, size = jax.vmap(_add_one)(rows, buffer.position[task_ids],
                                              buffer.size[task_ids], items, valid)
    data = jax.tree.map(lambda d, r: d.at[task_ids].set(r), buffer.data, rows)
    return ReplayBuffer(data=data, position=buffer.position.at[task_ids].set(position),
                        size=buffer.size.at[task_ids].set(size))


def add_all(buffer: ReplayBuffer, items: Any, valid: jax.Array | None = None) -> ReplayBuffer:
    """Append ``items`` (leaves ``[num_tasks, n, ...]``) to every task's buffer."""
    return add(buffer, jnp.arange(buffer.num_tasks), items, valid)


def sample(buffer: ReplayBuffer, key: jax.Array, task_ids: jax.Array,
           batch_size: int) -> Any:
    """``batch_size`` items drawn uniformly with replacement from each task of
    ``task_ids [M]`` (repeats allowed): leaves ``[M, batch_size, ...]``."""
    check_positive_int("batch_size", batch_size)
    task_ids = jnp.asarray(task_ids, jnp.int32)
    keys = jax.random.split(key, task_ids.shape[0])
    size = jnp.maximum(buffer.size[task_ids], 1)
    index = jax.vmap(lambda k, s: jax.random.randint(k, (batch_size,), 0, s))(keys, size)
    return jax.tree.map(lambda d: d[task_ids[:, None], index], buffer.data)


def sample_sequences(buffer: ReplayBuffer, key: jax.Array, task_ids: jax.Array,
                     batch_size: int, length: int):
    """``batch_size`` runs of ``length`` consecutive items per task of ``task_ids [M]``.

    Each run ends at an item drawn uniformly with replacement from the task's
    stored items (as :func:`sample` draws it) and holds the ``length - 1``
    items stored just before it, oldest first: leaves ``[M, batch_size, length, ...]``.
    Returns ``(runs, present [M, batch_size, length])``; ``present`` is False
    where a run reaches back past the oldest stored item (never written, or
    overwritten by the ring), and those rows hold arbitrary data. Items are
    consecutive in the order they were added, so a learner that adds whole
    trials in order gets each item's history (context windows, n-step returns).
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("length", length)
    task_ids = jnp.asarray(task_ids, jnp.int32)
    capacity = buffer.capacity
    keys = jax.random.split(key, task_ids.shape[0])
    size = jnp.maximum(buffer.size[task_ids], 1)
    # age 0 is the newest item; the item of age a sits at slot (position - 1 - a) mod capacity
    end_age = jax.vmap(lambda k, s: jax.random.randint(k, (batch_size,), 0, s))(keys, size)
    age = end_age[..., None] + jnp.arange(length - 1, -1, -1)        # [M, B, length]
    slot = (buffer.position[task_ids][:, None, None] - 1 - age) % capacity
    present = age < buffer.size[task_ids][:, None, None]
    runs = jax.tree.map(lambda d: d[task_ids[:, None, None], slot], buffer.data)
    return runs, present


def clear(buffer: ReplayBuffer, task_ids: jax.Array) -> ReplayBuffer:
    """Empty the buffers of ``task_ids`` (their old items become unreachable)."""
    task_ids = jnp.asarray(task_ids, jnp.int32)
    return buffer.replace(position=buffer.position.at[task_ids].set(0),
                          size=buffer.size.at[task_ids].set(0))


def nbytes(buffer: ReplayBuffer) -> int:
    """Bytes the buffer's arrays take (what it adds to a checkpoint)."""
    return int(sum(x.nbytes for x in jax.tree.leaves(buffer)))
