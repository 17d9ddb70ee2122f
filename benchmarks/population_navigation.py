"""The MAML paper's 2D navigation as one population: several seeds and inner step sizes in one program.

The README's navigation result was one seed per process. Here every seed
and every training inner step size is a member of one population
(``metarl_jax.training.train(..., seeds=, sweep={"inner_lr": ...})``): one
compiled update trains all of them, and the runner's final evaluation puts
every member on the same 40 held-out goals with the same keys, so the
spread across seeds is the seeds' and not the goals' (the mean over seeds
± 95% CI over seeds, per inner step size).

Setting: ``benchmarks/maml_navigation.py``'s (goals ~ U[-0.5, 0.5]^2,
horizon 100, 2x100 ReLU policy, one vanilla-PG inner step on 20
trajectories, TRPO outer step, normalised actions, evaluation steps 0.1
then 0.05 on 40 trajectories), with a smaller meta-batch and fewer
iterations by default so the whole population trains in about 25 minutes
on a 2-core CPU (the flags say what ran; the JSON records it).

Writes ``results/population_navigation.{json,png}`` (plus the run
directory); ``docs/results/populations.md`` is generated from the JSON.

Usage: ``python benchmarks/population_navigation.py [--seeds 8] [--inner-lrs 0.1 0.2]
[--iterations 30] [--meta-batch-size 10] [--time-budget-min 25] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import shutil

from metarl_jax.algorithms import maml
from metarl_jax.training import train
from metarl_jax.training.report import update_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
PUBLISHED = {"maml": [-40.41, -11.68, -3.33, -3.23]}  # Finn et al. 2017, Fig. 4 data


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--inner-lrs", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--meta-batch-size", type=int, default=10)
    parser.add_argument("--time-budget-min", type=float, default=25.0)
    parser.add_argument("--quick", action="store_true", help="a tiny population (tests)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "population_navigation.json"))
    parser.add_argument("--run-dir", default=os.path.join(RESULTS, "scratch",
                                                          "population_navigation"))
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.iterations < 1 or args.meta_batch_size < 1:
        parser.error("--seeds, --iterations and --meta-batch-size must be >= 1")
    config = maml.Config(meta_batch_size=args.meta_batch_size, inner_episodes=20, horizon=100,
                         num_inner_steps=1, inner_lr=0.1, hidden_sizes=(100, 100),
                         activation="relu", outer_optimizer="trpo", eval_episodes=40,
                         eval_inner_lrs=(0.1, 0.05))
    eval_tasks = 40
    if args.quick:
        config = maml.Config(meta_batch_size=2, inner_episodes=2, horizon=10, hidden_sizes=(8,),
                             eval_episodes=2, eval_inner_lrs=(0.1, 0.05))
        eval_tasks = 4
    if os.path.isdir(args.run_dir):  # a new measurement, not a continuation
        shutil.rmtree(args.run_dir)
    result = train(maml, config, "navigation2d", args.run_dir,
                   family_options={"normalized_actions": True}, seeds=args.seeds,
                   sweep={"inner_lr": args.inner_lrs}, num_iterations=args.iterations,
                   eval_every=0, checkpoint_every=0, eval_num_tasks=eval_tasks, eval_num_steps=3,
                   time_budget_s=60.0 * args.time_budget_min, quiet=False)
    summary = result.adaptation_curve
    timing = (result.run_dir / "timing.csv").read_text().strip().splitlines()
    train_s = float(timing[-1].split(",")[1])
    members = len(summary["members"])
    env_steps_per_member = (result.iteration * config.meta_batch_size * config.inner_episodes
                            * config.horizon * (config.num_inner_steps + 1))
    out = {
        "config": {"seeds": args.seeds, "inner_lrs": args.inner_lrs,
                   "iterations": result.iteration, "requested_iterations": args.iterations,
                   "meta_batch_size": config.meta_batch_size,
                   "inner_episodes": config.inner_episodes, "horizon": config.horizon,
                   "hidden_sizes": list(config.hidden_sizes), "outer_optimizer": "trpo",
                   "eval_inner_lrs": list(config.eval_inner_lrs), "eval_tasks": eval_tasks,
                   "quick": args.quick},
        "members": members, "train_s": train_s, "seconds_per_iteration": train_s / max(
            result.iteration, 1),
        "env_steps_per_member": env_steps_per_member,
        "summary": {k: summary[k] for k in ("x", "xlabel", "curves", "groups", "num_tasks")},
        "per_member": [{"seed": m["seed"], "values": m["values"], "alive": m["alive"],
                        "curves": {n: {"mean": c["mean"], "ci95": c["ci95"]}
                                   for n, c in m["curves"].items()}}
                       for m in summary["members"]],
        "published": PUBLISHED,
        # other jobs on the machine slow the run; the learning result does not depend on it
        "load_average": list(os.getloadavg()),
    }
    shutil.copy(result.run_dir / "population_curve.png",
                os.path.splitext(args.out)[0] + ".png")
    update_json(args.out, out)
    for name, curve in summary["curves"].items():
        if name.startswith("maml"):
            print(f"{name:<22} " + "  ".join(f"{m:7.2f} ± {c:4.2f}"
                                            for m, c in zip(curve["mean"], curve["ci95"])))
    print(f"{members} members, {result.iteration} iterations, {train_s / 60:.1f} min; "
          f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
