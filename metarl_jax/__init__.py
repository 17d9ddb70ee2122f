"""metarl_jax: a JAX engine for meta-reinforcement learning."""

from metarl_jax.core.curves import AdaptationCurves
from metarl_jax.core.rollout import Trajectory, rollout
from metarl_jax.tasks import TaskFamily, family_descriptions, from_gymnax, list_families, make

__version__ = "0.1.0"

__all__ = [
    "AdaptationCurves",
    "TaskFamily",
    "Trajectory",
    "family_descriptions",
    "from_gymnax",
    "list_families",
    "make",
    "rollout",
    "__version__",
]
