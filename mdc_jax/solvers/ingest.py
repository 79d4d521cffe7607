"""The fits' input, on the host before the compiled loop: checks of every argument, and ``X`` as the
JAX array the loop reads, without a copy where NumPy's buffer allows it.

``X``'s values are not scanned here: the loop's first gradient is finite exactly when ``X`` is (see
:data:`~mdc_jax.solvers.newton.NON_FINITE`), and only then does :func:`raise_non_finite` look for the
first NaN or inf to name it. Why ``X`` is copied into an aligned buffer rather than by ``jnp.asarray``,
with the figures measured, is in ``docs/newton.md``.
"""

from __future__ import annotations

import inspect
import mmap

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from .newton import MAX_ITER


def refuse_traced(fn, *args):
    """The fits check their data on the host and compile their own Newton loop: no tracers."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
        v.fail(fn, "got a traced argument (a call inside jax.jit, vmap or grad); the fit checks its data on the "
                   "host and runs its own compiled Newton loop, so call it outside jit.")


def as_numpy(fn, name, x, expected):
    """``np.asarray(x)``, with NumPy's own error for ragged nested lists or odd objects named by argument."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as err:
        problem = err
    v.fail(fn, f"{name} must be {expected}; NumPy cannot make an array of it ({problem}).")


def check_X_shape(fn, shape, dtype):
    """The checks that need only X's shape and dtype (and so also run on a traced X)."""
    if len(shape) != 2:
        v.fail(fn, f"X must be 2-D with shape (n, d), samples as rows; got shape {shape}.")
    if shape[0] == 0 or shape[1] == 0:
        v.fail(fn, f"X has shape {shape}; expected at least one row and one column.")
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_)):
        v.fail(fn, f"X has dtype {dtype} (shape {shape}); expected a real numeric dtype.")


def check_X(fn, X):
    """A concrete ``X`` (any array-like) as a finite floating NumPy array: integers and bools become float64."""
    X = as_numpy(fn, "X", X, "an (n, d) array-like of numbers, samples as rows")
    check_X_shape(fn, tuple(X.shape), X.dtype)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(np.float64)
    problem = v.describe_non_finite("X", X)
    if problem:
        v.fail(fn, f"{problem}; expected finite values.")
    return X


def fit_dtype(dtype) -> np.dtype:
    """The dtype a fit computes in for ``X`` of ``dtype``: ``X``'s own for float32 and float64; float32
    for narrower floats (float16, bfloat16: XLA has no Cholesky for them, and their 11 or 8 significant
    bits could not carry a Newton step); float64 for integers and bools. Canonical (float64 is float32
    without ``jax_enable_x64``), in the native byte order."""
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = np.float64
    elif jnp.finfo(dtype).bits < 32:
        dtype = np.float32
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype)).newbyteorder("=")


# jax.device_put(..., may_alias=True) lets a NumPy buffer back a JAX array without a copy on CPU.
CAN_ALIAS = "may_alias" in inspect.signature(jax.device_put).parameters
_ALIGN = 64  # XLA:CPU's buffer alignment: a NumPy array aligned to it and C-contiguous can be aliased


def _aligned_buffer(nbytes: int):
    """A writable buffer of ``nbytes`` aligned to ``_ALIGN`` bytes. On Linux a private anonymous
    mapping advised for transparent huge pages (page-aligned; far fewer page faults to fill it: see
    docs/newton.md); elsewhere a NumPy allocation."""
    if nbytes and all(hasattr(mmap, name) for name in ("MADV_HUGEPAGE", "MAP_PRIVATE", "MAP_ANONYMOUS")):
        try:
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            buf.madvise(mmap.MADV_HUGEPAGE)
            return buf
        except (OSError, ValueError):
            pass
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    offset = (-raw.ctypes.data) % _ALIGN
    return raw[offset:offset + nbytes]


def _aligned_copy(X: np.ndarray, dtype) -> np.ndarray:
    """A C-contiguous copy of ``X`` (as ``dtype``) in a buffer aligned to ``_ALIGN`` bytes."""
    dtype = np.dtype(dtype)
    out = np.frombuffer(_aligned_buffer(X.size * dtype.itemsize), dtype).reshape(X.shape)
    np.copyto(out, X, casting="unsafe")
    return out


def fit_input(fn, X):
    """``X`` as the JAX array the compiled fit reads, checked for shape and dtype (its values are
    checked inside the fit: see ``NON_FINITE``), in :func:`fit_dtype` (integer and bool input become
    float64, float16 and bfloat16 float32).

    A JAX array is used as it is (cast only when :func:`fit_dtype` differs). A NumPy array is aliased
    when its buffer allows it (C order, 64-byte aligned, the fit's dtype), and otherwise copied once by
    NumPy into an aligned buffer which JAX then aliases: ``jnp.asarray`` of a misaligned array (NumPy's
    default allocation is 16-byte aligned) copies it several times slower (docs/newton.md).
    """
    if isinstance(X, jax.Array):
        check_X_shape(fn, tuple(X.shape), X.dtype)
        dtype = fit_dtype(X.dtype)
        return X if X.dtype == dtype else X.astype(dtype)
    X = as_numpy(fn, "X", X, "an (n, d) array-like of numbers, samples as rows")
    check_X_shape(fn, tuple(X.shape), X.dtype)
    dtype = fit_dtype(X.dtype)  # big-endian data is copied to the native order
    if not CAN_ALIAS:
        return jnp.asarray(X, dtype)
    if not (X.dtype == dtype and X.flags.c_contiguous and X.ctypes.data % _ALIGN == 0):
        X = _aligned_copy(X, dtype)
    return jax.device_put(X, may_alias=True)


