"""Shape and dtype checks shared by every rule.

Checks run at trace time on static shapes, so they cost nothing inside `jax.jit`. Each error names
the function, the argument, what was received and what was expected: nothing is silently broadcast.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


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


def require_samples(fn: str, name: str, shape: tuple[int, ...]) -> None:
    """At least one sample (row): the losses average or sum over them."""
    if shape[0] == 0:
        fail(fn, f"{name} has no rows (shape {shape}); the loss needs at least one sample.")


def require_shape(fn: str, name: str, x, expected: Sequence[int], why: str = "") -> None:
    shape = shape_of(x)
    if shape != tuple(expected):
        reason = f" ({why})" if why else ""
        fail(fn, f"{name} has shape {shape}; expected {tuple(expected)}{reason}.")


def concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array when its value is known at trace time; ``None`` for a tracer.

    Checks of values (signs, label ranges) run on concrete inputs only, so the rules stay
    traceable under ``jit``; inside ``jit`` only shapes and dtypes are checked.
    """
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def first_non_finite(x: np.ndarray) -> tuple[int, tuple[int, ...], object] | None:
    """``(count, index of the first, its value)`` of the NaN and inf entries of a concrete array;
    ``None`` when every entry is finite (or the dtype cannot hold a non-finite value)."""
    x = np.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):  # jnp: bfloat16 counts too
        return None
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return int(bad.sum()), index, x[index]


def describe_non_finite(name: str, x: np.ndarray) -> str | None:
    """``"X contains 3 NaN or inf value(s) (first at row 5, column 2, value nan)"``, or ``None``."""
    found = first_non_finite(x)
    if found is None:
        return None
    count, index, value = found
    if not index:
        return f"{name} is {value}"
    where = f"index {index}" if len(index) > 2 else ", ".join(f"{a} {i}" for a, i in zip(("row", "column"), index))
    return f"{name} contains {count} NaN or inf value(s) (first at {where}, value {value})"


def require_array(fn: str, name: str, x) -> None:
    """An array (JAX, NumPy, or a NumPy scalar); a Python list or tuple is refused by name."""
    if isinstance(x, list | tuple | dict | str | type(None)):
        fail(fn, f"{name} must be an array (jax.Array or numpy.ndarray); got a {type(x).__name__}. "
                 f"Convert it first, e.g. jnp.asarray({name}).")


def is_int(x) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_)


def require_floating(fn: str, name: str, x, hint: str = "") -> None:
    require_array(fn, name, x)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        extra = f" {hint}" if hint else ""
        fail(fn, f"{name} has dtype {dtype} (shape {shape_of(x)}); expected a floating dtype.{extra}")


def require_penalty(fn: str, name: str, x) -> None:
    """A penalty weight: a non-negative, finite number: a Python or NumPy scalar, or a floating 0-d
    array (its value is checked when concrete; a traced one is checked for shape and dtype only)."""
    if isinstance(x, bool | np.bool_):
        fail(fn, f"{name} must be a number; got {x!r}.")
    if isinstance(x, numbers.Real):
        if not (math.isfinite(x) and x >= 0):
            fail(fn, f"{name} must be a finite number >= 0; got {x}.")
        return
    shape = shape_of(x)
    if shape != ():
        fail(fn, f"{name} must be a scalar; got shape {shape}.")
    require_floating(fn, name, x)
    value = concrete(x)
    if value is not None and not (np.isfinite(value) and value >= 0):
        fail(fn, f"{name} must be a finite number >= 0; got {value}.")


def require_square(fn: str, name: str, x, expected: str = "(n, n)") -> int:
    """Returns n after checking that x is an n × n matrix."""
    shape = require_ndim(fn, name, x, 2, expected)
    if shape[0] != shape[1]:
        fail(fn, f"{name} must be square with shape {expected}; got shape {shape}.")
    return shape[0]


def cast_like(ct, primal):
    """A cotangent in its primal's dtype: custom_vjp rules return float32 for float32 inputs."""
    return jnp.asarray(ct).astype(jnp.result_type(primal))
