"""Gradient checks for closed-form rules: yours or mdc-jax's.

:func:`check_vjp` compares a rule (typically a ``jax.custom_vjp`` function) with a plain reference
that ``jax.grad`` differentiates, and with central finite differences:

* **value**: ``fn(*args)`` against ``reference(*args)``;
* **VJP vs autodiff**: for a random output cotangent ``u``, the VJP of ``fn`` against the VJP of
  ``reference``, for every argument in ``argnums`` (so rules with non-scalar outputs are checked
  too; for a scalar loss this is the gradient scaled by ``u``);
* **finite differences** (when enabled): along a random direction ``v`` per argument, the
  central difference ``(⟨u, fn(x + εv)⟩ − ⟨u, fn(x − εv)⟩) / 2ε`` against ``⟨VJP(u), v⟩``, computed
  in float64 when x64 is enabled.

A pytest check of your own rule is two lines::

    from mdc_jax.testing import assert_vjp_matches

    def test_my_rule_matches_autodiff():
        assert_vjp_matches(my_rule, my_reference, (W, x))

For a test suite, three more checks:

* :func:`assert_grads_match`: ``jax.value_and_grad`` of a scalar rule against that of its
  reference under one ``jax.jit``, leaf by leaf (the failure names the leaf's tree path), and the
  gradients' shapes and dtypes against the arguments';
* :func:`assert_tree_shapes_and_dtypes`: two trees with the same structure and, leaf by leaf, the
  same shape and dtype (``chex.assert_trees_all_equal_shapes_and_dtypes``);
* :func:`count_traces`: how many times each ``jax.jit`` function is traced inside a ``with``
  block, to show that a compiled program is not compiled again for new *values* (a Newton fit
  with a new ``l2``, the trainer's step). For a function you own, ``chex.assert_max_traces`` says
  the same more directly.

The checks of this module need jax and numpy only, except :func:`assert_tree_shapes_and_dtypes`
(and :func:`assert_grads_match`, which calls it): they import chex when called, which the ``test``
extra installs (``pip install 'mdc-jax[test]'``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ._validation import is_int, require_number, static_int

# Default tolerances by dtype: (rule vs autodiff reference, finite differences).
DEFAULT_RTOL = {"float64": 1e-10, "float32": 1e-4, "bfloat16": 5e-2, "float16": 5e-2}
DEFAULT_FD_RTOL = 1e-6  # central differences in float64 with ε ≈ 1e-5·scale
DEFAULT_ATOL_FACTOR = 1e-3  # atol = factor·rtol·(scale of the reference), for leaves that are ~0


@dataclasses.dataclass
class VJPReport:
    """What :func:`check_vjp` found.

    Attributes:
      passed: every check within tolerance and every value finite.
      max_rel_err: the largest relative error over the value and every argument's VJP.
      value_rel_err: relative error of the output value.
      arg_rel_err: per argument index, the VJP's relative error against the reference.
      fd_rel_err: per argument index, the finite-difference relative error (``None`` if skipped).
      rtol, fd_rtol: the tolerances used.
      dtype: the floating dtype of the arguments checked.
    """

    passed: bool
    max_rel_err: float
    value_rel_err: float
    arg_rel_err: dict[int, float]
    fd_rel_err: dict[int, float] | None
    rtol: float
    fd_rtol: float
    dtype: str

    @property
    def max_fd_rel_err(self) -> float | None:
        return None if self.fd_rel_err is None else max(self.fd_rel_err.values(), default=0.0)

    def __str__(self) -> str:
        lines = [f"{'PASSED' if self.passed else 'FAILED'} ({self.dtype}, rtol {self.rtol:.0e}, "
                 f"finite-difference rtol {self.fd_rtol:.0e})",
                 f"  value: relative error {self.value_rel_err:.3e}"]
        for i, err in self.arg_rel_err.items():
            fd = "" if self.fd_rel_err is None else f", finite differences {self.fd_rel_err[i]:.3e}"
            flag = "" if err <= self.rtol and (self.fd_rel_err is None or self.fd_rel_err[i] <= self.fd_rtol) else "  <-- fails"
            lines.append(f"  argument {i}: VJP relative error vs reference {err:.3e}{fd}{flag}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Comparing trees


def _rel_err(fn: str, a, b) -> float:
    structure_a, structure_b = jax.tree.structure(a), jax.tree.structure(b)
    if structure_a != structure_b:
        raise ValueError(f"{fn}: the trees differ in structure: {structure_a} vs {structure_b}.")
    worst = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise ValueError(f"{fn}: shapes differ: {x.shape} vs {y.shape}.")
        if x.size == 0:
            continue
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            return float("inf")
        scale = float(np.max(np.abs(y))) or 1.0
        worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def rel_err(a, b) -> float:
    """``max over leaves of ‖a − b‖_∞ / ‖b‖_∞`` (absolute where ``b`` is zero); inf on non-finite.

    ``a`` and ``b`` must be trees of the same structure and leaf shapes (``ValueError`` otherwise).
    """
    return _rel_err("rel_err", a, b)


def max_abs_diff(a, b) -> float:
    """``max over leaves of ‖a − b‖_∞``."""
    return max([float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True) if np.size(y)] or [0.0])


def _max_abs(tree, default: float) -> float:
    """The largest ``|entry|`` over the non-empty leaves of ``tree``; ``default`` if there are none."""
    return max([float(np.max(np.abs(np.asarray(x, np.float64)))) for x in jax.tree.leaves(tree) if np.size(x)]
               or [default])


def assert_close(actual, expected, rtol: float, what: str = "", atol: float = 0.0) -> None:
    """``rel_err(actual, expected) ≤ rtol``, or, for results small by cancellation, absolute error ≤ ``atol``.

    The trees must have the same structure (``AssertionError`` otherwise) and leaf shapes
    (``ValueError``); a NaN or inf anywhere fails. ``rtol`` and ``atol`` are finite numbers ``>= 0``.
    """
    rtol = require_number("assert_close", "rtol", rtol)
    atol = require_number("assert_close", "atol", atol)
    if jax.tree.structure(actual) != jax.tree.structure(expected):
        raise AssertionError(f"{what}: structures differ: {jax.tree.structure(actual)} vs {jax.tree.structure(expected)}")
    err = _rel_err("assert_close", actual, expected)
    if err > rtol and atol > 0 and np.isfinite(err) and max_abs_diff(actual, expected) <= atol:
        return
    if not err <= rtol:
        raise AssertionError(f"{what}: max relative error {err:.3e} > {rtol:.0e}")


# --------------------------------------------------------------------------------------------
# check_vjp, step by step: options, the two VJPs under one jit, their errors, finite differences


@dataclasses.dataclass(frozen=True)
class _Options:
    """check_vjp's arguments, checked: the positional arguments as a tuple, and Python numbers."""

    args: tuple
    dtype: str
    argnums: tuple[int, ...]
    rtol: float
    fd_rtol: float
    atol: float | None
    seed: int


