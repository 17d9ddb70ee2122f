"""The runner on several devices: 4 forced CPU devices in a subprocess.

The toy learner of ``test_runner.py`` passes its per-task arrays through
``metarl_jax.sharding.shard_tasks``; with 4 devices the runner builds the
``tasks`` mesh and the task batch is split over it. The metrics must equal the
single-device run's up to float reassociation, a resume on the mesh must be
bitwise identical, and a meta-batch that does not divide over the devices must
be refused with a clear message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_once_per_session

import test_runner as toy
from metarl_jax.training import train
from metarl_jax.training.logging import read_csv

TESTS_DIR = Path(__file__).parent
SETTINGS = dict(seed=0, num_iterations=4, iterations_per_call=2, eval_every=2,
                checkpoint_every=2, eval_num_tasks=4, eval_num_steps=2, quiet=True)

SCRIPT = textwrap.dedent("""
    import json, shutil, sys, warnings
    sys.path.insert(0, sys.argv[1])
    import jax
    import test_runner as toy
    from metarl_jax.training import train

    settings = json.loads(sys.argv[3])
    run_dir = sys.argv[2] + "/mesh"
    result = train(toy, toy.Config(meta_batch_size=8), toy.toy_family(), run_dir, **settings)
    # resume on the mesh from iteration 2: restores into the replicated sharding
    shutil.copytree(run_dir, run_dir + "-resumed")
    shutil.rmtree(run_dir + "-resumed/checkpoints/4")
    resumed = train(toy, toy.Config(meta_batch_size=8), toy.toy_family(),
                    run_dir + "-resumed", resume=True, **settings)
    try:
        train(toy, toy.Config(meta_batch_size=6), toy.toy_family(), sys.argv[2] + "/bad",
              **settings)
        error = None
    except ValueError as err:
        error = str(err)
    # a population of 4 on the 2 x 2 ("members", "tasks") mesh
    population = train(toy, toy.Config(meta_batch_size=8), toy.toy_family(),
                       sys.argv[2] + "/population", seeds=2, sweep={"inner_lr": [0.1, 0.3]},
                       member_shards=2, **settings)
    try:
        train(toy, toy.Config(meta_batch_size=8), toy.toy_family(), sys.argv[2] + "/bad-pop",
              seeds=3, member_shards=2, **settings)
        population_error = None
    except ValueError as err:
        population_error = str(err)
    print(json.dumps({
        "population_sharding": str(population.state.members.w.sharding.spec),
        "population_error": population_error,
        "device_count": jax.device_count(),
        "state_devices": len(result.state.w.sharding.device_set),
        "resumed_equal": bool((resumed.state.w == result.state.w).all()),
        "error": error,
    }))
""")


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    out = run_once_per_session(tmp_path_factory, "devices", _run_on_four_devices)
    return out, json.loads((out / "report.json").read_text())


def _run_on_four_devices(out):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(TESTS_DIR), str(out),
                           json.dumps(SETTINGS)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    (out / "report.json").write_text(done.stdout.strip().splitlines()[-1])


def test_sharded_run_matches_single_device(four_devices, tmp_path):
    out, report = four_devices
    assert report["device_count"] == 4 and report["state_devices"] == 4
    mesh_dir = out / "mesh"
    assert json.loads((mesh_dir / "config.json").read_text())["devices"]["task_mesh"] == 4

    single = train(toy.TOY, toy.Config(meta_batch_size=8), toy.toy_family(),
                       tmp_path / "single", use_mesh=False, **SETTINGS)
    assert json.loads((single.run_dir / "config.json").read_text())["devices"]["task_mesh"] is None
    for name in ("metrics.csv", "eval.csv"):
        a, b = read_csv(mesh_dir / name), read_csv(single.run_dir / name)
        assert list(a) == list(b)
        for column in a:
            np.testing.assert_allclose(a[column], b[column], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}:{column}")


def test_resume_on_the_mesh_is_bitwise_identical(four_devices):
    out, report = four_devices
    assert report["resumed_equal"]
    for name in ("metrics.csv", "eval.csv"):
        assert (out / "mesh-resumed" / name).read_bytes() == (out / "mesh" / name).read_bytes()


def test_meta_batch_must_divide_over_devices(four_devices):
    out, report = four_devices
    assert report["error"] == ("meta_batch_size=6 does not divide over the 4 devices of the "
                               "'tasks' mesh axis; use a multiple of 4")
    assert not (out / "bad").exists()  # refused before anything was written


def test_sharded_population_matches_single_device(four_devices, tmp_path):
    out, report = four_devices
    assert report["population_sharding"] == "P('members',)"
    devices = json.loads((out / "population" / "config.json").read_text())["devices"]
    assert (devices["member_mesh"], devices["task_mesh"]) == (2, 2)
    single = train(toy.TOY, toy.Config(meta_batch_size=8), toy.toy_family(),
                   tmp_path / "single", use_mesh=False, seeds=2, sweep={"inner_lr": [0.1, 0.3]},
                   **SETTINGS)
    for name in ("metrics.csv", "eval.csv"):
        a, b = read_csv(out / "population" / name), read_csv(single.run_dir / name)
        assert list(a) == list(b)
        for column in a:
            np.testing.assert_allclose(a[column], b[column], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{name}:{column}")


def test_population_must_divide_over_member_shards(four_devices):
    out, report = four_devices
    assert report["population_error"] == (
        "a population of 3 members does not divide over the 2 devices of the 'members' mesh "
        "axis; use a multiple of 2")
    assert not (out / "bad-pop").exists()
