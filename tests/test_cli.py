"""Tests of the ``metarl`` command line.

The toy learner of ``test_runner.py`` is registered as algorithm ``"toy"`` and
its family as ``"toy-quadratic"`` for the duration of each test, so the CLI
is exercised end to end without depending on a real algorithm's speed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import test_runner as toy
from metarl_jax import algorithms, tasks
from metarl_jax.cli import main
from metarl_jax.training.logging import read_csv

TINY = ["--iterations", "4", "--eval-every", "2", "--checkpoint-every", "2",
        "--eval-num-tasks", "4", "--eval-num-steps", "2", "--quiet"]


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    tasks.list_families()  # load the shipped families first
    monkeypatch.setitem(algorithms.ALGORITHMS, "toy", "test_runner")
    monkeypatch.setitem(tasks._REGISTRY, "toy-quadratic",
                        (toy.toy_family, "quadratic bowls with random centres"))


def cli(argv, capsys):
    """Run ``metarl argv`` in-process: ``(exit code, stdout, stderr)``."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's own exits (--help, invalid choice)
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments, expected_code=2):
    assert code == expected_code, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A toy run trained by the CLI (own registration: module scope)."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    with pytest.MonkeyPatch.context() as mp:
        tasks.list_families()
        mp.setitem(algorithms.ALGORITHMS, "toy", "test_runner")
        mp.setitem(tasks._REGISTRY, "toy-quadratic", (toy.toy_family, "quadratic bowls"))
        code = main(["train", "toy", "--family", "toy-quadratic", "--family-option", "dim=2",
                     "--set", "inner_lr=0.2", "--set", "eval_inner_lrs=[0.2,0.1]",
                     "--run-dir", str(run_dir), *TINY])
    assert code == 0
    return run_dir


def test_train_writes_the_run_and_prints_where(trained, capsys):
    settings = json.loads((trained / "config.json").read_text())
    assert settings["algorithm"] == "toy" and settings["family"] == "toy-quadratic"
    assert settings["family_options"] == {"dim": 2}
    assert settings["algorithm_config"]["inner_lr"] == 0.2
    assert settings["algorithm_config"]["eval_inner_lrs"] == [0.2, 0.1]
    assert settings["num_iterations"] == 4 and settings["eval_num_steps"] == 2
    assert read_csv(trained / "metrics.csv")["iteration"].tolist() == [1, 2, 3, 4]
    assert (trained / "adaptation_curve.png").is_file()

    run_dir = trained.parent / "printed"
    code, out, _ = cli(["train", "toy", "--family", "toy-quadratic", "--run-dir", run_dir,
                        "--iterations", "2", "--eval-every", "0", "--checkpoint-every", "0",
                        "--eval-num-tasks", "2", "--eval-num-steps", "1", "--quiet"], capsys)
    assert code == 0
    assert f"run directory:    {run_dir}" in out
    assert f"adaptation curve: {run_dir / 'adaptation_curve.png'}" in out
    assert "| toy |" in out and "| zero_init |" in out


