"""Shared test settings: CPU, float32, small sizes under CI."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compile time dominates the suite: keep XLA's executables in a user cache directory,
# so a second run (and CI on a machine that ran the tests before) skips most compiles.
# Subprocesses started by the tests inherit it through the environment.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "metarl_jax", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def in_ci() -> bool:
    """True when CI=true: long learning checks run their small version."""
    return IN_CI


@pytest.fixture
def assert_nan_stops_run(tmp_path):
    """``check(algorithm_module, config, family, poison, **train_options)``: wrap the
    learner's ``update`` so ``poison(state)`` turns its state NaN from iteration 2 on,
    and check that the runner stops there, naming the last good checkpoint (1), and
    keeps the checkpoint directory."""
    import types

    import jax.numpy as jnp

    from metarl_jax.training.runner import NonFiniteError, train

    def check(algorithm, config, family, poison, **options):
        def make(config, family, mesh=None):
            learner = algorithm.make(config, family, mesh)

            def update(state, key):
                state, metrics = learner.update(state, key)
                return poison(state, state.step >= 2, jnp.nan), metrics

            return learner._replace(update=update)

        module = types.SimpleNamespace(Config=algorithm.Config, make=make,
                                       __name__=f"poisoned_{algorithm.__name__}")
        with pytest.raises(NonFiniteError, match="iteration 2.*Last good checkpoint: iteration 1"):
            train(module, config, family, tmp_path / "run", num_iterations=3, eval_every=0,
                  checkpoint_every=1, eval_num_tasks=2, quiet=True, **options)
        assert (tmp_path / "run" / "checkpoints").is_dir()

    return check


@pytest.fixture
def assert_resumes_exactly(tmp_path):
    """``check(algorithm, config_dict, family, **train_options)``: two iterations in one
    run equal one iteration, a stop and a resumed second one, leaf for leaf (buffers too)."""
    import jax
    import numpy as np

    from metarl_jax.training.runner import train

    def check(algorithm, config, family, **options):
        settings = dict(num_iterations=2, eval_every=0, checkpoint_every=1, quiet=True,
                        **options)
        whole = train(algorithm, config, family, tmp_path / "whole", **settings)
        first = train(algorithm, config, family, tmp_path / "part",
                      **{**settings, "num_iterations": 1})
        assert first.iteration == 1
        resumed = train(algorithm, config, family, tmp_path / "part", resume=True, **settings)
        for a, b in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state)):
            np.testing.assert_array_equal(a, b)

    return check


def run_once_per_session(tmp_path_factory, name, compute, timeout_s=900):
    """``compute(out_dir)`` once per test session, shared by every xdist worker.

    A module-scoped fixture runs once per *worker* under ``pytest -n 2``, so the
    expensive subprocess runs of the device tests would run twice. The first
    worker to claim ``name`` computes into a directory of the session's shared
    temporary root; the others wait for its ``.done`` marker and read the same
    files (or fail with its error). Without xdist it simply computes.
    """
    import time

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        out = tmp_path_factory.mktemp(name)
        compute(out)
        return out
    root = tmp_path_factory.getbasetemp().parent  # one per session, shared by the workers
    out, done = root / name, root / f"{name}.done"
    try:
        os.close(os.open(root / f"{name}.lock", os.O_CREAT | os.O_EXCL))
    except FileExistsError:  # another worker computes it
        deadline = time.monotonic() + timeout_s
        while not done.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"{name}: the worker computing it gave no result in {timeout_s} s")
            time.sleep(0.5)
        status = done.read_text()
        if status != "ok":
            pytest.fail(f"{name} failed in another worker: {status}")
        return out
    out.mkdir()
    try:
        compute(out)
    except BaseException as error:
        done.write_text(f"{type(error).__name__}: {error}"[:4000] or "failed")
        raise
    done.write_text("ok")
    return out
