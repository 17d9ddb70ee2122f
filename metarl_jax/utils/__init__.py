"""Helpers any layer may import: pytree arithmetic and config validators."""

from metarl_jax.utils.tree import tree_all_finite, tree_axpy, tree_vdot
from metarl_jax.utils.validators import (
    check_bool,
    check_choice,
    check_in_unit_interval,
    check_int_at_least,
    check_non_negative,
    check_positive,
    check_positive_int,
    check_positive_int_tuple,
)

__all__ = [
    "check_bool",
    "check_choice",
    "check_in_unit_interval",
    "check_int_at_least",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
    "check_positive_int_tuple",
    "tree_all_finite",
    "tree_axpy",
    "tree_vdot",
]
