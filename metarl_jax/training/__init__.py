"""The host side of training: the runner loop, configs, checkpoints, logs and plots.

Everything that touches files, clocks or progress bars lives here; the
algorithms below stay pure.
"""

from metarl_jax.training.checkpoint import Checkpointer
from metarl_jax.training.config import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config_file,
    parse_assignments,
)
from metarl_jax.training.runner import (
    LoadedRun,
    NonFiniteError,
    RunDirectoryError,
    RunResult,
    evaluate_run,
    load_run,
    train,
)

__all__ = [
    "Checkpointer",
    "ConfigError",
    "LoadedRun",
    "NonFiniteError",
    "RunDirectoryError",
    "RunResult",
    "config_from_dict",
    "config_to_dict",
    "evaluate_run",
    "load_config_file",
    "load_run",
    "parse_assignments",
    "train",
]
