"""Networks: distributions, the MLP policy and value, memories, the action-space dispatch."""

from metarl_jax.nn import memory
from metarl_jax.nn.distributions import Categorical, DiagGaussian, Distribution, TanhGaussian
from metarl_jax.nn.memory import GRUActorCritic, TransformerActorCritic
from metarl_jax.nn.mlp import MLP, MLPPolicy, ValueNetwork, make_policy, policy_sample_fn
from metarl_jax.nn.spaces import ActionSpec, action_spec

__all__ = [
    "ActionSpec",
    "Categorical",
    "DiagGaussian",
    "Distribution",
    "GRUActorCritic",
    "MLP",
    "MLPPolicy",
    "TanhGaussian",
    "TransformerActorCritic",
    "ValueNetwork",
    "action_spec",
    "make_policy",
    "memory",
    "policy_sample_fn",
]
