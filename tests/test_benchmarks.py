"""The benchmark scripts are thin scripts over the library, and the reporting they share.

Every script in ``benchmarks/`` imports as a module on its own (no sibling
imports, no ``sys.path`` edits); the RL², MAML and imitation scripts run end
to end in a tiny setting (their training through the runner, their own
evaluation, their result files); ``metarl_jax.training.report`` and
``metarl_jax.players.published`` are checked against numpy and the paper's
table shapes.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from metarl_jax.players import published
from metarl_jax.training import report
from metarl_jax.training.logging import read_csv

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py"))


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (registered in ``sys.modules``, no ``sys.path``)."""
    module_name = f"benchmarks_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def tiny_rl2(*extra):
    """``--set`` flags of a tiny RL² network and batch."""
    flags = ["meta_batch_size=4", "hidden_size=4", "num_minibatches=2", "num_epochs=1", *extra]
    return [arg for flag in flags for arg in ("--set", flag)]


# -- the scripts stand alone -----------------------------------------------------------


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_scripts_import_no_sibling_and_touch_no_sys_path(name):
    tree = ast.parse((BENCHMARKS / f"{name}.py").read_text())
    siblings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            siblings.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            siblings.add(node.module.split(".")[0])
        elif isinstance(node, ast.Attribute) and node.attr == "path" \
                and isinstance(node.value, ast.Name) and node.value.id == "sys":
            pytest.fail(f"benchmarks/{name}.py uses sys.path")
    siblings &= set(SCRIPTS)
    assert not siblings, (
        f"benchmarks/{name}.py imports the benchmark scripts {sorted(siblings)}: move what "
        "they share into the library")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_script_imports_as_a_module(name):
    if name in ("torch_maml_reference", "torch_pearl_reference"):
        pytest.importorskip("torch")
    module = load_benchmark(name)
    assert callable(getattr(module, "main", None))


@pytest.mark.parametrize("name, argv, expected", [
    ("rl2_bandits", ["--quick"], {"cell_pairs": [(10, 5)], "iterations": 40, "minutes": 30.0}),
    ("rl2_bandits", ["--cells", "100,10", "--checkpoint-dir", "ck", "--minutes", "5"],
     {"cell_pairs": [(100, 10)], "checkpoint_dir": "ck", "minutes": 5.0}),
    ("rl2_mdp", ["--quick"], {"episodes": [10], "iterations": 40, "run_dir": None}),
    ("rl2_mdp", ["--cartpole", "--run-dir", "r"], {"cartpole": True, "run_dir": "r"}),
    ("maml_navigation", ["--seed", "2", "--quick"], {"seed": 2, "quick": True}),
    ("maml_cartpole", ["--horizon", "100"], {"horizon": 100, "run_dir": None}),
    ("rl2_mdp_imitation", ["--set", "memory=transformer"], {"overrides": ["memory=transformer"]}),
])
def test_benchmark_flags_parse(name, argv, expected):
    args = load_benchmark(name).parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key


def test_quick_runs_never_replace_a_recorded_result():
    nav, cart = load_benchmark("maml_navigation"), load_benchmark("maml_cartpole")
    assert nav.stem_of(nav.parse_args([])) == "maml_navigation"
    assert nav.stem_of(nav.parse_args(["--quick"])) == "maml_navigation_quick"
    assert nav.stem_of(nav.parse_args(["--seed", "3", "--meta-batch-size", "40"])) \
        == "maml_navigation_mb40_seed3"
    assert cart.stem_of(cart.parse_args(["--quick", "--horizon", "100"])) \
        == "maml_cartpole_h100_quick"
    assert os.path.basename(load_benchmark("rl2_bandits").parse_args(["--quick"]).out) \
        == "rl2_bandits_quick.json"
    with pytest.raises(SystemExit):
        load_benchmark("rl2_bandits").parse_args(["--cells", "10,7"])  # not a cell of Table 1


# -- end to end, tiny ----------------------------------------------------------------


