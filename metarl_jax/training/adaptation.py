"""Measuring MAML's adaptation on held-out tasks: train with the runner, evaluate, tune, report.

What ``benchmarks/maml_navigation.py`` and ``benchmarks/maml_cartpole.py``
share. :func:`train_and_evaluate` meta-trains MAML (and, inside the same
compiled update, the "pretrained" multi-task baseline) with
:func:`~metarl_jax.training.runner.train`, then evaluates MAML, pretrained
and a random initialisation on held-out tasks after ``0..K`` inner steps,
with 95% confidence intervals; optionally each curve also gets its own
evaluation step size per step, chosen by :func:`tune_eval_lrs` on fresh
train-split tasks (host-side tuning, hence here and not in the algorithm).
:func:`write` saves the result as JSON, a plot and a markdown table.

Keys: the run's, from :func:`~metarl_jax.training.runner.run_keys`. The
test-split evaluation uses the runner's own evaluation tasks and key, so
its curves are the run directory's ``adaptation_curve.json``; other splits
draw their tasks with the same key from their split; the tuning tasks come
from ``fold_in(PRNGKey(seed), 4)``, a key the runner does not use.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metarl_jax import tasks
from metarl_jax.algorithms import maml
from metarl_jax.training.report import (Progress, csv_rows, machine_metadata, mean_and_ci95,
                                        run_timing, update_json)
from metarl_jax.training.runner import run_keys, train

TUNING_KEY_INDEX = 4  # fold_in(PRNGKey(seed), 4): not one of run_keys' four


def add_run_dir_argument(parser) -> None:
    """The ``--run-dir`` flag of the MAML benchmark scripts."""
    parser.add_argument("--run-dir", default=None,
                        help="the training run's directory (default: "
                             "benchmarks/results/scratch/<stem>, replaced on every run); "
                             "a --run-dir that holds a run is continued")


def run_dir_of(run_dir: str | None, results: str | Path, stem: str) -> tuple[str, bool]:
    """``(run directory, resume)``: ``run_dir`` (continued when it holds a run) or a
    scratch directory under ``results`` that is replaced."""
    path = run_dir or str(Path(results) / "scratch" / stem)
    return path, run_dir is not None and (Path(path) / "config.json").is_file()


def summarize(curves: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """``{name: [tasks, K+1]}`` -> ``{name: {"mean": [K+1], "ci95": [K+1]}}``."""
    return {name: mean_and_ci95(per_task) for name, per_task in curves.items()}


def tune_eval_lrs(learner, state, family, key: jax.Array, steps: int,
                  candidates: Sequence[float], num_tasks: int,
                  log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Per curve (MAML, pretrained, random init), the evaluation step size of each step.

    Chosen greedily by :func:`metarl_jax.algorithms.maml.select_eval_lrs` on
    ``num_tasks`` fresh tasks of the *train* split (never the evaluation
    tasks), the same search for every curve so the comparison stays fair.
    Returns ``{"candidates", "tasks", "split", "chosen": {curve: [size per
    step]}, "scores": {curve: [[mean return per candidate] per step]}}``.
    """
    task_key, play_key = jax.random.split(key)
    task_params = family.sample(task_key, num_tasks, split="train")
    params = {"maml": state.meta_params, "pretrained": state.pretrained_params,
              "random_init": state.random_init_params}
    chosen, scores = {}, {}
    for name, p in params.items():
        if p is None:
            continue
        start = time.perf_counter()
        chosen[name], scores[name] = maml.select_eval_lrs(learner, p, task_params, play_key,
                                                          steps, candidates)
        if log is not None:
            log(f"  eval step sizes for {name}: {chosen[name]} "
                f"({time.perf_counter() - start:.0f} s on {num_tasks} train-split tasks)")
    return {"candidates": list(candidates), "tasks": num_tasks, "split": "train",
            "chosen": {k: list(v) for k, v in chosen.items()}, "scores": scores}


def _progress_line(iteration: int, metrics: Mapping[str, float]) -> str:
    return (f"  it {iteration:4d}  pre {metrics['pre_adaptation_return']:8.2f}  "
            f"post {metrics['post_adaptation_return']:8.2f}  "
            f"pretrained {metrics.get('pretrained_return', float('nan')):8.2f}  "
            f"{metrics['elapsed_s']:.0f} s")


