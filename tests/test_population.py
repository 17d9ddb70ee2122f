"""Populations: many seeds and hyperparameter settings of one learner in one program.

The member axis is a ``vmap`` inside the compiled step (``core.population``)
and the runner trains, logs, evaluates, resumes and stops it like a plain run.
These tests check the wiring that makes a population mean what it says: a
population of one is the plain learner bit for bit, member ``i`` is the plain
run with its own seed and its own config values (and nothing leaks between
members), every learner's declared per-member fields really can be traced,
a non-finite member stops the run or is dropped, and bad requests are refused
with messages that name the field.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metarl_jax
import test_runner as toy
from metarl_jax import algorithms
from metarl_jax.algorithms import maml
from metarl_jax.cli import main as cli_main
from metarl_jax.core.population import (Member, check_sweep, make_population,
                                        population_members)
from metarl_jax.training import NonFiniteError, train
from metarl_jax.training.logging import read_csv, summarize_population
from metarl_jax.training.runner import load_run

TINY_MAML = maml.Config(meta_batch_size=2, inner_episodes=2, horizon=8, hidden_sizes=(8,),
                        eval_episodes=2)
RUN = dict(num_iterations=4, iterations_per_call=2, eval_every=2, checkpoint_every=2,
           eval_num_tasks=4, eval_num_steps=1, quiet=True)


def _keys(seeds):
    return jnp.stack([jax.random.PRNGKey(s) for s in seeds])


def _tree_equal(a, b) -> bool:
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


# -- members and sweeps ------------------------------------------------------------------


def test_members_are_the_grid_seed_slowest():
    members = population_members(2, {"inner_lr": [0.1, 0.2], "outer_lr": [1.0, 2.0]}, base_seed=5)
    assert [m.seed for m in members] == [5] * 4 + [6] * 4
    assert [m.values for m in members[:4]] == [
        {"inner_lr": 0.1, "outer_lr": 1.0}, {"inner_lr": 0.1, "outer_lr": 2.0},
        {"inner_lr": 0.2, "outer_lr": 1.0}, {"inner_lr": 0.2, "outer_lr": 2.0}]
    assert [m.seed for m in population_members([3, 9])] == [3, 9]
    assert members[0].label() == "seed=5, inner_lr=0.1, outer_lr=1"


@pytest.mark.parametrize("seeds, sweep, match", [
    (0, None, "seeds must be"),
    ([], None, "at least one seed"),
    ([1, 1], None, "seeds repeat"),
    (True, None, "bool"),
    (2, {"inner_lr": []}, "has no values"),
    (2, {"inner_lr": [0.1, 0.1]}, "repeats a value"),
])
def test_bad_members_are_refused(seeds, sweep, match):
    with pytest.raises((ValueError, TypeError), match=match):
        population_members(seeds, sweep)


def test_sweep_of_unknown_or_shape_changing_field_is_refused():
    with pytest.raises(ValueError, match="unknown config field 'inner_rate' for maml"):
        check_sweep(maml, TINY_MAML, ["inner_rate"])
    with pytest.raises(ValueError, match="'hidden_sizes' cannot differ between members: it "
                                         "changes array shapes"):
        check_sweep(maml, TINY_MAML, ["hidden_sizes"])
    family = metarl_jax.make("navigation2d")
    with pytest.raises(ValueError, match="'horizon' cannot differ"):
        make_population(maml, TINY_MAML, family, population_members(1, {"horizon": [8, 9]}))
    with pytest.raises(ValueError, match="gamma"):  # the config's own validation sees each value
        make_population(maml, TINY_MAML, family, population_members(1, {"gamma": [0.9, 1.5]}))


# -- the member axis computes what the plain learner computes ------------------------------


def test_population_of_one_is_the_plain_learner_bit_for_bit():
    family = metarl_jax.make("navigation2d")
    plain = maml.make(TINY_MAML, family)
    population = make_population(maml, TINY_MAML, family, [Member(3)])
    state = plain.init(jax.random.PRNGKey(3))
    pop_state = population.init(_keys([3]))
    assert _tree_equal(state, population.member_state(pop_state, 0))
    update, pop_update = jax.jit(plain.update), jax.jit(population.update)
    for i in range(2):
        key = jax.random.PRNGKey(100 + i)
        state, metrics = update(state, key)
        pop_state, pop_metrics = pop_update(pop_state, key[None])
    assert _tree_equal(state, population.member_state(pop_state, 0))
    assert all(np.array_equal(metrics[k], pop_metrics[k][0]) for k in metrics)


def test_member_is_the_plain_learner_with_its_seed_and_its_values():
    """Member i of a population of four computes what the plain learner with member
    i's seed and config values computes (up to the float reassociation of a batched
    matmul); members sharing a seed start equal and part only through their value."""
    family = metarl_jax.make("navigation2d")
    members = population_members([1, 2], {"inner_lr": [0.05, 0.2]})
    # Adam, not TRPO: TRPO's line search turns last-bit differences into different steps
    config = dataclasses.replace(TINY_MAML, outer_optimizer="adam")
    population = make_population(maml, config, family, members)
    keys = _keys([m.seed for m in members])
    pop_state = population.init(keys)
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, 7)
    pop_state, pop_metrics = jax.jit(population.update)(pop_state, step_keys)
    for i, member in enumerate(members):
        plain = maml.make(dataclasses.replace(config, **member.values), family)
        state, metrics = jax.jit(plain.update)(plain.init(jax.random.PRNGKey(member.seed)),
                                               step_keys[i])
        got = population.member_state(pop_state, i)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5),
                     state, got)
        for k in metrics:
            np.testing.assert_allclose(metrics[k], pop_metrics[k][i], rtol=2e-4, atol=2e-5)
    params = [population.member_state(pop_state, i).meta_params for i in range(4)]
    before = [population.member_state(population.init(keys), i).meta_params for i in range(4)]
    assert _tree_equal(before[0], before[1])          # seed 1, both inner_lr values
    assert not _tree_equal(before[0], before[2])      # another seed starts elsewhere
    assert not _tree_equal(params[0], params[1])      # the swept value reaches its member
    assert float(pop_metrics["pre_adaptation_return"][0]) == float(
        pop_metrics["pre_adaptation_return"][1])      # ... and only acts after adaptation


CASES = {  # (algorithm, family, family options): each learner's default config
    "maml": ("navigation2d", {}),
    "es_maml": ("navigation2d", {}),
    "reptile": ("navigation2d", {}),
    "rl2": ("bandit-bernoulli", {}),
    "varibad": ("gridnavi", {}),
    "pearl": ("point-robot", {}),
    "metaq": ("cartpole", {}),
    "mb": ("pendulum", {"change_every": 50}),
    "mb_de": ("pendulum", {"change_every": 50}),
    "grbal": ("pendulum", {"change_every": 50}),
    "rebal": ("pendulum", {"change_every": 50}),
    "mbml_policy": ("pendulum", {"change_every": 50}),
}


def _other_value(config, name):
    value = getattr(config, name)
    for candidate in (value * 0.5, value + 0.01, 0.05):
        try:
            dataclasses.replace(config, **{name: candidate})
        except (ValueError, TypeError):
            continue
        if candidate != value:
            return float(candidate)
    raise AssertionError(f"no valid second value for {name}={value!r}")


@pytest.mark.parametrize("name", sorted(algorithms.ALGORITHMS))
def test_every_declared_per_member_field_can_be_traced(name):
    """Each learner's HYPERPARAMETERS, all differing between two members at once, trace
    through init, update and evaluate (jax.eval_shape: tracing without compiling), so
    the list names no field used in shapes or Python control flow."""
    module = algorithms.get(name)
    if name not in CASES:
        pytest.fail(f"add {name} to CASES: every registered learner is checked")
    family_name, options = CASES[name]
    family = metarl_jax.make(family_name, **options)
    config = module.Config()
    fields = module.HYPERPARAMETERS
    assert fields, f"{name} declares no per-member fields"
    members = [Member(0, {f: float(getattr(config, f)) for f in fields}),
               Member(1, {f: _other_value(config, f) for f in fields})]
    population = make_population(module, config, family, members)
    keys = _keys([0, 1])
    state = jax.eval_shape(population.init, keys)
    new_state, metrics = jax.eval_shape(population.update, state, keys)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert all(v.shape == (2,) for v in metrics.values())
    assert population.key_metric in metrics
    tasks = family.sample(jax.random.PRNGKey(1), 2, "test")
    curves = jax.eval_shape(lambda s: population.evaluate(s, tasks, jax.random.PRNGKey(2)),
                            new_state)
    assert all(c.shape[:2] == (2, 2) for c in curves.curves.values())  # [members, tasks, x]


# -- the runner ----------------------------------------------------------------------------


def test_runner_population_of_one_equals_the_plain_run(tmp_path):
    plain = train(maml, TINY_MAML, "navigation2d", tmp_path / "plain", seed=3, **RUN)
    single = train(maml, TINY_MAML, "navigation2d", tmp_path / "pop", seed=3, seeds=1, **RUN)
    a, b = read_csv(plain.run_dir / "metrics.csv"), read_csv(single.run_dir / "metrics.csv")
    assert list(b["member"]) == [0] * 4
    assert all(np.array_equal(a[k], b[k]) for k in a)
    curve = single.adaptation_curve
    assert curve["population"] and curve["members"][0]["seed"] == 3
    for name, value in plain.adaptation_curve["curves"].items():
        assert curve["members"][0]["curves"][name]["per_task"] == value["per_task"]
        assert curve["curves"][name]["mean"] == value["mean"]


def test_runner_population_files_resume_and_reload(tmp_path):
    options = dict(seeds=2, sweep={"inner_lr": [0.05, 0.2]})
    full = train(maml, TINY_MAML, "navigation2d", tmp_path / "full", **options, **RUN)
    columns = read_csv(full.run_dir / "metrics.csv")
    assert list(columns["iteration"]) == [i for i in range(1, 5) for _ in range(4)]
    assert list(columns["member"]) == [0, 1, 2, 3] * 4
    summary = full.adaptation_curve
    assert set(summary["groups"]) == {"inner_lr=0.05", "inner_lr=0.2"}
    assert "maml [inner_lr=0.05]" in summary["curves"]
    assert summary["curves"]["maml [inner_lr=0.05]"]["num_seeds"] == 2
    group = [summary["members"][i]["curves"]["maml"]["mean"] for i in (0, 2)]
    np.testing.assert_allclose(summary["curves"]["maml [inner_lr=0.05]"]["mean"],
                               np.mean(group, axis=0), rtol=1e-6)
    assert (full.run_dir / "population_curve.png").stat().st_size > 0
    settings = json.loads((full.run_dir / "config.json").read_text())
    assert [m["seed"] for m in settings["population"]["members"]] == [0, 0, 1, 1]

    half = dict(RUN, num_iterations=2)
    train(maml, TINY_MAML, "navigation2d", tmp_path / "resumed", **options, **half)
    train(maml, TINY_MAML, "navigation2d", tmp_path / "resumed", **options, **RUN, resume=True)
    for csv_name in ("metrics.csv", "eval.csv"):
        assert ((tmp_path / "resumed" / csv_name).read_text()
                == (full.run_dir / csv_name).read_text()), csv_name
    with pytest.raises(ValueError, match="population"):  # another population is another run
        train(maml, TINY_MAML, "navigation2d", tmp_path / "resumed", seeds=3, **RUN, resume=True)

    run = load_run(full.run_dir)
    assert _tree_equal(run.state, full.state)
    member = run.learner.member_state(run.state, 3)
    assert _tree_equal(member, jax.tree.map(lambda x: x[3], full.state.members))


def test_non_finite_member_stops_or_is_dropped(tmp_path):
    family = toy.toy_family()
    sweep = {"inner_lr": [0.3, math.nan]}
    with pytest.raises(NonFiniteError, match=r"member 1 \(seed=0, inner_lr=nan\) turned "
                                             r"non-finite at iteration 1; run stopped"):
        train(toy, toy.Config(), family, tmp_path / "stop", sweep=sweep, **RUN)
    result = train(toy, toy.Config(), family, tmp_path / "drop", sweep=sweep, on_nan="drop",
                   **RUN)
    assert result.iteration == 4
    summary = result.adaptation_curve
    assert [m["alive"] for m in summary["members"]] == [True, False]
    assert summary["groups"]["inner_lr=nan"]["live_members"] == []
    assert all(math.isfinite(v) for v in summary["curves"]["toy [inner_lr=0.3]"]["mean"])
    assert all(math.isfinite(v) for v in result.metrics.values())  # the live members' mean
    with pytest.raises(ValueError, match="on_nan must be one of"):
        train(toy, toy.Config(), family, tmp_path / "x", seeds=2, on_nan="ignore", **RUN)


def test_summarize_population_checks_shapes():
    members = [{"seed": 0, "values": {}}, {"seed": 1, "values": {}}]
    with pytest.raises(ValueError, match=r"must be \[members=2, tasks, points\]"):
        summarize_population({"a": np.zeros((3, 4, 2))}, [0, 1], members, [True, True])
    out = summarize_population({"a": np.array([[[0.0, 1.0]], [[2.0, 5.0]]])}, [0, 1], members,
                               [True, True])
    assert out["curves"]["a"]["mean"] == [1.0, 3.0]
    np.testing.assert_allclose(out["curves"]["a"]["ci95"],
                               1.96 * np.std([[0, 1], [2, 5]], axis=0, ddof=1) / math.sqrt(2),
                               rtol=1e-6)


def test_cli_population(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(algorithms.ALGORITHMS, "toy", "test_runner")
    args = ["train", "toy", "--family", "toy-quadratic", "--iterations", "2", "--eval-every", "0",
            "--eval-num-tasks", "4", "--quiet"]
    monkeypatch.setattr("metarl_jax.tasks.make", lambda name, **kw: toy.toy_family())
    run_dir = tmp_path / "cli"
    assert cli_main(args + ["--seeds", "2", "--sweep", "inner_lr=0.1,0.3",
                            "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "[inner_lr=0.1]" in out and "every member:" in out
    settings = json.loads((run_dir / "config.json").read_text())
    assert [(m["seed"], m["values"]["inner_lr"]) for m in settings["population"]["members"]] == [
        (0, 0.1), (0, 0.3), (1, 0.1), (1, 0.3)]
    assert cli_main(["train", "toy", "--resume", str(run_dir), "--iterations", "4",
                     "--quiet"]) == 0  # the members come from the run
    for bad, message in ((["--sweep", "inner_lr"], "--sweep expects FIELD=V1,V2"),
                         (["--sweep", "inner_lr=a,b"], "values must be numbers"),
                         (["--seeds", "0"], "--seeds must be at least 1"),
                         (["--sweep", "meta_batch_size=2,4"], "cannot differ between members")):
        assert cli_main(args + bad + ["--run-dir", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
