"""Hessian-free meta-learners beside MAML-TRPO on 2D navigation: adaptation and env steps.

MAML-TRPO (second order, TRPO outer step), Reptile (first order: the outer
step moves towards the adapted parameters; included when
``metarl_jax.algorithms.reptile`` exists) and ES-MAML (zeroth order: the
meta-gradient is an antithetic ES estimate over a population of perturbed
initialisations), each meta-trained on ``navigation2d`` (the authors'
normalised actions, goals ~ U[-0.5, 0.5]^2, 100-step episodes) through
:func:`metarl_jax.training.runner.train` with the same wall-clock budget of
training time (``--minutes`` each; compile and evaluation excluded), then
evaluated on the same 40 held-out goals with the same key: the mean return
after 0..3 adaptation steps (40 trajectories per step, step size 0.1 at every
step for all three, so no learner gets a tuned schedule), with 95% CIs, and
the environment steps each used in training.

Env steps count every step slot of every trajectory a learner rolled out in
training (``episodes * horizon`` per rollout), as the MAML benchmarks count
MAML's: MAML ``meta_batch * inner_episodes * horizon * (K + 1)`` per
iteration, ES-MAML its ``env_steps`` metric (the ``2N + 1`` members'
adaptations, same count), Reptile its ``env_steps`` metric (its valid steps:
the same up to episodes that reach the goal and stop early). The learners'
"pretrained" baselines are not trained (``train_pretrained=False``), so every
step and second goes to the learner itself.

Settings: MAML-TRPO is ``benchmarks/maml_navigation.py`` 's (2x100 ReLU,
meta-batch 20 of 20 trajectories, one inner step of 0.1, TRPO max KL 0.01);
Reptile the same policy and batch with three inner steps and its outer step
``theta + (mean theta' - theta)``; ES-MAML its defaults (2x64 tanh, meta-batch
10 of 10 trajectories, 16 antithetic pairs of scale 0.1, one "pg" inner step of
0.1, Adam 0.01) with centred-rank fitness shaping.

Writes ``results/first_order_navigation.{json,png}`` (``--out``); ``--quick``
is a tiny smoke run (tiny networks and batches, a few seconds each) that writes
``first_order_navigation_quick.*`` so it never replaces a recorded result.

Usage: ``python benchmarks/first_order_navigation.py [--minutes 5] [--seed 0] [--quick]
[--learners maml,reptile,es_maml] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from pathlib import Path

import jax
import numpy as np

from metarl_jax import algorithms, tasks
from metarl_jax.training.logging import read_csv
from metarl_jax.training.report import (Progress, machine_metadata, mean_and_ci95, run_timing,
                                        update_json)
from metarl_jax.training.runner import run_keys, train

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FAMILY = "navigation2d"
FAMILY_OPTIONS = {"normalized_actions": True}
EVAL_TASKS, EVAL_STEPS = 40, 3
EVAL_KEY_INDEX = 5  # fold_in(PRNGKey(seed), 5): one evaluation key for every learner
LABELS = {"maml": "MAML-TRPO", "reptile": "Reptile", "es_maml": "ES-MAML"}


def available_learners() -> tuple[str, ...]:
    """MAML and ES-MAML, and Reptile where its module exists."""
    names = ["maml"]
    if importlib.util.find_spec("metarl_jax.algorithms.reptile") is not None:
        names.append("reptile")
    return (*names, "es_maml")


def config_of(name: str, quick: bool):
    """Each learner's config (module docstring); ``quick``: tiny networks and batches."""
    module = algorithms.get(name)
    if quick:
        size = dict(meta_batch_size=2, inner_episodes=2, horizon=20, hidden_sizes=(8,),
                    eval_episodes=4)
    else:
        size = dict(meta_batch_size=20, inner_episodes=20, horizon=100,
                    hidden_sizes=(100, 100), activation="relu", eval_episodes=40)
    if name == "maml":
        return module.Config(**size, num_inner_steps=1, inner_lr=0.1, outer_optimizer="trpo",
                             eval_inner_lrs=(), train_pretrained=False)
    if name == "reptile":
        return module.Config(**size, num_inner_steps=3, inner_lr=0.1, train_pretrained=False)
    if quick:
        return module.Config(**size, num_perturbations=2, fitness_shaping=True)
    return module.Config(fitness_shaping=True, eval_episodes=40)


def env_steps_used(name: str, config, run_dir: Path, iterations: int) -> int:
    """Env steps of the run's training (module docstring): the learner's ``env_steps``
    metric where it reports one, MAML's rollout count otherwise."""
    columns = read_csv(run_dir / "metrics.csv")
    if "env_steps" in columns:
        return int(np.sum(columns["env_steps"]))
    per_iteration = (config.meta_batch_size * config.inner_episodes * config.horizon
                     * (config.num_inner_steps + 1))
    return per_iteration * iterations


