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

The PyTorch side, two numbers per headline row:

* **same run** (``vs torch port``): ``benchmarks/torch_maml_reference.py``,
  our own single-process PyTorch port of pytorch-maml-rl's MAML-TRPO
  meta-iteration (its algorithm: per-task linear feature baseline, GAE,
  normalised advantages, one second-order inner REINFORCE step, TRPO with
  double-backward KL Hessian-vector products, conjugate gradient and
  backtracking line search), at the same configurations, timed here in a
  subprocess with ``torch.set_num_threads(os.cpu_count())``. Its learner
  (per-task re-adaptation, surrogate, KL Hessian-vector products, line
  search) does pytorch-maml-rl's work task by task as it does, but its
  environments are vectorised in one process (all trajectories of all tasks
  stepped at once, no sampler worker processes or queues) and its baseline,
  GAE and normalisation are batched: it does less work than pytorch-maml-rl
  itself, so the ratio against it is conservative. ``tests/test_torch_reference.py`` checks that it
  computes the same mathematics as ``metarl_jax.algorithms.maml`` on identical
  parameters and trajectories. TRPO rows (navigation and bandit) are compared
  with the port's navigation and bandit numbers; the Adam and PPO navigation
  rows with the port's (TRPO) navigation number, since pytorch-maml-rl only
  has a TRPO outer step. Needs torch (``pip install -e .[bench]``); without it,
  or with ``--no-torch``, this column is skipped.
* **issue tracker** (``vs pytorch-maml-rl (issue)``): pytorch-maml-rl itself
  at its published configs with 2 sampler workers, measured earlier on this
  same 2-core CPU and recorded in the project's issue tracker
  (``PYTORCH_REFERENCE_S``), not re-measured here.

Ratios are PyTorch seconds / ours.

Usage: ``python benchmarks/maml_speed.py [--quick] [--repeats 5] [--no-torch]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax

import metarl_jax
from metarl_jax.algorithms import maml

# pytorch-maml-rl itself (2 sampler workers), from the issue tracker, not re-measured
PYTORCH_REFERENCE_S = {"navigation2d": 9.7, "bandit-bernoulli-k10-n100": 1.6}
TORCH_PORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_maml_reference.py")
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