def train_and_evaluate(family_name: str, config: maml.Config, iterations: int,
                       eval_tasks: int, eval_steps: int, split: str | Sequence[str] = "test",
                       seed: int = 0, family_options: Mapping[str, Any] | None = None,
                       log_every: int = 25, tune_lrs: Sequence[float] | None = None,
                       tune_tasks: int = 100, *, run_dir: str | Path,
                       resume: bool = False, log: Callable[[str], Any] | None = print):
    """Train MAML for ``iterations`` meta-iterations in ``run_dir``; return timings and curves.

    Training is :func:`~metarl_jax.training.runner.train` (quiet, a line every
    ``log_every`` iterations through ``log``; ``run_dir`` is replaced unless
    ``resume``, which continues the run there). ``split`` is one split name
    (returns one result) or a sequence of them (trains once, evaluates on
    each, returns a list of results), ``eval_tasks`` tasks each, after
    ``0..eval_steps`` inner steps with the config's ``eval_inner_lrs``.

    ``tune_lrs``: candidate evaluation step sizes. If given, each curve also
    gets its own step size per step (:func:`tune_eval_lrs` on ``tune_tasks``
    train-split tasks) and the results add ``curves_tuned`` and ``tuning``
    beside ``curves``.
    """
    options = dict(family_options or {})
    family = tasks.make(family_name, **options)
    progress = Progress(_progress_line, every=log_every, total=iterations, print_fn=log)
    run = train("maml", config, family_name, run_dir, family_options=options, seed=seed,
                num_iterations=iterations, eval_every=0, checkpoint_every=0,
                eval_num_tasks=eval_tasks, eval_num_steps=eval_steps, quiet=True,
                resume=resume, overwrite=not resume, progress_fn=progress)
    timing = run_timing(run.run_dir, progress)
    learner = maml.make(config, family)
    evaluate = jax.jit(learner.evaluate, static_argnums=3)
    _, _, eval_tasks_key, eval_key = run_keys(seed)
    eval_key = jax.random.fold_in(eval_key, run.iteration)  # the runner's final evaluation
    tuning = None
    if tune_lrs is not None:
        tuning = tune_eval_lrs(learner, run.state, family,
                               jax.random.fold_in(jax.random.PRNGKey(seed), TUNING_KEY_INDEX),
                               eval_steps, tune_lrs, tune_tasks, log)
    history = csv_rows(run.run_dir / "metrics.csv", log_every)
    results = []
    for name in ((split,) if isinstance(split, str) else tuple(split)):
        task_params = family.sample(eval_tasks_key, eval_tasks, split=name)
        curves = evaluate(run.state, task_params, eval_key, eval_steps)
        extra = {}
        if tuning is not None:
            tuned = evaluate(run.state, task_params, eval_key, eval_steps,
                             {curve: jnp.asarray(lrs, jnp.float32)
                              for curve, lrs in tuning["chosen"].items()})
            extra = {"curves_tuned": summarize(tuned), "tuning": tuning}
        results.append({
            "family": family_name, "family_options": options, "split": name,
            "iterations": run.iteration, "compile_s": timing["compile_s"],
            "train_s": timing["train_s"],
            "seconds_per_iteration": timing["train_s"] / max(run.iteration, 1),
            "eval_tasks": eval_tasks, "config": dataclasses.asdict(config),
            "curves": summarize(curves), **extra, "history": history,
            "run_dir": str(run.run_dir), **machine_metadata()})
    return results[0] if isinstance(split, str) else results


# ---------------------------------------------------------------- reporting


def plot_curves(result: Mapping[str, Any], path: str | Path,
                published: Mapping[str, Sequence[float]] | None = None, title: str = "") -> None:
    """One colour per curve: the fixed schedule dotted, tuned sizes solid, published dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    names = list(result["curves"]) + [n for n in (published or {}) if n not in result["curves"]]
    colour = {name: f"C{i}" for i, name in enumerate(names)}
    styles = (("curves", "ours, fixed sizes", "o", ":"),
              ("curves_tuned", "ours, tuned sizes", "s", "-"))
    for key, label, marker, line in styles:
        for name, curve in result.get(key, {}).items():
            mean, ci = np.asarray(curve["mean"]), np.asarray(curve["ci95"])
            steps = np.arange(len(mean))
            ax.plot(steps, mean, marker=marker, linestyle=line, color=colour[name],
                    label=f"{name} ({label})")
            ax.fill_between(steps, mean - ci, mean + ci, alpha=0.15, color=colour[name])
    for name, values in (published or {}).items():
        ax.plot(np.arange(len(values)), values, linestyle="--", marker="x", color=colour[name],
                alpha=0.7, label=f"{name} (published)")
    ax.set_xlabel("inner gradient steps")
    ax.set_ylabel("mean return (95% CI)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(result: Mapping[str, Any],
                   published: Mapping[str, Sequence[float]] | None = None) -> str:
    """Mean ± 95% CI after each step: ours (fixed sizes, then tuned), then published."""
    steps = len(next(iter(result["curves"].values()))["mean"])
    lines = ["| curve | " + " | ".join(f"k={k}" for k in range(steps)) + " |",
             "|---|" + "---|" * steps]
    for name, curve in result["curves"].items():
        cells = [f"{m:.2f} ± {c:.2f}" for m, c in zip(curve["mean"], curve["ci95"])]
        lines.append(f"| {name} (ours) | " + " | ".join(cells) + " |")
    for name, curve in result.get("curves_tuned", {}).items():
        sizes = ", ".join(f"{x:g}" for x in result["tuning"]["chosen"][name])
        cells = [f"{m:.2f} ± {c:.2f}" for m, c in zip(curve["mean"], curve["ci95"])]
        lines.append(f"| {name} (ours, sizes {sizes}) | " + " | ".join(cells) + " |")
    for name, values in (published or {}).items():
        cells = [f"{v:.2f}" for v in values] + [""] * (steps - len(values))
        lines.append(f"| {name} (published) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(result: Mapping[str, Any], directory: str | Path, stem: str,
          published: Mapping[str, Sequence[float]] | None = None, title: str = "",
          log: Callable[[str], Any] | None = print) -> str:
    """Write ``<directory>/<stem>.json`` and ``.png``; print and return the markdown table."""
    directory = Path(directory)
    record = {**result, "published": dict(published or {}), "title": title}
    path = directory / f"{stem}.json"
    if path.exists():
        path.unlink()  # one result per file: replace, do not merge
    update_json(path, record, metadata=False)
    plot_curves(record, directory / f"{stem}.png", published, title)
    table = markdown_table(record, published)
    if log is not None:
        log(f"\n{title} — {record['machine']}, JAX {record['jax']}")
        log(f"training: {record['iterations']} iterations in {record['train_s']:.0f} s "
            f"({record['seconds_per_iteration']:.2f} s/iter), "
            f"start-up and compile {record['compile_s'] or 0:.0f} s\n")
        log(table)
    return table
