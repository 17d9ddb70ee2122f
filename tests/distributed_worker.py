"""One process of the multi-process test (``tests/test_distributed.py``).

Run as ``python distributed_worker.py OUT_DIR PROCESS_ID NUM_PROCESSES PORT``
with ``JAX_PLATFORMS=cpu`` and ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
With ``NUM_PROCESSES > 1`` it first joins the others with
``jax.distributed.initialize`` (coordinator on ``127.0.0.1:PORT``, bound to
loopback only), so ``jax.devices()`` lists every process's devices. Then, on the
global devices:

* ``train``: the runner's whole loop (checkpoints, evaluation, files on
  process 0) for the toy learner of ``test_runner.py`` with its task batch
  split over the 1-D ``tasks`` mesh;
* ``population``: four MAML members (2 seeds x 2 inner learning rates) on
  navigation2d, state split over the ``members`` axis of the 2-D
  ``("members", "tasks")`` mesh (2 x 2), each member's task batch over
  ``tasks``; three meta-iterations, per-member metrics gathered to the host.
  With two processes the mesh rows are ``[d0, d2], [d1, d3]`` (devices 0, 1
  in process 0, devices 2, 3 in process 1), so both a member shard and its
  task all-reduce cross processes (``population_mesh``'s default order
  would keep each member shard inside one process);
* with ``NUM_PROCESSES == 1`` also the same population unsharded
  (``mesh=None``, one device) and the refusals of bad inputs.

Writes ``OUT_DIR/process<ID>.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
SETTINGS = dict(seed=0, num_iterations=4, iterations_per_call=2, eval_every=2,
                checkpoint_every=2, eval_num_tasks=4, eval_num_steps=2, quiet=True)
POPULATION_ITERATIONS = 3


def maml_config():
    from metarl_jax.algorithms import maml
    return maml.Config(meta_batch_size=2, hidden_sizes=(16,), horizon=10, inner_episodes=2,
                       eval_episodes=2, outer_optimizer="adam", outer_lr=0.01)


def run_population(mesh) -> dict:
    """Per-member metrics of ``POPULATION_ITERATIONS`` updates, and where things lived."""
    import re

    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from metarl_jax import tasks
    from metarl_jax.algorithms import maml
    from metarl_jax.core.population import make_population, population_members
    from metarl_jax.sharding import MEMBER_AXIS, shard_members, to_host

    members = population_members(2, {"inner_lr": (0.05, 0.1)})
    population = make_population(maml, maml_config(), tasks.make("navigation2d"), members,
                                 mesh=mesh)
    keys = jax.random.split(jax.random.PRNGKey(0), len(members))
    # init runs in each process on its own default device (same values everywhere), then
    # the state is placed on the mesh: member axis split over "members"
    state = shard_members(jax.jit(population.init)(keys), mesh)
    if mesh is None:
        update = jax.jit(population.update)
    else:  # pin the placement: the state stays split over "members" from call to call
        split = NamedSharding(mesh, PartitionSpec(MEMBER_AXIS))
        update = jax.jit(population.update,
                         out_shardings=(jax.tree.map(lambda x: x.sharding, state), split))
    train_key = jax.random.PRNGKey(1)

    def iteration_keys(i):
        return shard_members(jax.random.split(jax.random.fold_in(train_key, i), len(members)),
                             mesh)

    lowered = update.lower(state, iteration_keys(0))
    compiled = lowered.compile()
    history = []
    for i in range(POPULATION_ITERATIONS):
        state, metrics = compiled(state, iteration_keys(i))
        history.append({k: to_host(v).tolist() for k, v in sorted(metrics.items())})
    report = {"metrics": history, "alive": to_host(state.alive).tolist()}
    if mesh is not None:
        leaf = jax.tree.leaves(state.members)[0]
        report["mesh_processes"] = [[d.process_index for d in row] for row in mesh.devices]
        report["state_spec"] = str(leaf.sharding.spec)
        report["state_devices"] = len(leaf.sharding.device_set)
        report["local_shard_rows"] = sorted({s.data.shape[0] for s in leaf.addressable_shards})
        report["metrics_spec"] = str(metrics["post_adaptation_return"].sharding.spec)
        # the learners' shard_tasks constraint P("tasks") as traced inside the member vmap
        report["constraints"] = sorted(set(re.findall(r"sharding_constraint %\S+ <@mesh, "
                                                      r"(\[[^\]]*\])>", lowered.as_text())))
    return report


def main() -> None:
    out_dir, process_id, num_processes, port = (Path(sys.argv[1]), int(sys.argv[2]),
                                                int(sys.argv[3]), sys.argv[4])
    sys.path.insert(0, str(TESTS_DIR))
    import jax
    import numpy as np

    start = time.perf_counter()
    if num_processes > 1:  # before metarl_jax is imported: gymnax's import starts the backend
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # 0.10's default
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   coordinator_bind_address=f"127.0.0.1:{port}",
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=60)
    import test_runner as toy
    from metarl_jax.sharding import population_mesh, shard_members, to_host
    from metarl_jax.training import train
    from metarl_jax.training.logging import read_csv

    run_dir = out_dir / "run"
    result = train(toy, toy.Config(meta_batch_size=8), toy.toy_family(), run_dir, **SETTINGS)
    report = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "train": {"metrics": result.metrics, "iteration": result.iteration,
                  "state_devices": len(result.state.w.sharding.device_set),
                  "w": to_host(result.state.w).tolist(),
                  "curve": result.adaptation_curve},
    }
    if process_id == 0:
        report["train"]["csv"] = {name: {k: list(map(float, v)) for k, v in
                                         read_csv(run_dir / name).items()}
                                  for name in ("metrics.csv", "eval.csv")}
    report["train_seconds"] = time.perf_counter() - start
    devices = jax.devices()
    if num_processes > 1:  # each member's task batch split across the two processes
        devices = [devices[0], devices[2], devices[1], devices[3]]
    mesh = population_mesh(2, devices)
    report["population"] = run_population(mesh)
    # typed PRNG keys go through key data (device_put refuses them on a multi-process mesh)
    keys = jax.random.split(jax.random.key(3), 4)
    placed = shard_members(keys, mesh)
    report["typed_keys"] = {
        "is_key": bool(jax.dtypes.issubdtype(placed.dtype, jax.dtypes.prng_key)),
        "spec": str(placed.sharding.spec),
        "equal": to_host(jax.random.key_data(placed)).tolist()
        == jax.device_get(jax.random.key_data(keys)).tolist()}
    report["population_seconds"] = time.perf_counter() - start
    if num_processes == 1:
        report["unsharded"] = run_population(None)
        errors = {}
        try:
            population_mesh(3)
        except ValueError as err:
            errors["mesh"] = str(err)
        try:
            from metarl_jax import tasks
            from metarl_jax.algorithms import maml
            from metarl_jax.core.population import make_population, population_members
            make_population(maml, maml_config(), tasks.make("navigation2d"),
                            population_members(3), mesh=population_mesh(2))
        except ValueError as err:
            errors["population"] = str(err)
        try:
            shard_members(np.zeros((3, 2)), mesh)
        except ValueError as err:
            errors["leaf"] = str(err)
        report["errors"] = errors
    report["seconds"] = time.perf_counter() - start
    (out_dir / f"process{process_id}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
