"""Golden files: the shared-core refactor changes no number the learners produce.

``tests/golden/<run>/{metrics.csv,eval.csv}`` were written by
``tests/golden/runs.py`` before the refactor (issue 18); the same fixed-seed
runs must reproduce them byte for byte on CPU. ``tests/golden/checkpoints``
holds run directories written by the pre-refactor code after 2 of those 4
iterations; resuming them must finish exactly as the uninterrupted run.

"Reproduce" is byte for byte on the machine that wrote them; elsewhere the
numbers may differ in the last bits of float32 (XLA's CPU code depends on the
processor's vector instructions: the transformer run differs by about 1e-7
on an AMD EPYC), so values are compared to ``rtol=1e-5, atol=1e-6``, far
below any change a code edit makes to a training run.

The three MAML runs were regenerated on 2026-12-07 when the linear
baseline's solve moved from LAPACK's LU (``jnp.linalg.solve``, which can
deadlock jaxlib 0.10's CPU thread pool) to elimination in ``jnp``: an
intended change of up to 3e-4 relative on CartPole's ill-conditioned
features. The RL² runs and the checkpoints are still the pre-refactor ones.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("golden_runs", GOLDEN / "runs.py")
golden_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden_runs)


def assert_same_csv(text: str, golden: str, label: str, rtol: float = 1e-5,
                    atol: float = 1e-6) -> None:
    """The same header and rows, numbers equal to ``rtol=1e-5, atol=1e-6`` (module docstring)."""
    rows, expected = (list(csv.reader(io.StringIO(t))) for t in (text, golden))
    assert rows[0] == expected[0] and len(rows) == len(expected), f"{label}: header or length"
    for row, want in zip(rows[1:], expected[1:]):
        assert len(row) == len(want), f"{label}: row length"
        for got, value in zip(row, want):
            try:
                np.testing.assert_allclose(float(got), float(value), rtol=rtol, atol=atol,
                                           err_msg=f"{label} differs from the golden file")
            except ValueError:  # not a number: must be equal
                assert got == value, f"{label} differs from the golden file"


@pytest.mark.parametrize("name", sorted(golden_runs.RUNS))
def test_run_reproduces_golden_files(name, tmp_path):
    run_dir = golden_runs.run(name, tmp_path / name)
    for file in golden_runs.FILES:
        assert_same_csv((run_dir / file).read_text(), (GOLDEN / name / file).read_text(),
                        f"{name}/{file}")


@pytest.mark.parametrize("name", sorted(p.name for p in (GOLDEN / "checkpoints").iterdir()))
def test_pre_refactor_checkpoint_resumes_to_golden_files(name, tmp_path):
    from metarl_jax.training import train

    run_dir = tmp_path / name
    shutil.copytree(GOLDEN / "checkpoints" / name, run_dir)
    train(*golden_runs.RUNS[name][:3], run_dir, **golden_runs.settings(name),
          num_iterations=4, resume=True)
    for file in golden_runs.FILES:
        # the MAML checkpoint predates the baseline's jnp solve (LAPACK's LU before): its first
        # two iterations, and the state it resumes from, differ from today's in the 4th digit
        assert_same_csv((run_dir / file).read_text(), (GOLDEN / name / file).read_text(),
                        f"resumed {name}/{file}", rtol=1e-3, atol=1e-4)
