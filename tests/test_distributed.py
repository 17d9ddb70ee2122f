"""Several processes: JAX's distributed runtime on localhost, CPU collectives (gloo).

Two worker processes (``distributed_worker.py``), each with two forced CPU
devices, join through ``jax.distributed.initialize`` (coordinator on a free
loopback port) and so see one 4-device program; a third process has the same
four devices by itself. All three run at once, each under a timeout, so a hung
collective fails the test instead of hanging it. Checked:

* the runner's ``train`` with the task batch split over the 4 devices of
  both processes equals the one-process run (``metrics.csv`` and
  ``eval.csv``); only process 0 writes files, and the checkpoint the two
  processes wrote together restores in a single process;
* a MAML population (4 members) on the 2-D ``("members", "tasks")`` mesh
  gives the same per-member metrics across two processes as in one, and as
  the unsharded population;
* typed PRNG keys can be placed on a mesh that spans processes;
* bad input: a member-shard count that does not divide the devices, a
  population that does not divide over the ``members`` axis, and a leaf
  without such a leading axis, are refused.

Tolerances. Across processes vs one process: the same partitioned program;
only the all-reduces run through gloo instead of in-process (another
summation order over 4 devices), so rtol=1e-5, atol=1e-6 (observed: the
runner's metrics within 2e-7 relative; the population, whose all-reduces
have two participants, bitwise equal). Sharded vs unsharded
population: per-device partial sums plus an all-reduce reassociate the
task means (first iteration within ~2e-7 relative), and later iterations
start from parameters that differ by that much (observed up to ~1.5e-5
relative after three Adam steps), so the first iteration is held to
rtol=1e-5 and the whole history to rtol=1e-4; atol=1e-6 for the outer
loss, which is ~1e-8 rounding noise around zero (normalised advantages).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_once_per_session

import test_runner as toy
from metarl_jax.training import load_run
from metarl_jax.training.logging import read_csv

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT_S = 150  # each process; a hung collective fails here
DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_BIND_ADDRESS",
                   "JAX_COORDINATOR_PORT", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                   "JAX_LOCAL_DEVICE_IDS")
RUNS = {"single": [(0, 1, 4)], "two": [(0, 2, 2), (1, 2, 2)]}  # (process id, processes, devices)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = run_once_per_session(tmp_path_factory, "distributed", _launch)
    reports = {name: [json.loads((out / name / f"process{i}.json").read_text())
                      for i, _, _ in specs] for name, specs in RUNS.items()}
    return out, reports


def _launch(out):
    """Start every run's processes at once and wait for them (each within TIMEOUT_S)."""
    port = _free_loopback_port()
    # inherit the compilation cache settings (conftest.py), not a distributed setup
    env = {k: v for k, v in os.environ.items()
           if k not in DISTRIBUTED_ENV and not k.startswith("SLURM_")}
    env["JAX_PLATFORMS"] = "cpu"
    procs = []
    for name, specs in RUNS.items():
        (out / name).mkdir()
        for process_id, num_processes, devices in specs:
            log = open(out / name / f"log{process_id}.txt", "w")
            procs.append((name, process_id, log, subprocess.Popen(
                [sys.executable, str(WORKER), str(out / name), str(process_id),
                 str(num_processes), str(port)],
                stdout=log, stderr=subprocess.STDOUT,
                env={**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})))
    deadline = time.monotonic() + TIMEOUT_S
    failures = []
    try:
        for name, process_id, log, proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                failures.append(f"{name}/{process_id}: no result within {TIMEOUT_S} s")
                continue
            if proc.returncode:
                failures.append(f"{name}/{process_id} exited {proc.returncode}")
    finally:
        for _, _, log, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    if failures:
        tails = [f"--- {p.relative_to(out)}\n" + p.read_text()[-2000:]
                 for p in sorted(out.glob("*/log*.txt"))]
        pytest.fail("; ".join(failures) + "\n" + "\n".join(tails))


def _assert_metrics_close(a, b, rtol, atol=1e-6, what=""):
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert sorted(x) == sorted(y)
        for name in x:
            np.testing.assert_allclose(x[name], y[name], rtol=rtol, atol=atol,
                                       err_msg=f"{what} iteration {i + 1}: {name}")


def test_two_processes_share_four_devices(runs):
    _, reports = runs
    two = reports["two"]
    assert [r["process_index"] for r in two] == [0, 1]
    for r in two:
        assert (r["process_count"], r["device_count"], r["local_device_count"]) == (2, 4, 2)
    single = reports["single"][0]
    assert (single["process_count"], single["device_count"]) == (1, 4)


