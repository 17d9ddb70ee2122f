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
