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


def _where(index: tuple[int, ...]) -> str:
    """``"row 5, column 2"`` for one or two axes, ``"index (1, 2, 3)"`` beyond."""
    return f"index {index}" if len(index) > 2 else ", ".join(f"{a} {i}" for a, i in zip(("row", "column"), index))


def describe_non_finite(name: str, x: np.ndarray) -> str | None:
    """``"X contains 3 NaN or inf value(s) (first at row 5, column 2, value nan)"``, or ``None``."""
    found = first_non_finite(x)
    if found is None:
        return None
    count, index, value = found
    if not index:
        return f"{name} is {value}"
    return f"{name} contains {count} NaN or inf value(s) (first at {_where(index)}, value {value})"


def describe_where(name: str, x: np.ndarray, bad: np.ndarray, what: str) -> str | None:
    """``"Y contains 2 negative or non-finite value(s) (first at row 0, column 1, value -1.0)"`` for the
    entries of a concrete ``x`` where the mask ``bad`` holds, or ``None`` when there are none."""
    x, bad = np.asarray(x), np.asarray(bad)
    if not bad.any():
        return None
    if x.ndim == 0:
        return f"{name} is {x[()]}, {what}"
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"{name} contains {int(bad.sum())} {what} value(s) (first at {_where(index)}, value {x[index]})"


def require_entries(fn: str, name: str, x, bad, what: str, must: str) -> None:
    """No entry of a concrete ``x`` where ``bad(values)`` (a NumPy mask) holds: ``"{name} must hold {must};
    {name} contains 2 {what} value(s) (first at row 0, column 1, value -1.0)."`` Traced: skipped (only shapes
    and dtypes are checked under ``jit``)."""
    values = concrete(x)
    if values is None:
        return
    problem = describe_where(name, values, bad(values), what)
    if problem:
        fail(fn, f"{name} must hold {must}; {problem}.")


def _negative_or_non_finite(values: np.ndarray) -> np.ndarray:
    return ~(values >= 0) | ~np.isfinite(values)


def require_label_rows(fn: str, name: str, Y) -> None:
    """Rows of class probabilities (one-hot or soft labels): a concrete ``Y`` must hold non-negative,
    finite entries (a negative label gives a negative loss, a NaN one a NaN loss). Traced: skipped."""
    require_entries(fn, name, Y, _negative_or_non_finite, "negative or non-finite",
                    "non-negative, finite label rows (one-hot or probabilities)")


def require_indices(fn: str, name: str, x, upper: int, what: str, ignore: int | None = None) -> None:
    """Concrete integer ``x`` lies in ``[0, upper)`` (entries equal to ``ignore`` aside); ``what`` says
    what indexes (``"class"``); tracers pass (shapes only under ``jit``)."""
    value = concrete(x)
    if value is None or value.size == 0:
        return
    bad = (value < 0) | (value >= upper)
    if ignore is not None:
        bad &= value != ignore
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), value.shape)
        where = f"row {first[0]}" if value.ndim == 1 else f"index {tuple(int(i) for i in first)}"
        also = f" or equal ignore_index={ignore}" if ignore is not None else ""
        fail(fn, f"{name} must hold {what} indices in [0, {upper}){also}; got {np.unique(value[bad])[:5].tolist()} "
                 f"(first at {where}).")


def require_array(fn: str, name: str, x) -> None:
    """An array (JAX, NumPy, or a NumPy scalar); a Python list or tuple is refused by name."""
    if isinstance(x, list | tuple | dict | str | type(None)):
        fail(fn, f"{name} must be an array (jax.Array or numpy.ndarray); got a {type(x).__name__}. "
                 f"Convert it first, e.g. jnp.asarray({name}).")


