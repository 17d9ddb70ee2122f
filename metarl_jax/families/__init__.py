"""The shipped task families; importing this package registers them."""
from metarl_jax.families import meta_rl  # noqa: F401
