"""The host loop shared by every algorithm: compile, iterate, log, checkpoint, plot.

:func:`train` drives any learner that follows the contract of
:mod:`metarl_jax.core.learner` (``init``, ``update``, ``evaluate`` returning
:class:`~metarl_jax.core.curves.AdaptationCurves`, ``key_metric``). It is
the one training loop of the project: the CLI, the notebook and the
benchmark scripts all call it, with an optional wall-clock budget, a
progress callback and a checkpoint directory. ``update`` is compiled once, ahead of the
loop, as a ``lax.scan`` over ``iterations_per_call`` meta-iterations, so one
host call (one dispatch, one device-to-host copy of the metrics) covers
several iterations.

Keys are a function of the seed and the iteration index only
(``fold_in(train_key, i)`` for iteration ``i``), so a run resumed from a
checkpoint computes exactly what the uninterrupted run computed: on CPU the
parameters, ``metrics.csv`` and ``eval.csv`` are bitwise identical.

Run directory (see :func:`train`)::

    config.json            algorithm, its config, family, seed, runner settings,
                           library versions, devices
    metrics.csv            iteration + every scalar training metric (reproducible)
    eval.csv               iteration + mean/CI of each adaptation curve on test tasks
    timing.csv             iteration + cumulative training wall time (seconds)
    tensorboard/           TensorBoard events of the same scalars
    checkpoints/<it>/      orbax checkpoints: learner state + host JSON
    adaptation_curve.json  latest evaluation on held-out test tasks (per task too)
    adaptation_curve.png   mean ± 95% CI, learner and baselines on the same axes
    training_curve.png     every training metric, and the evaluations, vs iteration
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import math
import platform
import shutil
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from metarl_jax import algorithms, tasks
from metarl_jax.core.curves import AdaptationCurves
from metarl_jax.core.learner import check_learner
from metarl_jax.core.population import (Member, PopulationLearner, make_population,
                                        population_members)
from metarl_jax.sharding import (MEMBER_AXIS, TASK_AXIS, check_divisible, population_mesh,
                                 replicate, shard_members, sync_processes, task_mesh, to_host)
from metarl_jax.training.checkpoint import Checkpointer
from metarl_jax.training.config import config_from_dict, config_to_dict, rename_fields
from metarl_jax.utils import check_int_at_least, tree_all_finite
from metarl_jax.training.logging import (RunLogger, eval_row, flatten_metrics, read_csv,
                                         summarize_curves, summarize_population,
                                         truncate_csv, write_json)
from metarl_jax.training.plotting import (plot_adaptation_curve, plot_population_curves,
                                          plot_training_curve)

# Settings that determine what a run computes; a resume must not change them.
IDENTITY_KEYS = ("algorithm", "algorithm_config", "family", "family_options", "seed",
                 "iterations_per_call", "eval_every", "eval_num_tasks", "eval_num_steps",
                 "population")
NAN_POLICIES = ("stop", "drop")
# 2: eval_num_steps may be None (the learner's default) and RL² honours it;
#    MAML's ppo_epochs/ppo_clip are num_epochs/clip_eps. Older runs are upgraded on read.
SETTINGS_VERSION = 2
# progress_fn(iteration, metrics): metrics are the training metrics of that iteration,
# "elapsed_s" (training seconds so far) and, after an evaluation, "eval/<curve>_<x>_mean"...
ProgressFn = Callable[[int, dict[str, float]], None]


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (exists, missing, or mismatched)."""


