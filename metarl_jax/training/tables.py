"""The RL² table benchmarks' shared parts: train a cell with the runner, flags, cell files.

What ``benchmarks/rl2_bandits.py`` (Table 1) and ``benchmarks/rl2_mdp.py``
(Table 2, RL² on CartPole) share. Each cell of a table is one RL² run of
:func:`~metarl_jax.training.runner.train` (:func:`train_rl2`) in its own run
directory, followed by the script's own evaluation on the cell's held-out
instances. The flags (:func:`add_training_arguments`) are the same in both
scripts:

* ``--minutes`` is the runner's ``time_budget_s``: training time only
  (compile, evaluation and checkpointing excluded), checked after every
  iteration;
* ``--run-dir DIR``: each cell's run directory is ``DIR/<cell>`` (default: a
  scratch folder the script names, replaced on every run);
* ``--checkpoint-dir DIR``: the cell's state is checkpointed every 10
  iterations and a rerun with the same flags continues the cell from its
  last checkpoint (the runner's resume: bitwise the uninterrupted run on
  CPU, ``--minutes`` then counts the whole run). Without ``--run-dir`` the
  run directories go under ``DIR`` too;
* ``--set key=value`` overrides a field of the cell's ``rl2.Config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import jax
import numpy as np

from metarl_jax import tasks as task_families
from metarl_jax.algorithms import rl2
from metarl_jax.training.config import (ConfigError, config_from_dict, config_to_dict, merge,
                                        parse_assignments)
from metarl_jax.training.logging import read_csv
from metarl_jax.training.report import (Progress, machine_description, read_json, run_timing,
                                        update_json)
from metarl_jax.training.runner import RunResult, train

CHECKPOINT_EVERY = 10  # iterations between checkpoints with --checkpoint-dir
RUNNER_EVAL_TASKS = 100  # test tasks of the runner's own final evaluation


class TrainedCell(NamedTuple):
    """What :func:`train_rl2` returns."""

    state: Any              # the trained rl2.RL2State
    run: RunResult          # the runner's result (run_dir, final evaluation, ...)
    iterations: int         # iterations done (all segments of a resumed run)
    compile_s: float | None  # start-up of this session: building, restoring, compiling
    train_s: float          # training seconds, all segments
    env_steps: float        # env steps of every iteration, all segments
    resumed_from: int | None  # iteration this session started from (0: fresh)


def _progress_line(iteration: int, metrics: Mapping[str, float]) -> str:
    return (f"  iteration {iteration}: train return {metrics['mean_trial_return']:.3f}, "
            f"entropy {metrics['entropy']:.3f}, {metrics['elapsed_s']:.0f} s")


def train_rl2(config: rl2.Config, family: str | task_families.TaskFamily, iterations: int,
              minutes: float | None, seed: int, *, run_dir: str | Path,
              family_options: Mapping[str, Any] | None = None, resume: bool = False,
              checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
              eval_every: int = 0, eval_num_tasks: int = RUNNER_EVAL_TASKS,
              log: Callable[[str], Any] | None = print,
              algorithm: str = "rl2") -> TrainedCell:
    """Meta-train RL² (or another trial learner, ``algorithm``: ``"varibad"``) with :func:`~metarl_jax.training.runner.train` in ``run_dir``.

    At most ``iterations`` iterations and ``minutes`` of training time (the
    runner's ``time_budget_s``; ``None``: no budget); a line through ``log``
    every 10 iterations. ``run_dir`` is replaced unless ``resume``, which
    continues the run there from its last checkpoint (a run of another
    config, family or seed raises :class:`~metarl_jax.training.runner.RunDirectoryError`
    naming what differs). Checkpoints every ``checkpoint_every`` iterations
    (0: only at the end) into ``checkpoint_dir`` (default ``run_dir/checkpoints``);
    the runner evaluates on ``eval_num_tasks`` test tasks every
    ``eval_every`` iterations (0: only at the end) into ``eval.csv``.
    Training time and env steps are read back from the run's files, so
    they cover every segment of a resumed run.
    """
    progress = Progress(_progress_line, every=10, total=iterations, print_fn=log)
    run = train(algorithm, config, family, run_dir, family_options=family_options, seed=seed,
                num_iterations=iterations, eval_every=eval_every,
                checkpoint_every=checkpoint_every, eval_num_tasks=eval_num_tasks, quiet=True,
                resume=resume, overwrite=not resume,
                time_budget_s=None if minutes is None else 60.0 * minutes,
                progress_fn=progress, checkpoint_dir=checkpoint_dir)
    timing = run_timing(run.run_dir, progress)
    metrics = read_csv(run.run_dir / "metrics.csv")
    env_steps = float(np.sum(metrics["env_steps"])) if "env_steps" in metrics else 0.0
    return TrainedCell(run.state, run, run.iteration, timing["compile_s"], timing["train_s"],
                       env_steps, timing["resumed_from"])


def cell_directory_name(label: str) -> str:
    """``"n=10, k=5"`` -> ``"n_10__k_5"``: a cell's label as a folder name."""
    return "".join(c if c.isalnum() else "_" for c in label)


def cell_location(args: argparse.Namespace, label: str,
                  scratch: str | Path) -> tuple[Path, Path | None, bool]:
    """``(run_dir, checkpoint_dir, resume)`` of the cell ``label`` under the flags ``args``.

    ``--run-dir`` (else ``--checkpoint-dir``, else ``scratch``) holds the run
    directories; with ``--checkpoint-dir`` a cell whose run directory holds a
    run is resumed, and its checkpoints go under ``--checkpoint-dir`` when
    that differs from the run directories' folder.
    """
    name = cell_directory_name(label)
    root = args.run_dir or args.checkpoint_dir or scratch
    run_dir = Path(root).resolve() / name
    checkpoint_dir = None
    if args.checkpoint_dir is not None and args.run_dir is not None \
            and Path(args.checkpoint_dir).resolve() != Path(args.run_dir).resolve():
        checkpoint_dir = Path(args.checkpoint_dir).resolve() / name
    resume = args.checkpoint_dir is not None and (run_dir / "config.json").is_file()
    return run_dir, checkpoint_dir, resume


def train_cell(label: str, config: rl2.Config, family_name: str,
               family_options: Mapping[str, Any], args: argparse.Namespace,
               scratch: str | Path, *, eval_every: int = 0,
               eval_num_tasks: int = RUNNER_EVAL_TASKS,
               log: Callable[[str], Any] | None = print) -> tuple[TrainedCell, dict[str, Any]]:
    """Train one cell as ``args`` say (:func:`cell_location`, :func:`train_rl2`); returns
    the trained cell and its JSON record (config, iterations, compile and train
    seconds, env steps and their rate, run directory)."""
    if log is not None:
        log(f"{label}: training RL² ({config})")
    run_dir, checkpoint_dir, resume = cell_location(args, label, scratch)
    trained = train_rl2(config, family_name, args.iterations, args.minutes, args.seed,
                        run_dir=run_dir, family_options=family_options, resume=resume,
                        checkpoint_dir=checkpoint_dir,
                        checkpoint_every=CHECKPOINT_EVERY if args.checkpoint_dir else 0,
                        eval_every=eval_every, eval_num_tasks=eval_num_tasks, log=log)
    record = {"rl2_config": dataclasses.asdict(config), "iterations": trained.iterations,
              "compile_s": trained.compile_s, "train_s": trained.train_s,
              "env_steps": trained.env_steps,
              "env_steps_per_s": trained.env_steps / max(trained.train_s, 1e-9),
              "run_dir": str(trained.run.run_dir)}
    return trained, record


def tuned_hyperparameters(path: str | Path, table: str, **cell) -> dict[str, dict]:
    """Player hyperparameters tuned per cell by ``benchmarks/baselines_tables.py``.

    ``table`` is ``"bandits"`` or ``"mdps"``, ``cell`` e.g. ``n=10, k=5``. Read
    from ``path`` (``benchmarks/results/baselines_tables.json``); ``{}`` (the
    players' defaults) where that file or cell is missing.
    """
    for row in read_json(path, {}).get(table, []):
        if all(row.get(key) == value for key, value in cell.items()):
            return row.get("hyperparameters", {})
    return {}


def run_cells(out: str | Path, cells: Iterable[tuple[str, Callable[[], dict]]],
              markdown: Callable[[dict], str], log: Callable[[str], Any] | None = print) -> dict:
    """Run ``cells`` (``(key, run)`` pairs) in turn, merging ``run()`` into ``out``'s ``"cells"``.

    After every cell the file is saved (:func:`~metarl_jax.training.report.update_json`,
    with the machine) and ``markdown`` of all its cells printed; cells already
    in the file are kept unless rerun. Each new cell records the machine it
    ran on. Returns the cells.
    """
    cells_done = dict(read_json(out, {}).get("cells", {}))
    for key, run in cells:
        cells_done[key] = {**run(), "machine": machine_description()}
        update_json(out, {"cells": cells_done})
        if log is not None:
            log(markdown(cells_done))
    return cells_done


def add_training_arguments(parser: argparse.ArgumentParser, iterations: int,
                           quick_help: str) -> None:
    """The flags both RL² table scripts take: iterations, minutes, instances, seed, quick,
    run and checkpoint folders, and ``--set key=value`` overrides of the cell's ``rl2.Config``."""
    parser.add_argument("--iterations", type=int, default=iterations,
                        help="PPO iterations per cell")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training wall-clock budget per cell (compile and evaluation "
                             "excluded, checked after every iteration)")
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--run-dir", default=None,
                        help="folder of the cells' run directories (config.json, metrics.csv, "
                             "...; default: a scratch folder under benchmarks/results/scratch, "
                             "replaced on every run)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="checkpoint each cell under this folder every "
                             f"{CHECKPOINT_EVERY} iterations and continue from it when rerun "
                             "(the same flags); --minutes is then the whole run's budget")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append",
                        default=[], help="override an rl2.Config field for every cell, "
                                         "e.g. --set hidden_size=128 (JSON values)")


