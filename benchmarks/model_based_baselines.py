"""Sample efficiency: GrBAL and MB against MAML-TRPO and RL² on the same changing pendulum.

Reads GrBAL's and MB's return-vs-env-steps histories from
``model_based_pendulum.json`` (``benchmarks/model_based.py``) and trains,
on the same family (Pendulum-v1, mass and length redrawn every 50 steps)
and the same 40 held-out test tasks and key, MAML-TRPO (its navigation
config with 200-step episodes) and RL² (a GRU over a 2-episode trial) for
``--minutes`` of wall clock each, evaluating every ``--eval-every``
iterations. A point is (real env steps used in training, held-out return of
one episode): MAML's return after its one inner step (which spends
``inner_episodes`` more episodes on the task), RL²'s first episode of the
trial. The record adds, for each baseline, the env steps at which GrBAL and
MB first reached that baseline's best return, and the ratio. The budget is
far below what MAML and RL² need to converge on this family, so their best
return here is a lower bound on what they would reach; the page says so.

    python benchmarks/model_based_baselines.py --minutes 6
    python benchmarks/model_based_baselines.py --quick
    python benchmarks/model_based_baselines.py \
        --source benchmarks/results/model_based_pendulum_known.json \
        --baselines-from benchmarks/results/model_based_pendulum.json   # no retraining

Results: the ``baselines`` entry of ``benchmarks/results/model_based_pendulum.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

import metarl_jax
from metarl_jax.algorithms import maml, rl2
from metarl_jax.training.report import mean_and_ci95, read_json, update_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def configs(quick: bool) -> dict:
    if quick:
        return {"maml": maml.Config(meta_batch_size=2, inner_episodes=2, horizon=20,
                                    hidden_sizes=(8,), eval_episodes=2, train_pretrained=False),
                "rl2": rl2.Config(trial_episodes=2, meta_batch_size=4, hidden_size=8)}
    return {"maml": maml.Config(meta_batch_size=20, inner_episodes=10, horizon=200,
                                eval_episodes=10, train_pretrained=False),
            "rl2": rl2.Config(trial_episodes=2, meta_batch_size=32, hidden_size=64)}


def train(name, cfg, family, tasks, key, minutes, eval_every):
    module = {"maml": maml, "rl2": rl2}[name]
    learner = module.make(cfg, family)
    state = learner.init(key)
    update = jax.jit(learner.update).lower(state, key).compile()   # compile apart
    evaluate = jax.jit(lambda s, t, k: learner.evaluate(s, t, k, 1))
    per_iteration = (cfg.meta_batch_size * cfg.inner_episodes * cfg.horizon
                     * (cfg.num_inner_steps + 1)) if name == "maml" else None

    def point(iteration, steps, train_s):
        curves = np.asarray(evaluate(state, tasks, key)[name])
        # MAML: after its inner step (index 1); RL²: the trial's first episode
        returns = curves[:, 1] if name == "maml" else curves[:, 0]
        row = {"iteration": iteration, "env_steps": steps, "train_s": train_s,
               "return": mean_and_ci95(returns[:, None])}
        print(f"{name} iteration {iteration}: {steps} env steps, {train_s:.0f} s, "
              f"return {row['return']['mean'][0]:.1f}", flush=True)
        return row

    history, steps, train_s, iteration = [], 0, 0.0, 0
    while train_s < minutes * 60:
        tick = time.perf_counter()
        state, metrics = update(state, jax.random.fold_in(key, iteration))
        jax.block_until_ready(state)
        train_s += time.perf_counter() - tick
        iteration += 1
        steps += per_iteration if per_iteration else int(metrics["env_steps"])
        if iteration % eval_every == 0 or iteration == 1 or train_s >= minutes * 60:
            history.append(point(iteration, steps, train_s))
    return {"config": dataclasses.asdict(cfg), "history": history, "env_steps": steps,
            "train_s": train_s, "iterations": iteration}


def first_reach(history, target):
    row = next((r for r in history if r["return"]["mean"][0] >= target), None)
    return None if row is None else row["env_steps"]


def reused_baselines(path: str, data: dict) -> dict:
    """The MAML-TRPO and RL² runs recorded in ``path``, checked to be on the same family
    options and held-out tasks as ``data`` (a different family would be a wrong answer)."""
    other = read_json(path)
    if not other or set(other.get("baselines", {})) != {"maml", "rl2"}:
        raise SystemExit(f"{path} has no recorded MAML-TRPO and RL² baselines")
    for field in ("family_options", "eval_tasks"):
        if other.get(field) != data.get(field):
            raise SystemExit(f"{path} was recorded with {field}={other.get(field)!r}, the "
                             f"source with {data.get(field)!r}: its baselines do not apply")
    # each reused run keeps the machine and date it was trained on (this file's are the source's)
    return {name: {**run, "machine": other.get("machine"), "date": other.get("date")}
            for name, run in other["baselines"].items()}


def plot(data: dict, path: str) -> None:
    """Held-out return against real env steps, log x axis, mean ± 95% CI."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {name: data["learners"][name]["history"] for name in ("grbal", "mb")
            if name in data["learners"]}
    runs.update({"MAML-TRPO" if name == "maml" else "RL²": run["history"]
                 for name, run in data.get("baselines", {}).items()})
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, history in runs.items():
        steps = np.array([max(r["env_steps"], 1) for r in history])
        mean = np.array([r["return"]["mean"][0] for r in history])
        ci = np.array([r["return"]["ci95"][0] for r in history])
        ax.plot(steps, mean, marker="o", label=label)
        ax.fill_between(steps, mean - ci, mean + ci, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("real environment steps (training)")
    ax.set_ylabel("held-out return, one episode")
    ax.set_title("Changing pendulum: sample efficiency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--source", default=os.path.join(RESULTS, "model_based_pendulum.json"))
    parser.add_argument("--baselines-from", default=None,
                        help="reuse the MAML-TRPO and RL² runs recorded in this results file "
                             "(same family options and held-out tasks) instead of training")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    data = read_json(args.source)
    if not data or "grbal" not in data.get("learners", {}):
        raise SystemExit(f"{args.source} has no GrBAL run: run benchmarks/model_based.py first")
    if args.baselines_from:
        recorded = reused_baselines(args.baselines_from, data)
    family = metarl_jax.make("pendulum", **data["family_options"])
    tasks = family.sample(jax.random.PRNGKey(1), data["eval_tasks"], "test")
    key = jax.random.PRNGKey(2)
    minutes = 0.02 if args.quick else args.minutes
    baselines = {}
    for name, cfg in configs(args.quick).items():
        if args.baselines_from:
            # the recorded run only: what it was compared with there is recomputed below
            run = {k: v for k, v in recorded[name].items()
                   if not k.endswith(("_steps_to_best", "_ratio"))}
            run["reused_from"] = os.path.basename(args.baselines_from)
        else:
            run = train(name, cfg, family, tasks, key, minutes,
                        1 if args.quick else args.eval_every)
        best_row = max(run["history"], key=lambda r: r["return"]["mean"][0])
        best = best_row["return"]["mean"][0]
        run["best_return"], run["best_env_steps"] = best, best_row["env_steps"]
        for learner in ("grbal", "mb"):
            if learner in data["learners"]:
                reached = first_reach(data["learners"][learner]["history"], best)
                run[f"{learner}_steps_to_best"] = reached
                run[f"{learner}_ratio"] = (None if reached is None
                                           else best_row["env_steps"] / reached)
        baselines[name] = run
    out = args.out or args.source
    # reused runs keep their own machine and date; the file's stay those of its own runs
    merged = update_json(out, {"baselines": baselines}, metadata=not args.baselines_from)
    plot(merged, os.path.splitext(out)[0] + "_sample_efficiency.png")
    print(f"wrote {out}")
    return baselines


if __name__ == "__main__":
    main()
