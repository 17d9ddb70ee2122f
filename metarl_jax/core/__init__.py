"""The shared core of every learner: the contract, adaptation curves, the rollout engine."""

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.learner import Learner, check_learner
from metarl_jax.core.rollout import (
    MetaInputs,
    TrialBatch,
    Trajectory,
    episode_returns,
    rollout,
    run_trial,
    run_trials,
    task_features,
    with_horizon,
)

__all__ = [
    "AdaptationCurves",
    "Learner",
    "MetaInputs",
    "TrialBatch",
    "Trajectory",
    "check_learner",
    "episode_returns",
    "make_curves",
    "rollout",
    "run_trial",
    "run_trials",
    "task_features",
    "with_horizon",
]
