"""Shape and dtype checks shared by every rule.

Checks run at trace time on static shapes, so they cost nothing inside `jax.jit`. Each error names
the function, the argument, what was received and what was expected: nothing is silently broadcast.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp


def fail(fn: str, message: str) -> None:
    raise ValueError(f"{fn}: {message}")


def shape_of(x) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


def require_ndim(fn: str, name: str, x, ndim: int, expected: str) -> tuple[int, ...]:
    """Returns x's shape after checking it has `ndim` axes; `expected` reads like '(N, D)'."""
    shape = shape_of(x)
    if len(shape) != ndim:
        fail(fn, f"{name} must be {ndim}-D with shape {expected}; got shape {shape}.")
    return shape


def require_shape(fn: str, name: str, x, expected: Sequence[int], why: str = "") -> None:
    shape = shape_of(x)
    if shape != tuple(expected):
        reason = f" ({why})" if why else ""
        fail(fn, f"{name} has shape {shape}; expected {tuple(expected)}{reason}.")


def require_floating(fn: str, name: str, x, hint: str = "") -> None:
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        extra = f" {hint}" if hint else ""
        fail(fn, f"{name} has dtype {dtype} (shape {shape_of(x)}); expected a floating dtype.{extra}")


def require_penalty(fn: str, name: str, x) -> None:
    """A penalty weight: a non-negative Python number, or a floating scalar array (may be traced)."""
    if isinstance(x, bool):
        fail(fn, f"{name} must be a number; got {x!r}.")
    if isinstance(x, int | float):
        if not x >= 0:  # also rejects NaN
            fail(fn, f"{name} must be >= 0; got {x}.")
        return
    shape = shape_of(x)
    if shape != ():
        fail(fn, f"{name} must be a scalar; got shape {shape}.")
    require_floating(fn, name, x)


def require_square(fn: str, name: str, x, expected: str = "(n, n)") -> int:
    """Returns n after checking that x is an n × n matrix."""
    shape = require_ndim(fn, name, x, 2, expected)
    if shape[0] != shape[1]:
        fail(fn, f"{name} must be square with shape {expected}; got shape {shape}.")
    return shape[0]


def cast_like(ct, primal):
    """A cotangent in its primal's dtype: custom_vjp rules return float32 for float32 inputs."""
    return jnp.asarray(ct).astype(jnp.result_type(primal))
