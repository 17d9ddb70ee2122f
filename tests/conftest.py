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
