"""Tests of the training runner with a toy learner.

This file is itself an algorithm module: ``Config`` and ``make`` at module
level follow the learner contract of :mod:`metarl_jax.algorithms`, so the
runner tests pass this module to ``train`` and the CLI and device tests
register it as algorithm ``"toy"`` (``ALGORITHMS["toy"] = "test_runner"``).

The toy learner is MAML on quadratics: task ``i`` has a target ``c_i``; one
inner step on the noisy loss ``0.5 |w - c_i - eps|^2`` gives
``w_i = w - alpha (w - c_i - eps)``; the meta-loss is the mean of
``0.5 |w_i - c_i|^2`` and Adam updates the initialisation ``w``. Noise comes
from the key, so determinism and resume tests see every key.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import types
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from metarl_jax.core.curves import make_curves
from metarl_jax.sharding import shard_tasks
from metarl_jax.tasks import TaskFamily
from metarl_jax.training import (
    ConfigError,
    NonFiniteError,
    RunDirectoryError,
    config_from_dict,
    evaluate_run,
    load_config_file,
    parse_assignments,
    train,
)
from metarl_jax.training.checkpoint import Checkpointer
from metarl_jax.training.runner import identity_differences
from metarl_jax.training.logging import read_csv, summarize_curves, truncate_csv

DIM = 3
# the Config fields a population may give per member (core.population)
HYPERPARAMETERS = ("inner_lr", "outer_lr", "noise_scale")

# -- the toy algorithm module -------------------------------------------------------


@struct.dataclass
class QuadraticTask:
    target: jax.Array  # [dim]


def toy_family(dim: int = DIM) -> TaskFamily:
    """Quadratic tasks with targets ~ U[-1, 1]^dim (ood: U[2, 3]^dim)."""
    ranges = {"train": {"target": (-1.0, 1.0)}, "ood": {"target": (2.0, 3.0)}}

    def sample_fn(key, split):
        low, high = ranges.get(split, ranges["train"])["target"]
        return QuadraticTask(jax.random.uniform(key, (dim,), jnp.float32, low, high))

    return TaskFamily(name="toy-quadratic", env=None, sample_fn=sample_fn, ranges=ranges,
                      description="quadratic bowls with random centres (runner tests)")


@dataclasses.dataclass(frozen=True)
class Config:
    """Toy MAML-on-quadratics hyperparameters."""

    meta_batch_size: int = 4
    inner_lr: float = 0.3
    outer_lr: float = 0.05
    noise_scale: float = 0.1
    eval_inner_lrs: tuple[float, ...] = ()  # step k uses entry min(k, len-1); () = inner_lr
    nan_at_iteration: int = 0        # 1-based iteration whose loss is NaN (0: never)
    nan_state_at_iteration: int = 0  # 1-based iteration whose new params are NaN

    def __post_init__(self):
        if self.meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {self.meta_batch_size}")


class ToyState(NamedTuple):
    w: jax.Array         # [dim]
    opt_state: Any
    step: jax.Array      # int32, iterations done


class ToyLearner(NamedTuple):
    init: Any
    update: Any
    evaluate: Any
    config: Config
    family: TaskFamily
    key_metric: str = "post_adaptation_return"


def make(config: Config, family: TaskFamily, mesh=None) -> ToyLearner:
    """The toy learner; per-task arrays go through ``shard_tasks``."""
    optimizer = optax.adam(config.outer_lr)
    eval_lrs = config.eval_inner_lrs or (config.inner_lr,)
    dim = jax.eval_shape(family.sample_params, jax.random.PRNGKey(0)).target.shape[0]

    def init(key):
        w = jax.random.normal(key, (dim,), jnp.float32)
        return ToyState(w, optimizer.init(w), jnp.zeros((), jnp.int32))

    def update(state, key):
        task_key, noise_key = jax.random.split(key)
        targets = shard_tasks(family.sample(task_key, config.meta_batch_size).target, mesh)
        noise = shard_tasks(config.noise_scale * jax.random.normal(noise_key, targets.shape),
                            mesh)  # [tasks, dim]
        iteration = state.step + 1

        def meta_loss(w):
            adapted = w - config.inner_lr * (w - targets - noise)
            post = 0.5 * jnp.sum((adapted - targets) ** 2, axis=-1)  # [tasks]
            pre = 0.5 * jnp.sum((w - targets) ** 2, axis=-1)
            poison = jnp.where(iteration == config.nan_at_iteration, jnp.nan, 1.0)
            return jnp.mean(post) * poison, jnp.mean(pre)

        (loss, pre), grads = jax.value_and_grad(meta_loss, has_aux=True)(state.w)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.w)
        w = optax.apply_updates(state.w, updates)
        w = jnp.where(iteration == config.nan_state_at_iteration, jnp.nan, w)
        metrics = {"outer_loss": loss, "grad_norm": optax.tree.norm(grads),
                   "pre_adaptation_return": -pre, "post_adaptation_return": -loss}
        return ToyState(w, opt_state, iteration), metrics

    def evaluate(state, task_params, key, num_steps=None):
        num_steps = 3 if num_steps is None else num_steps
        targets = shard_tasks(task_params.target, mesh)  # [tasks, dim]

        def curve(w0):
            w = jnp.broadcast_to(w0, targets.shape)
            out = []
            for k, noise_key in enumerate(jax.random.split(key, num_steps + 1)):
                out.append(-0.5 * jnp.sum((w - targets) ** 2, axis=-1))
                noise = config.noise_scale * jax.random.normal(noise_key, targets.shape)
                w = w - eval_lrs[min(k, len(eval_lrs) - 1)] * (w - targets - noise)
            return jnp.stack(out, axis=1)  # [tasks, num_steps + 1]

        return make_curves({"toy": curve(state.w), "zero_init": curve(jnp.zeros(dim, jnp.float32))},
                           range(num_steps + 1), "inner gradient steps")

    return ToyLearner(init=init, update=traced_at_most_once(update), evaluate=evaluate,
                      config=config, family=family)


def traced_at_most_once(fn):
    """``fn`` that fails if traced twice: the runner must compile ``update`` once.

    (``chex.assert_max_traces`` keys its counter by the function's ``id``,
    which a new learner's closure can reuse, so each learner counts its own.)
    """
    traces = []

    def wrapped(*args):
        traces.append(None)
        assert len(traces) == 1, "the runner traced the learner's update more than once"
        return fn(*args)

    return wrapped


TOY = sys.modules[__name__]

# -- helpers ------------------------------------------------------------------------

SETTINGS = dict(seed=0, num_iterations=8, iterations_per_call=2, eval_every=2,
                checkpoint_every=2, eval_num_tasks=4, eval_num_steps=2, quiet=True)


def run_toy(run_dir, config=None, **overrides):
    settings = {**SETTINGS, **overrides}
    return train(TOY, config or Config(), toy_family(), run_dir, **settings)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 8-iteration run."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    return run_toy(run_dir)


# -- the run directory ----------------------------------------------------------------


def test_run_directory_layout(reference):
    run_dir = reference.run_dir
    for name in ("config.json", "metrics.csv", "eval.csv", "timing.csv",
                 "adaptation_curve.json", "adaptation_curve.png", "training_curve.png"):
        assert (run_dir / name).is_file(), name
        assert (run_dir / name).stat().st_size > 0, name
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert Checkpointer(run_dir / "checkpoints").steps() == [4, 6, 8]  # max_to_keep=3

    settings = json.loads((run_dir / "config.json").read_text())
    assert settings["algorithm"] == "test_runner"
    assert settings["family"] == "toy-quadratic"
    assert settings["algorithm_config"]["inner_lr"] == 0.3
    assert settings["seed"] == 0 and settings["num_iterations"] == 8
    assert settings["versions"]["jax"] == jax.__version__
    assert settings["devices"]["count"] == jax.device_count()
    assert settings["key_metric"] == "post_adaptation_return"

    metrics = read_csv(run_dir / "metrics.csv")
    assert list(metrics) == ["iteration", "grad_norm", "outer_loss",
                             "post_adaptation_return", "pre_adaptation_return"]
    np.testing.assert_array_equal(metrics["iteration"], np.arange(1, 9))
    assert read_csv(run_dir / "eval.csv")["iteration"].tolist() == [2, 4, 6, 8]
    assert read_csv(run_dir / "timing.csv")["elapsed_s"][-1] > 0

    curve = json.loads((run_dir / "adaptation_curve.json").read_text())
    assert curve == reference.adaptation_curve
    assert curve["iteration"] == 8 and curve["x"] == [0, 1, 2]
    assert curve["xlabel"] == "inner gradient steps" and curve["split"] == "test"
    assert list(curve["curves"]) == ["toy", "zero_init"]
    assert np.asarray(curve["curves"]["toy"]["per_task"]).shape == (4, 3)
    # the metrics of the last iteration are returned as logged
    assert reference.metrics["outer_loss"] == pytest.approx(metrics["outer_loss"][-1])
    assert int(reference.state.step) == 8


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """60 iterations with another seed."""
    run_dir = tmp_path_factory.mktemp("long") / "run"
    return run_toy(run_dir, seed=1, num_iterations=60, eval_every=0, checkpoint_every=0)


def test_toy_learner_learns(long_run):
    """The runner drives a real optimisation to the known optimum.

    With targets ~ U[-1, 1]^3 the meta-loss is 0.245 (|w|^2 + 1) + 0.00135
    (alpha = 0.3, noise 0.1), minimal at w = 0. Over the last 20 iterations
    (80 tasks) its mean has a standard error of about 0.014 around 0.246."""
    result = long_run
    loss = read_csv(result.run_dir / "metrics.csv")["outer_loss"]
    assert np.linalg.norm(result.state.w) < 0.3
    assert loss[-20:].mean() < 0.30 < loss[:5].mean()
    toy = result.adaptation_curve["curves"]["toy"]["mean"]
    assert toy[1] > toy[0]  # adapting helps


def test_summarize_curves_confidence_interval():
    curves = {"a": np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]], np.float32)}
    summary = summarize_curves(curves, x=[0, 1])
    assert summary["x"] == [0, 1] and summary["num_tasks"] == 3
    np.testing.assert_allclose(summary["curves"]["a"]["mean"], [2.0, 4.0])
    np.testing.assert_allclose(summary["curves"]["a"]["ci95"],
                               1.96 * np.array([2.0, np.std([1, 3, 8], ddof=1)]) / np.sqrt(3),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="3 x values for curves of 2 points"):
        summarize_curves(curves, x=[1, 2, 3])
    with pytest.raises(ValueError, match="one shape"):
        summarize_curves({"a": np.zeros((3, 2)), "b": np.zeros((3, 3))}, x=[0, 1])


def test_curve_x_axis_comes_from_the_curves():
    """The runner reads x and its label from the AdaptationCurves, and rejects a bare dict."""
    from metarl_jax.training.runner import _Evaluator

    family = toy_family()
    learner = make(Config(), family)
    state = learner.init(jax.random.PRNGKey(0))
    tasks = family.sample(jax.random.PRNGKey(1), 2, "test")
    assert _Evaluator(learner, 2)(state, tasks, jax.random.PRNGKey(2))["x"] == [0, 1, 2]
    assert _Evaluator(learner, None)(state, tasks, jax.random.PRNGKey(2))["x"] == [0, 1, 2, 3]
    per_episode = learner._replace(evaluate=lambda state, task_params, key, num_steps: make_curves(
        {"rl2": jnp.zeros((2, 3))}, [1, 2, 3], "episode in trial"))
    summary = _Evaluator(per_episode, 2)(state, tasks, jax.random.PRNGKey(2))
    assert summary["x"] == [1, 2, 3] and summary["xlabel"] == "episode in trial"
    bare = learner._replace(evaluate=lambda state, task_params, key, num_steps: {
        "rl2": jnp.zeros((2, 3))})
    with pytest.raises(TypeError, match="must return AdaptationCurves"):
        _Evaluator(bare, 2)(state, tasks, jax.random.PRNGKey(2))


# -- determinism and resume ------------------------------------------------------------


def test_same_seed_same_files(reference, long_run, tmp_path):
    other = run_toy(tmp_path / "again")
    for name in ("metrics.csv", "eval.csv", "adaptation_curve.json"):
        assert (other.run_dir / name).read_bytes() == (reference.run_dir / name).read_bytes()
    assert leaves_equal(other.state, reference.state)
    seed1 = read_csv(long_run.run_dir / "metrics.csv")["outer_loss"][:8]
    assert not np.allclose(seed1, read_csv(reference.run_dir / "metrics.csv")["outer_loss"])


def test_iterations_per_call_does_not_change_the_run(reference, tmp_path):
    """One host call per iteration computes the same iterations as a scan of two."""
    single = run_toy(tmp_path / "single", iterations_per_call=1)
    a = read_csv(single.run_dir / "metrics.csv")
    b = read_csv(reference.run_dir / "metrics.csv")
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_resume_after_kill_is_bitwise_identical(reference, tmp_path):
    """Simulate a process killed after iteration 6: the save of step 6 was cut
    short (its files are garbage), a later save left a temporary directory, and
    a CSV row is half written. Resuming detects all three, continues from the
    good checkpoint at iteration 4 and ends bitwise equal to the uninterrupted run."""
    run_dir = tmp_path / "run"
    run_toy(run_dir, num_iterations=6)
    partial = run_dir / "checkpoints" / "8.orbax-checkpoint-tmp-1700000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\x00" * 10)
    corrupted = 0
    for path in (run_dir / "checkpoints" / "6" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))
            corrupted += 1
    assert corrupted
    with open(run_dir / "metrics.csv", "a") as f:
        f.write("7,0.12")  # a row cut short by the kill
    assert read_csv(run_dir / "eval.csv")["iteration"].tolist() == [2, 4, 6]

    with pytest.warns(RuntimeWarning) as warned:
        resumed = run_toy(run_dir, resume=True)
    messages = " | ".join(str(w.message) for w in warned)
    assert "removing incomplete checkpoint 8.orbax-checkpoint-tmp" in messages
    assert "skipping checkpoint 6" in messages
    assert not partial.exists()
    for name in ("metrics.csv", "eval.csv", "adaptation_curve.json"):
        assert (run_dir / name).read_bytes() == (reference.run_dir / name).read_bytes(), name
    assert leaves_equal(resumed.state, reference.state)
    assert read_csv(run_dir / "timing.csv")["iteration"].tolist() == list(range(1, 9))
    assert Checkpointer(run_dir / "checkpoints").steps() == [4, 6, 8]


def test_resume_of_a_finished_run_extends_it(reference, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)
    again = run_toy(run_dir, resume=True)  # nothing left to do
    assert leaves_equal(again.state, reference.state)
    assert (run_dir / "metrics.csv").read_bytes() == (
        reference.run_dir / "metrics.csv").read_bytes()
    longer = run_toy(run_dir, resume=True, num_iterations=10)
    assert read_csv(run_dir / "metrics.csv")["iteration"].tolist() == list(range(1, 11))
    assert int(longer.state.step) == 10
    with pytest.raises(ValueError, match="num_iterations=6 is below the 10 iterations"):
        run_toy(run_dir, resume=True, num_iterations=6)


def test_resume_refuses_a_different_config_or_algorithm(reference, tmp_path):
    with pytest.raises(RunDirectoryError, match=r"algorithm_config\.inner_lr: 0\.3 .* 0\.5"):
        run_toy(reference.run_dir, Config(inner_lr=0.5), resume=True)
    with pytest.raises(RunDirectoryError, match="seed: 0 .* 3"):
        run_toy(reference.run_dir, resume=True, seed=3)
    other_algorithm = types.ModuleType("other_toy")
    other_algorithm.Config, other_algorithm.make = Config, make
    with pytest.raises(RunDirectoryError, match="algorithm: 'test_runner' .* 'other_toy'"):
        train(other_algorithm, Config(), toy_family(), reference.run_dir, resume=True,
              **{k: v for k, v in SETTINGS.items()})
    # a checkpoint copied in from a run with another config is refused too
    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)
    other = run_toy(tmp_path / "other", Config(inner_lr=0.5), num_iterations=2)
    shutil.rmtree(run_dir / "checkpoints")
    shutil.copytree(other.run_dir / "checkpoints", run_dir / "checkpoints")
    with pytest.raises(RunDirectoryError, match=r"checkpoint at iteration 2 .*inner_lr"):
        run_toy(run_dir, resume=True)


def test_resume_accepts_a_run_saved_before_a_config_field_existed(reference, tmp_path):
    """A field added to the config since the run was saved counts as its default there:
    the run resumes unless the field is requested at another value."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference.run_dir, run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    del saved["algorithm_config"]["inner_lr"]  # as if inner_lr were new
    (run_dir / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RunDirectoryError, match=r"inner_lr: 0\.3 \(checkpoint\) vs 0\.5"):
        run_toy(run_dir, Config(inner_lr=0.5), resume=True)
    assert int(run_toy(run_dir, resume=True, num_iterations=10).state.step) == 10


def test_identity_differences_fall_back_to_defaults_only_for_missing_fields():
    saved = {"config": {"a": 1, "b": 2}}
    assert identity_differences(saved, {"config": {"a": 1, "b": 2, "c": 3}}, keys=["config"]) \
        == ["config.c: None (checkpoint) vs 3 (requested)"]
    defaults = {"config": {"a": 0, "b": 0, "c": 3}}
    assert identity_differences(saved, {"config": {"a": 1, "b": 2, "c": 3}}, keys=["config"],
                                defaults=defaults) == []
    assert identity_differences(saved, {"config": {"a": 1, "b": 0, "c": 4}}, keys=["config"],
                                defaults=defaults) == [
        "config.b: 2 (checkpoint) vs 0 (requested)", "config.c: 3 (checkpoint) vs 4 (requested)"]


def test_existing_run_directory_is_never_overwritten_silently(reference, tmp_path):
    before = (reference.run_dir / "metrics.csv").read_bytes()
    with pytest.raises(RunDirectoryError, match="already exists.*resume=True.*overwrite=True"):
        run_toy(reference.run_dir)
    assert (reference.run_dir / "metrics.csv").read_bytes() == before
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        run_toy(tmp_path / "missing", resume=True)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "stale.txt").write_text("old")
    run_toy(run_dir, num_iterations=2, overwrite=True)
    assert not (run_dir / "stale.txt").exists()
    assert read_csv(run_dir / "metrics.csv")["iteration"].tolist() == [1, 2]