def _check_callables_and_args(fn_name: str, names_and_functions, args) -> tuple:
    for name, f in names_and_functions:
        if not callable(f):
            raise ValueError(f"{fn_name}: {name} must be a callable; got {type(f).__name__}.")
    if not isinstance(args, tuple | list):
        raise ValueError(f"{fn_name}: args must be a tuple or list of the positional arguments; got "
                         f"{type(args).__name__}. For a single array x pass (x,).")
    return tuple(args)


def _floating_dtype(fn_name: str, args) -> str:
    """The widest floating dtype among the leaves of ``args``."""
    dtypes = {jnp.result_type(x) for x in jax.tree.leaves(args) if jnp.issubdtype(jnp.result_type(x), jnp.floating)}
    if not dtypes:
        raise ValueError(f"{fn_name}: args hold no floating arrays to differentiate.")
    return str(max(dtypes, key=lambda d: jnp.finfo(d).bits))


def _check_options(fn, reference, args, argnums, rtol, atol, fd_rtol, seed) -> _Options:
    fn_name = "check_vjp"
    args = _check_callables_and_args(fn_name, (("fn", fn), ("reference", reference)), args)
    dtype = _floating_dtype(fn_name, args)
    argnums = _check_argnums(fn_name, argnums, args)
    rtol = DEFAULT_RTOL.get(dtype, 1e-4) if rtol is None else require_number(fn_name, "rtol", rtol, positive=True)
    fd_rtol = DEFAULT_FD_RTOL if fd_rtol is None else require_number(fn_name, "fd_rtol", fd_rtol, positive=True)
    if atol is not None:
        atol = require_number(fn_name, "atol", atol)
    if not is_int(seed):
        raise ValueError(f"{fn_name}: seed must be an int; got {seed!r}.")
    return _Options(args, dtype, argnums, rtol, fd_rtol, atol, int(seed))