def test_rl2_bandit_cell_trains_with_the_runner_and_scores_the_same_instances(
        tmp_path, monkeypatch):
    bench = load_benchmark("rl2_bandits")
    monkeypatch.setattr(bench, "BANDIT_PLAYERS", ("random", "greedy"))  # fewer compiles
    out = tmp_path / "bandits.json"
    cells = bench.main(["--quick", "--iterations", "2", "--instances", "8", *tiny_rl2(),
                        "--out", str(out), "--run-dir", str(tmp_path / "runs")])
    cell = cells["10,5"]
    run_dir = Path(cell["run_dir"])
    assert run_dir == (tmp_path / "runs" / "n_10__k_5").resolve()
    settings = json.loads((run_dir / "config.json").read_text())
    assert settings["algorithm"] == "rl2" and settings["family_options"] == {"arms": 5}
    assert settings["algorithm_config"]["hidden_size"] == 4  # --set reached the runner
    metrics = read_csv(run_dir / "metrics.csv")
    assert cell["iterations"] == 2 and list(metrics["iteration"]) == [1, 2]
    assert cell["env_steps"] == float(np.sum(metrics["env_steps"])) == 2 * 4 * 10
    assert cell["train_s"] == pytest.approx(read_csv(run_dir / "timing.csv")["elapsed_s"][-1])
    assert cell["compile_s"] > 0
    assert set(cell["ours"]) == {"random", "greedy", "bayes_optimal", "rl2", "rl2_mode"}
    assert cell["rl2_minus_best_baseline"]["baseline"] == "bayes_optimal"
    assert len(cell["rl2_per_pull_mean"]) == 10
    assert cell["ours"]["rl2"]["mean"] == pytest.approx(sum(cell["rl2_per_pull_mean"]))
    saved = json.loads(out.read_text())
    assert saved["cells"]["10,5"]["machine"] == report.machine_description()
    assert saved["cpu_count"] == os.cpu_count()


def test_rl2_mdp_cell_with_fewer_players(tmp_path, monkeypatch):
    bench = load_benchmark("rl2_mdp")
    monkeypatch.setattr(bench, "MDP_PLAYERS", ("random", "psrl", "known_mdp_optimum"))
    monkeypatch.setattr(bench, "MDP_EPISODE_LENGTH", 2)  # 20-step trials
    cells = bench.main(["--quick", "--iterations", "1", "--instances", "4", *tiny_rl2(),
                        "--out", str(tmp_path / "mdp.json"), "--run-dir", str(tmp_path)])
    cell = cells["10"]
    assert cell["iterations"] == 1 and len(cell["rl2_per_episode_mean"]) == 10
    assert "RL² − PSRL" in bench.markdown(cells)


def test_rl2_cartpole_records_the_runners_evaluations(tmp_path):
    bench = load_benchmark("rl2_mdp")
    result = bench.main(["--cartpole", "--iterations", "2", "--instances", "4",
                         "--cartpole-horizon", "5", "--cartpole-episodes", "2",
                         *tiny_rl2("bptt_length=null"), "--out", str(tmp_path / "c.json"),
                         "--run-dir", str(tmp_path / "runs")])
    run_dir = Path(result["run_dir"])
    evaluations = read_csv(run_dir / "eval.csv")
    assert [row["iteration"] for row in result["during_training"]] == [2]
    assert result["during_training"][0]["per_episode_mean"] == pytest.approx(
        [evaluations["rl2_1_mean"][-1], evaluations["rl2_2_mean"][-1]])
    assert len(result["test"]["per_episode"]) == len(result["ood"]["per_episode"]) == 2
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved["cartpole_random_push_direction"]["iterations"] == 2


def test_rl2_cell_locations_follow_the_flags(tmp_path):
    """Run directories go under --run-dir, else --checkpoint-dir, else the scratch folder; a
    cell is resumed only with --checkpoint-dir and only where its run directory holds a run.
    (The resume itself is tests/test_rl2.py's test_benchmark_training_resumes_exactly...)"""
    from metarl_jax.training import tables

    parse = load_benchmark("rl2_bandits").parse_args
    scratch = tmp_path / "scratch"
    run_dir, checkpoints, resume = tables.cell_location(parse([]), "n=10, k=5", scratch)
    assert (run_dir, checkpoints, resume) == (scratch.resolve() / "n_10__k_5", None, False)
    (scratch / "n_10__k_5").mkdir(parents=True)
    (scratch / "n_10__k_5" / "config.json").write_text("{}")
    assert not tables.cell_location(parse([]), "n=10, k=5", scratch)[2]  # replaced, not resumed
    ck = tmp_path / "ck"
    args = parse(["--checkpoint-dir", str(ck)])
    assert tables.cell_location(args, "n=10, k=5", scratch) == (
        ck.resolve() / "n_10__k_5", None, False)
    (ck / "n_10__k_5").mkdir(parents=True)
    (ck / "n_10__k_5" / "config.json").write_text("{}")
    assert tables.cell_location(args, "n=10, k=5", scratch)[2]
    args = parse(["--checkpoint-dir", str(ck), "--run-dir", str(tmp_path / "runs")])
    assert tables.cell_location(args, "n=10, k=5", scratch) == (
        (tmp_path / "runs").resolve() / "n_10__k_5", ck.resolve() / "n_10__k_5", False)