def test_resume_and_evaluate(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    code, _, err = cli(["train", "toy", "--resume", run_dir, "--iterations", "6", "--quiet"],
                       capsys)
    assert code == 0, err
    assert read_csv(run_dir / "metrics.csv")["iteration"].tolist() == list(range(1, 7))
    settings = json.loads((run_dir / "config.json").read_text())
    assert settings["num_iterations"] == 6 and settings["family_options"] == {"dim": 2}

    code, out, err = cli(["evaluate", run_dir, "--split", "ood", "--num-tasks", "3",
                          "--num-steps", "1"], capsys)
    assert code == 0, err
    result = json.loads((run_dir / "evaluation_ood.json").read_text())
    assert result["split"] == "ood" and result["num_tasks"] == 3 and result["x"] == [0, 1]
    assert (run_dir / "evaluation_ood.png").is_file()
    assert "ood tasks: 3, iteration 6" in out


def test_config_file_then_set(tmp_path, capsys):
    config = tmp_path / "toy.toml"
    config.write_text("inner_lr = 0.25\nouter_lr = 0.01\n")
    run_dir = tmp_path / "run"
    code, _, err = cli(["train", "toy", "--family", "toy-quadratic", "--config", config,
                        "--set", "outer_lr=0.02", "--run-dir", run_dir,
                        "--iterations", "2", "--eval-every", "0", "--checkpoint-every", "0",
                        "--eval-num-tasks", "2", "--quiet"], capsys)
    assert code == 0, err
    saved = json.loads((run_dir / "config.json").read_text())["algorithm_config"]
    assert saved["inner_lr"] == 0.25 and saved["outer_lr"] == 0.02


@pytest.mark.parametrize("argv, fragments", [
    (["train", "nope", "--family", "toy-quadratic"], ["invalid choice: 'nope'", "toy"]),
    (["train", "toy", "--family", "nope"], ["unknown task family 'nope'", "navigation2d"]),
    (["train", "toy", "--family", "toy-quadratic", "--set", "inner_lrr=0.1"],
     ["unknown config key 'inner_lrr'", "valid keys: meta_batch_size, inner_lr"]),
    (["train", "toy", "--family", "toy-quadratic", "--set", "meta_batch_size=four"],
     ["'meta_batch_size' expects int, got 'four'"]),
    (["train", "toy", "--family", "toy-quadratic", "--set", "inner_lr"],
     ["--set expects key=value, got 'inner_lr'"]),
    (["train", "toy", "--family", "toy-quadratic", "--family-option", "arms=3"],
     ["unknown option(s) ['arms']", "valid options: ['dim']"]),
    (["train", "toy"], ["--family is required", "toy-quadratic"]),
    (["train", "toy", "--family", "toy-quadratic", "--config", "missing.toml"],
     ["config file 'missing.toml' does not exist"]),
    (["train", "toy", "--family", "toy-quadratic", "--iterations", "3",
      "--iterations-per-call", "2"], ["num_iterations=3 must be a multiple of"]),
    (["train", "toy", "--family", "toy-quadratic", "--iterations", "many"],
     ["--iterations: invalid int value: 'many'"]),
    (["evaluate", "no/such/run"], ["'no/such/run' is not a run directory"]),
    (["train", "toy", "--resume", "no/such/run"], ["cannot resume 'no/such/run'"]),
])
def test_bad_arguments_give_one_line_errors(argv, fragments, capsys):
    code, _, err = cli(argv, capsys)
    assert_one_line_error(code, err, *fragments)


def test_existing_or_mismatched_run_directories_are_refused(trained, capsys):
    before = (trained / "metrics.csv").read_bytes()
    code, _, err = cli(["train", "toy", "--family", "toy-quadratic", "--run-dir", trained,
                        *TINY], capsys)
    assert_one_line_error(code, err, "already exists", "--resume", "--overwrite")
    code, _, err = cli(["train", "toy", "--resume", trained, "--set", "inner_lr=0.5",
                        "--quiet"], capsys)
    assert_one_line_error(code, err, "algorithm_config.inner_lr: 0.2 (checkpoint) vs 0.5")
    code, _, err = cli(["train", "toy", "--resume", trained, "--family-option", "dim=3",
                        "--quiet"], capsys)
    assert_one_line_error(code, err, "family_options.dim: 2 (checkpoint) vs 3")
    code, _, err = cli(["train", "maml", "--resume", trained], capsys)
    assert_one_line_error(code, err, "is a 'toy' run, not 'maml'")
    assert (trained / "metrics.csv").read_bytes() == before


def test_nan_exits_with_code_1(tmp_path, capsys):
    code, _, err = cli(["train", "toy", "--family", "toy-quadratic", "--run-dir", tmp_path / "r",
                        "--set", "nan_at_iteration=3", *TINY], capsys)
    assert_one_line_error(code, err, "non-finite value", "at iteration 3",
                          "Last good checkpoint: iteration 2", expected_code=1)


def test_help_documents_options_and_config_fields(capsys):
    code, out, _ = cli(["train", "toy", "--help"], capsys)
    assert code == 0
    assert "config fields of toy" in out
    assert "inner_lr" in out and "0.3" in out and "(tuple[float, ...])" in out
    for flag in ("--iterations", "--eval-every", "--checkpoint-every", "--seed", "--run-dir",
                 "--resume", "--family-option", "--set", "--config", "--quiet"):
        assert flag in out
    flat = " ".join(out.split())
    assert "(default: 100;" in flat and "(default: 25;" in flat
    code, out, _ = cli(["train", "--help"], capsys)
    assert code == 0 and "metarl train ALGO --help" in out
    code, out, _ = cli(["evaluate", "--help"], capsys)
    assert code == 0 and "(default: test)" in " ".join(out.split())  # undo line wrapping


def test_listings(capsys):
    code, out, _ = cli(["families"], capsys)
    assert code == 0
    assert "toy-quadratic: quadratic bowls" in out
    assert "train  target in [-1, 1]" in out and "ood    target in [2, 3]" in out
    assert "navigation2d" in out
    code, out, _ = cli(["algorithms"], capsys)
    assert code == 0
    for name in ("maml", "rl2", "toy"):
        assert f"\n{name} " in "\n" + out


def test_console_script_exit_code_and_message():
    """The installed ``metarl`` script: exit code 2, one line, no traceback."""
    metarl = shutil.which("metarl")
    assert metarl is not None, "the metarl console script is not installed"
    done = subprocess.run([metarl, "train", "maml", "--family", "no-such-family"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "unknown task family 'no-such-family'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.skipif("metarl_jax.algorithms.maml" not in algorithms.ALGORITHMS.values(),
                    reason="maml is not registered")
def test_maml_end_to_end_tiny(tmp_path, capsys):
    """``metarl train maml`` on navigation2d at a tiny size, then ``evaluate``.

    Slow only because compiling MAML's second-order meta-update takes a while."""
    run_dir = tmp_path / "maml"
    code, out, err = cli(["train", "maml", "--family", "navigation2d",
                          "--set", "meta_batch_size=2", "--set", "inner_episodes=2",
                          "--set", "horizon=10", "--set", "eval_episodes=2",
                          "--set", "hidden_sizes=[8]", "--set", "outer_optimizer=adam",
                          "--set", "train_pretrained=false", "--iterations", "2",
                          "--eval-num-tasks", "2", "--eval-num-steps", "1",
                          "--run-dir", run_dir, "--quiet"], capsys)
    assert code == 0, err
    assert f"run directory:    {run_dir}" in out and "| maml |" in out
    curve = json.loads((run_dir / "adaptation_curve.json").read_text())
    assert list(curve["curves"]) == ["maml", "random_init"] and curve["x"] == [0, 1]
    assert read_csv(run_dir / "metrics.csv")["iteration"].tolist() == [1, 2]
    code, out, err = cli(["evaluate", run_dir], capsys)
    assert code == 0, err
    again = json.loads((run_dir / "evaluation_test.json").read_text())
    assert again["curves"] == curve["curves"]  # evaluate reproduces the final evaluation