def _of_differentiated(f: Callable, argnums: tuple[int, ...]) -> Callable:
    """``g(diff, *args)``: ``f`` of ``args`` with the arguments at ``argnums`` replaced by the tuple ``diff``."""

    def g(diff, *args):
        full = list(args)
        for i, d in zip(argnums, diff):
            full[i] = d
        return f(*full)

    return g


def _random_like(key, tree):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, max(len(leaves), 1))
    out = [jax.random.normal(k, jnp.shape(x), jnp.float32).astype(jnp.result_type(x)) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, out)


def _vdot(a, b) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _to_float64(tree):
    """Every floating leaf of ``tree`` as float64 (needs x64); other leaves as they are."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x,
                        tree)


def _both_vjps(fn, reference, args, argnums, key):
    """Under one jit: both outputs, both VJPs of one random cotangent ``u`` (drawn like the reference's output), ``u``."""
    diff = tuple(args[i] for i in argnums)

    @jax.jit
    def both(diff, args):
        out, vjp = jax.vjp(lambda d: _of_differentiated(fn, argnums)(d, *args), diff)
        out_ref, vjp_ref = jax.vjp(lambda d: _of_differentiated(reference, argnums)(d, *args), diff)
        u = _random_like(key, out_ref)
        return out, out_ref, vjp(u)[0], vjp_ref(u)[0], u

    return both(diff, args)


def _vjp_error(ct, ct_ref, rtol: float, atol: float) -> float:
    """The VJP's relative error; a leaf whose reference is ~0 is judged against ``atol`` instead."""
    err = rel_err(ct, ct_ref)
    if err > rtol and np.isfinite(err) and max_abs_diff(ct, ct_ref) <= atol:
        return min(err, rtol)
    return err


def _finite_difference_errors(fn, args, argnums, ct, u, key, scale: float) -> dict[int, float]:
    """Per argument, ``⟨VJP(u), v⟩`` against the central difference of ``⟨u, fn⟩`` along a random ``v``, in float64.

    ``ε = 1e-5·max(|x|, 1)``; the error is relative to the larger of the two, floored at
    ``1e-12·max(scale, 1)`` (``scale``: the reference VJP's largest entry) for a derivative that is ~0.
    """
    args64, u64 = _to_float64(args), _to_float64(u)
    diff64 = tuple(args64[i] for i in argnums)
    f64 = jax.jit(lambda d, a: _vdot(u64, _of_differentiated(fn, argnums)(d, *a)))
    errors = {}
    for pos, (i, key_i) in enumerate(zip(argnums, jax.random.split(key, len(argnums)))):
        v = _random_like(key_i, diff64[pos])
        eps = 1e-5 * max(_max_abs(diff64[pos], default=1.0), 1.0)
        shifted = lambda s: tuple(jax.tree.map(lambda x, d: x + s * eps * d, diff64[p], v) if p == pos else diff64[p]
                                  for p in range(len(argnums)))
        fd = float((f64(shifted(1.0), args64) - f64(shifted(-1.0), args64)) / (2 * eps))
        ad = float(_vdot(jax.tree.map(lambda c: jnp.asarray(c, jnp.float64), ct[pos]), v))
        denom = max(abs(ad), abs(fd), 1e-12 * max(scale, 1.0))
        errors[i] = abs(fd - ad) / denom if np.isfinite(fd) and np.isfinite(ad) else float("inf")
    return errors


def check_vjp(fn: Callable, reference: Callable, args: Sequence, *, argnums: Sequence[int] | int | None = None,
              rtol: float | None = None, atol: float | None = None, finite_differences: bool = True,
              fd_rtol: float | None = None, seed: int = 0) -> VJPReport:
    """Checks ``fn``'s value and VJP against ``reference`` (differentiated by autodiff) and finite differences.

    Args:
      fn: the rule to check, e.g. a ``jax.custom_vjp`` function.
      reference: a plain-JAX function with the same signature, differentiated by ``jax.vjp``.
      args: the positional arguments (arrays or pytrees of arrays), a tuple or list.
      argnums: the arguments to differentiate, an int or a sequence of distinct ints; default: every
        argument holding floating arrays.
      rtol: relative tolerance against the reference, a finite number > 0; default by dtype (float64
        1e-10, float32 1e-4).
      atol: absolute tolerance per leaf (>= 0), for leaves whose reference is near zero; default
        ``1e-3·rtol`` times the largest reference magnitude.
      finite_differences: also check against central differences (float64 when x64 is enabled;
        skipped otherwise, as float32 differences are too coarse to judge a rule).
      fd_rtol: tolerance of the finite-difference check, > 0 (default 1e-6).
      seed: seeds the random cotangent and directions, an int.

    Returns:
      A :class:`VJPReport`.

    Raises:
      ValueError: naming the argument, for a bad option or outputs of ``fn`` and ``reference`` that
        differ in structure or shape.
    """
    opts = _check_options(fn, reference, args, argnums, rtol, atol, fd_rtol, seed)
    k_cot, k_dir = jax.random.split(jax.random.PRNGKey(opts.seed))
    _check_same_outputs(fn, reference, opts.args)
    out, out_ref, ct, ct_ref, u = _both_vjps(fn, reference, opts.args, opts.argnums, k_cot)

    scale = _max_abs(ct_ref, default=1.0)
    atol = DEFAULT_ATOL_FACTOR * opts.rtol * scale if opts.atol is None else opts.atol
    value_err = rel_err(out, out_ref)
    arg_err = {i: _vjp_error(c, c_ref, opts.rtol, atol) for i, c, c_ref in zip(opts.argnums, ct, ct_ref)}
    fd_err = None
    if finite_differences and jax.config.jax_enable_x64:
        fd_err = _finite_difference_errors(fn, opts.args, opts.argnums, ct, u, k_dir, scale)

    passed = (value_err <= opts.rtol and all(e <= opts.rtol for e in arg_err.values())
              and (fd_err is None or all(e <= opts.fd_rtol for e in fd_err.values())))
    return VJPReport(bool(passed), max([value_err, *arg_err.values()]), value_err, arg_err, fd_err, opts.rtol,
                     opts.fd_rtol, opts.dtype)


def _check_argnums(fn_name: str, argnums, args) -> tuple[int, ...]:
    """argnums as a tuple of distinct ints indexing args; default: every argument holding floating arrays."""
    if argnums is None:
        return tuple(i for i, a in enumerate(args)
                     if any(jnp.issubdtype(jnp.result_type(x), jnp.floating) for x in jax.tree.leaves(a)))
    expected = "an int or a sequence of ints (Python or NumPy, not bools)"
    single = static_int(argnums)
    if single is not None:
        items = (single,)
    elif isinstance(argnums, tuple | list):
        items = tuple(static_int(i) for i in argnums)
        if None in items:
            raise ValueError(f"{fn_name}: argnums must be {expected}; got {argnums!r}.")
    else:
        raise ValueError(f"{fn_name}: argnums must be {expected}; got {argnums!r}.")
    if not items:
        raise ValueError(f"{fn_name}: argnums is empty; name at least one argument to check.")
    if len(set(items)) != len(items):
        raise ValueError(f"{fn_name}: argnums holds duplicates: {argnums!r}.")
    for i in items:
        if not 0 <= i < len(args):
            raise ValueError(f"{fn_name}: argnums holds {i}, but args has {len(args)} entries.")
    return items


def _check_same_outputs(fn, reference, args) -> None:
    """``fn`` and ``reference`` return the same structure, shapes and dtypes, or a report naming both."""
    name = lambda f: getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)
    out, out_ref = jax.eval_shape(fn, *args), jax.eval_shape(reference, *args)
    if jax.tree.structure(out) != jax.tree.structure(out_ref):
        raise ValueError(f"check_vjp: fn ({name(fn)}) returns {jax.tree.structure(out)} but reference "
                         f"({name(reference)}) returns {jax.tree.structure(out_ref)}; they must return the same structure.")
    for i, (a, b) in enumerate(zip(jax.tree.leaves(out), jax.tree.leaves(out_ref))):
        if a.shape != b.shape:
            raise ValueError(f"check_vjp: output leaf {i} of fn ({name(fn)}) has shape {a.shape} but the reference's "
                             f"({name(reference)}) has shape {b.shape}.")


