"""The task axis is the data-parallel axis.

Learners call :func:`shard_tasks` on every array with a leading task axis
(sampled task params, per-task rollouts). Without a mesh it is the identity, so
one code path serves one device and many; with a ``jax.sharding.Mesh`` that
has an axis named ``"tasks"`` it constrains the leading axis to be split over
that mesh axis and XLA partitions the vmapped computation accordingly.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASK_AXIS = "tasks"


def task_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"tasks"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (TASK_AXIS,))


def check_divisible(meta_batch_size: int, mesh: Mesh | None) -> None:
    """Raise ``ValueError`` if the task batch cannot be split evenly over ``mesh``."""
    if mesh is None:
        return
    n = mesh.shape[TASK_AXIS]
    if meta_batch_size % n:
        raise ValueError(
            f"meta_batch_size={meta_batch_size} does not divide over the {n} devices "
            f"of the 'tasks' mesh axis; use a multiple of {n}"
        )


def shard_tasks(tree: Any, mesh: Mesh | None) -> Any:
    """Constrain the leading (task) axis of every leaf to the mesh's ``tasks`` axis."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place ``tree`` replicated on every device of ``mesh`` (host-side helper)."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
