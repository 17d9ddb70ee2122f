"""Speed of one model-based control step: online adaptation + MPC, JAX against PyTorch.

A control step is what GrBAL does before every action: one gradient step of
the dynamics model on the last ``M = 16`` transitions, then random shooting
(``candidates x horizon`` imagined steps through the adapted model, learned
reward) and the first action of the best sequence. Sizes: the reference's
(3 x 512 model, 500 candidates x horizon 10), also with a 5-model ensemble,
and the per-step cost against the number of parallel envs (each with its own
window and adapted model). JAX runs the library's own controller
(``model_based.make(...).controller("mpc")``, vmapped over envs) on the
Pendulum obs/action sizes; the PyTorch peer computes the same step with
``torch.func`` (``functional_call`` + ``vmap`` over envs), the way a PyTorch
GrBAL would batch it. Compile time is reported apart; each timing is the
median of ``--repeats`` runs after a warm-up, and the timed result is the
actions (which depend on all the work).

    python benchmarks/model_based_speed.py
    python benchmarks/model_based_speed.py --sizes cpu     # 1 to 1,024 envs, CPU sizes
    python benchmarks/model_based_speed.py --quick

Results: ``benchmarks/results/model_based_speed.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import metarl_jax
from metarl_jax.algorithms import model_based
from metarl_jax.rl.planners import PlannerConfig
from metarl_jax.training.report import machine_metadata, update_json

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
OBS, ACT, M = 3, 1, 16


def jax_step(hidden, candidates, horizon, ensemble, batch, repeats):
    family = metarl_jax.make("pendulum")
    cfg = model_based.Config(hidden_sizes=hidden, ensemble_size=ensemble, past_length=M,
                             future_length=M, tasks_per_iteration=1, initial_random_episodes=1,
                             replay_capacity=400,
                             planner=PlannerConfig(num_candidates=candidates, horizon=horizon))
    learner = model_based.make(cfg, family, name="grbal")
    state = learner.init(jax.random.PRNGKey(0))
    task = family.sample(jax.random.PRNGKey(1), batch, "test")
    k = jax.random.split(jax.random.PRNGKey(2), 3)
    obs = jax.random.normal(k[0], (batch, OBS))
    window = jax.random.normal(k[1], (batch, M, 2 * OBS + ACT + 2))
    mask = jnp.ones((batch, M), bool)
    act = jax.jit(jax.vmap(learner.controller("mpc"), in_axes=((None, 0), 0, 0, 0, 0)))
    keys = jax.random.split(k[2], batch)
    tick = time.perf_counter()
    compiled = act.lower((state, task), obs, window, mask, keys).compile()
    compile_s = time.perf_counter() - tick
    jax.block_until_ready(compiled((state, task), obs, window, mask, keys))
    times = []
    for r in range(repeats):
        keys = jax.random.split(jax.random.fold_in(k[2], r), batch)
        tick = time.perf_counter()
        jax.block_until_ready(compiled((state, task), obs, window, mask, keys))
        times.append(time.perf_counter() - tick)
    return {"median_s": statistics.median(times), "compile_s": compile_s}


def torch_step(hidden, candidates, horizon, ensemble, batch, repeats):
    """The same control step in PyTorch (None if torch is missing)."""
    try:
        import torch
        from torch.func import functional_call, grad, vmap
    except ImportError:
        return None
    torch.manual_seed(0)
    layers, width = [], OBS + ACT
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, OBS + 1))
    net = torch.nn.Sequential(*layers)
    params = {n: p.detach() for n, p in net.named_parameters()}
    params = {n: p.expand((ensemble,) + p.shape).clone() for n, p in params.items()}
    lr = 1e-3

    def loss(p, x, y):
        return ((functional_call(net, p, (x,)) - y) ** 2).sum(-1).mean()

    def member_adapt(p, x, y):
        g = grad(loss)(p, x, y)
        return {n: p[n] - lr * g[n] for n in p}

    def member_returns(p, obs, actions):          # actions [N, H, A]
        o = obs.expand(actions.shape[0], OBS)
        total = torch.zeros(actions.shape[0])
        for t in range(horizon):
            out = functional_call(net, p, (torch.cat([o, actions[:, t]], -1),))
            o, total = o + out[:, :OBS], total + out[:, OBS]
        return total

    def env_step(obs, x, y, actions):
        adapted = vmap(member_adapt, in_dims=(0, None, None))(params, x, y)
        returns = vmap(member_returns, in_dims=(0, None, None))(adapted, obs, actions).mean(0)
        return actions[returns.argmax(), 0]

    obs = torch.randn(batch, OBS)
    x, y = torch.randn(batch, M, OBS + ACT), torch.randn(batch, M, OBS + 1)
    step = vmap(env_step, randomness="different")
    times = []
    with torch.no_grad():
        for r in range(repeats + 1):
            actions = torch.rand(batch, candidates, horizon, ACT) * 4 - 2
            tick = time.perf_counter()
            out = step(obs, x, y, actions)
            float(out.sum())
            if r:
                times.append(time.perf_counter() - tick)
    return {"median_s": statistics.median(times), "version": torch.__version__,
            "threads": torch.get_num_threads()}


# (hidden sizes, candidates, horizon), default parallel envs
SIZES = {"reference": (((512, 512, 512), 500, 10), "1,4,16,64"),
         "cpu": (((128, 128), 256, 15), "1,4,16,64,256,1024")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", choices=sorted(SIZES), default="reference",
                        help="reference: 3 x 512 model, 500 candidates x horizon 10; cpu: the "
                             "CPU training size of benchmarks/model_based.py (2 x 128, 256 x 15)")
    parser.add_argument("--batches", default=None,
                        help="parallel envs (default 1,4,16,64 at the reference size, "
                             "1,4,16,64,256,1024 at the CPU size)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    reference, default_batches = SIZES[args.sizes]
    args.batches = args.batches or default_batches
    args.out = args.out or os.path.join(
        RESULTS, "model_based_speed.json" if args.sizes == "reference"
        else f"model_based_speed_{args.sizes}.json")
    if args.quick:
        reference, args.batches, args.repeats = ((16,), 8, 3), "1,2", 2
    rows = []
    settings = [(1, 1)] + [(5, 1)] + [(1, int(b)) for b in args.batches.split(",") if b != "1"]
    for ensemble, batch in settings:
        hidden, candidates, horizon = reference
        row = {"hidden_sizes": list(hidden), "candidates": candidates, "horizon": horizon,
               "ensemble": ensemble, "envs": batch,
               "jax": jax_step(hidden, candidates, horizon, ensemble, batch, args.repeats),
               "torch": None if args.no_torch else torch_step(hidden, candidates, horizon,
                                                              ensemble, batch, args.repeats)}
        if row["torch"]:
            row["speedup"] = row["torch"]["median_s"] / row["jax"]["median_s"]
        row["jax_ms_per_env_step"] = 1e3 * row["jax"]["median_s"] / batch
        rows.append(row)
        print(f"ensemble {ensemble}, {batch} envs: JAX {1e3 * row['jax']['median_s']:.1f} ms"
              + (f", PyTorch {1e3 * row['torch']['median_s']:.1f} ms "
                 f"({row['speedup']:.1f}x)" if row["torch"] else ""), flush=True)
    result = {"rows": rows, "quick": args.quick, "repeats": args.repeats, "sizes": args.sizes}
    if args.sizes == "reference":
        result["not_run"] = ("256 and 1,024 parallel envs at the reference sizes: a GPU run "
                             "(at this CPU's cost per env, 10-40 s per control step)")
    update_json(args.out, {**result, **machine_metadata()})
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
