"""The shared core of every learner: the contract, adaptation curves, the rollout engine."""

from metarl_jax.core.curves import AdaptationCurves, make_curves
from metarl_jax.core.learner import Learner, check_learner
from metarl_jax.core.rollout import (
    MetaInputs,
    TrialBatch,
    Trajectory,
    WindowedEpisodes,
    episode_returns,
    push_transition,
    rollout,
    run_trial,
    run_trials,
    run_windowed,
    task_features,
    with_horizon,
)

__all__ = [
    "AdaptationCurves",
    "Learner",
    "MetaInputs",
    "TrialBatch",
    "Trajectory",
    "WindowedEpisodes",
    "check_learner",
    "episode_returns",
    "make_curves",
    "push_transition",
    "rollout",
    "run_trial",
    "run_trials",
    "run_windowed",
    "task_features",
    "with_horizon",
]
