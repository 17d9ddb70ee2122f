"""The tutorial notebooks: stored clean, and they run top to bottom.

``notebooks/quickstart.ipynb`` is executed in a fresh ``python3`` kernel with
``METARL_NOTEBOOK_QUICK=1`` (tiny sizes) in a temporary working directory;
its training run is written under ``METARL_NOTEBOOK_RUN_ROOT`` so the test can
check the files the runner produced.
"""

import json
import math
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICKSTART = NOTEBOOKS / "quickstart.ipynb"


def _code_cell(nb, fragment: str):
    """The one code cell whose source contains ``fragment``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and fragment in c.source]
    assert len(cells) == 1, f"expected one code cell containing {fragment!r}, found {len(cells)}"
    return cells[0]


def _text(cell) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out and "text/plain" in out.data:
            parts.append(out.data["text/plain"])
    return "".join(parts)


def _has_image(cell) -> bool:
    return any("data" in out and "image/png" in out.data for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_is_stored_clean(path):
    """Valid nbformat 4, python3 kernel, no outputs or execution counts committed."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: code cell {i} has stored outputs"
            assert cell.execution_count is None, f"{path.name}: code cell {i} has a count"


def test_quickstart_runs(tmp_path, monkeypatch):
    run_root = tmp_path / "runs"
    monkeypatch.setenv("METARL_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("METARL_NOTEBOOK_RUN_ROOT", str(run_root))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # the quick sizes (meta-batch 2, 4 eval tasks) assume one device
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                   os.environ.get("XLA_FLAGS", "")).strip()
    if flags:
        monkeypatch.setenv("XLA_FLAGS", flags)
    else:
        monkeypatch.delenv("XLA_FLAGS", raising=False)

    nb = nbformat.read(QUICKSTART, as_version=4)
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()  # raises CellExecutionError naming the failing cell

    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert not errors
    assert "QUICK=True" in _text(_code_cell(nb, "QUICK = os.environ"))

    # the training cell wrote a run with an adaptation curve of every initialisation
    run_dir = run_root / "maml-navigation2d"
    assert str(run_dir) in _text(_code_cell(nb, 'train("maml"'))
    for name in ("config.json", "metrics.csv", "adaptation_curve.json", "adaptation_curve.png"):
        assert (run_dir / name).is_file(), name
    curve = json.loads((run_dir / "adaptation_curve.json").read_text())
    assert curve["x"] == [0, 1, 2]  # eval_num_steps=2 in QUICK mode
    assert set(curve["curves"]) == {"maml", "pretrained", "random_init"}
    for name, c in curve["curves"].items():
        assert len(c["mean"]) == len(c["ci95"]) == 3, name
        assert all(math.isfinite(v) for v in c["mean"] + c["ci95"]), name
    table = _text(_code_cell(nb, "curve = result.adaptation_curve"))
    assert all(name in table for name in ("maml", "pretrained", "random_init"))

    # the figures were drawn: trajectories, adaptation curve, gymnax pendulums
    for fragment in ("def plot_paths", "fill_between", "before, after = batches",
                     "push(pendulum_tasks"):
        assert _has_image(_code_cell(nb, fragment)), fragment
    assert "random-policy return per task" in _text(_code_cell(nb, "collect_pendulum ="))

    # nothing was written into the working directory or next to the notebook
    assert list(workdir.iterdir()) == []
