"""Run files: metrics CSVs, TensorBoard events and adaptation-curve summaries.

Files in a run directory written here:

* ``metrics.csv``: ``iteration`` and every scalar training metric, one row per
  iteration. It holds no wall-clock data, so the same seed and config give a
  byte-identical file (and a resumed run gives the same file as an
  uninterrupted one).
* ``eval.csv``: ``iteration`` and, for every curve of the learner's
  ``evaluate`` (its own and the baselines), the mean and 95% CI over the
  held-out test tasks at every point of the curve.
* ``timing.csv``: ``iteration`` and cumulative training wall time in seconds
  (compilation excluded): the only non-reproducible file.
* ``adaptation_curve.json``: the latest evaluation in full (per-task returns).
* ``tensorboard/``: TensorBoard event files with the same scalars
  (``train/<metric>``, ``eval/<curve>/<x>``).

Numbers are written as the shortest decimal string that round-trips the
float32 value, so reading a CSV back gives the exact logged values.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np


def format_number(value: Any) -> str:
    """Shortest round-tripping decimal of a float32/int value (``nan``, ``inf`` as such)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return str(np.float32(value))


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Scalars of a metrics dict; an array metric ``m`` of size n becomes ``m/0 .. m/n-1``."""
    out: dict[str, float] = {}
    for name in metrics:
        value = np.asarray(metrics[name])
        if value.ndim == 0:
            out[name] = value.item()
        else:
            for i, v in enumerate(value.reshape(-1)):
                out[f"{name}/{i}"] = v.item()
    return out


def summarize_curves(curves: Mapping[str, Any], x: Sequence[int]) -> dict[str, Any]:
    """Mean and 95% CI over tasks of each adaptation curve ``{name: [tasks, points]}``.

    CI = 1.96 * std / sqrt(n) with the sample standard deviation (ddof=1; 0 for
    a single task). ``x`` labels the points (``0..K`` adaptation steps for
    MAML, episodes ``1..n`` of a trial for RL²).
    """
    arrays = {name: np.asarray(value, np.float32) for name, value in curves.items()}
    if not arrays:
        raise ValueError("evaluate returned no curves")
    shapes = {name: a.shape for name, a in arrays.items()}
    first = next(iter(arrays.values()))
    if first.ndim != 2 or any(shape != first.shape for shape in shapes.values()):
        raise ValueError(f"evaluate must return arrays of one shape [tasks, points]; got {shapes}")
    num_tasks, num_points = first.shape
    if len(x) != num_points:
        raise ValueError(f"{len(x)} x values for curves of {num_points} points")
    out = {"num_tasks": num_tasks, "x": [int(v) for v in x], "curves": {}}
    for name, a in arrays.items():
        a64 = a.astype(np.float64)
        std = a64.std(axis=0, ddof=1) if num_tasks > 1 else np.zeros(num_points)
        out["curves"][name] = {
            "mean": [float(np.float32(v)) for v in a64.mean(axis=0)],
            "ci95": [float(np.float32(v)) for v in 1.96 * std / math.sqrt(num_tasks)],
            "per_task": a.tolist(),
        }
    return out


def _group_label(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


def summarize_population(curves: Mapping[str, Any], x: Sequence[int],
                         members: Sequence[Mapping[str, Any]],
                         alive: Sequence[bool]) -> dict[str, Any]:
    """Per-member and across-seed summaries of population curves ``{name: [members, tasks, points]}``.

    ``members[i]`` is ``{"seed": s, "values": {field: value}}``. Each member gets
    the summary of :func:`summarize_curves` over the tasks (every member played
    the same tasks with the same keys). Members with equal swept ``values`` form
    a group; the group's curve is the mean over its live members' task-mean
    curves, with a 95% CI over those members (the seeds: 1.96 * std(ddof=1) /
    sqrt(n), 0 for one member), so the spread is across seeds, not tasks.
    ``summary["curves"]`` holds the groups' curves (named ``curve`` when there
    is one group, ``curve [field=value]`` otherwise), which is what the CLI's
    table, ``eval.csv`` and the plots read; dropped members (``alive`` false)
    are reported but left out of the groups.
    """
    arrays = {name: np.asarray(value, np.float32) for name, value in curves.items()}
    if not arrays:
        raise ValueError("evaluate returned no curves")
    num_members = len(members)
    if len(alive) != num_members:
        raise ValueError(f"{len(alive)} alive flags for {num_members} members")
    for name, a in arrays.items():
        if a.ndim != 3 or a.shape[0] != num_members:
            raise ValueError(f"population curve {name!r} must be [members={num_members}, tasks, "
                             f"points], got {a.shape}")
    per_member = []
    for i, member in enumerate(members):
        summary = summarize_curves({name: a[i] for name, a in arrays.items()}, x)
        per_member.append({"member": i, "seed": int(member["seed"]),
                           "values": dict(member["values"]), "alive": bool(alive[i]),
                           **summary})
    groups: dict[str, list[int]] = {}
    for i, member in enumerate(members):
        groups.setdefault(_group_label(member["values"]), []).append(i)
    out = {"num_tasks": per_member[0]["num_tasks"], "num_members": num_members,
           "x": [int(v) for v in x], "curves": {}, "groups": {}, "members": per_member}
    for label, indices in groups.items():
        live = [i for i in indices if alive[i]]
        out["groups"][label] = {"members": indices, "live_members": live}
        for name in arrays:
            means = np.asarray([per_member[i]["curves"][name]["mean"] for i in live],
                               np.float64).reshape(len(live), len(x))
            n = len(live)
            std = means.std(axis=0, ddof=1) if n > 1 else np.zeros(len(x))
            key = name if len(groups) == 1 else f"{name} [{label}]"
            out["curves"][key] = {
                "mean": [float(np.float32(v)) for v in (means.mean(axis=0) if n else
                                                        np.full(len(x), np.nan))],
                "ci95": [float(np.float32(v)) for v in 1.96 * std / math.sqrt(max(n, 1))],
                "num_seeds": n,
                "per_member": means.tolist(),
            }
    return out


def eval_row(summary: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``{"<curve>_<x>_mean": ..., "<curve>_<x>_ci95": ...}`` of a curve summary."""
    row = {}
    for name, curve in summary["curves"].items():
        for x, mean, ci in zip(summary["x"], curve["mean"], curve["ci95"]):
            row[f"{name}_{x}_mean"] = mean
            row[f"{name}_{x}_ci95"] = ci
    return row


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def truncate_csv(path: Path, last_iteration: int) -> None:
    """Keep the header and the complete rows with ``iteration <= last_iteration``.

    A row cut short by a killed process has no trailing newline and is dropped.
    """
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):
        path.unlink()
        return
    kept = [lines[0]]
    for line in lines[1:]:
        if not line.endswith("\n"):
            break
        try:
            iteration = int(line.split(",", 1)[0])
        except ValueError:
            break
        if iteration > last_iteration:
            break
        kept.append(line)
    path.write_text("".join(kept))


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Columns of a run CSV as float arrays (``iteration`` as int)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    columns = {name: np.array([float(r[i]) for r in body], np.float64)
               for i, name in enumerate(header)}
    if "iteration" in columns:
        columns["iteration"] = columns["iteration"].astype(np.int64)
    return columns


