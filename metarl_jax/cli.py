"""The ``metarl`` command line: train, evaluate, and list families and algorithms.

::

    metarl train maml --family navigation2d               # small CPU job, a few minutes
    metarl train maml --family navigation2d --set inner_lr=0.05 --iterations 200
    metarl train maml --help                               # lists maml's config fields
    metarl train maml --resume runs/maml-navigation2d-20250101-120000 --iterations 400
    metarl evaluate runs/maml-navigation2d-20250101-120000 --split ood --num-steps 5
    metarl ensemble runs/maml-nav-a runs/maml-nav-b runs/maml-nav-c --out runs/ensemble
    metarl families
    metarl algorithms

Bad input (unknown algorithm, family or config key, a value of the wrong
type, an existing run directory) ends with exit code 2 and a one-line
message that names the culprit; a run stopped by NaN/Inf ends with exit code 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from metarl_jax import __version__, algorithms, tasks
from metarl_jax.training.config import (
    ConfigError,
    config_to_dict,
    config_from_dict,
    describe_fields,
    load_config_file,
    merge,
    parse_assignments,
)
from metarl_jax.training.ensemble import format_table, run_ensemble
from metarl_jax.training.runner import (NonFiniteError, RunDirectoryError, evaluate_run, train,
                                        upgrade_identity)

# runner settings the CLI exposes: (flag, train() argument, help)
RUNNER_OPTIONS = (
    ("--iterations", "num_iterations", "total meta-iterations"),
    ("--iterations-per-call", "iterations_per_call",
     "meta-iterations per compiled host call (lax.scan); the counts below must be multiples"),
    ("--eval-every", "eval_every", "evaluate on held-out test tasks every N iterations "
                                   "(0: only at the end)"),
    ("--checkpoint-every", "checkpoint_every", "save a checkpoint every N iterations "
                                               "(0: only at the end)"),
    ("--eval-num-tasks", "eval_num_tasks", "held-out test tasks per evaluation"),
    ("--eval-num-steps", "eval_num_steps",
     "adaptation steps (MAML) or episodes (RL²) in the evaluation curve"),
    ("--seed", "seed", "random seed; every key of the run derives from it"),
)


def _train_default(name: str) -> Any:
    return inspect.signature(train).parameters[name].default


def _default_text(name: str) -> str:
    default = _train_default(name)
    return "the learner's" if default is None else str(default)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that keeps the epilog's layout and reports errors in one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _config_epilog(algorithm: str | None) -> str:
    if algorithm is None:
        return ("Run `metarl train ALGO --help` to list the config fields of ALGO "
                f"(one of: {', '.join(algorithms.list_algorithms())}).")
    try:
        module = algorithms.get(algorithm)
    except ImportError as err:
        return f"(the config fields of {algorithm} are unavailable: {err})"
    rows = describe_fields(module.Config)
    width = max(len(name) for name, _, _ in rows)
    lines = [f"config fields of {algorithm} (set with --set KEY=VALUE or --config FILE):"]
    # a nested config (model_based's planner) shows as its fields, set as planner.KEY=VALUE
    shown = [(name, type_name, config_to_dict(default) if dataclasses.is_dataclass(default)
              else default) for name, type_name, default in rows]
    lines += [f"  {name:<{width}}  {json.dumps(default)}  ({type_name})"
              for name, type_name, default in shown]
    return "\n".join(lines)


def build_parser(train_algorithm: str | None = None) -> argparse.ArgumentParser:
    """The ``metarl`` parser; ``train_algorithm`` selects whose config fields
    ``metarl train ALGO --help`` lists."""
    parser = _Parser(prog="metarl", description="Meta-reinforcement learning in JAX.")
    parser.add_argument("--version", action="version", version=f"metarl_jax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train", help="meta-train an algorithm on a task family",
        description="Meta-train ALGO on a task family. Writes a run directory (config.json,\n"
                    "metrics.csv, eval.csv, timing.csv, TensorBoard events, checkpoints,\n"
                    "adaptation_curve.json/png, training_curve.png) and prints its path.",
        epilog=_config_epilog(train_algorithm))
    p.add_argument("algorithm", metavar="ALGO", choices=algorithms.list_algorithms(),
                   help=f"algorithm: {', '.join(algorithms.list_algorithms())}")
    p.add_argument("--family", metavar="NAME",
                   help="task family (see `metarl families`); required unless --resume")
    p.add_argument("--family-option", metavar="KEY=VALUE", action="append", default=[],
                   help="option of the family's factory, e.g. arms=10 (repeatable; default: none)")
    p.add_argument("--config", metavar="FILE", help="JSON or TOML file of config fields "
                                                   "(default: the algorithm's defaults)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                   help="config field, value parsed as JSON: --set inner_lr=0.05 "
                        "--set hidden_sizes=[64,64] (repeatable; applied after --config)")
    for flag, name, text in RUNNER_OPTIONS:
        p.add_argument(flag, type=int, default=None, dest=name, metavar="N",
                       help=f"{text} (default: {_default_text(name)}; with --resume: the run's)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="output directory (default: runs/<algo>-<family>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its last good checkpoint; algorithm, config, "
                        "family and seed must match (default: start a new run)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --run-dir (default: refuse)")
    p.add_argument("--mesh", choices=("auto", "on", "off"), default="auto",
                   help="shard the task axis over all devices: auto = when more than one "
                        "device is visible (default: auto)")
    p.add_argument("--time-budget", type=float, metavar="MIN", default=None,
                   help="stop after MIN minutes of training (the whole run's, resumed "
                        "segments included); evaluated and checkpointed like the end")
    p.add_argument("--checkpoint-dir", metavar="DIR", default=None,
                   help="where the checkpoints go (default: RUN_DIR/checkpoints)")
    p.add_argument("--seeds", metavar="N", default=None,
                   help="train a population in one compiled program: N seeds (--seed .. "
                        "--seed+N-1) or a comma list of seeds (default: one plain run)")
    p.add_argument("--sweep", metavar="FIELD=V1,V2,...", action="append", default=[],
                   help="per-member values of a config field, e.g. --sweep inner_lr=0.05,0.1 "
                        "(repeatable; the population is the grid seeds x sweeps; only fields "
                        "that do not change shapes, see `metarl algorithms`)")
    p.add_argument("--member-shards", type=int, metavar="N", default=None,
                   help="with a mesh, devices along a population's members axis; the rest "
                        "split each member's tasks (default: the largest count dividing both "
                        "the devices and the population)")
    p.add_argument("--on-nan", choices=("stop", "drop"), default=None,
                   help="a population member turning non-finite stops the run or is dropped "
                        "(default: stop)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    p.set_defaults(handler=_cmd_train)

    p = commands.add_parser(
        "evaluate", help="adaptation curves of a trained run",
        description="Restore RUN_DIR's last good checkpoint and measure its adaptation curve "
                    "(and the baselines') on held-out tasks; writes evaluation_<split>.json/png.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", choices=tasks.SPLITS[1:], default="test",
                   help="test: same distribution as training, new tasks; ood: parameter "
                        "ranges disjoint from training (default: test)")
    p.add_argument("--num-tasks", type=int, metavar="N",
                   help="tasks to average over (default: the run's eval_num_tasks)")
    p.add_argument("--num-steps", type=int, metavar="K",
                   help="adaptation steps/episodes (default: the run's eval_num_steps)")
    p.add_argument("--seed", type=int, metavar="S",
                   help="seed of the evaluation tasks (default: the run's seed, which "
                        "reproduces its final evaluation)")
    p.add_argument("--mesh", choices=("auto", "on", "off"), default="auto",
                   help="shard the task axis over all devices (default: auto)")
    p.set_defaults(handler=_cmd_evaluate)

    p = commands.add_parser("families", help="list task families and their parameter ranges",
                            description="List the registered task families, their parameter "
                                        "ranges per split, and their options.")
    p.set_defaults(handler=_cmd_families)

    p = commands.add_parser("algorithms", help="list algorithms",
                            description="List the registered meta-learning algorithms.")
    p.set_defaults(handler=_cmd_algorithms)

    p = commands.add_parser(
        "ensemble", help="performance-weighted ensemble of trained runs",
        description="Ensemble the trained RUN_DIRs (maml or rl2 runs of one family): measure\n"
                    "each member on validation tasks of the train split, choose Hedge's eta on\n"
                    "other validation tasks, and compare the weighted mixture with the best\n"
                    "member, the uniform mixture and the online selector (ESBAS) on held-out\n"
                    "test tasks. Writes ensemble.json into --out.")
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+")
    p.add_argument("--out", metavar="DIR",
                   help="output directory (default: ensemble/ beside the first RUN_DIR)")
    p.add_argument("--eta", type=float, action="append", metavar="ETA",
                   help="Hedge temperature candidate(s), inf allowed (repeatable; default: "
                        "0, a scale-free grid, inf, chosen on validation tasks)")
    p.add_argument("--num-tasks", type=int, default=100, metavar="N",
                   help="test tasks, and tasks in each validation set (default: 100)")
    p.add_argument("--num-episodes", type=int, metavar="E",
                   help="episodes per task (default: the members' evaluation: MAML's "
                        "eval_episodes after adaptation, RL²'s evaluation trial)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the validation and test tasks (default: 0)")
    p.set_defaults(handler=_cmd_ensemble)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metarl`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[1] if len(argv) > 1 and argv[0] == "train" else None
    parser = build_parser(chosen if chosen in algorithms.ALGORITHMS else None)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except NonFiniteError as err:
        print(f"metarl: {err}", file=sys.stderr)
        return 1
    except (ConfigError, RunDirectoryError, ValueError, TypeError, FileNotFoundError) as err:
        message = " ".join(str(err).split("\n"))
        print(f"metarl: error: {message}", file=sys.stderr)
        return 2


# -- commands --------------------------------------------------------------------------------


def _mesh(choice: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[choice]


def _cmd_train(args: argparse.Namespace) -> int:
    saved: dict[str, Any] = {}
    if args.resume:
        config_path = Path(args.resume) / "config.json"
        if not config_path.is_file():
            raise RunDirectoryError(f"cannot resume {args.resume!r}: it is not a run directory "
                                    "(no config.json)")
        saved = json.loads(config_path.read_text())
        if saved["algorithm"] != args.algorithm:
            raise RunDirectoryError(f"{args.resume!r} is a {saved['algorithm']!r} run, "
                                    f"not {args.algorithm!r}")
        if args.run_dir and Path(args.run_dir) != Path(args.resume):
            raise ValueError("--run-dir and --resume name different directories")
    family = args.family or saved.get("family")
    if family is None:
        raise ValueError(f"--family is required; known families: "
                         f"{', '.join(tasks.list_families())}")
    saved_options = (saved.get("family_options") or {}) if family == saved.get("family") else {}
    family_options = merge(saved_options,
                           parse_assignments(args.family_option, "--family-option"))
    module = algorithms.get(args.algorithm)
    saved = upgrade_identity(saved, saved.get("settings_version", 1), module) if saved else saved
    config_dict = dict(saved.get("algorithm_config", {}))
    if args.config:
        config_dict = merge(config_dict, load_config_file(args.config))
    config_dict = merge(config_dict, parse_assignments(args.overrides, "--set"))
    config = config_from_dict(module.Config, config_dict)
    runner = {name: (getattr(args, name) if getattr(args, name) is not None
                     else saved.get(name, _train_default(name)))
              for _, name, _ in RUNNER_OPTIONS}
    seeds, sweep = _population(args, saved, runner["seed"])
    result = train(args.algorithm, config, family, args.resume or args.run_dir,
                   seeds=seeds, sweep=sweep, on_nan=args.on_nan or saved.get("on_nan", "stop"),
                   member_shards=args.member_shards,
                   family_options=family_options, quiet=args.quiet, resume=bool(args.resume),
                   overwrite=args.overwrite, use_mesh=_mesh(args.mesh),
                   time_budget_s=None if args.time_budget is None else 60.0 * args.time_budget,
                   checkpoint_dir=args.checkpoint_dir or saved.get("checkpoint_dir"), **runner)
    print(_curve_table(result.adaptation_curve))
    print(f"run directory:    {result.run_dir}")
    print(f"adaptation curve: {result.adaptation_curve_plot}")
    print(f"training curve:   {result.training_curve_plot}")
    if (result.run_dir / "population_curve.png").exists():
        print(f"every member:     {result.run_dir / 'population_curve.png'}")
    return 0


def _population(args: argparse.Namespace, saved: dict[str, Any], seed: int
                ) -> tuple[list[int] | None, dict[str, list[float]] | None]:
    """``(seeds, sweep)`` for ``train`` from --seeds/--sweep, or from a resumed run."""
    sweep: dict[str, list[float]] = {}
    for item in args.sweep:
        field, sep, values = item.partition("=")
        if not sep or not field.strip() or not values.strip():
            raise ValueError(f"--sweep expects FIELD=V1,V2,..., got {item!r}")
        if field.strip() in sweep:
            raise ValueError(f"--sweep names {field.strip()!r} twice")
        try:
            sweep[field.strip()] = [float(v) for v in values.split(",")]
        except ValueError:
            raise ValueError(f"--sweep {field.strip()}: values must be numbers, got "
                             f"{values!r}") from None
    seeds = None
    if args.seeds is not None:
        try:
            parts = [int(v) for v in str(args.seeds).split(",")]
        except ValueError:
            raise ValueError(f"--seeds expects a count or a comma list of seeds, got "
                             f"{args.seeds!r}") from None
        if len(parts) == 1 and "," not in str(args.seeds):
            if parts[0] < 1:
                raise ValueError(f"--seeds must be at least 1, got {parts[0]}")
            parts = list(range(seed, seed + parts[0]))
        seeds = parts
    if seeds is None and not sweep and saved.get("population"):
        members = saved["population"]["members"]  # a resumed population: the same members
        seeds = list(dict.fromkeys(int(m["seed"]) for m in members))
        names = list(members[0]["values"])
        sweep = {n: list(dict.fromkeys(float(m["values"][n]) for m in members)) for n in names}
    return seeds, (sweep or None)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    summary, json_path, png_path = evaluate_run(
        args.run_dir, split=args.split, num_tasks=args.num_tasks, num_steps=args.num_steps,
        seed=args.seed, use_mesh=_mesh(args.mesh))
    print(_curve_table(summary))
    print(f"results: {json_path}")
    print(f"plot:    {png_path}")
    return 0


def _cmd_families(args: argparse.Namespace) -> int:
    del args
    for name, description in tasks.family_descriptions().items():
        print(f"{name}: {description}")
        options = tasks.family_options(name)
        if options:
            print("  options: " + ", ".join(f"{k}={v!r}" for k, v in options.items()))
        try:
            family = tasks.make(name)
        except Exception as err:  # report a broken family, keep listing the others
            print(f"  (cannot be built: {type(err).__name__}: {err})")
            continue
        for split in family.splits:
            fields = family.ranges.get(split, family.ranges.get("train", {}))
            ranges = ", ".join(f"{field} in {_format_range(value)}"
                               for field, value in fields.items())
            print(f"  {split:<5}  {ranges or '-'}" + ("  (train distribution, other tasks)"
                                                      if split == "test" else ""))
    return 0


def _cmd_algorithms(args: argparse.Namespace) -> int:
    del args
    for name in algorithms.list_algorithms():
        try:
            module = algorithms.get(name)
        except ImportError as err:
            print(f"{name:<8} (unavailable: {err})")
            continue
        print(f"{name:<8} {(module.__doc__ or '').strip().split(chr(10))[0]}")
        fields = getattr(module, "HYPERPARAMETERS", ())
        if fields:  # what a population may give per member
            print(f"{'':<8}   per-member (--sweep): {', '.join(fields)}")
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    result, path = run_ensemble(args.run_dirs, args.out, num_tasks=args.num_tasks,
                                num_episodes=args.num_episodes, seed=args.seed, etas=args.eta)
    print(format_table(result))
    print(f"results: {path}")
    return 0


# -- output ----------------------------------------------------------------------------------


def _format_range(value: Any) -> str:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"[{value[0]:g}, {value[1]:g}]" if all(
            isinstance(v, (int, float)) for v in value) else str(list(value))
    return str(value)


def _curve_table(summary: dict[str, Any]) -> str:
    """Markdown table: one row per curve, mean ± 95% CI at each x."""
    header = ["curve"] + [f"{summary.get('xlabel', 'x')} = {x}" for x in summary["x"]]
    lines = [f"{summary.get('split', 'test')} tasks: {summary['num_tasks']}, "
             f"iteration {summary.get('iteration', '?')} (mean return ± 95% CI)",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, curve in summary["curves"].items():
        cells = [f"{m:.4g} ± {c:.2g}" for m, c in zip(curve["mean"], curve["ci95"])]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
