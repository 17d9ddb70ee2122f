"""MAML on the CartPole family (pole length, masses and force varied).

Held-out return should improve after 1-3 inner steps and beat the pretrained
multi-task baseline, on the test split and on the out-of-range ("ood")
split. The family runs with ``random_push_direction=True``: besides the
physical constants, each task reverses the actuator with probability 1/2, so
no policy can do well on every task before it has seen which way the cart
moves. One training run with the library's training loop
(``metarl_jax.training.runner.train``; the run directory goes to
``--run-dir``, default ``benchmarks/results/scratch/<stem>``), evaluated on the
test and the ood split (``metarl_jax.training.adaptation``); writes
``results/maml_cartpole_{test,ood}.{json,png}`` (``maml_cartpole_h<N>_*`` for
another horizon, ``*_quick_*`` for a smoke test).

Usage: ``python benchmarks/maml_cartpole.py [--iterations 100] [--horizon 200] [--quick]
[--run-dir DIR]``. Why the push direction and the horizon: ``docs/notes/maml.md``.
"""

import argparse
import os

from metarl_jax.algorithms import maml
from metarl_jax.training.adaptation import (add_run_dir_argument, run_dir_of, train_and_evaluate,
                                            write)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--horizon", type=int, default=200,
                        help="steps per trajectory (results of other horizons get an _h<N> stem)")
    parser.add_argument("--quick", action="store_true", help="10 iterations, smoke test")
    add_run_dir_argument(parser)
    return parser.parse_args(argv)


def stem_of(args: argparse.Namespace) -> str:
    """``maml_cartpole``, ``_h<N>`` for a horizon other than 200, ``_quick`` for a smoke test."""
    stem = "maml_cartpole" if args.horizon == 200 else f"maml_cartpole_h{args.horizon}"
    return stem + ("_quick" if args.quick else "")


def config_of(args: argparse.Namespace) -> maml.Config:
    return maml.Config(
        meta_batch_size=20, inner_episodes=20, horizon=args.horizon, num_inner_steps=1,
        inner_lr=0.1, gamma=0.99, hidden_sizes=(64, 64), activation="tanh",
        outer_optimizer="trpo", eval_episodes=20)


def main(argv=None) -> list:
    args = parse_args(argv)
    iterations = 10 if args.quick else args.iterations
    stem = stem_of(args)
    run_dir, resume = run_dir_of(args.run_dir, RESULTS, stem)
    results = train_and_evaluate("cartpole", config_of(args), iterations, eval_tasks=40,
                                 eval_steps=3, split=("test", "ood"), seed=args.seed,
                                 family_options={"random_push_direction": True},
                                 run_dir=run_dir, resume=resume)
    for result in results:  # one training run, evaluated on both held-out splits
        split = result["split"]
        write(result, RESULTS, f"{stem}_{split}", None,
              f"MAML CartPole family, {split} split, horizon {args.horizon}")
    return results


if __name__ == "__main__":
    main()
