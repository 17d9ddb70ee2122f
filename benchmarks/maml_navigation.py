"""The MAML paper's 2D-navigation result (Finn et al. 2017, Fig. 4 data).

Setting (``shared/REFERENCE.md``): goals ~ U[-0.5, 0.5]^2, horizon 100,
policy 2x100 ReLU, inner step vanilla policy gradient on 20 trajectories,
outer TRPO, meta-batch 20; evaluation on 40 held-out goals with 40
trajectories per step and step sizes 0.1 then 0.05. Trains with the
library's training loop (``metarl_jax.training.runner.train``; the run
directory goes to ``--run-dir``, default ``benchmarks/results/scratch/<stem>``),
evaluates the trained state (``metarl_jax.training.adaptation``), prints our
curves beside the published ones and writes ``results/maml_navigation.{json,png}``
(other flags add to the stem, e.g. ``_seed1``).

Actions are normalised as in the authors' code (``maml_examples/maml_trpo_point.py``
wraps the env in rllab's ``normalize``): the policy acts in ``[-1, 1]^2``, the
point moves by ``0.1 * clip(a, -1, 1)``. ``--raw-actions`` trains on
pytorch-maml-rl's unnormalised velocity instead. The authors trained 100
meta-iterations (``n_itr=100``); the default here is 200.

Evaluation step sizes: the fixed schedule (``--eval-lrs``, default 0.1 then
0.05) and, beside it, a schedule chosen per curve and per step from
``--tune-lrs`` on 100 goals drawn from the train split, never the 40 test
goals (``maml.select_eval_lrs``); the pretrained and random baselines get the
same tuning.

Usage: ``python benchmarks/maml_navigation.py [--iterations 200] [--raw-actions] [--quick]
[--run-dir DIR]``. Why these settings, and every run so far: ``docs/notes/maml.md``.
"""

import argparse
import os

from metarl_jax.algorithms import maml
from metarl_jax.training.adaptation import (add_run_dir_argument, run_dir_of, train_and_evaluate,
                                            write)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

PUBLISHED = {
    "maml": [-40.41, -11.68, -3.33, -3.23],
    "pretrained": [-40.81, -19.73, -11.72, -8.48],
    "random_init": [-82.66, -57.96, -53.84, -46.81],
}

TUNE_CANDIDATES = (0.5, 0.3, 0.2, 0.1, 0.075, 0.05, 0.0375, 0.025, 0.0125, 0.00625)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--raw-actions", action="store_true",
                        help="velocity actions clipped to [-0.1, 0.1] (pytorch-maml-rl) "
                             "instead of the authors' normalised [-1, 1]")
    parser.add_argument("--meta-batch-size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inner-lr", type=float, default=0.1,
                        help="training step size (the authors' ICML run used 0.5)")
    parser.add_argument("--eval-lrs", type=lambda s: tuple(float(x) for x in s.split(",")),
                        default=(0.1, 0.05),
                        help="evaluation step sizes, the last repeats (authors' code: 0.5,0.25)")
    parser.add_argument("--tune-lrs", type=lambda s: tuple(float(x) for x in s.split(",")),
                        default=TUNE_CANDIDATES,
                        help="candidate evaluation step sizes; each curve also gets its own "
                             "size per step, chosen on 100 train-split goals (not the test goals)")
    parser.add_argument("--no-tune", action="store_true", help="only the fixed --eval-lrs")
    parser.add_argument("--quick", action="store_true", help="20 iterations, smoke test")
    add_run_dir_argument(parser)
    return parser.parse_args(argv)


def stem_of(args: argparse.Namespace) -> str:
    """The results file's name: ``maml_navigation`` plus the flags that differ from the
    defaults (``_quick`` for a smoke test, so it never replaces a real result)."""
    iterations = 20 if args.quick else args.iterations
    stem = "maml_navigation"
    if args.inner_lr != 0.1:
        stem += f"_lr{args.inner_lr:g}"
    if args.meta_batch_size != 20:
        stem += f"_mb{args.meta_batch_size}"
    if iterations != 200 and not args.quick:
        stem += f"_it{iterations}"
    if args.seed != 0:
        stem += f"_seed{args.seed}"
    if args.quick:
        stem += "_quick"
    return stem


def config_of(args: argparse.Namespace) -> maml.Config:
    """The paper's setting, with the flags' meta-batch, training and evaluation step sizes."""
    return maml.Config(
        meta_batch_size=args.meta_batch_size, inner_episodes=20, horizon=100,
        num_inner_steps=1, inner_lr=args.inner_lr, hidden_sizes=(100, 100), activation="relu",
        outer_optimizer="trpo", eval_episodes=40, eval_inner_lrs=args.eval_lrs)


def main(argv=None) -> dict:
    args = parse_args(argv)
    iterations = 20 if args.quick else args.iterations
    stem = stem_of(args)
    run_dir, resume = run_dir_of(args.run_dir, RESULTS, stem)
    result = train_and_evaluate("navigation2d", config_of(args), iterations, eval_tasks=40,
                                eval_steps=3, seed=args.seed,
                                tune_lrs=None if args.no_tune else args.tune_lrs,
                                family_options={"normalized_actions": not args.raw_actions},
                                run_dir=run_dir, resume=resume)
    write(result, RESULTS, stem, PUBLISHED,
          f"MAML 2D navigation, 40 held-out goals (inner lr {args.inner_lr:g}, "
          f"eval lrs {', '.join(f'{x:g}' for x in args.eval_lrs)}, "
          f"meta-batch {args.meta_batch_size}, seed {args.seed})")
    return result


if __name__ == "__main__":
    main()
