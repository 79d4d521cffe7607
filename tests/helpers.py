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


def assert_close(a, b, rtol: float, what: str = "", atol: float = 0.0) -> None:
    """Relative error ≤ rtol, or (where the result is tiny by cancellation) absolute error ≤ atol."""
    err = rel_err(a, b)
    if err > rtol and atol > 0 and np.isfinite(err):
        diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if np.size(y))
        if diff <= atol:
            return
    assert err <= rtol, f"{what}: max relative error {err:.3e} > {rtol:.0e}"


def rng_of(seed_or_rng) -> np.random.Generator:
    return seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)


def uniform(seed_or_rng, shape, dtype, scale=1.0):
    """Bounded random values in [−scale, scale), from NumPy: eager jax.random would compile its
    kernels again for every new shape hypothesis draws."""
    return jnp.asarray(rng_of(seed_or_rng).uniform(-scale, scale, shape), dtype)


def init_mlp(seed_or_rng, dims, dtype, weight_scale=1.0):
    """Random (W_j, b_j) for widths dims[0] -> ... -> dims[-1], weights ~ U(±scale/√fan_in)."""
    rng = rng_of(seed_or_rng)
    return [(uniform(rng, (a, b), dtype, weight_scale * 2.0 / np.sqrt(a)), uniform(rng, (b,), dtype, 0.5))
            for a, b in zip(dims[:-1], dims[1:])]


def probability_rows(seed_or_rng, n, k, dtype, one_hot=True):
    rng = rng_of(seed_or_rng)
    if one_hot:
        return jnp.asarray(np.eye(k)[rng.integers(0, k, n)], dtype)
    E = np.exp(rng.uniform(-2, 2, (n, k)))
    return jnp.asarray(E / E.sum(axis=1, keepdims=True), dtype)


def assert_runs_through_custom_rule(core, loss, args, monkeypatch) -> None:
    """``loss`` is a custom_vjp call to ``core``, and ``jax.grad`` invokes ``core``'s backward."""
    jaxpr = str(jax.make_jaxpr(loss)(*args))
    assert "custom_vjp_call" in jaxpr and f"name={core.fun.__name__}" in jaxpr
    calls, original = [], core.bwd
    monkeypatch.setattr(core, "bwd", lambda *a: calls.append(1) or original(*a))
    jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(loss(*a))))(*args)
    assert calls, "jax.grad did not call the closed-form backward"