def assert_vjp_matches(fn: Callable, reference: Callable, args: Sequence, **kwargs) -> VJPReport:
    """Like :func:`check_vjp`, raising ``AssertionError`` with the report when a check fails."""
    report = check_vjp(fn, reference, args, **kwargs)
    if not report.passed:
        name = getattr(fn, "__name__", repr(fn))
        raise AssertionError(f"{name} does not match its reference:\n{report}")
    return report


# --------------------------------------------------------------------------------------------
# Gradients against a reference under one jit, tree shapes and dtypes, trace counts


def assert_grads_match(rule: Callable, reference: Callable, args: Sequence, *, argnums: Sequence[int] | int = 0,
                       rtol: float | None = None, what: str = "") -> None:
    """``jax.value_and_grad`` of ``rule`` equals that of ``reference`` (differentiated by autodiff), leaf by leaf.

    Both run under one ``jax.jit`` (one compilation per shape: far cheaper than eager dispatch in a
    test that draws many cases). Each gradient leaf must be within ``rtol`` relatively; in float32 and
    narrower, a leaf that is small by cancellation (a bias gradient ``Σ_n S_n`` near zero) is judged
    absolutely, against ten float32 roundings of the whole gradient's largest entry. The gradients
    must also have the shapes and dtypes of the arguments they belong to.

    Args:
      rule, reference: functions of ``*args`` returning a scalar.
      args: the positional arguments (arrays or pytrees of arrays), a tuple or list.
      argnums: an int or a tuple of ints, as for ``jax.grad``.
      rtol: default by the arguments' floating dtype (:data:`DEFAULT_RTOL`).
      what: a prefix for the failure messages.

    Raises:
      AssertionError: naming the leaf (its tree path) that differs.
      ValueError: naming the option, for a bad ``args``, ``argnums`` or ``rtol``.
    """
    fn_name = "assert_grads_match"
    args = _check_callables_and_args(fn_name, (("rule", rule), ("reference", reference)), args)
    dtype = _floating_dtype(fn_name, args)
    positions = _check_argnums(fn_name, argnums, args)
    rtol = DEFAULT_RTOL.get(dtype, 1e-4) if rtol is None else require_number(fn_name, "rtol", rtol, positive=True)
    both = jax.jit(lambda *a: (jax.value_and_grad(rule, argnums=argnums)(*a),
                               jax.value_and_grad(reference, argnums=argnums)(*a)))
    (value, grads), (ref_value, ref_grads) = both(*args)
    prefix = f"{what}: " if what else ""
    assert_close(value, ref_value, rtol, f"{prefix}loss value")
    if jax.tree.structure(grads) != jax.tree.structure(ref_grads):
        raise AssertionError(f"{prefix}gradient structures differ: {jax.tree.structure(grads)} vs "
                             f"{jax.tree.structure(ref_grads)}")
    atol = 0.0 if dtype == "float64" else 10 * float(jnp.finfo(jnp.float32).eps) * _max_abs(ref_grads, default=0.0)
    for (path, g), g_ref in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(ref_grads)):
        assert_close(g, g_ref, rtol, f"{prefix}gradient {jax.tree_util.keystr(path)}", atol=atol)
    wrt = args[positions[0]] if static_int(argnums) is not None else tuple(args[i] for i in positions)
    floating = lambda x: jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    expected = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) if floating(x) else None, wrt)
    got = jax.tree.map(lambda g, x: g if floating(x) else None, grads, wrt)
    assert_tree_shapes_and_dtypes(got, expected, what=f"{prefix}gradients vs arguments")


