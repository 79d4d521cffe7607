"""Random valid inputs for the rules: one set of builders for the registry, the tests and the benchmarks.

Values are drawn with NumPy and converted once: eager ``jax.random`` would compile its kernels again
for every new shape (hypothesis tries many). A registry sampler receives a JAX key and turns it into
a NumPy generator with :func:`numpy_rng`, so ``gradcheck --seeds N`` still sees N different problems.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def numpy_rng(seed) -> np.random.Generator:
    """A NumPy generator from an int, a generator (returned as is) or a JAX PRNG key."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, int | np.integer):
        return np.random.default_rng(int(seed))
    if jax.dtypes.issubdtype(jnp.result_type(seed), jax.dtypes.prng_key):
        seed = jax.random.key_data(seed)
    return np.random.default_rng(np.asarray(seed, np.uint32).ravel().tolist())


def integers(rng: np.random.Generator, count: int, low: int, high: int) -> list[int]:
    """``count`` ints in ``[low, high]`` (both ends included): random shapes."""
    return [int(x) for x in rng.integers(low, high + 1, count)]


def uniform(rng, shape, dtype, scale: float = 1.0) -> jax.Array:
    """Values in ``[−scale, scale)``; ``rng`` as for :func:`numpy_rng`."""
    return jnp.asarray(numpy_rng(rng).uniform(-scale, scale, shape), dtype)


def probability_rows(rng, shape, dtype, one_hot: bool = True) -> jax.Array:
    """Rows (the last axis) of class probabilities: one-hot, or soft with every entry positive."""
    rng = numpy_rng(rng)
    *lead, k = shape
    if one_hot:
        return jnp.asarray(np.eye(k)[rng.integers(0, k, lead)], dtype)
    E = np.exp(rng.uniform(-2, 2, shape))
    return jnp.asarray(E / E.sum(axis=-1, keepdims=True), dtype)


def fan_in_weights(rng: np.random.Generator, shape, dtype, scale: float = 1.0) -> jax.Array:
    """Weights ``U(±scale·2/√fan_in)`` with ``fan_in = shape[0]``: hidden units are not saturated."""
    return uniform(rng, shape, dtype, scale * 2.0 / np.sqrt(shape[0]))
