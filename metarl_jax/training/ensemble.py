"""Performance-weighted ensembles on the host: build, measure, choose, evaluate, report.

The protocol (:func:`evaluate_ensemble`), every number from one seed:

1. **measure** each member's return ``P_i`` on validation tasks ``A``;
2. **choose** Hedge's ``eta`` on other validation tasks ``B``: the ``eta`` of
   :func:`metarl_jax.algorithms.ensembles.eta_grid` whose ensemble scores best
   there. ``A`` and ``B`` are drawn from the family's *train* split with key
   streams of their own (a meta-training run draws its tasks from
   ``run_keys(seed)``, never from these), so neither is a test task, and ``eta``
   is not chosen on the tasks that made the best member look best;
3. **evaluate** on held-out tasks of the *test* split: the Hedge ensemble, the
   best member (the one best on ``A``), the uniform mixture, every member and
   the online selector (ESBAS), all on the same tasks with the same keys
   (common random numbers), mean ± 95% CI over tasks, and the paired
   differences of the ensemble to the best member and to the uniform mixture.

Results go to ``ensemble.json``. The pure parts live in
:mod:`metarl_jax.algorithms.ensembles`.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metarl_jax import algorithms
from metarl_jax.algorithms import ensembles
from metarl_jax.core.population import PopulationLearner
from metarl_jax.training.logging import write_json
from metarl_jax.training.report import mean_and_ci95
from metarl_jax.training.runner import RunDirectoryError, load_run
from metarl_jax.utils import check_int_at_least

# fold_in constants of the ensemble's key streams: apart from run_keys' 0..3
STREAM_MEASURE, STREAM_CHOOSE, STREAM_TEST = 101, 102, 103
METHODS = ("hedge", "best_member", "uniform", "online")


def from_runs(run_dirs: Sequence[str | Path]) -> ensembles.Ensemble:
    """An ensemble of the trained runs in ``run_dirs`` (their newest good checkpoints).

    A population run directory (``metarl train --seeds/--sweep``) gives all its
    live members. Raises ``ValueError`` for no run directories and
    ``TypeError`` for a run of an algorithm ensembles do not support, or
    members that cannot act together
    (:func:`metarl_jax.algorithms.ensembles.make_ensemble`).
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("an ensemble needs at least one run directory; got none")
    learners, params, names = [], [], []
    for run_dir in run_dirs:
        run = load_run(run_dir)
        algorithm = run.settings["algorithm"]
        if algorithm not in ensembles.SUPPORTED:
            raise TypeError(f"{str(run_dir)!r} is a {algorithm!r} run; ensembles support "
                            f"{' and '.join(ensembles.SUPPORTED)} runs")
        if isinstance(run.learner, PopulationLearner):
            for learner, p, label in _members(run.learner, run.state, alive_only=True):
                learners.append(learner)
                params.append(p)
                names.append(_unique(f"{run_dir.name}[{label}]", names))
        else:
            learners.append(run.learner)
            params.append(run.state.params)
            names.append(_unique(run_dir.name, names))
    if not learners:
        raise ValueError("every member of the population runs went non-finite: no ensemble")
    return ensembles.make_ensemble(learners, params, names)