class CsvLog:
    """An append-only CSV with a fixed header; each row is flushed as written.

    The header comes from the first row's keys (or from an existing file when a
    run resumes); a later row with different keys is an error.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f))
        self._file = open(self.path, "a", newline="")

    def write(self, iteration: int, values: Mapping[str, Any]) -> None:
        """Append one row ``iteration, *values``."""
        keys = ["iteration", *values]
        if self.columns is None:
            self.columns = keys
            self._write_line(keys)
        elif keys != self.columns:
            raise ValueError(
                f"{self.path.name}: row keys {keys[1:]} differ from the file's columns "
                f"{self.columns[1:]}"
            )
        self._write_line([str(int(iteration))] + [format_number(v) for v in values.values()])

    def _write_line(self, fields: list[str]) -> None:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(fields)
        self._file.write(buffer.getvalue())
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RunLogger:
    """Writes ``metrics.csv``, ``eval.csv``, ``timing.csv`` and TensorBoard events.

    ``purge_step`` (the first iteration of a resumed run) makes TensorBoard
    discard events the interrupted run wrote after its last checkpoint; the
    CSVs are truncated by :func:`truncate_csv` before this object opens them.
    """

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from tensorboardX import SummaryWriter

        self.run_dir = run_dir = Path(run_dir)
        self.metrics = CsvLog(run_dir / "metrics.csv")
        self.eval = CsvLog(run_dir / "eval.csv")
        self.timing = CsvLog(run_dir / "timing.csv")
        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)

    def log_train(self, iteration: int, metrics: Mapping[str, float], elapsed_s: float) -> None:
        """One training iteration's scalars and the cumulative wall time."""
        self.metrics.write(iteration, metrics)
        self.timing.write(iteration, {"elapsed_s": elapsed_s})
        for name, value in metrics.items():
            self.tensorboard.add_scalar(f"train/{name}", value, iteration)

    def log_train_members(self, iteration: int, rows: Sequence[Mapping[str, float]],
                          elapsed_s: float) -> None:
        """A population's iteration: one ``metrics.csv`` row per member (a ``member``
        column after ``iteration``), TensorBoard ``train/<metric>/member<i>``."""
        for i, metrics in enumerate(rows):
            self.metrics.write(iteration, {"member": i, **metrics})
            for name, value in metrics.items():
                self.tensorboard.add_scalar(f"train/{name}/member{i}", value, iteration)
        self.timing.write(iteration, {"elapsed_s": elapsed_s})

    def log_eval(self, iteration: int, summary: Mapping[str, Any]) -> None:
        """Mean and CI of each adaptation curve on the held-out tasks; the full
        summary (per-task returns too) goes to ``adaptation_curve.json``."""
        self.eval.write(iteration, eval_row(summary))
        write_json(self.run_dir / "adaptation_curve.json", summary)
        for name, curve in summary["curves"].items():
            for x, mean in zip(summary["x"], curve["mean"]):
                self.tensorboard.add_scalar(f"eval/{name}/{x}", mean, iteration)

    def flush(self) -> None:
        self.tensorboard.flush()

    def close(self) -> None:
        for log in (self.metrics, self.eval, self.timing):
            log.close()
        self.tensorboard.close()
