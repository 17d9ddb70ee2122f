"""Short fixed-seed runs whose ``metrics.csv`` and ``eval.csv`` are golden files.

Recorded before the shared-core refactor (issue 18) and compared byte for
byte by ``tests/test_golden.py``: moving code must not change a number the
learners produce. Regenerate (only for an intended change of results, and
say so in the commit) with ``python tests/golden/runs.py``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = ("metrics.csv", "eval.csv")

_MAML = {"meta_batch_size": 2, "inner_episodes": 2, "horizon": 10, "eval_episodes": 2,
         "hidden_sizes": [8, 8], "cg_iters": 3, "line_search_steps": 3, "num_epochs": 2}
_RL2 = {"meta_batch_size": 4, "num_minibatches": 2, "num_epochs": 2, "hidden_size": 8}

# name -> (algorithm, config, family, family options)
RUNS = {
    "maml_trpo_navigation2d": ("maml", {**_MAML, "outer_optimizer": "trpo"}, "navigation2d", {}),
    "maml_ppo_navigation2d": ("maml", {**_MAML, "outer_optimizer": "ppo"}, "navigation2d", {}),
    "maml_adam_cartpole": ("maml", {**_MAML, "outer_optimizer": "adam"}, "cartpole", {}),
    "rl2_gru_bandit": ("rl2", {**_RL2, "trial_episodes": 5}, "bandit-bernoulli", {"arms": 3}),
    "rl2_transformer_mdp": ("rl2", {**_RL2, "trial_episodes": 2, "memory": "transformer",
                                    "num_layers": 1, "num_heads": 2, "time_input": True},
                            "tabular-mdp", {"states": 3, "actions": 2, "episode_length": 3}),
    "rl2_gru_mdp_bptt": ("rl2", {**_RL2, "trial_episodes": 2, "bptt_length": 4,
                                 "previous_obs_input": True, "learning_reward": "expected",
                                 "privileged_value": True, "head_hidden_sizes": [8]},
                         "tabular-mdp", {"states": 3, "actions": 2, "episode_length": 3}),
}


def run(name: str, run_dir: Path) -> Path:
    """Train run ``name`` into ``run_dir`` (4 iterations, evaluated at 2 and 4)."""
    from metarl_jax.training import train

    train(*RUNS[name][:3], run_dir, **settings(name), num_iterations=4)
    return run_dir


def settings(name: str) -> dict:
    """The runner settings of run ``name`` (RL²'s evaluation plays its whole trial)."""
    algorithm, _, _, options = RUNS[name]
    return dict(family_options=options, seed=3, eval_every=2, checkpoint_every=0,
                eval_num_tasks=3, eval_num_steps=2 if algorithm == "maml" else None,
                quiet=True)


def main(names=None) -> None:
    for name in names or RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = run(name, Path(tmp) / name)
            out = HERE / name
            out.mkdir(exist_ok=True)
            for file in FILES:
                shutil.copyfile(run_dir / file, out / file)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main(sys.argv[1:])
