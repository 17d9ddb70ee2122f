"""Reporting for the benchmark scripts: statistics, the machine, tables, result files.

Host-side helpers every benchmark in ``benchmarks/`` shares:

* statistics over held-out instances: :func:`mean_and_se` (RL² tables) and
  :func:`mean_and_ci95` (adaptation curves), and :func:`format_mean_se`;
* the machine a result was measured on, detected rather than typed in:
  :func:`machine_description` (CPU model, cores, JAX devices) and
  :func:`machine_metadata` (that, the platform, versions and the date);
* markdown: :func:`side_by_side_markdown` (a published row beside ours per cell);
* result files: :func:`update_json` merges into a JSON file atomically;
* :class:`Progress`, a ``progress_fn`` for :func:`~metarl_jax.training.runner.train`
  that prints a line every few iterations and times the start-up, and
  :func:`run_timing` / :func:`csv_rows`, which read a finished run's figures
  back from its run directory.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from metarl_jax.training.logging import read_csv

# ---------------------------------------------------------------- statistics


def mean_and_se(x) -> dict[str, float]:
    """``{"mean", "se"}``: the mean and its standard error (sample std, ddof=1, / sqrt(count)).

    ``se`` is 0 for a single value.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_and_se of no values")
    se = x.std(ddof=1) / math.sqrt(x.size) if x.size > 1 else 0.0
    return {"mean": float(x.mean()), "se": float(se)}


def mean_and_ci95(per_task) -> dict[str, list[float]]:
    """``[tasks, points]`` -> ``{"mean": [points], "ci95": [points]}`` (1.96 standard errors)."""
    per_task = np.asarray(per_task, np.float64)
    if per_task.ndim != 2 or per_task.shape[0] < 1:
        raise ValueError(f"expected values of shape [tasks, points], got {per_task.shape}")
    num_tasks = per_task.shape[0]
    std = per_task.std(axis=0, ddof=1) if num_tasks > 1 else np.zeros(per_task.shape[1])
    return {"mean": per_task.mean(axis=0).tolist(),
            "ci95": (1.96 * std / math.sqrt(num_tasks)).tolist()}


def format_mean_se(stats: Mapping[str, float], digits: int = 2, signed: bool = False) -> str:
    """``mean ± se`` of a :func:`mean_and_se` dict, ``digits`` decimals, a signed mean if
    ``signed``."""
    sign = "+" if signed else ""
    return f"{stats['mean']:{sign}.{digits}f} ± {stats['se']:.{digits}f}"


# ---------------------------------------------------------------- the machine


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``, else the platform's)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_cores() -> tuple[int, int]:
    """``(cores this process may run on, cores of the machine)``; they differ under
    ``taskset`` or a container's CPU set."""
    total = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return usable, total


def device_summary(devices: Sequence[Any] | None = None) -> str:
    """The JAX devices as ``"1 cpu"`` or ``"8 x NVIDIA H200 (gpu)"``."""
    devices = jax.devices() if devices is None else devices
    counts = Counter((d.platform, d.device_kind) for d in devices)
    parts = []
    for (platform_name, kind), count in sorted(counts.items()):
        if platform_name == "cpu":
            parts.append(f"{count} cpu")
        else:
            parts.append(f"{count} x {kind} ({platform_name})")
    return ", ".join(parts) or "no devices"


def machine_description() -> str:
    """One line naming the machine, e.g. ``"AMD EPYC 7B13, 2 cores (x86_64); JAX devices: 1 cpu"``.

    The core count reads ``"1 of 2 cores"`` when the process is pinned to fewer
    cores than the machine has.
    """
    usable, total = cpu_cores()
    cores = f"{total} cores" if usable == total else f"{usable} of {total} cores"
    return f"{cpu_model()}, {cores} ({platform.machine()}); JAX devices: {device_summary()}"