def time_torch_port(repeats):
    """Run the PyTorch port (``torch_maml_reference.py``) in a subprocess.

    Returns ``({"navigation2d": result, "bandit": result}, None)`` or
    ``(None, reason)`` when it cannot run (torch not installed, or it failed).
    A subprocess keeps torch's and XLA's thread pools and memory apart.
    """
    if importlib.util.find_spec("torch") is None:
        return None, "torch is not installed (pip install -e .[bench])"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "torch.json")
        proc = subprocess.run([sys.executable, TORCH_PORT, "--kind", "both", "--repeats",
                               str(repeats), "--out", out], capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            return None, f"the PyTorch port failed: {proc.stderr.strip()[-500:]}"
        print(proc.stdout.strip(), flush=True)
        with open(out) as f:
            return {r["kind"]: r for r in json.load(f)}, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed iterations per row (default 5, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="headline rows only, 3 repeats")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip timing the PyTorch port in this run (issue-tracker numbers only)")
    parser.add_argument("--meta-batch-sizes", type=int, nargs="+",
                        default=[1, 4, 16, 64, 256, 1024])
    parser.add_argument("--sweep-outer", default="adam", choices=maml.OUTER_OPTIMIZERS,
                        help="outer optimizer of the sweep rows (adam isolates the meta-gradient)")
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "maml_speed.json"))
    args = parser.parse_args()
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    nav = metarl_jax.make("navigation2d")
    bandit = metarl_jax.make("bandit-bernoulli", arms=10)
    device = jax.devices()[0]
    machine = f"{device.device_kind} ({device.platform}), {os.cpu_count()} CPU cores, {platform.machine()}"
    rows = []

    torch_port, torch_skipped = None, "--no-torch given"
    if not args.no_torch:
        print("PyTorch port of pytorch-maml-rl (same run, subprocess):", flush=True)
        torch_port, torch_skipped = time_torch_port(repeats)
    if torch_port is None:
        print(f"Same-run PyTorch column skipped: {torch_skipped}", flush=True)
    print(flush=True)

    def record(name, family_name, config, family, reference=None, port_kind=None):
        compile_s, sec, peak, ret = time_update(config, family, repeats)
        port_s = torch_port[port_kind]["median_s"] if (torch_port and port_kind) else None
        row = dict(name=name, family=family_name, outer=config.outer_optimizer,
                   meta_batch_size=config.meta_batch_size, inner_steps=config.num_inner_steps,
                   first_order=config.first_order, compile_s=compile_s, seconds_per_iter=sec,
                   peak_bytes=peak,
                   env_steps_per_s=config.meta_batch_size * config.inner_episodes * config.horizon
                   * (config.num_inner_steps + 1) / sec,
                   torch_port_seconds_same_run=port_s,
                   speedup_vs_torch_port_same_run=(port_s / sec) if port_s else None,
                   pytorch_maml_rl_seconds_issue=reference,
                   speedup_vs_pytorch_maml_rl_issue=(reference / sec) if reference else None)
        rows.append(row)
        print(f"{name:42s} {sec * 1e3:9.1f} ms/iter  compile {compile_s:6.1f} s  "
              f"peak {0 if peak is None else peak / 2**20:8.1f} MiB"
              + (f"  {port_s / sec:6.1f}x vs torch port" if port_s else "")
              + (f"  {reference / sec:6.1f}x vs pytorch-maml-rl (issue)" if reference else ""),
              flush=True)

    for outer in ("trpo", "adam", "ppo"):
        record(f"navigation2d reference config, {outer}", "navigation2d",
               maml.Config(outer_optimizer=outer, **NAV), nav,
               PYTORCH_REFERENCE_S["navigation2d"], "navigation2d")
    record("bandit k=10 n=100 reference config, trpo", "bandit-bernoulli",
           maml.Config(outer_optimizer="trpo", **BANDIT), bandit,
           PYTORCH_REFERENCE_S["bandit-bernoulli-k10-n100"], "bandit")

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
                   "pytorch_maml_rl_seconds_issue": PYTORCH_REFERENCE_S,
                   "pytorch_maml_rl_issue_note": "pytorch-maml-rl itself, 2 sampler workers, "
                   "measured earlier on this CPU (issue tracker), not re-measured in this run",
                   "torch_port_same_run": torch_port,
                   "torch_port_note": "benchmarks/torch_maml_reference.py: our single-process "
                   "PyTorch port of pytorch-maml-rl's MAML-TRPO, envs vectorised in one process "
                   "(faster than pytorch-maml-rl's multi-process sampler, so the ratio is "
                   "conservative); timed in this run",
                   "torch_port_skipped": torch_skipped, "rows": rows}, f, indent=1)
    print(f"\nMachine: {machine}, JAX {jax.__version__}"
          + (f", torch {torch_port['navigation2d']['torch']}" if torch_port else "") + "\n")
    print("| configuration | outer | meta-batch | K | order | s/iter | compile s | peak MiB "
          "| env steps/s | vs torch port (same run) | vs pytorch-maml-rl (issue) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = "n/a" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        port = r["speedup_vs_torch_port_same_run"]
        issue = r["speedup_vs_pytorch_maml_rl_issue"]
        print(f"| {r['name']} | {r['outer']} | {r['meta_batch_size']} | {r['inner_steps']} "
              f"| {'first' if r['first_order'] else 'second'} | {r['seconds_per_iter']:.3f} "
              f"| {r['compile_s']:.1f} | {peak} | {r['env_steps_per_s']:,.0f} "
              f"| {f'{port:.1f}x' if port else ''} | {f'{issue:.1f}x' if issue else ''} |")
    if torch_port:
        print("\nPyTorch port (same run): " + ", ".join(
            f"{k} {v['median_s']:.3f} s/iter" for k, v in torch_port.items()))
    else:
        print(f"\nSame-run PyTorch column skipped: {torch_skipped}")


if __name__ == "__main__":
    main()
