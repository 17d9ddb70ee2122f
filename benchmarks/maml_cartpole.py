"""MAML on the CartPole family (pole length, masses and force varied).

Held-out return should improve after 1-3 inner steps and beat the pretrained
multi-task baseline, on the test split and on the out-of-range ("ood")
split. Writes ``results/maml_cartpole_{test,ood}.{json,png}``.

Usage: ``python benchmarks/maml_cartpole.py [--iterations 200] [--quick]``.
"""

import argparse

from maml_adaptation import train_and_evaluate, write

from metarl_jax.algorithms import maml


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 iterations, smoke test")
    args = parser.parse_args()
    config = maml.Config(
        meta_batch_size=20, inner_episodes=20, horizon=200, num_inner_steps=1, inner_lr=0.1,
        gamma=0.99, hidden_sizes=(64, 64), activation="tanh", outer_optimizer="trpo",
        eval_episodes=20)
    iterations = 10 if args.quick else args.iterations
    for split in ("test", "ood"):
        result = train_and_evaluate("cartpole", config, iterations, eval_tasks=40,
                                    eval_steps=3, split=split, seed=args.seed)
        write(result, f"maml_cartpole_{split}", None, f"MAML CartPole family, {split} split")


if __name__ == "__main__":
    main()