def machine_metadata() -> dict[str, Any]:
    """Machine, CPU, cores, platform, versions, devices and date, recorded with every result."""
    usable, total = cpu_cores()
    return {
        "machine": machine_description(),
        "cpu": cpu_model(),
        "cpu_count": total,
        "cpu_count_usable": usable,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------- markdown


def side_by_side_markdown(
    cells: Mapping[str, Mapping[str, Any]],
    *,
    caption: str,
    key_header: str,
    columns: Sequence[str],
    headers: Iterable[str],
    extra_headers: Sequence[str],
    extra: Callable[[Mapping[str, Any]], list[str]],
    sort_key: Callable[[str], object],
    digits: int,
    machine: str | None = None,
) -> str:
    """The published row of each cell beside ours, then the training time and speed.

    ``cells``: ``{key: cell}`` with ``published`` (``{column: value}``), ``ours``
    (``{column: mean_and_se dict}``), ``quick``, ``train_s``, ``iterations`` and
    ``env_steps_per_s``. Columns: ``columns`` under ``headers`` (ours as
    ``mean ± se`` with ``digits`` decimals, "—" where we have none), then
    ``extra_headers`` with ``extra(cell)`` in our row (empty in the published
    row), then the training time and env steps/s. The caption starts with
    ``machine`` (default: :func:`machine_description` of this machine).
    """
    headers = tuple(headers)
    if len(headers) != len(columns):
        raise ValueError(f"{len(headers)} headers for {len(columns)} columns")
    headers = headers + tuple(extra_headers) + ("RL² train time", "env steps/s")
    lines = [
        f"Machine: {machine or machine_description()}. {caption}",
        "",
        f"| {key_header} | source | " + " | ".join(headers) + " |",
        "|---|---|" + "---|" * len(headers),
    ]
    for key in sorted(cells, key=sort_key):
        cell = cells[key]
        published = cell.get("published", {})
        pub = " | ".join(f"{published[c]:.1f}" if c in published else "—" for c in columns)
        lines.append(f"| {key} | published | {pub} |" + " |" * (len(headers) - len(columns)))
        ours = [format_mean_se(cell["ours"][c], digits) if c in cell["ours"] else "—"
                for c in columns]
        ours += extra(cell)
        ours += [f"{cell['train_s'] / 60:.1f} min ({cell['iterations']} it)",
                 f"{cell['env_steps_per_s']:,.0f}"]
        tag = " (quick)" if cell.get("quick") else ""
        lines.append(f"| {key} | ours{tag} | " + " | ".join(ours) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- result files


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON document at ``path``, or ``default`` when there is no file."""
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def update_json(path: str | Path, update: Mapping[str, Any], *,
                metadata: bool = True) -> dict[str, Any]:
    """Merge ``update`` (top-level keys) into the JSON object at ``path`` and write it back.

    With ``metadata`` the file's :func:`machine_metadata` keys are refreshed too.
    The write is atomic (a temporary file, then a rename); the folder is created.
    Returns the merged document.
    """
    path = Path(path)
    results = dict(read_json(path, {}))
    results.update(update)
    if metadata:
        results.update(machine_metadata())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
    return results


# ---------------------------------------------------------------- runs


class Progress:
    """A ``progress_fn`` for :func:`~metarl_jax.training.runner.train` that prints a line
    ``line(iteration, metrics)`` at the first iteration, every ``every`` iterations
    and at ``total``, and notes when the first iteration ended.

    ``metrics`` are the runner's (training metrics, ``elapsed_s`` and, after an
    evaluation, ``eval/...``). Use :func:`run_timing` after the run.
    """

    def __init__(self, line: Callable[[int, Mapping[str, float]], str], every: int = 10,
                 total: int | None = None, print_fn: Callable[[str], Any] | None = print):
        self.line, self.every, self.total, self.print_fn = line, every, total, print_fn
        self.started = time.perf_counter()
        self.first: tuple[int, float, float] | None = None  # (iteration, clock, elapsed_s)

    def __call__(self, iteration: int, metrics: Mapping[str, float]) -> None:
        if self.first is None:
            self.first = (iteration, time.perf_counter(), float(metrics["elapsed_s"]))
            if iteration > 1 and self.print_fn is not None:
                self.print_fn(f"  resumed from iteration {iteration - 1}")
        if self.print_fn is not None and (
                iteration == self.first[0] or iteration == self.total
                or (self.every > 0 and iteration % self.every == 0)):
            self.print_fn(self.line(iteration, metrics))


def maml_navigation_reference(results_dir: str | Path) -> dict[str, Any] | None:
    """MAML-TRPO on navigation2d from ``maml_navigation.json`` in ``results_dir``, with the
    env steps it used (None when the file is absent): what other learners on
    navigation2d are held against."""
    data = read_json(Path(results_dir) / "maml_navigation.json")
    if not data:
        return None
    cfg = data["config"]
    steps = (data["iterations"] * cfg["meta_batch_size"] * cfg["inner_episodes"]
             * cfg["horizon"] * (cfg["num_inner_steps"] + 1))
    curve = data["curves"]["maml"]
    return {"env_steps": steps, "return_by_inner_step": curve,
            "best_after_adaptation": max(curve["mean"][1:]),
            "source": "benchmarks/results/maml_navigation.json"}


def run_timing(run_dir: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Training figures of a finished run, read from its ``timing.csv``.

    ``iterations`` (done), ``train_s`` (cumulative training seconds, earlier
    segments of a resumed run included; compile, evaluation and checkpointing
    excluded) and, with the run's :class:`Progress`, ``compile_s``: the
    seconds from the call to the end of this session's first iteration less
    that iteration's training time (building the learner, restoring a
    checkpoint, compiling the update), and ``resumed_from`` (0 for a fresh
    run). ``None`` where this session ran no iteration.
    """
    path = Path(run_dir) / "timing.csv"
    columns = read_csv(path) if path.exists() else {}
    iterations = columns.get("iteration", np.zeros(0, np.int64))
    elapsed = columns.get("elapsed_s", np.zeros(0))
    out: dict[str, Any] = {"iterations": int(iterations[-1]) if len(iterations) else 0,
                           "train_s": float(elapsed[-1]) if len(elapsed) else 0.0}
    if progress is not None:
        out["compile_s"] = out["resumed_from"] = None
        if progress.first is not None:
            first, clock, first_elapsed = progress.first
            before = elapsed[iterations == first - 1]
            prior = float(before[-1]) if len(before) else 0.0
            out["compile_s"] = (clock - progress.started) - (first_elapsed - prior)
            out["resumed_from"] = first - 1
    return out


def csv_rows(path: str | Path, every: int = 1) -> list[dict[str, float]]:
    """Rows of a run CSV (``metrics.csv``, ``eval.csv``) as dicts: the first, every
    ``every``-th iteration and the last."""
    path = Path(path)
    if not path.exists():
        return []
    columns = read_csv(path)
    iterations = columns.get("iteration")
    if iterations is None or not len(iterations):
        return []
    rows = []
    for i, iteration in enumerate(iterations):
        if i == 0 or i == len(iterations) - 1 or (every > 0 and iteration % every == 0):
            rows.append({name: (int(v[i]) if name == "iteration" else float(v[i]))
                         for name, v in columns.items()})
    return rows


__all__ = [
    "Progress",
    "cpu_cores",
    "cpu_model",
    "csv_rows",
    "device_summary",
    "format_mean_se",
    "machine_description",
    "machine_metadata",
    "mean_and_ci95",
    "mean_and_se",
    "read_json",
    "run_timing",
    "side_by_side_markdown",
    "update_json",
]