def is_int(x) -> bool:
    """A Python or NumPy integer, not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool | np.bool_)


def is_bool(x) -> bool:
    """A Python bool or a NumPy ``np.bool_``."""
    return isinstance(x, bool | np.bool_)


def require_bool(fn: str, name: str, x) -> bool:
    """``x`` as a Python bool; anything but a bool or ``np.bool_`` is refused by name."""
    if not is_bool(x):
        fail(fn, f"{name} must be a bool (True or False); got {x!r}.")
    return bool(x)


def _concrete_scalar(x) -> bool:
    """A concrete (not traced) 0-d NumPy or JAX array."""
    return isinstance(x, np.ndarray | jax.Array) and not isinstance(x, jax.core.Tracer) and x.shape == ()


def static_int(x) -> int | None:
    """``x`` as a Python int when it is a Python or NumPy integer or a concrete integer 0-d array (NumPy or
    JAX); ``None`` for anything else: a bool, a float, a tracer, an array with axes."""
    if is_int(x):
        return int(x)
    if _concrete_scalar(x) and jnp.issubdtype(x.dtype, jnp.integer):
        return int(x)
    return None


def as_number(x) -> float | None:
    """``x`` as a Python float when it is a real Python or NumPy number or a concrete integer or floating
    0-d array (NumPy or JAX); ``None`` for anything else: a bool, a tracer, an array with axes, a string."""
    if is_bool(x):
        return None
    if isinstance(x, numbers.Real):
        return float(x)
    if _concrete_scalar(x) and (jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.floating)):
        return float(x)
    return None


def require_floating(fn: str, name: str, x, hint: str = "") -> None:
    require_array(fn, name, x)
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        extra = f" {hint}" if hint else ""
        fail(fn, f"{name} has dtype {dtype} (shape {shape_of(x)}); expected a floating dtype.{extra}")


def _require_scalar(fn: str, name: str, x, *, positive: bool) -> None:
    bound = "> 0" if positive else ">= 0"
    ok = (lambda value: math.isfinite(value) and value > 0) if positive else (lambda value: math.isfinite(value) and value >= 0)
    if is_bool(x):
        fail(fn, f"{name} must be a number{' > 0' if positive else ''}; got {x!r}.")
    if isinstance(x, numbers.Real):
        if not ok(x):
            fail(fn, f"{name} must be a finite number {bound}; got {x}.")
        return
    if not (hasattr(x, "shape") and hasattr(x, "dtype")) or isinstance(x, str):
        fail(fn, f"{name} must be a finite number {bound} (a Python or NumPy number, or a 0-d array); got {x!r}.")
    shape = shape_of(x)
    if shape != ():
        fail(fn, f"{name} must be a scalar; got shape {shape}.")
    dtype = jnp.result_type(x)
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        fail(fn, f"{name} has dtype {dtype} (shape {shape}); expected a floating or integer dtype.")
    value = concrete(x)
    if value is not None and not ok(float(value)):
        fail(fn, f"{name} must be a finite number {bound}; got {value}.")


def require_penalty(fn: str, name: str, x) -> None:
    """A penalty weight: a non-negative, finite number: a Python or NumPy scalar, or a floating or
    integer 0-d array (its value is checked when concrete; a traced one is checked for shape and dtype
    only). Bools are refused. An integer penalty is cast by :func:`as_penalty` before use."""
    _require_scalar(fn, name, x, positive=False)


def require_positive(fn: str, name: str, x, what: str = "a finite number > 0") -> None:
    """A finite number ``> 0`` (a bound such as a clipping norm), in the forms :func:`require_penalty` takes;
    ``what`` says what it is when it is missing (``"the per-example gradient norm bound C > 0"``)."""
    if x is None:
        fail(fn, f"{name} is required ({what}).")
    _require_scalar(fn, name, x, positive=True)


def require_number(fn: str, name: str, x, *, positive: bool = False) -> float:
    """A host-side option as a Python float: a finite Python or NumPy number, or a concrete 0-d integer or
    floating array (not a bool, not traced), ``>= 0`` (``> 0`` with ``positive``). For options that fix a
    program or a loop (a solver's ``l2`` and ``tol``, a checker's tolerances), unlike :func:`require_penalty`,
    which also takes a traced scalar."""
    bound = "> 0" if positive else ">= 0"
    value = as_number(x)
    if value is None:
        fail(fn, f"{name} must be a finite number {bound}; got {x!r} (expected a Python or NumPy number, or a "
                 f"0-d array).")
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        fail(fn, f"{name} must be a finite number {bound}; got {x!r}.")
    return value


def require_static_int(fn: str, name: str, x, *, minimum: int | None = 1, maximum: int | None = None,
                       what: str | None = None, static_why: str = "") -> int:
    """``x`` as a Python int in ``[minimum, maximum]`` (``None``: unbounded): a Python or NumPy int or a concrete
    integer 0-d array (not a bool, a float or a tracer). ``what`` describes the expected value (default
    ``"an int >= minimum"``); ``static_why`` follows the refusal of a traced value (why it must be static, and
    how to mark it)."""
    if isinstance(x, jax.core.Tracer):
        fail(fn, f"{name} is a traced value ({x!r}); it must be static{static_why}.")
    value = static_int(x)
    what = what or ("an int" if minimum is None else f"an int >= {minimum}")
    if value is None or (minimum is not None and value < minimum):
        fail(fn, f"{name} must be {what}; got {x!r}.")
    if maximum is not None and value > maximum:
        fail(fn, f"{name} must be at most {maximum}; got {x!r}.")
    return value


def require_choice(fn: str, name: str, x, choices: Sequence) -> None:
    """``x`` is one of ``choices`` (names, usually): ``"task must be one of ('a', 'b'); got 'c'."``"""
    if isinstance(x, list | dict | set) or x not in tuple(choices):
        fail(fn, f"{name} must be one of {tuple(choices)}; got {x!r}.")


def require_names(fn: str, name: str, xs, choices: Sequence, what: str) -> tuple:
    """A sequence of names from ``choices`` (``what`` names one: ``"quantity"``); returns them as a tuple
    without repeats, in their order. A bare string is refused (it is not a sequence of names here)."""
    if isinstance(xs, str) or not isinstance(xs, Sequence):
        fail(fn, f"{name} must be a sequence of names from {tuple(choices)}; got {xs!r}.")
    for x in xs:
        if isinstance(x, list | dict | set) or x not in tuple(choices):
            fail(fn, f"{name}: unknown {what} {x!r}; expected names from {tuple(choices)}.")
    return tuple(dict.fromkeys(xs))


def require_axis(fn: str, name: str, axis, shape: tuple[int, ...], of: str) -> int:
    """``axis`` as a non-negative int for an array ``of`` (its name) of ``shape``: a Python or NumPy int
    (not a bool) in ``[−ndim, ndim)``; the array must have an axis, with at least one entry along it."""
    if len(shape) == 0:
        fail(fn, f"{of} must have at least one axis; got a scalar.")
    ax = static_int(axis)
    if ax is None or not -len(shape) <= ax < len(shape):
        fail(fn, f"{name} must be an int in [{-len(shape)}, {len(shape) - 1}] for {of} of shape {shape}; got {axis!r}.")
    if shape[ax] == 0:
        fail(fn, f"{of} has shape {shape}, with no entries along axis {axis}; the softmax needs at least one.")
    return ax % len(shape)


def require_sequence(fn: str, name: str, x, what: str, length: int | None = None) -> None:
    """A list or tuple (of ``length`` entries when given; non-empty when ``length`` is ``None``):
    ``"params must be a non-empty sequence of (W_j, b_j) pairs; got dict."``"""
    if isinstance(x, list | tuple) and (len(x) == length if length is not None else len(x) > 0):
        return
    size = f" of length {len(x)}" if isinstance(x, list | tuple) else ""
    fail(fn, f"{name} must be {what}; got {type(x).__name__}{size}.")


def require_mlp_params(fn: str, params, width: int) -> tuple[tuple, int]:
    """The layers ``[(W_1, b_1), ..., (W_L, b_L)]`` of an MLP fed ``width = d_0`` columns: each ``W_j``
    floating ``(d_{j−1}, d_j)``, each ``b_j`` floating ``(d_j,)``. Returns the pairs as a tuple and ``d_L``."""
    require_sequence(fn, "params", params, "a non-empty sequence of (W_j, b_j) pairs")
    pairs = []
    for j, layer in enumerate(params):
        require_sequence(fn, f"params[{j}]", layer, "a (W, b) pair", length=2)
        W, b = layer
        name_W, name_b = f"params[{j}][0] (W_{j + 1})", f"params[{j}][1] (b_{j + 1})"
        require_floating(fn, name_W, W)
        require_floating(fn, name_b, b)
        rows, cols = require_ndim(fn, name_W, W, 2, f"(d_{j}, d_{j + 1})")
        if rows != width:
            source = f"X's columns (d_0 = {width})" if j == 0 else f"the width of layer {j} (d_{j} = {width})"
            fail(fn, f"{name_W} has shape {(rows, cols)}; expected ({width}, d_{j + 1}): its rows must equal {source}.")
        require_shape(fn, name_b, b, (cols,), f"one bias per column of W_{j + 1}")
        pairs.append((W, b))
        width = cols
    return tuple(pairs), width


def require_rnn_params(fn: str, params, D: int | None) -> tuple[int, int, int]:
    """The parameters ``(W, U, b, V, c)`` of §6.4's RNN, named as in the paper: floating ``W`` ``(H, H)``, ``U``
    ``(D, H)`` (``D``: X's feature size, or ``None`` for token ids: U's rows), ``b`` ``(H,)``, ``V`` ``(H, K)``,
    ``c`` ``(K,)``. Returns ``(D, H, K)``."""
    require_sequence(fn, "params", params, "an RNNParams(W, U, b, V, c) (or a 5-tuple in that order)", length=5)
    W, U, b, V, c = params
    for name, p in zip("WUbVc", params):
        require_floating(fn, name, p)
    H = require_square(fn, "W", W, "(H, H)", "hidden-to-hidden weights")
    rows = "" if D is None else f"rows: X's feature size D = {D}; "
    D = require_matrix(fn, "U", U, "(D, H)", rows=D, cols=H, why=f"{rows}columns: W's hidden size H = {H}")[0]
    require_shape(fn, "b", b, (H,), f"one bias per hidden unit, H = {H}")
    K = require_matrix(fn, "V", V, "(H, K)", rows=H, why=f"rows: W's hidden size H = {H}")[1]
    require_shape(fn, "c", c, (K,), f"one bias per column of V, K = {K}")
    return D, H, K


def require_activations(fn: str, activations, count: int, per: str, lookup, known: Sequence[str]) -> tuple:
    """``count`` activations (``per`` says why: ``"for 2 layers (one per layer)"``), each resolved by ``lookup`` (a name to
    its activation; raises ``ValueError`` for an unknown one; ``known`` lists the registered names)."""
    if isinstance(activations, str) or not isinstance(activations, list | tuple):
        fail(fn, f"activations must be a sequence of activation names; got {activations!r}.")
    if len(activations) != count:
        fail(fn, f"activations has {len(activations)} entries; expected {count} {per}.")
    acts = []
    for i, name in enumerate(activations):
        try:
            acts.append(lookup(name))
        except ValueError:
            fail(fn, f"activations[{i}]: unknown activation {name!r}; registered activations: {', '.join(known)}.")
    return tuple(acts)


def require_labels(fn: str, name: str, Y, rows: tuple[int, ...], K: int, *, dims: str, why: str,
                   integer: str | None = None, what: str = "rows of probabilities", hint: str = "",
                   probabilities: bool = True, ignore: int | None = None) -> bool:
    """Targets of a softmax over ``K`` classes at each position of ``rows`` (``(N,)``, or ``(τ, N)``).

    Floating rows ``(*rows, K)`` (``dims`` names that shape: ``"(N, d_L)"``; ``why`` says where each size
    comes from), non-negative and finite when concrete if ``probabilities``; or, when ``integer`` is given
    (the reason the shape is ``rows``), integer class indices of shape ``rows`` in ``[0, K)`` (``ignore``
    aside). ``hint`` follows the refusal of integer or bool labels where they are not taken. Returns
    whether ``Y`` holds integer labels.
    """
    require_array(fn, name, Y)
    dtype, shape, full = jnp.result_type(Y), shape_of(Y), (*rows, K)
    if integer is not None and jnp.issubdtype(dtype, jnp.integer):
        require_shape(fn, name, Y, rows, integer)
        require_indices(fn, name, Y, K, "class", ignore=ignore)
        return True
    wrong_kind = jnp.issubdtype(dtype, jnp.bool_) or (jnp.issubdtype(dtype, jnp.floating) and len(shape) == len(rows))
    if integer is not None and wrong_kind:  # bool labels, or floating ones shaped like class indices
        fail(fn, f"{name} has dtype {dtype} and shape {shape}; expected integer class indices of shape {rows}, "
                 f"or floating {what} of shape {dims} = {full}.")
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        fail(fn, f"{name} has dtype {dtype} and shape {shape}; expected floating {what} of shape {dims} = {full}"
                 + (f"; {hint}." if hint else "."))
    require_floating(fn, name, Y)
    require_shape(fn, name, Y, full, why)
    if probabilities:
        require_label_rows(fn, name, Y)
    return False


def require_weights(fn: str, name: str, w, n: int, what: str = "one weight per example"):
    """Optional per-row weights: ``None``, or a floating ``(n,)`` array whose concrete entries are finite
    and ``>= 0`` (an infinite weight would make the loss infinite). Returns ``w`` (``None`` passes)."""
    if w is None:
        return None
    require_floating(fn, name, w)
    require_shape(fn, name, w, (n,), f"{what}, n = {n}")
    require_entries(fn, name, w, _negative_or_non_finite, "negative or non-finite",
                    "finite values >= 0 (0 masks a row out)")
    return w


def require_unit_interval(fn: str, name: str, x, what: str = "labels (or probabilities)") -> None:
    """Concrete ``x`` lies in ``[0, 1]`` (NaN refused); traced: skipped (shapes only under ``jit``)."""
    require_entries(fn, name, x, lambda values: ~((values >= 0) & (values <= 1)), "outside [0, 1] (or NaN)",
                    f"{what} in [0, 1]")


def as_penalty(x, dtype):
    """A penalty checked by :func:`require_penalty`, in the computation's ``dtype`` when it is an
    integer (a Python or NumPy int, or an integer 0-d array, traced or not), so that an integer ``l2``
    neither fails under strict promotion nor upcasts float32; a floating one is returned unchanged."""
    if is_int(x) or (not isinstance(x, numbers.Real) and jnp.issubdtype(jnp.result_type(x), jnp.integer)):
        return jnp.asarray(x).astype(dtype)
    return x


def require_square(fn: str, name: str, x, expected: str = "(n, n)", why: str = "") -> int:
    """Returns n after checking that x is a floating n × n matrix (``why`` says what it is: "hidden-to-hidden
    weights")."""
    require_floating(fn, name, x)
    shape = require_ndim(fn, name, x, 2, expected)
    if shape[0] != shape[1]:
        reason = f" ({why})" if why else ""
        fail(fn, f"{name} must be square with shape {expected}{reason}; got shape {shape}.")
    return shape[0]


def require_vector(fn: str, name: str, x, n: int | None = None, why: str = "") -> int:
    """A floating vector ``(n,)`` (of length ``n`` when given; ``why`` says where ``n`` comes from); returns its
    length: ``"x has shape (2,); expected (3,) (the length of a)."``"""
    require_floating(fn, name, x)
    shape = require_ndim(fn, name, x, 1, "(n,)" if n is None else f"({n},)")
    if n is not None and shape[0] != n:
        fail(fn, f"{name} has shape {shape}; expected ({n},){f' ({why})' if why else ''}.")
    return shape[0]


def require_matrix(fn: str, name: str, x, dims: str, *, rows: int | None = None, cols: int | None = None,
                   why: str = "") -> tuple[int, int]:
    """A floating matrix (``dims`` reads like ``"(D, H)"``) with ``rows`` rows and ``cols`` columns where given
    (``why`` says where they come from); returns its shape:
    ``"U has shape (2, 5); expected (1, 5) (rows: X's feature size D = 1)."``"""
    require_floating(fn, name, x)
    shape = require_ndim(fn, name, x, 2, dims)
    expected = (shape[0] if rows is None else rows, shape[1] if cols is None else cols)
    if shape != expected:
        fail(fn, f"{name} has shape {shape}; expected {expected}{f' ({why})' if why else ''}.")
    return shape


def require_classes(fn: str, name: str, shape: tuple[int, ...], count: str = "K") -> int:
    """At least one class for a softmax: ``shape``'s last entry (the columns of ``name``, ``count`` of them) is
    ``>= 1``; returns it. ``"V has shape (5, 0); expected at least one column (K >= 1 classes for the softmax)."``"""
    if shape[-1] == 0:
        fail(fn, f"{name} has shape {shape}; expected at least one column ({count} >= 1 classes for the softmax).")
    return shape[-1]


def cast_like(ct, primal):
    """A cotangent in its primal's dtype: custom_vjp rules return float32 for float32 inputs."""
    return jnp.asarray(ct).astype(jnp.result_type(primal))


def require_like(fn: str, name: str, tree, like_name: str, like, labels: Sequence[str] | None = None):
    """``tree`` with ``like``'s structure (lists and tuples alike, compared by their ``jax.tree_util`` paths),
    each leaf an array of its counterpart's shape and dtype; returns ``tree``'s leaves in ``like``'s structure.
    ``labels``: one name per leaf for the messages (``"W_2"``), in ``like``'s flattened order."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    got = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = [jax.tree_util.keystr(path) for path, _ in flat]
    got_paths = [jax.tree_util.keystr(path) for path, _ in got]
    if got_paths != paths:
        fail(fn, f"{name} must have the structure of {like_name}, arrays at {', '.join(paths)}; got "
                   f"{'arrays at ' + ', '.join(got_paths) if got_paths else 'no arrays'}.")
    for k, (path, (_, t), (_, p)) in enumerate(zip(paths, got, flat)):
        what = f"{name}{path}" + (f" ({labels[k]})" if labels else "")
        require_array(fn, what, t)
        for attr, mine, theirs in (("shape", shape_of(t), shape_of(p)),
                                   ("dtype", jnp.result_type(t), jnp.result_type(p))):
            if mine != theirs:
                fail(fn, f"{what} has {attr} {mine}; expected {theirs}, the {attr} of {like_name}{path}.")
    return jax.tree_util.tree_unflatten(treedef, [t for _, t in got])