def raise_non_finite(fn, X, hessian_dtype=None):
    """For ``NON_FINITE``: name the first NaN or inf of ``X``, or say that its values overflow."""
    problem = v.describe_non_finite("X", np.asarray(X))
    if problem:
        v.fail(fn, f"{problem}; expected finite values.")
    dtypes = {np.dtype(X.dtype).name, np.dtype(hessian_dtype or X.dtype).name}
    v.fail(fn, f"X's values are too large (max |x| = {float(np.max(np.abs(np.asarray(X)))):.3g}): the gradient "
               f"Xᵀ(π − y) or the Hessian XᵀWX overflows {' / '.join(sorted(dtypes))}; rescale the columns of X.")


def check_options(fn, l2, tol, max_iter):
    """l2, tol and max_iter as Python numbers: Python or NumPy numbers, or 0-d arrays; not bools."""
    l2_value = v.require_number(fn, "l2", l2)
    tol_value = v.require_number(fn, "tol", tol, positive=True)
    iters = v.require_static_int(fn, "max_iter", max_iter)
    if iters > MAX_ITER:  # checked here, not by require_static_int's maximum, to say why
        v.fail(fn, f"max_iter must be at most 2**31 - 1 = {MAX_ITER} (the step counter is int32); got {max_iter!r}.")
    return l2_value, tol_value, iters


def check_hessian_dtype(fn, hessian_dtype, X_dtype):
    """``hessian_dtype`` as a NumPy dtype: ``None`` is ``X_dtype``; otherwise float32 or float64 by any name."""
    if hessian_dtype is None:
        return X_dtype
    try:
        dtype = None if isinstance(hessian_dtype, bool | int | float) else jnp.dtype(hessian_dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in ("float32", "float64"):  # (np.dtype == None holds for float64)
        v.fail(fn, f"hessian_dtype must be None (X's dtype), 'float32' or 'float64'; got {hessian_dtype!r}.")
    return dtype


def _integer_labels(fn, name, labels, n, allowed: str):
    """``labels`` as an ``(n,)`` int64 NumPy array: integers, bools or integral floats."""
    labels = as_numpy(fn, name, labels, f"an (n,) array-like of integer labels in {allowed}")
    if labels.ndim != 1 or labels.shape[0] != n:
        v.fail(fn, f"{name} has shape {labels.shape}; expected ({n},), one label per row of X.")
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        v.fail(fn, f"{name} has dtype {labels.dtype}; expected integer labels in {allowed}.")
    if labels.dtype.kind in "fc" and (not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels))):
        bad = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        v.fail(fn, f"{name} must hold integer labels in {allowed}; got non-integer value(s) {bad[:5]}.")
    if labels.dtype.kind in "fc" and np.any(np.abs(labels) >= 2**62):  # would wrap around as int64
        v.fail(fn, f"{name} must hold integer labels in {allowed}; got value(s) "
                   f"{np.unique(labels[np.abs(labels) >= 2**62])[:5]} outside it.")
    return labels.astype(np.int64)


def binary_labels(fn, y, n) -> np.ndarray:
    """``y`` as ``(n,)`` int64 labels in ``{0, 1}``, both classes present."""
    labels = _integer_labels(fn, "y", y, n, "{0, 1}")
    outside = (labels != 0) & (labels != 1)
    if outside.any():
        v.fail(fn, f"y must hold labels in {{0, 1}}; got value(s) {np.unique(labels[outside])[:5]} outside it. "
                   f"For more than two classes use fit_multinomial_newton.")
    if labels.min() == labels.max():
        v.fail(fn, f"y contains only the class {labels[0]}; both classes 0 and 1 must be present.")
    return labels


def multinomial_labels(fn, labels, n, n_classes) -> tuple[np.ndarray, int]:
    """``(labels, k)``: ``(n,)`` int64 labels in ``0..k−1`` with every class present, and ``k``
    (``n_classes``, by default ``max(labels) + 1``), an int >= 2."""
    labels = _integer_labels(fn, "labels", labels, n, "0..k−1")
    if n_classes is None:
        if labels.min() == labels.max():
            v.fail(fn, f"only one class is present in labels (every label is {labels[0]}); a multinomial fit "
                       f"needs at least two classes.")
        k = v.require_static_int(fn, "n_classes (max(labels) + 1)", int(labels.max()) + 1, minimum=2)
    else:
        k = v.require_static_int(fn, "n_classes", n_classes, minimum=2)
    outside = (labels < 0) | (labels >= k)
    if outside.any():
        v.fail(fn, f"labels must lie in 0..{k - 1}; got value(s) {np.unique(labels[outside])[:5]} outside it.")
    counts = np.bincount(labels, minlength=k)
    if np.any(counts == 0):
        v.fail(fn, f"labels has no sample of class(es) {np.flatnonzero(counts == 0).tolist()} in 0..{k - 1}; "
                   f"every class needs at least one sample.")
    return labels, k
