"""Pytree arithmetic with one meaning each (BLAS names)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def tree_axpy(alpha: Any, x: Any, y: Any) -> Any:
    """``alpha * x + y`` leafwise; ``alpha`` is a scalar or a pytree shaped like ``x``.

    A gradient step is ``tree_axpy(-lr, grads, params)``.
    """
    if isinstance(alpha, (float, int)) or getattr(alpha, "ndim", None) == 0:
        return jax.tree.map(lambda xi, yi: alpha * xi + yi, x, y)
    return jax.tree.map(lambda a, xi, yi: a * xi + yi, alpha, x, y)


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """``sum_i <a_i, b_i>`` over the leaves, a float32 scalar."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.sum(x * y), a, b))
    return sum(leaves, jnp.zeros((), jnp.float32))


def tree_all_finite(tree: Any) -> jax.Array:
    """Scalar bool: every inexact (float or complex) leaf of ``tree`` is finite."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