def run_learner(name: str, config, seed: int, budget_s: float, run_dir: Path,
                task_params, eval_key) -> dict:
    """Train ``name`` for ``budget_s`` seconds of training time, then evaluate it."""
    family = tasks.make(FAMILY, **FAMILY_OPTIONS)

    def line(iteration, metrics):
        return (f"  {name} it {iteration:5d}  pre {metrics['pre_adaptation_return']:8.2f}  "
                f"post {metrics['post_adaptation_return']:8.2f}  {metrics['elapsed_s']:.0f} s")

    progress = Progress(line, every=25)
    run = train(name, config, FAMILY, run_dir, family_options=FAMILY_OPTIONS, seed=seed,
                num_iterations=1_000_000, eval_every=0, checkpoint_every=0,
                eval_num_tasks=4, eval_num_steps=1, quiet=True, overwrite=True,
                time_budget_s=budget_s, progress_fn=progress)
    timing = run_timing(run.run_dir, progress)
    learner = algorithms.get(name).make(config, family)
    curves = jax.jit(learner.evaluate, static_argnums=3)(run.state, task_params, eval_key,
                                                        EVAL_STEPS)
    steps = env_steps_used(name, config, run.run_dir, run.iteration)
    out = {"label": LABELS[name], "config": dataclasses.asdict(config),
           "iterations": run.iteration, "train_s": timing["train_s"],
           "compile_s": timing["compile_s"], "env_steps": steps,
           "env_steps_per_iteration": steps / max(run.iteration, 1),
           "curve": mean_and_ci95(np.asarray(curves[name])),
           "random_init": mean_and_ci95(np.asarray(curves["random_init"]))}
    print(f"{LABELS[name]}: {run.iteration} iterations, {steps:,} env steps, "
          f"{timing['train_s']:.0f} s; return after 0..{EVAL_STEPS} steps "
          + ", ".join(f"{m:.2f}" for m in out["curve"]["mean"]), flush=True)
    return out


def plot(result: dict, path: Path) -> None:
    """Mean return after 0..3 adaptation steps with 95% CIs, one line per learner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    steps = np.arange(EVAL_STEPS + 1)
    for i, (name, run) in enumerate(result["learners"].items()):
        mean, ci = np.asarray(run["curve"]["mean"]), np.asarray(run["curve"]["ci95"])
        ax.plot(steps, mean, marker="o", color=f"C{i}",
                label=f"{run['label']} ({run['env_steps'] / 1e6:.1f}M env steps)")
        ax.fill_between(steps, mean - ci, mean + ci, alpha=0.15, color=f"C{i}")
    baseline = result["random_init"]
    ax.plot(steps, baseline["mean"], linestyle=":", color="grey", marker="x",
            label="random init (MAML's policy)")
    ax.set_xlabel("adaptation steps (policy gradient, step size 0.1)")
    ax.set_ylabel(f"mean return on {EVAL_TASKS} held-out goals (95% CI)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"navigation2d, {result['minutes']:g} min of training each", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="training time of each learner (compile and evaluation excluded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learners", default=None,
                        help="comma-separated subset of maml,reptile,es_maml (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny networks and batches, 3 s of training each")
    parser.add_argument("--out", default=None,
                        help="result JSON (default results/first_order_navigation.json; "
                             "_quick with --quick); the plot goes beside it as .png")
    parser.add_argument("--run-dir", default=None,
                        help="where the training runs go (default results/scratch/<stem>)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    known = available_learners()
    names = known if args.learners is None else tuple(args.learners.split(","))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown or unavailable learners {unknown}; available: {known}")
    stem = "first_order_navigation" + ("_quick" if args.quick else "")
    out = Path(args.out or os.path.join(RESULTS, f"{stem}.json"))
    run_root = Path(args.run_dir or os.path.join(RESULTS, "scratch", stem))
    minutes = 0.05 if args.quick else args.minutes
    family = tasks.make(FAMILY, **FAMILY_OPTIONS)
    # the runner's evaluation tasks of this seed, and one evaluation key, for every learner
    _, _, eval_tasks_key, _ = run_keys(args.seed)
    task_params = family.sample(eval_tasks_key, 4 if args.quick else EVAL_TASKS, "test")
    eval_key = jax.random.fold_in(jax.random.PRNGKey(args.seed), EVAL_KEY_INDEX)
    learners = {}
    load_before = os.getloadavg()  # the machine may be shared: its load says how much
    for name in names:
        learners[name] = run_learner(name, config_of(name, args.quick), args.seed,
                                     minutes * 60, run_root / name, task_params, eval_key)
    reference = learners.get("maml", next(iter(learners.values())))
    result = {"family": FAMILY, "family_options": FAMILY_OPTIONS, "split": "test",
              "eval_tasks": int(jax.tree.leaves(task_params)[0].shape[0]),
              "eval_steps": EVAL_STEPS, "seed": args.seed, "minutes": minutes,
              "quick": args.quick, "learners": learners,
              "random_init": reference["random_init"],
              "load_average": {"start": list(load_before), "end": list(os.getloadavg())},
              **machine_metadata()}
    if out.exists():
        out.unlink()  # one result per file: replace, do not merge
    update_json(out, result, metadata=False)
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({result['machine']})")
    return result


if __name__ == "__main__":
    main()