class NonFiniteError(FloatingPointError):
    """A metric or the learner state became NaN/Inf; the run was stopped."""


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`train` returns: where the run is and how it ended."""

    run_dir: Path
    state: Any                       # final learner state
    iteration: int                   # iterations completed
    metrics: dict[str, float]        # training metrics of the last iteration
    adaptation_curve: dict[str, Any]  # final evaluation (adaptation_curve.json)

    @property
    def adaptation_curve_plot(self) -> Path:
        return self.run_dir / "adaptation_curve.png"

    @property
    def training_curve_plot(self) -> Path:
        return self.run_dir / "training_curve.png"


class LoadedRun(NamedTuple):
    """A run directory read back by :func:`load_run`."""

    run_dir: Path
    settings: dict[str, Any]  # contents of config.json
    learner: Any
    family: tasks.TaskFamily
    state: Any
    iteration: int


# -- resolving the pieces --------------------------------------------------------


def resolve_algorithm(algorithm: str | types.ModuleType) -> tuple[str, types.ModuleType]:
    """``(name, module)`` of a registered algorithm name or an algorithm module."""
    if isinstance(algorithm, str):
        return algorithm, algorithms.get(algorithm)
    if not (hasattr(algorithm, "Config") and hasattr(algorithm, "make")):
        raise TypeError("algorithm must be a registered name or a module with Config and make, "
                        f"got {algorithm!r}")
    return algorithm.__name__.rsplit(".", 1)[-1], algorithm


def resolve_config(module: types.ModuleType, config: Any) -> Any:
    """The algorithm's ``Config`` from ``None`` (defaults), a dict, or an instance."""
    if config is None:
        return module.Config()
    if isinstance(config, module.Config):
        return config
    if isinstance(config, Mapping):
        return config_from_dict(module.Config, config)
    raise TypeError(f"config must be a {module.__name__}.Config, a dict or None, "
                    f"got {type(config).__name__}")


def resolve_family(family: str | tasks.TaskFamily,
                   family_options: Mapping[str, Any] | None) -> tuple[tasks.TaskFamily, dict]:
    """``(TaskFamily, options)`` from a registered name (+ options) or a family object."""
    if isinstance(family, tasks.TaskFamily):
        if family_options:
            raise ValueError("family_options apply only when family is given by name")
        return family, {}
    if not isinstance(family, str):
        raise TypeError(f"family must be a task family name or a TaskFamily, got {family!r}")
    options = dict(family_options or {})
    return tasks.make(family, **options), options


def build_mesh(use_mesh: bool | None, num_members: int | None = None,
               member_shards: int | None = None):
    """The mesh over all devices, or ``None``.

    ``use_mesh=None`` builds one when more than one device is visible. A plain
    run gets the 1-D ``tasks`` mesh; a population of ``num_members`` gets the
    2-D ``("members", "tasks")`` mesh with ``member_shards`` devices along
    ``members`` (default: the largest count dividing both the devices and the
    population, so whole members sit on each device where they can). For
    several hosts, call ``jax.distributed.initialize()`` before importing
    metarl_jax (see docs/distributed.md): the mesh then spans every host's
    devices and the code path is the same.
    """
    if use_mesh is None:
        use_mesh = jax.device_count() > 1
    if not use_mesh:
        if member_shards is not None:
            raise ValueError("member_shards needs a mesh (use_mesh true, or several devices)")
        return None
    if num_members is None:
        if member_shards is not None:
            raise ValueError("member_shards applies to a population (seeds or sweep)")
        return task_mesh()
    if member_shards is None:
        member_shards = math.gcd(num_members, jax.device_count())
    return population_mesh(member_shards)


