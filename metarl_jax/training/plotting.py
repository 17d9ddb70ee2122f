"""Plots of a run: the adaptation curve and the training curves.

Drawn on ``matplotlib.figure.Figure`` objects, which need no backend, so
importing this module never switches the backend of a notebook or a GUI.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from matplotlib.figure import Figure
import numpy as np  # noqa: E402

from metarl_jax.training.logging import read_csv  # noqa: E402


def plot_adaptation_curve(summary: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """Mean return ± 95% CI over held-out tasks against adaptation steps/episodes.

    ``summary`` is the dict of :func:`metarl_jax.training.logging.summarize_curves`
    (plus ``"xlabel"``); the learner's own curve and its baselines share the axes.
    """
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    x = np.asarray(summary["x"])
    for name, curve in summary["curves"].items():
        mean, ci = np.asarray(curve["mean"]), np.asarray(curve["ci95"])
        ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, mean - ci, mean + ci, alpha=0.2)
    ax.set_xlabel(summary.get("xlabel", "adaptation step"))
    ax.set_ylabel(f"mean return ({summary['num_tasks']} {summary.get('split', 'test')} tasks)")
    ax.set_xticks(x)
    ax.set_title(title or "adaptation curve (mean ± 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.16, right=0.97, bottom=0.13, top=0.91)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_population_curves(summary: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """A population's evaluation: one panel per curve kind (the learner and each
    baseline), every member's task-mean curve as a thin line (dashed when the
    member was dropped) and each group's mean over seeds ± 95% CI as a thick one.

    ``summary`` is :func:`metarl_jax.training.logging.summarize_population`'s.
    """
    members = summary["members"]
    names = list(members[0]["curves"])
    groups = list(summary["groups"])
    fig = Figure(figsize=(4.6 * len(names), 4))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    x = np.asarray(summary["x"])
    colors = [f"C{i % 10}" for i in range(len(groups))]
    for ax, name in zip(axes, names):
        for color, label in zip(colors, groups):
            for i in summary["groups"][label]["members"]:
                m = members[i]
                ax.plot(x, m["curves"][name]["mean"], color=color, lw=0.8, alpha=0.45,
                        ls="-" if m["alive"] else "--")
            key = name if len(groups) == 1 else f"{name} [{label}]"
            curve = summary["curves"][key]
            mean, ci = np.asarray(curve["mean"]), np.asarray(curve["ci95"])
            ax.plot(x, mean, color=color, lw=2.2, marker="o",
                    label=f"{label or 'all'} ({curve['num_seeds']} seeds)")
            ax.fill_between(x, mean - ci, mean + ci, color=color, alpha=0.15)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(summary.get("xlabel", "adaptation step"))
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mean return ({summary['num_tasks']} {summary.get('split', 'test')} "
                       "tasks)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "population: members (thin) and mean over seeds ± 95% CI (thick)",
                 fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.86, wspace=0.25)
    fig.savefig(path, dpi=100)
    return Path(path)


def plot_training_curve(run_dir: Path, path: Path, title: str = "") -> Path:
    """One panel per training metric of ``metrics.csv`` against iteration, plus a
    panel with the last point of every adaptation curve of ``eval.csv`` (± 95% CI)."""
    run_dir = Path(run_dir)
    metrics = read_csv(run_dir / "metrics.csv")
    iterations = metrics.pop("iteration")
    member = metrics.pop("member", None)  # a population: one line per member
    evals = read_csv(run_dir / "eval.csv") if (run_dir / "eval.csv").exists() else {}
    eval_last = _last_point_columns(evals)
    panels = len(metrics) + (1 if eval_last else 0)
    cols = min(3, max(panels, 1))
    rows = math.ceil(max(panels, 1) / cols)
    fig = Figure(figsize=(4.2 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = axes.reshape(-1)
    for ax, (name, values) in zip(flat, metrics.items()):
        if member is None:
            ax.plot(iterations, values)
        else:
            for i in np.unique(member):
                ax.plot(iterations[member == i], values[member == i], lw=0.9)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if eval_last:
        ax = flat[len(metrics)]
        for name, (mean_col, ci_col) in eval_last.items():
            mean, ci = evals[mean_col], evals[ci_col]
            ax.plot(evals["iteration"], mean, marker="o", label=name)
            ax.fill_between(evals["iteration"], mean - ci, mean + ci, alpha=0.2)
        ax.set_title("held-out tasks: last point of the adaptation curve", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in flat[panels:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    # fixed margins: tight_layout would draw the figure an extra time
    height = 3 * rows  # inches
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.55 / height, top=1 - 0.6 / height,
                        wspace=0.3, hspace=0.6)
    fig.savefig(path, dpi=90)
    return Path(path)


def _last_point_columns(evals: Mapping[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """``{curve: (mean column, ci column)}`` of each curve's last x in ``eval.csv``."""
    last: dict[str, tuple[int, str, str]] = {}
    for column in evals:
        if not column.endswith("_mean"):
            continue
        name, _, x = column[: -len("_mean")].rpartition("_")
        if int(x) >= last.get(name, (-1,))[0]:
            last[name] = (int(x), column, f"{name}_{x}_ci95")
    return {name: (mean, ci) for name, (_, mean, ci) in last.items()}