def _chex():
    try:
        import chex
    except ImportError:  # chex is in the `test` extra, not the core
        raise ImportError("this check uses chex: pip install 'mdc-jax[test]' (or pip install chex).") from None
    return chex


def assert_tree_shapes_and_dtypes(actual, expected, *, what: str = "") -> None:
    """``actual`` and ``expected`` have the same tree structure and, leaf by leaf, the same shape and dtype.

    ``expected`` may hold arrays or ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape``'s output).
    Uses ``chex.assert_trees_all_equal_shapes_and_dtypes`` (chex is in the ``test`` extra).

    Raises:
      AssertionError: naming the first mismatching leaf (its tree path), prefixed by ``what``.
    """
    chex = _chex()
    as_struct = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    try:
        chex.assert_trees_all_equal_shapes_and_dtypes(jax.tree.map(as_struct, actual), jax.tree.map(as_struct, expected))
    except AssertionError as err:
        raise AssertionError(f"{what}: {err}" if what else str(err)) from None


# JAX records this event once per top-level trace of a jitted function (not for a jit nested in a trace).
_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


class TraceCounts(dict):
    """``{function name: times traced}`` for the jitted functions traced inside :func:`count_traces`.

    A name that was not traced counts 0 (``traces["f"] == 0``, not a ``KeyError``).
    """

    def __missing__(self, name: str) -> int:
        return 0

    @property
    def total(self) -> int:
        return sum(self.values())


@contextlib.contextmanager
def count_traces():
    """Counts the top-level ``jax.jit`` traces that happen inside the ``with`` block, by function name.

    A compiled program is traced once per new static argument and input shape/dtype; a trace on a
    second call with only new *values* means it is compiled again (a Python float that should have
    been an array argument, a closure over a changing value). For a function you own, prefer
    ``chex.assert_max_traces``; this one also sees the jitted functions inside a library call
    (``fit_logistic_newton``'s loop, the trainer's step). It listens to JAX's own monitoring event
    for tracing (``/jax/core/compile/jaxpr_trace_duration``), so nested ``jit`` calls inside a trace
    are not counted separately. The counts are by ``__name__``: two functions of one name add up.

    Example::

        with count_traces() as traces:
            fit_logistic_newton(X, y, l2=1.0)
            fit_logistic_newton(X, y, l2=2.0)
        assert traces["_fit_binary"] <= 1  # 0 if an earlier call compiled it already
    """
    counts = TraceCounts()

    def listener(event, duration, **kwargs):
        if event == _TRACE_EVENT:
            name = kwargs.get("fun_name", "?")
            counts[name] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