def run_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(init, train, eval_tasks, eval)`` keys of a run, all derived from ``seed``."""
    root = jax.random.PRNGKey(seed)
    return tuple(jax.random.fold_in(root, i) for i in range(4))


def upgrade_identity(saved: Mapping[str, Any], version: int, module=None) -> dict[str, Any]:
    """Identity settings saved by settings version ``version``, in today's terms.

    Renamed config keys get their new names; before version 2 RL² ignored
    ``eval_num_steps`` (its curve always had ``eval_episodes`` points), so an
    old RL² run's value is read as ``None``, which plays the same evaluation.
    """
    saved = dict(saved)
    config = saved.get("algorithm_config")
    if module is not None and isinstance(config, Mapping):
        saved["algorithm_config"] = rename_fields(module.Config, config)
    if version < 2 and saved.get("algorithm") == "rl2":
        saved["eval_num_steps"] = None
    return saved


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def identity_differences(saved: Mapping[str, Any], requested: Mapping[str, Any],
                         keys: Iterable[str] = IDENTITY_KEYS,
                         defaults: Mapping[str, Any] | None = None) -> list[str]:
    """``["algorithm_config.inner_lr: 0.1 (checkpoint) vs 0.2 (requested)", ...]`` over
    ``keys`` (nested mappings are compared field by field).

    ``defaults`` (same nesting) gives the value of settings added since a
    checkpoint was written: a field the checkpoint lacks counts as its default
    there, so an old run resumes unless the new field is set otherwise.
    """
    keys = tuple(keys)
    old = _flatten(json.loads(json.dumps({k: saved[k] for k in keys if k in saved})))
    new = _flatten(json.loads(json.dumps({k: requested.get(k) for k in keys})))
    fallback = _flatten(json.loads(json.dumps(dict(defaults or {}))))
    old = {**{k: v for k, v in fallback.items() if k in new}, **old}
    return [f"{key}: {old.get(key)!r} (checkpoint) vs {new.get(key)!r} (requested)"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("metarl_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _devices(mesh) -> dict[str, Any]:
    devices = jax.devices()
    return {"platform": devices[0].platform, "count": len(devices),
            "process_count": jax.process_count(),
            "kinds": sorted({d.device_kind for d in devices}),
            "task_mesh": None if mesh is None else int(mesh.shape[TASK_AXIS]),
            "member_mesh": (int(mesh.shape[MEMBER_AXIS]) if mesh is not None
                            and MEMBER_AXIS in mesh.shape else None)}


# -- evaluation -------------------------------------------------------------------


class _Evaluator:
    """Jitted ``learner.evaluate`` at a fixed ``num_steps``, summarised on the host.

    For a population the curves carry a leading member axis and the summary is
    :func:`~metarl_jax.training.logging.summarize_population`'s (per member,
    and per sweep setting across seeds).
    """

    def __init__(self, learner, num_steps: int | None):
        self._learner = learner
        self._evaluate = jax.jit(lambda state, task_params, key: learner.evaluate(
            state, task_params, key, num_steps))

    def __call__(self, state, task_params, key, **info) -> dict[str, Any]:
        curves = self._evaluate(state, task_params, key)
        if not isinstance(curves, AdaptationCurves):
            raise TypeError("learner.evaluate must return AdaptationCurves "
                            "(metarl_jax.core.make_curves), got "
                            f"{type(curves).__name__}")
        curves = to_host(curves)
        if isinstance(self._learner, PopulationLearner):
            members = [{"seed": m.seed, "values": dict(m.values)}
                       for m in self._learner.members]
            alive = np.asarray(to_host(state.alive)).tolist()
            return {**info, "xlabel": curves.xlabel, "population": True,
                    **summarize_population(dict(curves.items()), curves.x, members, alive)}
        return {**info, "xlabel": curves.xlabel, **summarize_curves(dict(curves.items()), curves.x)}


# -- training -------------------------------------------------------------------------


def train(
    algorithm: str | types.ModuleType,
    config: Any,
    family: str | tasks.TaskFamily,
    run_dir: str | Path | None = None,
    *,
    family_options: Mapping[str, Any] | None = None,
    seed: int = 0,
    num_iterations: int = 100,
    iterations_per_call: int = 1,
    eval_every: int = 25,
    checkpoint_every: int = 25,
    eval_num_tasks: int = 40,
    eval_num_steps: int | None = None,
    max_checkpoints_to_keep: int = 3,
    quiet: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    use_mesh: bool | None = None,
    time_budget_s: float | None = None,
    progress_fn: ProgressFn | None = None,
    checkpoint_dir: str | Path | None = None,
    seeds: int | Iterable[int] | None = None,
    sweep: Mapping[str, Iterable[float]] | None = None,
    on_nan: str = "stop",
    member_shards: int | None = None,
) -> RunResult:
    """Meta-train ``algorithm`` on ``family`` and write everything into ``run_dir``.

    Args:
      algorithm: a registered name (``"maml"``) or a module with ``Config`` and
        ``make(config, family, mesh=None)``.
      config: the algorithm's ``Config``, a dict of its fields, or ``None``.
      family: a registered task family name or a :class:`~metarl_jax.tasks.TaskFamily`.
      run_dir: output directory (default ``runs/<algo>-<family>-<timestamp>``).
      family_options: keyword overrides for the family's factory (by name only).
      seed: every key of the run derives from it.
      num_iterations: total meta-iterations (when resuming: the new total).
      iterations_per_call: iterations per compiled host call (``lax.scan``);
        ``num_iterations``, ``eval_every`` and ``checkpoint_every`` must be
        multiples of it.
      eval_every: evaluate on held-out test tasks every this many iterations
        (0: only at the end; the end is always evaluated).
      checkpoint_every: save every this many iterations (0: only at the end).
      eval_num_tasks, eval_num_steps: size of the evaluation (the
        ``num_steps`` passed to ``learner.evaluate``: inner steps for MAML,
        episodes of the evaluation trial for RL²; ``None``: the learner's
        default).
      max_checkpoints_to_keep: older checkpoints are deleted.
      quiet: no progress bar.
      resume: continue ``run_dir`` from its last good checkpoint; the
        algorithm, config, family, seed and evaluation settings must equal
        the checkpoint's (a ``RunDirectoryError`` names what differs).
      overwrite: delete an existing ``run_dir`` first.
      use_mesh: shard the task axis over all devices (``None``: when there
        is more than one device).
      time_budget_s: stop once the run's training time (compile, evaluation
        and checkpointing excluded; earlier segments of a resumed run
        included) reaches this many seconds, after the host call in which it
        did; the stop is evaluated and checkpointed like the end, and
        ``RunResult.iteration`` says how far it got. Resume with a larger
        budget (or none) to go on.
      progress_fn: called on the host as ``progress_fn(iteration, metrics)``
        after every iteration, with its training metrics and ``elapsed_s``,
        plus ``eval/...`` entries (:func:`~metarl_jax.training.logging.eval_row`)
        after an evaluation (as brax's ``progress_fn``). Its time is not
        training time.
      checkpoint_dir: where the orbax checkpoints go (default
        ``run_dir/checkpoints``); recorded in ``config.json`` so
        :func:`load_run` finds them.
      seeds: train a population in one compiled program: a count (seeds
        ``seed .. seed + n - 1``) or the seeds themselves. Member ``i`` with
        seed ``s`` draws its init and training keys as the plain run with
        seed ``s`` does, so it computes what that run computes (bit for bit
        for a population of one); evaluation puts every member on the same
        tasks and keys (those of ``seed``).
      sweep: ``{field: [values]}`` of per-member config values (fields the
        algorithm lists in ``HYPERPARAMETERS``); the population is the grid
        ``seeds x sweep``. ``metrics.csv`` gets a ``member`` column, the
        evaluation summarises each member and each setting across seeds,
        and ``population_curve.png`` shows every member.
      on_nan: for a population, what a member whose state or metrics turn
        non-finite does: ``"stop"`` the run (``NonFiniteError`` naming the
        member; the last good checkpoint is kept) or ``"drop"`` the member
        (frozen at its last finite state, left out of the summaries, said on
        stderr and in ``adaptation_curve.json``); the others go on.
      member_shards: devices along the ``members`` axis of a population's
        mesh (the rest split each member's tasks); default: the largest count
        dividing both the devices and the population.

    Raises:
      RunDirectoryError: ``run_dir`` exists (without resume/overwrite), or
        cannot be resumed.
      NonFiniteError: a metric or the learner state became NaN/Inf; the
        message names the iteration and the metric, and the last good
        checkpoint is kept.
    """
    name, module = resolve_algorithm(algorithm)
    config = resolve_config(module, config)
    task_family, family_options = resolve_family(family, family_options)
    for arg, value, minimum in (("seed", seed, 0), ("num_iterations", num_iterations, 1),
                                ("iterations_per_call", iterations_per_call, 1),
                                ("eval_every", eval_every, 0),
                                ("checkpoint_every", checkpoint_every, 0),
                                ("eval_num_tasks", eval_num_tasks, 1),
                                ("max_checkpoints_to_keep", max_checkpoints_to_keep, 1)):
        check_int_at_least(arg, value, minimum)
    if eval_num_steps is not None:
        check_int_at_least("eval_num_steps", eval_num_steps, 1)
    if time_budget_s is not None and not time_budget_s > 0:
        raise ValueError(f"time_budget_s must be positive, got {time_budget_s!r}")
    if progress_fn is not None and not callable(progress_fn):
        raise TypeError(f"progress_fn must be callable, got {type(progress_fn).__name__}")
    for arg, value in (("num_iterations", num_iterations), ("eval_every", eval_every),
                       ("checkpoint_every", checkpoint_every)):
        if value % iterations_per_call:
            raise ValueError(f"{arg}={value} must be a multiple of "
                             f"iterations_per_call={iterations_per_call}")
    if resume and overwrite:
        raise ValueError("resume and overwrite cannot both be set")
    if on_nan not in NAN_POLICIES:
        raise ValueError(f"on_nan must be one of {NAN_POLICIES}, got {on_nan!r}")
    members = None
    if seeds is not None or sweep:
        members = population_members(1 if seeds is None else seeds, sweep, base_seed=seed)

    mesh = build_mesh(use_mesh, None if members is None else len(members), member_shards)
    if mesh is not None:
        if hasattr(config, "meta_batch_size"):
            check_divisible(config.meta_batch_size, mesh)
        if eval_num_tasks % mesh.shape[TASK_AXIS]:
            raise ValueError(f"eval_num_tasks={eval_num_tasks} does not divide over the "
                             f"{mesh.shape[TASK_AXIS]} devices of the 'tasks' mesh axis")

    run_dir = Path(run_dir or f"runs/{name}-{task_family.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    is_main = jax.process_index() == 0
    exists = run_dir.exists() and any(run_dir.iterdir())
    if resume and not (run_dir / "config.json").is_file():
        raise RunDirectoryError(f"cannot resume {str(run_dir)!r}: it is not a run directory "
                                "(no config.json)")
    if exists and not resume and not overwrite:
        raise RunDirectoryError(
            f"run directory {str(run_dir)!r} already exists; pass resume=True (--resume) "
            "to continue it or overwrite=True (--overwrite) to replace it")

    checkpoint_path = (run_dir / "checkpoints" if checkpoint_dir is None
                       else Path(checkpoint_dir).resolve())
    settings = {
        "settings_version": SETTINGS_VERSION,
        "algorithm": name,
        "algorithm_module": module.__name__,
        "algorithm_config": config_to_dict(config),
        "family": task_family.name,
        "family_options": family_options,
        "seed": seed,
        "iterations_per_call": iterations_per_call,
        "eval_every": eval_every,
        "eval_num_tasks": eval_num_tasks,
        "eval_num_steps": eval_num_steps,
        "num_iterations": num_iterations,
        "checkpoint_every": checkpoint_every,
        "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_path),
        "time_budget_s": time_budget_s,
        "population": None if members is None else {
            "members": [{"seed": m.seed, "values": dict(m.values)} for m in members]},
        "on_nan": on_nan,
    }
    identity = {key: settings[key] for key in IDENTITY_KEYS}
    try:  # fields added to the config since a run was saved count as their defaults
        defaults = {"algorithm_config": config_to_dict(type(config)())}
    except TypeError:  # a config class without a default for every field
        defaults = None
    if resume:
        saved = json.loads((run_dir / "config.json").read_text())
        saved = upgrade_identity(saved, saved.get("settings_version", 1), module)
        differences = identity_differences(saved, identity, defaults=defaults)
        if differences:
            raise RunDirectoryError(f"cannot resume {str(run_dir)!r}: the requested run differs "
                                    f"from the saved one in {'; '.join(differences)}")

    learner, state, train_key = _build(module, config, task_family, seed, members, mesh)
    settings.update(key_metric=learner.key_metric, versions=_versions(),
                    devices=_devices(mesh))
    _, _, eval_tasks_key, eval_key = run_keys(seed)

    if exists and overwrite and is_main:
        shutil.rmtree(run_dir)
    # several processes: all have looked at run_dir (and the old one is gone) before any writes
    sync_processes("metarl_jax.train: run directory checked")
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(checkpoint_path, max_checkpoints_to_keep)
    logger = None
    try:
        start, elapsed = 0, 0.0
        if resume:
            restored = checkpointer.restore_latest(state)
            if restored is not None:
                differences = identity_differences(
                    upgrade_identity(restored.host["identity"],
                                     restored.host.get("settings_version", 1), module),
                    identity, defaults=defaults)
                if differences:
                    raise RunDirectoryError(
                        f"cannot resume {str(run_dir)!r}: the requested run differs from the "
                        f"checkpoint at iteration {restored.iteration} in "
                        f"{'; '.join(differences)}")
                if restored.iteration > num_iterations:
                    raise ValueError(f"num_iterations={num_iterations} is below the "
                                     f"{restored.iteration} iterations already in "
                                     f"{str(run_dir)!r}")
                start, state = restored.iteration, restored.state
                elapsed = restored.host["elapsed_s"]
            if is_main:
                for csv_name in ("metrics.csv", "eval.csv", "timing.csv"):
                    truncate_csv(run_dir / csv_name, start)
        if is_main:
            write_json(run_dir / "config.json", settings)
            logger = RunLogger(run_dir, purge_step=start + 1 if resume else None)

        eval_tasks = task_family.sample(eval_tasks_key, eval_num_tasks, "test")
        evaluator = _Evaluator(learner, eval_num_steps)
        eval_info = {"algorithm": name, "family": task_family.name, "split": "test"}

        def evaluate(state, iteration):
            return evaluator(state, eval_tasks, jax.random.fold_in(eval_key, iteration),
                             iteration=iteration, **eval_info)

        title = f"{name} on {task_family.name}"
        last_metrics: dict[str, float] = {}
        summary = None
        end = start
        if start < num_iterations:
            state, last_metrics, summary, end = _loop(
                learner, state, train_key, mesh, start, num_iterations, iterations_per_call,
                elapsed, eval_every, checkpoint_every, evaluate, checkpointer, logger,
                {"identity": identity, "settings_version": SETTINGS_VERSION}, title, quiet,
                time_budget_s, progress_fn, on_nan)
        checkpointer.wait()
    finally:
        checkpointer.close()
        if logger is not None:
            logger.close()

    if summary is None:  # resumed a finished run: its final evaluation is on disk
        curve_path = run_dir / "adaptation_curve.json"
        summary = json.loads(curve_path.read_text()) if curve_path.exists() else None
        if summary is None or summary.get("iteration") != end:
            summary = evaluate(state, end)
    if is_main:
        write_json(run_dir / "adaptation_curve.json", summary)
        plot_adaptation_curve(summary, run_dir / "adaptation_curve.png", title)
        plot_training_curve(run_dir, run_dir / "training_curve.png", title)
        if summary.get("population"):
            plot_population_curves(summary, run_dir / "population_curve.png", title)
    if not last_metrics and (run_dir / "metrics.csv").exists():
        columns = read_csv(run_dir / "metrics.csv")
        if "member" in columns:  # a population: the live members' mean of the last iteration
            last = columns["iteration"] == columns["iteration"].max()
            alive = np.asarray(to_host(state.alive))[columns["member"][last].astype(int)]
            last_metrics = {k: float(np.mean(v[last][alive])) for k, v in columns.items()
                            if k not in ("iteration", "member") and len(v)}
        else:
            last_metrics = {k: float(v[-1]) for k, v in columns.items()
                            if k != "iteration" and len(v)}
    return RunResult(run_dir=run_dir, state=state, iteration=end,
                     metrics=last_metrics, adaptation_curve=summary)


def _build(module, config, family, seed: int, members, mesh):
    """``(learner, initial state, train key)`` of a plain run or of a population.

    A population member with seed ``s`` gets the init and train keys of the
    plain run with seed ``s``; the train keys are stacked ``[members, 2]``.
    """
    if members is None:
        learner = module.make(config, family, mesh=mesh)
        check_learner(learner)
        init_key, train_key, _, _ = run_keys(seed)
        return learner, replicate(learner.init(init_key), mesh), train_key  # eager init
    learner = make_population(module, config, family, members, mesh=mesh)
    check_learner(learner)
    keys = [run_keys(m.seed) for m in members]
    init_keys = jnp.stack([k[0] for k in keys])
    train_keys = jnp.stack([k[1] for k in keys])
    # split over the mesh's members axis; replicated on a tasks-only mesh
    return learner, shard_members(learner.init(init_keys), mesh), shard_members(train_keys, mesh)


def _fold_in(key: jax.Array, iteration) -> jax.Array:
    """``fold_in`` of one key, or of each key of a population's stack ``[members, 2]``."""
    if key.ndim == 1:
        return jax.random.fold_in(key, iteration)
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(key, iteration)


def _compile_chunk(learner, state, train_key, iterations_per_call: int, mesh):
    """Ahead-of-time compiled ``(state, first_iteration, train_key) -> (state, (metrics, finite))``.

    ``metrics`` leaves and ``finite`` (the state has no NaN/Inf after that
    iteration; per member for a population) have a leading axis of
    ``iterations_per_call``.
    """

    def chunk(state, first_iteration, train_key):
        def body(state, iteration):
            state, metrics = learner.update(state, _fold_in(train_key, iteration))
            # a population freezes a non-finite member itself and says so in ``alive``
            finite = (state.alive if isinstance(learner, PopulationLearner)
                      else tree_all_finite(state))
            return state, (metrics, finite)

        iterations = first_iteration + jnp.arange(iterations_per_call, dtype=jnp.int32)
        return jax.lax.scan(body, state, iterations)

    if mesh is None:
        jitted = jax.jit(chunk)
    else:  # pin the state's placement so every call matches the compiled executable
        state_shardings = jax.tree.map(lambda x: x.sharding, state)
        jitted = jax.jit(chunk, out_shardings=(state_shardings,
                                               NamedSharding(mesh, PartitionSpec())))
    return jitted.lower(state, jnp.int32(0), train_key).compile()


def _loop(learner, state, train_key, mesh, start, num_iterations, iterations_per_call, elapsed,
          eval_every, checkpoint_every, evaluate, checkpointer, logger, host, title, quiet,
          time_budget_s, progress_fn, on_nan="stop"):
    """Compile, then run iterations ``start+1 .. num_iterations`` (or until the budget).

    Returns ``(final state, last iteration's metrics, last evaluation summary,
    last iteration)``.
    """

    def out_of_time():
        return time_budget_s is not None and elapsed >= time_budget_s

    def due(every, iteration):
        return (iteration == num_iterations or out_of_time()
                or (every > 0 and iteration % every == 0))

    iteration = start
    row: dict[str, float] = {}
    summary = None
    population = isinstance(learner, PopulationLearner)
    if population:  # members dropped before a resume stay dropped
        alive = np.array(to_host(state.alive), bool)
    with tqdm(total=num_iterations, initial=start, disable=quiet, unit="it",
              desc=f"compiling {title}", dynamic_ncols=True) as bar:
        step = _compile_chunk(learner, state, train_key, iterations_per_call, mesh)
        bar.set_description(title)
        while iteration < num_iterations and not out_of_time():
            tick = time.perf_counter()
            state, (metrics, finite) = step(state, jnp.int32(iteration), train_key)
            metrics, finite = to_host((metrics, finite))
            elapsed += time.perf_counter() - tick
            if learner.key_metric not in metrics:
                raise ValueError(f"the learner's key_metric {learner.key_metric!r} is not among "
                                 f"its metrics {sorted(metrics)}")
            for j in range(iterations_per_call):
                iteration += 1
                if population:
                    rows = [flatten_metrics({k: v[j, i] for k, v in metrics.items()})
                            for i in range(len(learner.members))]
                    if logger is not None:
                        logger.log_train_members(iteration, rows, elapsed)
                    newly_dead = [i for i in range(len(rows)) if alive[i] and not finite[j, i]]
                    for i in newly_dead:
                        what = (f"member {i} ({learner.members[i].label()}) turned non-finite "
                                f"at iteration {iteration}")
                        if on_nan == "stop":
                            _stop_non_finite(what, checkpointer)
                        alive[i] = False
                        tqdm.write(f"metarl: {what}; dropped (frozen at its last finite "
                                   f"state); {int(alive.sum())} of {len(alive)} members go on")
                    if not alive.any():
                        _stop_non_finite("every member of the population turned non-finite "
                                         f"by iteration {iteration}", checkpointer)
                    row = {k: float(np.mean([r[k] for r, a in zip(rows, alive) if a]))
                           for k in rows[0]}
                else:
                    row = flatten_metrics({k: v[j] for k, v in metrics.items()})
                    if logger is not None:
                        logger.log_train(iteration, row, elapsed)
                    bad = [k for k, v in row.items() if not np.isfinite(v)]
                    if bad or not finite[j]:
                        _stop_non_finite(
                            (f"non-finite value in metric {bad[0]!r} = {row[bad[0]]}" if bad
                             else "non-finite value in the learner state (parameters or "
                                  "optimizer state)") + f" at iteration {iteration}",
                            checkpointer)
                if progress_fn is not None and j < iterations_per_call - 1:
                    progress_fn(iteration, {**row, "elapsed_s": elapsed})
            bar.update(iterations_per_call)
            bar.set_postfix({learner.key_metric: f"{row[learner.key_metric]:.4g}"},
                            refresh=False)
            progress = {**row, "elapsed_s": elapsed}
            if due(eval_every, iteration):
                summary = evaluate(state, iteration)
                if logger is not None:
                    logger.log_eval(iteration, summary)
                progress.update({f"eval/{k}": v for k, v in eval_row(summary).items()})
            if progress_fn is not None:
                progress_fn(iteration, progress)
            if due(checkpoint_every, iteration):
                if logger is not None:
                    logger.flush()
                checkpointer.save(iteration, state, {**host, "elapsed_s": elapsed})
    return state, row, summary, iteration


def _stop_non_finite(what: str, checkpointer) -> None:
    good = checkpointer.steps()
    raise NonFiniteError(f"{what}; run stopped. " + (
        f"Last good checkpoint: iteration {good[-1]} in {checkpointer.directory}" if good
        else "No checkpoint was written before it."))


# -- reading a run back ----------------------------------------------------------------


def load_run(run_dir: str | Path, *, family: tasks.TaskFamily | None = None,
             use_mesh: bool | None = None) -> LoadedRun:
    """Rebuild the learner of ``run_dir`` and restore its newest good checkpoint.

    For a population run the learner is the :class:`PopulationLearner` and the
    state holds every member (``learner.member_state(state, i)`` is member
    ``i``'s, for ``learner.base``).

    The algorithm is looked up by name (or by its module path for modules
    outside the registry) and the family by name and options; pass
    ``family`` for runs trained on an unregistered TaskFamily object.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise RunDirectoryError(f"{str(run_dir)!r} is not a run directory (no config.json)")
    settings = json.loads(config_path.read_text())
    if settings["algorithm"] in algorithms.ALGORITHMS:
        module = algorithms.get(settings["algorithm"])
    else:
        module = importlib.import_module(settings["algorithm_module"])
    settings = upgrade_identity(settings, settings.get("settings_version", 1), module)
    config = config_from_dict(module.Config, settings["algorithm_config"])
    if family is None:
        family = tasks.make(settings["family"], **settings["family_options"])
    members = None
    if settings.get("population"):
        members = [Member(int(m["seed"]), dict(m["values"]))
                   for m in settings["population"]["members"]]
    mesh = build_mesh(use_mesh, None if members is None else len(members))
    learner, target, _ = _build(module, config, family, settings["seed"], members, mesh)
    checkpointer = Checkpointer(Path(settings.get("checkpoint_dir") or run_dir / "checkpoints"),
                                max_to_keep=None)
    try:
        restored = checkpointer.restore_latest(target, repair=False)
    finally:
        checkpointer.close()
    if restored is None:
        raise RunDirectoryError(f"{str(run_dir)!r} has no complete checkpoint")
    return LoadedRun(run_dir, settings, learner, family, restored.state, restored.iteration)


def evaluate_run(run_dir: str | Path, *, split: str = "test", num_tasks: int | None = None,
                 num_steps: int | None = None, seed: int | None = None,
                 family: tasks.TaskFamily | None = None,
                 use_mesh: bool | None = None) -> tuple[dict[str, Any], Path, Path]:
    """Adaptation curves of a trained run on ``num_tasks`` tasks of ``split``.

    Defaults (the run's seed, ``eval_num_tasks``, ``eval_num_steps``) with
    ``split="test"`` reproduce the run's final evaluation exactly: the same
    tasks and keys. Writes ``evaluation_<split>.json`` and ``.png`` into the
    run directory and returns ``(summary, json path, png path)``.
    """
    run = load_run(run_dir, family=family, use_mesh=use_mesh)
    settings = run.settings
    num_tasks = settings["eval_num_tasks"] if num_tasks is None else num_tasks
    num_steps = settings["eval_num_steps"] if num_steps is None else num_steps
    seed = settings["seed"] if seed is None else seed
    check_int_at_least("num_tasks", num_tasks, 1)
    if num_steps is not None:
        check_int_at_least("num_steps", num_steps, 1)
    check_int_at_least("seed", seed, 0)
    _, _, eval_tasks_key, eval_key = run_keys(seed)
    task_params = run.family.sample(eval_tasks_key, num_tasks, split)
    summary = _Evaluator(run.learner, num_steps)(
        run.state, task_params, jax.random.fold_in(eval_key, run.iteration),
        iteration=run.iteration, algorithm=settings["algorithm"], family=settings["family"],
        split=split)
    json_path = run.run_dir / f"evaluation_{split}.json"
    png_path = run.run_dir / f"evaluation_{split}.png"
    if jax.process_index() == 0:
        write_json(json_path, summary)
        title = f"{settings['algorithm']} on {settings['family']} ({split} tasks)"
        plot_adaptation_curve(summary, png_path, title)
        if summary.get("population"):
            plot_population_curves(summary, run.run_dir / f"evaluation_{split}_members.png",
                                   title)
    return summary, json_path, png_path
