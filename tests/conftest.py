"""Shared test settings: CPU, float32, small sizes under CI."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def in_ci() -> bool:
    """True when CI=true: long learning checks run their small version."""
    return IN_CI