def test_maml_adaptation_evaluates_the_trained_state_as_the_runner_did(tmp_path):
    from metarl_jax.algorithms import maml
    from metarl_jax.training import adaptation

    config = maml.Config(meta_batch_size=2, inner_episodes=2, horizon=5, num_inner_steps=1,
                         hidden_sizes=(4,), outer_optimizer="adam", eval_episodes=2)
    lines = []
    result = adaptation.train_and_evaluate(
        "navigation2d", config, 3, eval_tasks=3, eval_steps=1, run_dir=tmp_path / "run",
        tune_lrs=(0.1, 0.05), tune_tasks=3, log_every=2, log=lines.append)
    assert result["iterations"] == 3 and result["run_dir"] == str(tmp_path / "run")
    assert [row["iteration"] for row in result["history"]] == [1, 2, 3]
    assert any(line.startswith("  it    2") for line in lines)
    # the test split is the runner's final evaluation: same tasks, same key
    saved = json.loads((tmp_path / "run" / "adaptation_curve.json").read_text())
    for name in ("maml", "pretrained", "random_init"):
        np.testing.assert_allclose(result["curves"][name]["mean"],
                                   saved["curves"][name]["mean"], rtol=1e-6)
        assert len(result["curves_tuned"][name]["mean"]) == 2
        assert set(result["tuning"]["chosen"][name]) <= {0.1, 0.05}
    table = adaptation.write(result, tmp_path, "nav", {"maml": [-40.0, -11.7]}, "t", log=None)
    assert "| maml (published) | -40.00 | -11.70 |" in table
    assert (tmp_path / "nav.png").exists()
    assert json.loads((tmp_path / "nav.json").read_text())["published"] == {
        "maml": [-40.0, -11.7]}