def test_train_across_processes_matches_one_process(runs):
    out, reports = runs
    (first, second), single = reports["two"], reports["single"][0]
    # every process ran the same program and holds the same replicated results
    assert first["train"]["metrics"] == second["train"]["metrics"]
    assert first["train"]["w"] == second["train"]["w"]
    assert first["train"]["state_devices"] == single["train"]["state_devices"] == 4
    assert first["train"]["iteration"] == 4
    for name in ("metrics.csv", "eval.csv"):
        a, b = first["train"]["csv"][name], single["train"]["csv"][name]
        assert list(a) == list(b)
        for column in a:
            np.testing.assert_allclose(a[column], b[column], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}:{column}")
    settings = json.loads((out / "two" / "run" / "config.json").read_text())
    assert settings["devices"]["count"] == 4 and settings["devices"]["process_count"] == 2
    assert settings["devices"]["task_mesh"] == 4
    # files come from process 0 only: one set of logs, no second writer's leftovers
    assert sorted(p.name for p in (out / "two" / "run").glob("*.csv")) == [
        "eval.csv", "metrics.csv", "timing.csv"]
    assert len(read_csv(out / "two" / "run" / "metrics.csv")["iteration"]) == 4


def test_checkpoint_written_by_two_processes_restores_in_one(runs):
    out, reports = runs
    run = load_run(out / "two" / "run", family=toy.toy_family(), use_mesh=False)
    assert run.iteration == 4
    np.testing.assert_array_equal(np.asarray(run.state.w),
                                  np.asarray(reports["two"][0]["train"]["w"], np.float32))


def test_population_across_processes_matches_one_process(runs):
    _, reports = runs
    (first, second), single = reports["two"], reports["single"][0]
    assert first["population"]["metrics"] == second["population"]["metrics"]
    # each member shard (a mesh row) and its task all-reduce span both processes
    assert first["population"]["mesh_processes"] == [[0, 1], [0, 1]]
    _assert_metrics_close(first["population"]["metrics"], single["population"]["metrics"],
                          rtol=1e-5, what="two processes vs one")
    for report in (first, second):
        population = report["population"]
        assert population["state_spec"] == "P('members',)"
        assert population["state_devices"] == 4 and population["local_shard_rows"] == [2]
        assert population["alive"] == [True] * 4


def test_typed_keys_are_placed_on_the_mesh(runs):
    _, reports = runs
    for report in reports["two"] + reports["single"]:
        assert report["typed_keys"] == {"is_key": True, "spec": "P('members',)", "equal": True}


def test_sharded_population_equals_unsharded(runs):
    _, reports = runs
    single = reports["single"][0]
    sharded, unsharded = single["population"], single["unsharded"]
    # the state's member axis is split over "members" (2 of the 4 members per shard) ...
    assert sharded["state_spec"] == "P('members',)" and sharded["local_shard_rows"] == [2]
    assert sharded["mesh_processes"] == [[0, 0], [0, 0]]
    assert sharded["metrics_spec"] == "P('members',)"
    # ... and the learner's own P("tasks") constraint gained the member axis in front
    assert '[{"members"}, {"tasks"}, {}]' in sharded["constraints"]
    _assert_metrics_close(sharded["metrics"][:1], unsharded["metrics"][:1], rtol=1e-5,
                          what="sharded vs unsharded")
    _assert_metrics_close(sharded["metrics"], unsharded["metrics"], rtol=1e-4,
                          what="sharded vs unsharded")
    assert sharded["alive"] == unsharded["alive"] == [True] * 4


def test_bad_inputs_are_refused(runs):
    _, reports = runs
    errors = reports["single"][0]["errors"]
    assert errors["mesh"] == ("num_member_shards=3 does not divide the 4 devices; "
                              "use one of [1, 2, 4]")
    assert errors["population"] == ("a population of 3 members does not divide over the 2 "
                                    "devices of the 'members' mesh axis; use a multiple of 2")
    assert errors["leaf"] == ("a leaf of shape (3, 2) has no leading member axis that divides "
                              "over the 2 devices of the 'members' mesh axis")


def test_sharding_helpers_on_one_device():
    import jax

    from metarl_jax.sharding import (population_mesh, replicate, shard_members, sync_processes,
                                     task_mesh, to_host)
    mesh = population_mesh()
    assert dict(mesh.shape) == {"members": jax.device_count(), "tasks": 1}
    assert dict(population_mesh(1).shape) == {"members": 1, "tasks": jax.device_count()}
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_member_shards must be a positive int"):
            population_mesh(bad)
    tree = {"a": np.arange(4.0), "k": jax.random.split(jax.random.key(0), 2)}
    assert shard_members(tree, None) is tree and replicate(tree, None) is tree
    placed = replicate(tree, task_mesh())  # a mesh without "members": replicated
    assert to_host(placed["a"]).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert jax.dtypes.issubdtype(shard_members(tree, task_mesh())["k"].dtype,
                                 jax.dtypes.prng_key)
    sync_processes("one process: a no-op")