# -- failures -----------------------------------------------------------------------------


def test_nan_metric_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"'grad_norm' = nan at iteration 5.*iteration 4"):
        run_toy(run_dir, Config(nan_at_iteration=5))
    assert Checkpointer(run_dir / "checkpoints").steps() == [2, 4]
    metrics = read_csv(run_dir / "metrics.csv")
    assert metrics["iteration"].tolist() == [1, 2, 3, 4, 5]  # the bad row is kept to inspect
    assert np.isnan(metrics["outer_loss"][-1]) and np.isfinite(metrics["outer_loss"][:-1]).all()


def test_nan_in_the_parameters_stops_the_run(tmp_path):
    with pytest.raises(NonFiniteError, match=r"learner state .* at iteration 3.*iteration 2"):
        run_toy(tmp_path / "run", Config(nan_state_at_iteration=3), iterations_per_call=1)


def test_bad_runner_arguments_are_named(tmp_path):
    with pytest.raises(ValueError,
                       match="eval_every=3 must be a multiple of iterations_per_call=2"):
        run_toy(tmp_path / "a", eval_every=3)
    with pytest.raises(ValueError, match="num_iterations must be an integer >= 1"):
        run_toy(tmp_path / "b", num_iterations=0)
    with pytest.raises(ConfigError, match="unknown config key 'inner_lrr'"):
        run_toy(tmp_path / "c", {"inner_lrr": 0.1})
    with pytest.raises(ValueError, match="unknown task family 'nope'"):
        train(TOY, None, "nope", tmp_path / "d", quiet=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# -- configs --------------------------------------------------------------------------------


def test_config_from_dict_checks_keys_and_types():
    config = config_from_dict(Config, {"inner_lr": 1, "eval_inner_lrs": [0.1, 0.05]})
    assert config.inner_lr == 1.0 and isinstance(config.inner_lr, float)
    assert config.eval_inner_lrs == (0.1, 0.05)
    with pytest.raises(ConfigError, match=r"unknown config key 'inner_lrr' for Config; "
                                          r"valid keys: meta_batch_size, inner_lr, outer_lr"):
        config_from_dict(Config, {"inner_lrr": 0.1})
    with pytest.raises(ConfigError, match=r"'meta_batch_size' expects int, got 'four' \(str\)"):
        config_from_dict(Config, {"meta_batch_size": "four"})
    with pytest.raises(ConfigError, match="'meta_batch_size' expects int, got 2.5"):
        config_from_dict(Config, {"meta_batch_size": 2.5})
    with pytest.raises(ConfigError, match="'meta_batch_size' expects int, got True"):
        config_from_dict(Config, {"meta_batch_size": True})
    with pytest.raises(ConfigError, match=r"'eval_inner_lrs\[1\]' expects float, got 'x'"):
        config_from_dict(Config, {"eval_inner_lrs": [0.1, "x"]})
    with pytest.raises(ConfigError, match="invalid Config: meta_batch_size must be >= 1"):
        config_from_dict(Config, {"meta_batch_size": 0})


def test_assignments_and_config_files(tmp_path):
    assert parse_assignments(["inner_lr=0.1", "eval_inner_lrs=[0.1,0.05]", "name=trpo",
                              "net.hidden=[64]"]) == {
        "inner_lr": 0.1, "eval_inner_lrs": [0.1, 0.05], "name": "trpo", "net": {"hidden": [64]}}
    with pytest.raises(ConfigError, match="--set expects key=value, got 'inner_lr'"):
        parse_assignments(["inner_lr"])
    (tmp_path / "c.toml").write_text("inner_lr = 0.2\neval_inner_lrs = [0.1]\n")
    (tmp_path / "c.json").write_text('{"inner_lr": 0.2, "eval_inner_lrs": [0.1]}')
    assert load_config_file(tmp_path / "c.toml") == load_config_file(tmp_path / "c.json")
    (tmp_path / "c.yaml").write_text("inner_lr: 0.2")
    with pytest.raises(ConfigError, match=r"must end in \.json or \.toml"):
        load_config_file(tmp_path / "c.yaml")
    (tmp_path / "bad.json").write_text("{inner_lr: }")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        load_config_file(tmp_path / "bad.json")


def test_truncate_csv_drops_later_and_partial_rows(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("iteration,a\n1,0.5\n2,0.25\n3,0.125\n4,0.0")
    truncate_csv(path, 2)
    assert path.read_text() == "iteration,a\n1,0.5\n2,0.25\n"
    path.write_text("iteration,a\n1,0.5\n2,0.2")
    truncate_csv(path, 5)
    assert path.read_text() == "iteration,a\n1,0.5\n"


# -- reading a run back -----------------------------------------------------------------------


def test_evaluate_run_reproduces_the_final_evaluation(reference):
    family = toy_family()
    summary, json_path, png_path = evaluate_run(reference.run_dir, family=family)
    assert summary["curves"] == reference.adaptation_curve["curves"]
    assert json_path.is_file() and png_path.is_file()
    ood, _, _ = evaluate_run(reference.run_dir, family=family, split="ood", num_tasks=3,
                             num_steps=4)
    assert ood["x"] == [0, 1, 2, 3, 4] and ood["num_tasks"] == 3
    # ood targets lie farther from the learned initialisation
    assert ood["curves"]["toy"]["mean"][0] < summary["curves"]["toy"]["mean"][0]
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        evaluate_run(reference.run_dir / "checkpoints", family=family)


# -- budget, progress callback, checkpoint directory -----------------------------------


def test_time_budget_stops_early_and_resumes_to_the_same_run(reference, tmp_path):
    """A budget stops after the host call that reached it; the stop is evaluated and
    checkpointed like the end, and resuming without a budget finishes the same run."""
    # any host call takes longer than a nanosecond: the first one (2 iterations) uses it up
    stopped = run_toy(tmp_path / "run", time_budget_s=1e-9, checkpoint_every=0, eval_every=0)
    assert stopped.iteration == SETTINGS["iterations_per_call"]
    assert stopped.adaptation_curve["iteration"] == stopped.iteration
    assert read_csv(stopped.run_dir / "metrics.csv")["iteration"][-1] == stopped.iteration
    again = run_toy(tmp_path / "run", time_budget_s=1e-9, checkpoint_every=0, eval_every=0,
                    resume=True)  # the budget is the whole run's: nothing left to train
    assert again.iteration == stopped.iteration
    finished = run_toy(tmp_path / "run", checkpoint_every=0, eval_every=0, resume=True)
    assert finished.iteration == SETTINGS["num_iterations"]
    assert leaves_equal(finished.state, reference.state)
    np.testing.assert_array_equal(read_csv(finished.run_dir / "metrics.csv")["outer_loss"],
                                  read_csv(reference.run_dir / "metrics.csv")["outer_loss"])
    with pytest.raises(ValueError, match="time_budget_s must be positive"):
        run_toy(tmp_path / "bad", time_budget_s=0)


def test_progress_fn_sees_every_iteration_and_each_evaluation(tmp_path):
    calls = []
    result = run_toy(tmp_path / "run", progress_fn=lambda i, m: calls.append((i, dict(m))))
    assert [i for i, _ in calls] == list(range(1, SETTINGS["num_iterations"] + 1))
    metrics = read_csv(result.run_dir / "metrics.csv")
    for i, m in calls:
        assert m["outer_loss"] == pytest.approx(metrics["outer_loss"][i - 1])
        assert m["elapsed_s"] >= 0
        evaluated = i % SETTINGS["eval_every"] == 0 or i == SETTINGS["num_iterations"]
        assert any(k.startswith("eval/toy_") for k in m) == evaluated, (i, sorted(m))
    with pytest.raises(TypeError, match="progress_fn must be callable"):
        run_toy(tmp_path / "bad", progress_fn=3)


def test_checkpoint_dir_outside_the_run_directory(reference, tmp_path):
    from metarl_jax.training import load_run

    result = run_toy(tmp_path / "run", checkpoint_dir=tmp_path / "elsewhere")
    assert not (result.run_dir / "checkpoints").exists()
    assert any((tmp_path / "elsewhere").iterdir())
    loaded = load_run(result.run_dir, family=toy_family())
    assert loaded.iteration == SETTINGS["num_iterations"]
    assert leaves_equal(loaded.state, reference.state)
