"""Train MAML on a task family and measure adaptation on held-out tasks.

Shared by ``maml_navigation.py`` (the MAML paper's 2D-navigation figure) and
``maml_cartpole.py``. Trains MAML and, inside the same compiled update, the
"pretrained" multi-task baseline; then evaluates MAML, pretrained and a random
initialisation on held-out tasks after 0..K inner steps, with 95% confidence
intervals, and writes JSON, a markdown table and a plot.
"""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import metarl_jax
from metarl_jax.algorithms import maml

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def machine_name() -> str:
    device = jax.devices()[0]
    return f"{device.device_kind} ({device.platform}), {os.cpu_count()} cores, {platform.machine()}"


def train_and_evaluate(family_name, config, iterations, eval_tasks, eval_steps, split="test",
                       seed=0, family_options=None, log_every=25, tune_lrs=None,
                       tune_tasks=100):
    """Train for ``iterations`` meta-iterations; return timings and curves.

    ``split`` is one split name (returns one result) or a tuple of them
    (trains once, evaluates on each, returns a list of results).

    ``tune_lrs``: candidate evaluation step sizes. If given, each curve
    (MAML, pretrained, random init) also gets its own step size per step,
    chosen by :func:`maml.select_eval_lrs` on ``tune_tasks`` fresh tasks of
    the train split (never the evaluation tasks), and the results add
    ``curves_tuned`` beside ``curves`` (the config's fixed schedule).
    """
    family = metarl_jax.make(family_name, **(family_options or {}))
    learner = maml.make(config, family)
    update = jax.jit(learner.update)
    key = jax.random.PRNGKey(seed)
    init_key, train_key, eval_key = jax.random.split(key, 3)
    state = learner.init(init_key)
    start = time.perf_counter()
    compiled = update.lower(state, train_key).compile()
    compile_s = time.perf_counter() - start
    history = []
    start = time.perf_counter()
    for i in range(iterations):
        state, metrics = compiled(state, jax.random.fold_in(train_key, i))
        if i % log_every == 0 or i == iterations - 1:
            metrics = {k: float(v) for k, v in metrics.items()}
            history.append({"iteration": i, **metrics})
            print(f"  it {i:4d}  pre {metrics['pre_adaptation_return']:8.2f}  "
                  f"post {metrics['post_adaptation_return']:8.2f}  "
                  f"pretrained {metrics.get('pretrained_return', float('nan')):8.2f}", flush=True)
    jax.block_until_ready(state)
    train_s = time.perf_counter() - start
    evaluate = jax.jit(learner.evaluate, static_argnums=3)
    tuning = None
    if tune_lrs is not None:
        tuning = tune_eval_lrs(learner, state, family, jax.random.fold_in(eval_key, 2),
                               eval_steps, tune_lrs, tune_tasks)
    results = []
    for name in ((split,) if isinstance(split, str) else tuple(split)):
        tasks = family.sample(eval_key, eval_tasks, split=name)
        curves = evaluate(state, tasks, jax.random.fold_in(eval_key, 1), eval_steps)
        extra = {}
        if tuning is not None:
            tuned = evaluate(state, tasks, jax.random.fold_in(eval_key, 1), eval_steps,
                             {name: jnp.asarray(lrs, jnp.float32)
                              for name, lrs in tuning["chosen"].items()})
            extra = {"curves_tuned": summarize(tuned), "tuning": tuning}
        results.append({
            "family": family_name, "family_options": dict(family_options or {}),
            "split": name, "iterations": iterations,
            "compile_s": compile_s, "train_s": train_s,
            "seconds_per_iteration": train_s / iterations, "eval_tasks": eval_tasks,
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in vars(config).items()},
            "curves": summarize(curves), **extra, "history": history, "machine": machine_name(),
            "jax": jax.__version__})
    return results[0] if isinstance(split, str) else results


def summarize(curves):
    """``{name: [tasks, K+1]}`` -> ``{name: {"mean": [K+1], "ci95": [K+1]}}``."""
    summary = {}
    for curve_name, per_task in curves.items():
        per_task = np.asarray(per_task)
        mean = per_task.mean(axis=0)
        ci95 = 1.96 * per_task.std(axis=0, ddof=1) / np.sqrt(per_task.shape[0])
        summary[curve_name] = {"mean": mean.tolist(), "ci95": ci95.tolist()}
    return summary


def tune_eval_lrs(learner, state, family, key, steps, candidates, num_tasks):
    """Per curve, the evaluation step size of each step, chosen on fresh train-split tasks."""
    task_key, play_key = jax.random.split(key)
    tasks = family.sample(task_key, num_tasks, split="train")
    params = {"maml": state.meta_params, "pretrained": state.pretrained_params,
              "random_init": state.random_init_params}
    chosen, scores = {}, {}
    for name, p in params.items():
        if p is None:
            continue
        start = time.perf_counter()
        chosen[name], scores[name] = maml.select_eval_lrs(learner, p, tasks, play_key, steps,
                                                          candidates)
        print(f"  eval step sizes for {name}: {chosen[name]} "
              f"({time.perf_counter() - start:.0f} s on {num_tasks} train-split tasks)", flush=True)
    return {"candidates": list(candidates), "tasks": num_tasks, "split": "train",
            "chosen": {k: list(v) for k, v in chosen.items()}, "scores": scores}


def plot_curves(result, path, published=None, title=""):
    """One colour per curve: the fixed schedule dotted, tuned sizes solid, published dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    names = list(result["curves"]) + [n for n in (published or {}) if n not in result["curves"]]
    colour = {name: f"C{i}" for i, name in enumerate(names)}
    styles = (("curves", "ours, fixed sizes", "o", ":"), ("curves_tuned", "ours, tuned sizes", "s", "-"))
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


def markdown_table(result, published=None):
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


def write(result, stem, published=None, title=""):
    os.makedirs(RESULTS, exist_ok=True)
    result = {**result, "published": published or {}, "title": title}
    with open(os.path.join(RESULTS, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot_curves(result, os.path.join(RESULTS, f"{stem}.png"), published, title)
    table = markdown_table(result, published)
    print(f"\n{title} — {result['machine']}, JAX {result['jax']}")
    print(f"training: {result['iterations']} iterations in {result['train_s']:.0f} s "
          f"({result['seconds_per_iteration']:.2f} s/iter), compile {result['compile_s']:.0f} s\n")
    print(table)
    return table
