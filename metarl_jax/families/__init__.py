"""The shipped task families; importing this package registers them."""
from metarl_jax.families import meta_rl  # noqa: F401
from metarl_jax.families import classic_control  # noqa: F401