def _unique(name: str, taken: list[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        i += 1
        candidate = f"{name}#{i}"
    return candidate


def _members(pop_learner, pop_state, alive_only: bool):
    """``(learner, params, label)`` of each member, its learner built with its own config."""
    kind = ensembles.kind_of(pop_learner.base)
    module = algorithms.get(kind)
    alive = np.asarray(pop_state.alive, bool)
    for i, member in enumerate(pop_learner.members):
        if alive_only and not alive[i]:
            continue
        config = dataclasses.replace(pop_learner.config, **member.values)
        yield (module.make(config, pop_learner.family),
               pop_learner.member_state(pop_state, i).params, member.label())


def from_population(pop_learner, pop_state, *, alive_only: bool = True) -> ensembles.Ensemble:
    """An ensemble of a population's members (:mod:`metarl_jax.core.population`).

    Each member acts with its own config: the population's config with the
    member's swept values (its ``inner_lr``, say), so a MAML member adapts
    with the step size it was trained with. Members frozen for non-finite
    values are left out unless ``alive_only=False``.
    """
    members = list(_members(pop_learner, pop_state, alive_only))
    if not members:
        raise ValueError("every member of the population went non-finite: no ensemble")
    learners, params, names = zip(*members)
    return ensembles.make_ensemble(learners, params, names)


def _stats(per_task) -> dict[str, Any]:
    per_task = np.asarray(per_task, np.float64).reshape(-1)
    stats = mean_and_ci95(per_task[:, None])
    return {"mean": stats["mean"][0], "ci95": stats["ci95"][0],
            "per_task": [float(np.float32(v)) for v in per_task]}


def _json_eta(eta: float) -> float | str:
    return "inf" if math.isinf(eta) else eta  # JSON has no infinity


def evaluate_ensemble(ensemble: ensembles.Ensemble, *, num_tasks: int = 100,
                      num_validation_tasks: int | None = None, num_episodes: int | None = None,
                      seed: int = 0, etas: Sequence[float] | None = None,
                      exploration: float | None = None) -> dict[str, Any]:
    """Measure, choose ``eta`` and evaluate ``ensemble`` (the module's protocol).

    ``num_validation_tasks`` (default ``num_tasks``) tasks each in the two
    validation sets; ``num_episodes`` per task (default
    :func:`~metarl_jax.algorithms.ensembles.default_num_episodes`); ``etas``
    the candidates (default the grid of ``eta_grid``; one value fixes ``eta``);
    ``exploration`` the selector's UCB scale (default: the standard deviation
    of the members' episode returns on validation tasks). Returns the
    ``ensemble.json`` dict.
    """
    check_int_at_least("num_tasks", num_tasks, 1)
    num_validation_tasks = num_tasks if num_validation_tasks is None else num_validation_tasks
    check_int_at_least("num_validation_tasks", num_validation_tasks, 1)
    num_episodes = ensembles.default_num_episodes(ensemble) if num_episodes is None \
        else num_episodes
    check_int_at_least("num_episodes", num_episodes, 1)
    check_int_at_least("seed", seed, 0)
    if etas is not None:
        etas = tuple(float(e) for e in etas)
        for eta in etas:
            ensembles.check_eta(eta)
    if exploration is not None and not exploration >= 0:
        raise ValueError(f"exploration must be non-negative, got {exploration!r}")
    family = ensemble.family
    num_members = len(ensemble.learners)
    root = jax.random.PRNGKey(seed)
    measure_tasks_key, measure_key = jax.random.split(jax.random.fold_in(root, STREAM_MEASURE))
    choose_tasks_key, choose_key = jax.random.split(jax.random.fold_in(root, STREAM_CHOOSE))
    test_tasks_key, test_key = jax.random.split(jax.random.fold_in(root, STREAM_TEST))

    table = jax.jit(partial(ensembles.returns_table, ensemble), static_argnums=(4,))
    online = jax.jit(partial(ensembles.online_scores, ensemble), static_argnums=(5,))
    # what each member acts with on a task batch: MAML members adapted, RL² members as they are
    prepare = jax.jit(partial(ensembles.prepare, ensemble))

    def acting_for(tasks, key):
        return prepare(ensemble.params, tasks, key)

    grid_size = len(etas) if etas is not None else len(ensembles.DEFAULT_ETA_SPREADS) + 2
    # every call plays the same number of weight rows: one compilation serves all three
    rows = max(num_members, grid_size, num_members + 3)

    def padded(weights):
        weights = jnp.asarray(weights, jnp.float32)
        return jnp.concatenate([weights, jnp.repeat(weights[-1:], rows - len(weights), 0)])

    # 1. measure each member on validation tasks A
    measure_tasks = family.sample(measure_tasks_key, num_validation_tasks, "train")
    adapt_key, play_key = jax.random.split(measure_key)
    returns = table(acting_for(measure_tasks, adapt_key), padded(jnp.eye(num_members)),
                    measure_tasks, play_key, num_episodes)[:num_members]  # [M, tasks, E]
    member_scores = ensembles.task_score(ensemble, returns)
    performance = jnp.mean(member_scores, axis=1)
    if exploration is None:
        exploration = float(jnp.std(returns))

    # 2. choose eta on validation tasks B
    choose_tasks = family.sample(choose_tasks_key, num_validation_tasks, "train")
    adapt_key, play_key = jax.random.split(choose_key)
    choose_acting = acting_for(choose_tasks, adapt_key)

    def score(weights):
        out = table(choose_acting, padded(weights), choose_tasks, play_key, num_episodes)
        return jnp.mean(ensembles.task_score(ensemble, out), axis=1)[:len(weights)]

    eta, eta_scores = ensembles.choose_eta(performance, score, etas)
    grid = ensembles.eta_grid(performance) if etas is None else etas

    # 3. evaluate on held-out test tasks, every method on the same tasks and keys
    test_tasks = family.sample(test_tasks_key, num_tasks, "test")
    weights = {"hedge": ensembles.hedge_weights(performance, eta),
               "best_member": ensembles.hedge_weights(performance, math.inf),
               "uniform": ensembles.hedge_weights(performance, 0.0)}
    stacked = jnp.concatenate([jnp.stack(list(weights.values())), jnp.eye(num_members)])
    adapt_key, play_key = jax.random.split(test_key)
    test_acting = acting_for(test_tasks, adapt_key)
    test_scores = ensembles.task_score(ensemble, table(
        test_acting, padded(stacked), test_tasks, play_key, num_episodes))
    online_scores = online(test_acting, performance, jnp.float32(exploration), test_tasks,
                           play_key, num_episodes)
    per_method = {name: test_scores[i] for i, name in enumerate(weights)}
    per_method["online"] = online_scores
    test = {name: _stats(values) for name, values in per_method.items()}
    members = [{"name": name, "validation_return": float(performance[i]),
                "hedge_weight": float(weights["hedge"][i]),
                "test": _stats(test_scores[len(weights) + i])}
               for i, name in enumerate(ensemble.names)]
    paired = {f"hedge_minus_{other}": _stats(per_method["hedge"] - per_method[other])
              for other in ("best_member", "uniform", "online")}
    return {
        "kind": ensemble.kind,
        "family": family.name,
        "score": "mean episode return after adaptation" if ensemble.kind == "maml"
                 else "total return of the trial",
        "num_members": num_members,
        "num_validation_tasks": num_validation_tasks,
        "num_test_tasks": num_tasks,
        "num_episodes": num_episodes,
        "seed": seed,
        "eta": _json_eta(eta),
        "eta_grid": [_json_eta(e) for e in grid],
        "eta_validation_scores": eta_scores,
        "exploration": exploration,
        "members": members,
        "test": test,
        "paired": paired,
    }


def write_report(result: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``result`` as ``out_dir/ensemble.json`` (the directory is created)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirectoryError(f"{str(out_dir)!r} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ensemble.json"
    write_json(path, result)
    return path


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of a result: each method and member, mean ± 95% CI on test tasks."""
    eta = result["eta"]
    eta = eta if isinstance(eta, str) else f"{eta:.4g}"
    lines = [f"{result['kind']} ensemble of {result['num_members']} on {result['family']}: "
             f"{result['num_test_tasks']} test tasks, {result['score']} (mean ± 95% CI); "
             f"eta = {eta}",
             "| | test return | hedge weight | validation return |", "|---|---|---|---|"]
    for name in METHODS:
        stats = result["test"][name]
        lines.append(f"| {name} | {stats['mean']:.4g} ± {stats['ci95']:.2g} | | |")
    for member in result["members"]:
        stats = member["test"]
        lines.append(f"| {member['name']} | {stats['mean']:.4g} ± {stats['ci95']:.2g} | "
                     f"{member['hedge_weight']:.3f} | {member['validation_return']:.4g} |")
    return "\n".join(lines)


def run_ensemble(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                 **kwargs) -> tuple[dict[str, Any], Path]:
    """:func:`from_runs`, :func:`evaluate_ensemble` (``kwargs``) and :func:`write_report`
    into ``out_dir`` (default: ``ensemble`` beside the first run directory)."""
    ensemble = from_runs(run_dirs)
    result = evaluate_ensemble(ensemble, **kwargs)
    result["run_dirs"] = [str(d) for d in run_dirs]
    out_dir = Path(run_dirs[0]).parent / "ensemble" if out_dir is None else out_dir
    return result, write_report(result, out_dir)
