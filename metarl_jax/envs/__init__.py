"""Pure-JAX environments with gymnax 1.0 signatures; params are the task."""

from metarl_jax.envs.environment import EnvParams, EnvState, Environment
