"""The MAML paper's 2D-navigation result (Finn et al. 2017, Fig. 4 data).

Setting (``shared/REFERENCE.md``): goals ~ U[-0.5, 0.5]^2, horizon 100,
policy 2x100 ReLU, inner step vanilla policy gradient on 20 trajectories,
outer TRPO, meta-batch 20; evaluation on 40 held-out goals with 40
trajectories per step and step sizes 0.1 then 0.05. Prints our curves beside
the published ones and writes ``results/maml_navigation.{json,png}``.

Usage: ``python benchmarks/maml_navigation.py [--iterations 500] [--quick]``.
"""

import argparse

from maml_adaptation import train_and_evaluate, write

from metarl_jax.algorithms import maml

PUBLISHED = {
    "maml": [-40.41, -11.68, -3.33, -3.23],
    "pretrained": [-40.81, -19.73, -11.72, -8.48],
    "random_init": [-82.66, -57.96, -53.84, -46.81],
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--meta-batch-size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20 iterations, smoke test")
    args = parser.parse_args()
    config = maml.Config(
        meta_batch_size=args.meta_batch_size, inner_episodes=20, horizon=100,
        num_inner_steps=1, inner_lr=0.1, hidden_sizes=(100, 100), activation="relu",
        outer_optimizer="trpo", eval_episodes=40, eval_inner_lrs=(0.1, 0.05))
    iterations = 20 if args.quick else args.iterations
    result = train_and_evaluate("navigation2d", config, iterations, eval_tasks=40,
                                eval_steps=3, seed=args.seed)
    write(result, "maml_navigation", PUBLISHED, "MAML 2D navigation, 40 held-out goals")


if __name__ == "__main__":
    main()
