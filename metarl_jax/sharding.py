"""Devices: the task axis and the member axis are the data-parallel axes.

Learners call :func:`shard_tasks` on every array with a leading task axis
(sampled task params, per-task rollouts). Without a mesh it is the identity, so
one code path serves one device and many; with a ``jax.sharding.Mesh`` that
has an axis named ``"tasks"`` it constrains the leading axis to be split over
that mesh axis and XLA partitions the vmapped computation accordingly.

Two meshes:

* :func:`task_mesh`: 1-D, ``("tasks",)`` over all devices (one learner).
* :func:`population_mesh`: 2-D, ``("members", "tasks")`` over all devices (a
  population, :func:`metarl_jax.core.population.make_population`). The
  population ``vmap`` s its members with ``spmd_axis_name="members"``, so a
  learner's own ``shard_tasks`` constraint ``P("tasks")`` becomes
  ``P("members", "tasks")`` on the batched array: member shards on one mesh
  axis, each member's task batch split over the other. The population state
  is placed with :func:`shard_members` (leading axis over ``"members"``).

Several hosts (or processes): every process calls ``jax.distributed.initialize(
coordinator_address, num_processes, process_id)`` *before importing
metarl_jax* (importing gymnax, which the environments do, creates arrays and
so starts JAX's backend, after which ``initialize`` refuses to run). On CPU,
cross-process collectives use gloo (``jax_cpu_collectives_implementation``,
JAX 0.10's default). ``jax.devices()`` then lists every process's devices,
the meshes above span them all, and every process runs the same compiled
program (JAX's multi-controller model). Fetch results with :func:`to_host`,
which also works for arrays that live partly on other processes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASK_AXIS = "tasks"
MEMBER_AXIS = "members"


def task_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"tasks"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (TASK_AXIS,))


def population_mesh(num_member_shards: int | None = None, devices=None) -> Mesh:
    """A 2-D mesh ``("members", "tasks")`` over ``devices`` (default: all devices).

    ``num_member_shards`` devices along ``"members"`` (default: all of them,
    so each device trains whole members), ``len(devices) // num_member_shards``
    along ``"tasks"``. Devices are taken in ``jax.devices()`` order, which
    lists each process's devices together, with ``"tasks"`` varying fastest:
    when the tasks axis is no longer than one host's device count, a
    member's task batch (and its gradient all-reduce) stays on one host and
    only metrics cross hosts.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("population_mesh needs at least one device")
    n = len(devices)
    shards = n if num_member_shards is None else num_member_shards
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
        raise ValueError(f"num_member_shards must be a positive int, got {num_member_shards!r}")
    if n % shards:
        divisors = [d for d in range(1, n + 1) if n % d == 0]
        raise ValueError(f"num_member_shards={shards} does not divide the {n} devices; "
                         f"use one of {divisors}")
    return Mesh(np.asarray(devices).reshape(int(shards), n // int(shards)),
                (MEMBER_AXIS, TASK_AXIS))


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
    """Constrain the leading (task) axis of every leaf to the mesh's ``tasks`` axis.

    Inside ``vmap(..., spmd_axis_name="members")`` (a population on
    :func:`population_mesh`) the member axis is prepended: ``P("members", "tasks")``.
    """
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def _put(x: Any, sharding: NamedSharding) -> Any:
    """``jax.device_put`` that also handles typed PRNG keys on a multi-host mesh.

    Every process must pass the same value (as every process of a
    multi-controller program computes the same host values).
    """
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _put(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.device_put(x, sharding)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Place ``tree`` replicated on every device of ``mesh`` (host-side helper)."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def shard_members(tree: Any, mesh: Mesh | None) -> Any:
    """Place ``tree`` (leaves with a leading member axis) split over ``"members"``.

    The rest of each leaf is replicated (over ``"tasks"`` too). Identity
    without a mesh; a mesh without a ``"members"`` axis replicates.
    """
    if mesh is None:
        return tree
    if MEMBER_AXIS not in mesh.shape:
        return replicate(tree, mesh)
    n = mesh.shape[MEMBER_AXIS]
    sharding = NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))

    def place(x):
        shape = np.shape(x)
        if not shape or shape[0] % n:
            raise ValueError(f"a leaf of shape {shape} has no leading member axis that divides "
                             f"over the {n} devices of the 'members' mesh axis")
        return _put(x, sharding)

    return jax.tree.map(place, tree)


def to_host(tree: Any) -> Any:
    """``jax.device_get`` that also fetches arrays spread over several processes.

    A replicated array is read from a local copy; an array split over
    devices of other processes is gathered with
    ``multihost_utils.process_allgather`` (a collective: every process must
    call :func:`to_host` on the same arrays in the same order).
    """

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(fetch, tree)


def sync_processes(name: str) -> None:
    """Block until every process reaches ``sync_processes(name)``; no-op with one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
