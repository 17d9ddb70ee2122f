"""Seconds per MAML meta-iteration, compile time and peak memory.

Headline: the PyTorch reference's 2D-navigation configuration (pytorch-maml-rl
``configs/maml/2d-navigation.yaml``: meta-batch 20, 20 trajectories x 100 steps
before and after adaptation, one inner step of 0.1, second order, TRPO with
10 CG iterations, 2x64 tanh policy) with the TRPO, Adam and PPO outer steps,
and its 10-armed, 100-pull bandit configuration. Then a sweep over meta-batch
size and inner steps, first vs second order.

Method: compile separately (timed on its own), ``block_until_ready``, each
timed call's output (the new learner state) feeds the next call so no work can
be deleted, repeat, report the median. Peak memory is XLA's compiled memory
analysis (arguments + outputs + temporaries), which works on CPU and GPU.

The PyTorch reference numbers are the ones measured on this same 2-core CPU
(pytorch-maml-rl at its published configs, 2 sampler workers), as recorded in
the project's issue tracker; ratios are reference / ours.

Usage: ``python benchmarks/maml_speed.py [--quick] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax

import metarl_jax
from metarl_jax.algorithms import maml

PYTORCH_REFERENCE_S = {"navigation2d": 9.7, "bandit-bernoulli-k10-n100": 1.6}
NAV = dict(meta_batch_size=20, inner_episodes=20, horizon=100, num_inner_steps=1,
           inner_lr=0.1, hidden_sizes=(64, 64), activation="tanh", train_pretrained=False)
BANDIT = dict(meta_batch_size=20, inner_episodes=100, horizon=1, num_inner_steps=1,
              inner_lr=0.5, gamma=0.95, hidden_sizes=(32, 32), activation="relu",
              train_pretrained=False)


def time_update(config, family, repeats, iterations=1):
    """(compile seconds, median seconds per iteration, peak bytes) of ``update``."""
    learner = maml.make(config, family)
    state = learner.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    update = jax.jit(learner.update)
    start = time.perf_counter()
    compiled = update.lower(state, key).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    peak = None
    if memory is not None:
        peak = int(memory.argument_size_in_bytes + memory.output_size_in_bytes
                   + memory.temp_size_in_bytes - getattr(memory, "alias_size_in_bytes", 0))
    state, metrics = compiled(state, key)  # warm-up
    jax.block_until_ready(state)
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(iterations):
            state, metrics = compiled(state, jax.random.fold_in(key, r * iterations + i))
        jax.block_until_ready((state, metrics))
        times.append((time.perf_counter() - start) / iterations)
    return compile_s, statistics.median(times), peak, float(metrics["post_adaptation_return"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="headline rows only, 3 repeats")
    parser.add_argument("--meta-batch-sizes", type=int, nargs="+",
                        default=[1, 4, 16, 64, 256, 1024])
    parser.add_argument("--sweep-outer", default="adam", choices=maml.OUTER_OPTIMIZERS,
                        help="outer optimizer of the sweep rows (adam isolates the meta-gradient)")
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "maml_speed.json"))
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    nav = metarl_jax.make("navigation2d")
    bandit = metarl_jax.make("bandit-bernoulli", arms=10)
    device = jax.devices()[0]
    machine = f"{device.device_kind} ({device.platform}), {os.cpu_count()} CPU cores, {platform.machine()}"
    rows = []

    def record(name, family_name, config, family, reference=None):
        compile_s, sec, peak, ret = time_update(config, family, repeats)
        row = dict(name=name, family=family_name, outer=config.outer_optimizer,
                   meta_batch_size=config.meta_batch_size, inner_steps=config.num_inner_steps,
                   first_order=config.first_order, compile_s=compile_s, seconds_per_iter=sec,
                   peak_bytes=peak,
                   env_steps_per_s=config.meta_batch_size * config.inner_episodes * config.horizon
                   * (config.num_inner_steps + 1) / sec,
                   speedup_vs_pytorch=(reference / sec) if reference else None)
        rows.append(row)
        print(f"{name:42s} {sec * 1e3:9.1f} ms/iter  compile {compile_s:6.1f} s  "
              f"peak {0 if peak is None else peak / 2**20:8.1f} MiB"
              + (f"  {reference / sec:6.1f}x vs PyTorch" if reference else ""), flush=True)

    for outer in ("trpo", "adam", "ppo"):
        record(f"navigation2d reference config, {outer}", "navigation2d",
               maml.Config(outer_optimizer=outer, **NAV), nav,
               PYTORCH_REFERENCE_S["navigation2d"])
    record("bandit k=10 n=100 reference config, trpo", "bandit-bernoulli",
           maml.Config(outer_optimizer="trpo", **BANDIT), bandit,
           PYTORCH_REFERENCE_S["bandit-bernoulli-k10-n100"])

    if not args.quick:
        for first_order in (False, True):
            for mb in args.meta_batch_sizes:
                config = maml.Config(outer_optimizer=args.sweep_outer, first_order=first_order,
                                     **{**NAV, "meta_batch_size": mb})
                record(f"nav {args.sweep_outer} mb={mb} K=1 {'FO' if first_order else 'SO'}",
                       "navigation2d", config, nav)
            for k in args.inner_steps:
                config = maml.Config(outer_optimizer=args.sweep_outer, first_order=first_order,
                                     **{**NAV, "num_inner_steps": k})
                record(f"nav {args.sweep_outer} mb=20 K={k} {'FO' if first_order else 'SO'}",
                       "navigation2d", config, nav)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "jax": jax.__version__, "repeats": repeats,
                   "pytorch_reference_seconds": PYTORCH_REFERENCE_S, "rows": rows}, f, indent=1)
    print(f"\nMachine: {machine}, JAX {jax.__version__}\n")
    print("| configuration | outer | meta-batch | K | order | s/iter | compile s | peak MiB "
          "| env steps/s | vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        vs = f"{r['speedup_vs_pytorch']:.0f}x" if r["speedup_vs_pytorch"] else ""
        print(f"| {r['name']} | {r['outer']} | {r['meta_batch_size']} | {r['inner_steps']} "
              f"| {'first' if r['first_order'] else 'second'} | {r['seconds_per_iter']:.3f} "
              f"| {r['compile_s']:.1f} | {peak} | {r['env_steps_per_s']:,.0f} | {vs} |")


if __name__ == "__main__":
    main()
