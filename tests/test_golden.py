"""Golden files: the shared-core refactor changes no number the learners produce.

``tests/golden/<run>/{metrics.csv,eval.csv}`` were written by
``tests/golden/runs.py`` before the refactor (issue 18); the same fixed-seed
runs must reproduce them byte for byte on CPU. ``tests/golden/checkpoints``
holds run directories written by the pre-refactor code after 2 of those 4
iterations; resuming them must finish exactly as the uninterrupted run.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
_spec = importlib.util.spec_from_file_location("golden_runs", GOLDEN / "runs.py")
golden_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden_runs)


@pytest.mark.parametrize("name", sorted(golden_runs.RUNS))
def test_run_reproduces_golden_files(name, tmp_path):
    run_dir = golden_runs.run(name, tmp_path / name)
    for file in golden_runs.FILES:
        assert (run_dir / file).read_text() == (GOLDEN / name / file).read_text(), (
            f"{name}/{file} differs from the golden file")


@pytest.mark.parametrize("name", sorted(p.name for p in (GOLDEN / "checkpoints").iterdir()))
def test_pre_refactor_checkpoint_resumes_to_golden_files(name, tmp_path):
    from metarl_jax.training import train

    run_dir = tmp_path / name
    shutil.copytree(GOLDEN / "checkpoints" / name, run_dir)
    train(*golden_runs.RUNS[name][:3], run_dir, **golden_runs.settings(name),
          num_iterations=4, resume=True)
    for file in golden_runs.FILES:
        assert (run_dir / file).read_text() == (GOLDEN / name / file).read_text(), (
            f"resumed {name}/{file} differs from the golden file")