def apply_overrides(config: Any, overrides: Iterable[str]) -> Any:
    """``config`` (a dataclass) with ``--set key=value`` overrides, parsed, type-checked
    and validated as the CLI's ``--set`` (an unknown key or a wrong type exits naming it)."""
    try:
        data = merge(config_to_dict(config), parse_assignments(list(overrides), "--set"))
        return config_from_dict(type(config), data)
    except ConfigError as err:
        raise SystemExit(f"invalid override: {err}") from None


def rl2_evaluator(config: rl2.Config, family: task_families.TaskFamily,
                  **changes) -> Callable[[Any, Any, jax.Array], np.ndarray]:
    """``play(state, task_params, key) -> [instances, episodes]``: the rewards per episode
    of a trained RL² ``state``, played by ``rl2.make(config with changes,
    family).evaluate`` (e.g. ``eval_policy="mode"``), compiled once for every call."""
    evaluate = jax.jit(rl2.make(dataclasses.replace(config, **changes), family).evaluate)

    def play(state, task_params, key):
        return np.asarray(evaluate(state, task_params, key)["rl2"])

    return play


def default_scratch(results_dir: str | Path, out: str | Path) -> Path:
    """``<results_dir>/scratch/<stem of out>``: where a script's cell runs go by default."""
    return Path(results_dir) / "scratch" / Path(os.fspath(out)).stem
