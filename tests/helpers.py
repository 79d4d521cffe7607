"""Comparison helpers shared by the test modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

F64_RTOL = 1e-10
F32_RTOL = 1e-4


def rel_err(a, b) -> float:
    """Largest relative error over the leaves of two pytrees: ‖a − b‖_∞ / ‖b‖_∞ per leaf.

    A leaf whose reference is zero everywhere is compared absolutely (its scale is 1).
    """
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b), (jax.tree.structure(a), jax.tree.structure(b))
    worst = 0.0
    for x, y in zip(la, lb):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        assert x.shape == y.shape, (x.shape, y.shape)
        if y.size == 0:
            continue
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return float("inf")  # a NaN must fail the comparison, not vanish inside max()
        scale = float(np.max(np.abs(y))) or 1.0
        worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def assert_close(a, b, rtol: float, what: str = "") -> None:
    err = rel_err(a, b)
    assert err <= rtol, f"{what}: max relative error {err:.3e} > {rtol:.0e}"


def uniform(key, shape, dtype, scale=1.0):
    """Bounded random values in [−scale, scale)."""
    return jax.random.uniform(key, shape, jnp.float64, -scale, scale).astype(dtype)


def init_mlp(key, dims, dtype, weight_scale=1.0):
    """Random (W_j, b_j) for widths dims[0] -> ... -> dims[-1], weights ~ U(±scale/√fan_in)."""
    keys = jax.random.split(key, 2 * (len(dims) - 1))
    params = []
    for j in range(len(dims) - 1):
        W = uniform(keys[2 * j], (dims[j], dims[j + 1]), dtype, weight_scale * 2.0 / np.sqrt(dims[j]))
        b = uniform(keys[2 * j + 1], (dims[j + 1],), dtype, 0.5)
        params.append((W, b))
    return params


def probability_rows(key, n, k, dtype, one_hot=True):
    if one_hot:
        return jax.nn.one_hot(jax.random.randint(key, (n,), 0, k), k, dtype=dtype)
    return jax.nn.softmax(uniform(key, (n, k), jnp.float64, 2.0), axis=-1).astype(dtype)