def test_imitation_uses_the_rl2_network_without_the_learner(tmp_path):
    """The imitation student is the network ``rl2.make`` builds, initialised and rolled out
    the same way, and the script runs end to end."""
    from metarl_jax import make
    from metarl_jax.algorithms import rl2

    bench = load_benchmark("rl2_mdp_imitation")
    family = make("tabular-mdp", episode_length=bench.EPISODE_LENGTH)
    tasks = family.sample(jax.random.PRNGKey(4), 2, "test")
    for options in (bench.Network(hidden_size=4, previous_obs_input=True),
                    bench.Network(memory="transformer", hidden_size=8, num_layers=1,
                                  num_heads=2)):
        student = bench.Student(options, family, num_episodes=2)
        learner = rl2.make(rl2.Config(trial_episodes=2, meta_batch_size=4, num_minibatches=1,
                                      **vars(options)), family)
        params = student.init(jax.random.PRNGKey(3))
        jax.tree.map(np.testing.assert_array_equal, params,
                     learner.init(jax.random.PRNGKey(3)).params)
        if options.memory == "gru":  # the rollout is the shared engine's, as RL²'s
            mine = student.trials(params, tasks, jax.random.PRNGKey(5))
            theirs = learner.run_trials(params, tasks, jax.random.PRNGKey(5), 2)
            np.testing.assert_array_equal(mine.action, theirs.action)
            np.testing.assert_array_equal(mine.inputs, theirs.inputs)
    with pytest.raises(SystemExit, match="unknown config key 'learning_rate'"):
        bench.main(["--set", "learning_rate=0.1"])  # only the network's options
    result = bench.main(["--episodes", "2", "--hidden-size", "4", "--batch", "4", "--steps",
                         "3", "--log-every", "1", "--instances", "4",
                         "--out", str(tmp_path / "im.json")])
    assert result["steps"] == 3 and [h["step"] for h in result["history"]] == [1, 2, 3]
    assert result["network"]["hidden_size"] == 4 and "num_layers" not in result["network"]
    runs = json.loads((tmp_path / "im.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["student_sample"] == result["student_sample"]


# -- report.py ---------------------------------------------------------------------------


def test_mean_and_se_agrees_with_numpy():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=257)
    stats = report.mean_and_se(x)
    assert stats["mean"] == pytest.approx(np.mean(x))
    assert stats["se"] == pytest.approx(np.std(x, ddof=1) / math.sqrt(x.size))
    assert report.mean_and_se([4.0]) == {"mean": 4.0, "se": 0.0}
    with pytest.raises(ValueError):
        report.mean_and_se([])


def test_mean_and_ci95_is_per_point():
    per_task = np.array([[0.0, 1.0], [2.0, 5.0], [4.0, 9.0]])
    summary = report.mean_and_ci95(per_task)
    np.testing.assert_allclose(summary["mean"], [2.0, 5.0])
    np.testing.assert_allclose(summary["ci95"],
                               1.96 * per_task.std(axis=0, ddof=1) / math.sqrt(3))


def test_format_mean_se():
    assert report.format_mean_se({"mean": 6.714, "se": 0.0712}) == "6.71 ± 0.07"
    assert report.format_mean_se({"mean": -1.25, "se": 0.5}, 1, signed=True) == "-1.2 ± 0.5"
    assert report.format_mean_se({"mean": 2.0, "se": 0.04}, 1, signed=True) == "+2.0 ± 0.0"


def test_side_by_side_markdown_puts_ours_under_the_published_row():
    cells = {
        "10": {"published": {"a": 1.0, "b": 2.0}, "ours": {"a": {"mean": 1.234, "se": 0.1}},
               "quick": False, "train_s": 90.0, "iterations": 7, "env_steps_per_s": 12345.6},
        "2": {"published": {"a": 3.0, "b": 4.0}, "ours": {"b": {"mean": 4.5, "se": 0.25}},
              "quick": True, "train_s": 30.0, "iterations": 1, "env_steps_per_s": 10.0},
    }
    text = report.side_by_side_markdown(
        cells, caption="cap", key_header="n", columns=("a", "b"), headers=("A", "B"),
        extra_headers=("X",), extra=lambda cell: [str(cell["iterations"])], sort_key=int,
        digits=1, machine="M")
    lines = text.splitlines()
    assert lines[0] == "Machine: M. cap"
    assert lines[2] == "| n | source | A | B | X | RL² train time | env steps/s |"
    assert lines[4:] == [  # sorted by int: 2 before 10
        "| 2 | published | 3.0 | 4.0 | | | |",
        "| 2 | ours (quick) | — | 4.5 ± 0.2 | 1 | 0.5 min (1 it) | 10 |",
        "| 10 | published | 1.0 | 2.0 | | | |",
        "| 10 | ours | 1.2 ± 0.1 | — | 7 | 1.5 min (7 it) | 12,346 |",
    ]
    with pytest.raises(ValueError):
        report.side_by_side_markdown(cells, caption="", key_header="n", columns=("a",),
                                     headers=("A", "B"), extra_headers=(), extra=lambda c: [],
                                     sort_key=int, digits=1)


def test_machine_is_detected():
    usable, total = report.cpu_cores()
    assert 1 <= usable <= total == os.cpu_count()
    description = report.machine_description()
    assert report.cpu_model() in description and f"{total} cores" in description
    assert "JAX devices: " + report.device_summary() in description
    meta = report.machine_metadata()
    assert meta["machine"] == description and meta["jax"] == jax.__version__
    assert meta["devices"] == [str(d) for d in jax.devices()]


def test_update_json_merges_and_records_the_machine(tmp_path):
    path = tmp_path / "sub" / "r.json"
    report.update_json(path, {"cells": {"a": 1}}, metadata=False)
    merged = report.update_json(path, {"other": 2})
    saved = json.loads(path.read_text())
    assert saved == merged and saved["cells"] == {"a": 1} and saved["other"] == 2
    assert saved["cpu_count"] == os.cpu_count() and "date" in saved
    assert not list(path.parent.glob("*.tmp"))
    assert report.read_json(tmp_path / "missing.json", {"x": 1}) == {"x": 1}


def test_csv_rows_and_run_timing(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "iteration,loss\n" + "".join(f"{i},{i / 10}\n" for i in range(1, 8)))
    (tmp_path / "timing.csv").write_text("iteration,elapsed_s\n1,0.5\n2,1.5\n3,2.0\n")
    assert [r["iteration"] for r in report.csv_rows(tmp_path / "metrics.csv", 3)] == [1, 3, 6, 7]
    assert report.csv_rows(tmp_path / "metrics.csv", 3)[1] == {"iteration": 3, "loss": 0.3}
    progress = report.Progress(lambda it, m: f"it {it}", every=2, print_fn=None)
    progress.started -= 10.0  # ten seconds before iteration 3 (resumed after 2) ended
    progress(3, {"elapsed_s": 2.0})
    timing = report.run_timing(tmp_path, progress)
    assert timing["iterations"] == 3 and timing["train_s"] == 2.0
    assert timing["resumed_from"] == 2
    assert timing["compile_s"] == pytest.approx(10.0 - 0.5, abs=0.5)


def test_progress_prints_the_first_every_and_last_iteration():
    lines = []
    progress = report.Progress(lambda it, m: f"it {it}", every=3, total=7, print_fn=lines.append)
    for iteration in range(1, 8):
        progress(iteration, {"elapsed_s": float(iteration)})
    assert lines == ["it 1", "it 3", "it 6", "it 7"]
    lines.clear()
    resumed = report.Progress(lambda it, m: f"it {it}", every=10, print_fn=lines.append)
    resumed(11, {"elapsed_s": 1.0})
    assert lines == ["  resumed from iteration 10", "it 11"]


# -- published.py ------------------------------------------------------------------------


def test_published_tables_have_a_value_per_column_and_rl2():
    for values in published.BANDIT_PUBLISHED.values():
        assert len(values) == len(published.BANDIT_COLUMNS) + 1
    for values in published.MDP_PUBLISHED.values():
        assert len(values) == len(published.MDP_COLUMNS) + 1
    assert len(published.BANDIT_HEADERS) == len(published.BANDIT_COLUMNS)
    assert len(published.MDP_HEADERS) == len(published.MDP_COLUMNS)
    row = published.published_row(published.BANDIT_COLUMNS, published.BANDIT_PUBLISHED[(10, 5)])
    assert row["gittins"] == 6.6 and row["rl2"] == 6.7
    assert published.published_row(published.MDP_COLUMNS, ()) == {}
    with pytest.raises(ValueError):
        published.published_row(("a",), (1.0, 2.0, 3.0))


def test_varibad_gridnavi_trains_both_learners_at_equal_env_steps(tmp_path):
    bench = load_benchmark("varibad_gridnavi")
    out = tmp_path / "gridnavi.json"
    result = bench.main(["--quick", "--iterations", "3", "--instances", "16", "--out", str(out)])
    training = result["training"]
    assert training["varibad"]["iterations"] == training["rl2"]["iterations"] == 3
    assert training["varibad"]["env_steps"] == training["rl2"]["env_steps"] == 3 * 64 * 4 * 6
    rows = result["returns"]
    assert set(rows) == {"random", "belief_greedy", "bayes_optimal", "known_goal", "varibad",
                         "varibad_mode", "rl2", "rl2_mode"}
    assert all(len(row["per_episode"]) == 4 for row in rows.values())
    assert result["bayes_optimal_exact"] == pytest.approx(14.76)
    first = json.loads(out.read_text())
    assert first["setting"]["size"] == 3
    # a second attempt with other settings keeps the first's rows and its RL² run
    again = bench.main(["--quick", "--variant", "buffer", "--env-steps", str(3 * 64 * 4 * 6),
                        "--skip-rl2", "--instances", "16", "--out", str(out)])
    assert again["training"]["varibad_buffer"]["iterations"] == 12   # 16 trials an iteration
    assert again["training"]["varibad_buffer"]["env_steps"] == training["rl2"]["env_steps"]
    assert again["training"]["rl2"] == first["training"]["rl2"]
    assert again["returns"]["rl2"] == first["returns"]["rl2"]
    assert again["returns"]["varibad"] == first["returns"]["varibad"]
    assert {"varibad_buffer", "varibad_buffer_mode"} <= set(again["returns"])
    assert again["training"]["varibad_buffer"]["config"]["vae_buffer_trials"] == 10_000


def test_pearl_navigation_records_return_against_env_steps_beside_maml(tmp_path):
    bench = load_benchmark("pearl_navigation")
    out = tmp_path / "pearl.json"
    result = bench.main(["--quick", "--eval-tasks", "4", "--out", str(out)])
    row = result["final"]
    assert row["env_steps"] > 0 and len(row["pearl"]["mean"]) == 3
    assert set(row) >= {"pearl", "prior_z", "success_last_episode", "iteration"}
    maml = result["maml"]
    assert maml["env_steps"] == 200 * 20 * 20 * 100 * 2   # the recorded MAML run's budget
    assert json.loads(out.read_text())["family"] == "navigation2d"
    # RL² with the recorded run's env steps, added to the same file
    merged = bench.main(["--quick", "--rl2-only", "--out", str(out)])
    rl2 = merged["rl2_equal_steps"]
    assert rl2["env_steps"] >= row["env_steps"] and len(rl2["rl2"]["mean"]) == 3
    assert merged["final"] == json.loads(json.dumps(row))


def test_pearl_benchmark_trains_maml_on_the_same_family_elsewhere(tmp_path):
    bench = load_benchmark("pearl_navigation")
    out = tmp_path / "pearl_point.json"
    with pytest.raises(SystemExit):   # nothing recorded yet to put MAML beside
        bench.main(["--quick", "--family", "point-robot", "--maml-only", "--out", str(out)])
    first = bench.main(["--quick", "--family", "point-robot", "--eval-tasks", "4",
                        "--out", str(out)])
    assert first["maml"] is None
    merged = bench.main(["--quick", "--family", "point-robot", "--maml-only", "--out", str(out)])
    maml = merged["maml"]
    assert maml["env_steps"] == 2 * 2 * 2 * 20 * 2   # iterations x tasks x episodes x 20 x 2
    curve = maml["return_by_inner_step"]["mean"]   # before adapting, then after each step
    assert len(curve) >= 2 and maml["best_after_adaptation"] == max(curve[1:])
    # a curve against env steps, evaluated every iteration in the quick run, ending at the end
    assert [row["iteration"] for row in maml["history"]] == [1, 2]
    assert maml["history"][-1]["return_by_inner_step"] == maml["return_by_inner_step"]
    assert maml["history"][-1]["env_steps"] == maml["env_steps"]
    # a later attempt writes its own file beside the first and carries MAML's result over
    later = bench.main(["--quick", "--family", "point-robot", "--eval-tasks", "4",
                        "--variant", "80tasks", "--out", str(out)])
    assert later["config"]["num_train_tasks"] == 80 and later["variant"] == "80tasks"
    assert later["maml"] == json.loads(json.dumps(maml))
    assert json.loads((tmp_path / "pearl_point_80tasks.json").read_text())["variant"] == "80tasks"
    assert json.loads(out.read_text())["config"]["num_train_tasks"] == 6   # first run kept


def test_metaq_classic_records_metaq_beside_the_per_task_dqn_and_rl2(tmp_path):
    bench = load_benchmark("metaq_classic")
    out = tmp_path / "metaq.json"
    result = bench.main(["--quick", "--eval-tasks", "3", "--out", str(out)])
    assert set(result["final"]) == {"test", "ood"}
    assert set(result["final"]["test"]) == {"metaq", "mql", "no_context"}
    assert len(result["final"]["test"]["metaq"]["mean"]) == 2
    dqn = result["per_task_dqn"]
    assert len(dqn["test"]["env_steps_per_task"]) == len(dqn["test"]["return"]["mean"]) == 4
    assert result["rl2_equal_steps"]["env_steps"] >= result["env_steps"]
    assert json.loads(out.read_text())["family"] == "cartpole"
    # PEARL's discrete variant with metaq's env steps, on the same tasks, in the same file
    merged = bench.main(["--quick", "--pearl-only", "--out", str(out)])
    pearl_run = merged["pearl_equal_steps"]
    assert pearl_run["env_steps"] >= result["env_steps"]
    assert set(pearl_run["test"]) >= {"pearl", "prior_z"} and set(pearl_run) >= {"test", "ood"}
    assert merged["final"] == json.loads(json.dumps(result["final"]))   # metaq's run kept
    with pytest.raises(SystemExit):   # nothing recorded to put PEARL beside
        bench.main(["--quick", "--pearl-only", "--out", str(tmp_path / "none.json")])


def test_offpolicy_speed_times_pearl_and_metaq(tmp_path):
    bench = load_benchmark("offpolicy_speed")
    result = bench.main(["--quick", "--repeats", "1", "--no-torch",
                         "--out", str(tmp_path / "speed.json")])
    for row in list(result["pearl"].values()) + [result["metaq"]]:
        assert row["jax_gradient_steps_per_s"] > 0 and row["jax_env_steps_per_s"] > 0


def test_model_based_records_each_learner_on_test_and_ood(tmp_path):
    bench = load_benchmark("model_based")
    out = tmp_path / "mb.json"
    result = bench.main(["--quick", "--learners", "grbal", "--out", str(out)])
    assert set(result["learners"]) == {"grbal"}
    grbal = result["learners"]["grbal"]
    assert set(grbal["final"]) == {"test", "ood"}
    assert {"grbal", "no_adaptation", "random"} <= set(grbal["final"]["test"])
    # --planner cem changes only the planner of every learner (no run: the suite's time)
    for name in bench.LEARNERS:
        rs, cem = (bench.config("pendulum", name, True, p) for p in ("rs", "cem"))
        assert cem.planner.kind == "cem" and cem.planner.iterations == 3
        assert dataclasses.replace(cem, planner=rs.planner) == rs
    per_task = grbal["final"]["test"]["per_task"]   # for paired differences between learners
    assert len(per_task) == 3 and np.isclose(np.mean(per_task),
                                             grbal["final"]["test"]["grbal"]["mean"][0])
    steps = [row["env_steps"] for row in grbal["history"]]
    assert steps == sorted(steps) and steps[0] > 0 and len(steps) == 3
    # MAML-TRPO and RL² on the same family, against GrBAL's and MB's histories
    baselines = load_benchmark("model_based_baselines").main(["--quick", "--source", str(out)])
    for run in baselines.values():
        assert run["env_steps"] > 0 and run["history"]
        assert "grbal_steps_to_best" in run and "grbal_ratio" in run
    recorded = json.loads(out.read_text())
    assert set(recorded["learners"]) == {"grbal"} and set(recorded["baselines"]) == {"maml", "rl2"}
    assert (tmp_path / "mb_sample_efficiency.png").exists()
    # a second source on the same family reuses those baselines instead of training them
    second = tmp_path / "mb_known.json"
    second.write_text(json.dumps({**{k: v for k, v in recorded.items() if k != "baselines"},
                                  "date": "2000-01-01T00:00:00"}))
    reused = load_benchmark("model_based_baselines").main(
        ["--quick", "--source", str(second), "--baselines-from", str(out)])
    assert reused["maml"]["history"] == recorded["baselines"]["maml"]["history"]
    assert reused["rl2"]["reused_from"] == "mb.json"
    assert reused["rl2"]["machine"] == recorded["machine"]   # where it was trained
    assert json.loads(second.read_text())["date"] == "2000-01-01T00:00:00"   # its own runs'
    other = dict(recorded, eval_tasks=recorded["eval_tasks"] + 1)
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="eval_tasks"):
        load_benchmark("model_based_baselines").main(
            ["--quick", "--source", str(second), "--baselines-from", str(tmp_path / "other.json")])


def test_model_based_speed_times_the_control_step(tmp_path):
    bench = load_benchmark("model_based_speed")
    result = bench.main(["--quick", "--no-torch", "--out", str(tmp_path / "speed.json")])
    assert [(r["ensemble"], r["envs"]) for r in result["rows"]] == [(1, 1), (5, 1), (1, 2)]
    assert all(r["jax"]["median_s"] > 0 and r["torch"] is None for r in result["rows"])


def test_varibad_navigation_trains_both_at_equal_env_steps_and_reads_maml(tmp_path):
    bench = load_benchmark("varibad_navigation")
    result = bench.main(["--quick", "--eval-tasks", "4", "--out", str(tmp_path / "nav.json")])
    runs = result["learners"]
    assert runs["varibad"]["env_steps"] == runs["rl2"]["env_steps"] == 3 * 4 * 2 * 5
    for run in runs.values():
        assert set(run["return_per_episode"]) == {"sample", "mode"}
        assert len(run["return_per_episode"]["sample"]["mean"]) == 2
    assert bench.maml_navigation_reference(bench.RESULTS)["env_steps"] > 1e6


def test_varibad_speed_times_every_learner(tmp_path):
    bench = load_benchmark("varibad_speed")
    result = bench.main(["--quick", "--out", str(tmp_path / "speed.json")])
    assert set(result["rows"]) == {"gridnavi"}
    for rows in result["rows"].values():
        assert set(rows) == {"varibad", "varibad_buffer", "rl2"}
        for row in rows.values():
            assert row["env_steps_per_s"] > 0 and row["env_steps_per_iteration"] > 0
