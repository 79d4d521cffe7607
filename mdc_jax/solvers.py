"""Newton's method (IRLS) for ridge-penalised logistic regression, on the closed-form rules.

Seed: ``004_c4a3fcbc5e77e7ce.txt`` §3.2, which motivates the Hessian by IRLS, and §3.3. Samples are
rows. With ``X̃ = [X 1]`` when an intercept is fitted and ``M`` the penalty mask (1 on coefficients,
0 on the intercept, which is not penalised), each iteration solves the Newton system by Cholesky::

    g = ∇L(θ) + λ M θ,      H = ∇²L(θ) + λ diag(M),      H p = −g,      θ ← θ + t p

with ``∇L = X̃ᵀ(π − y)``, ``∇²L = X̃ᵀ diag(π(1 − π)) X̃`` (binary, eq. 3.9 and 3.14) or
``X̃ᵀ(Π − Y)`` and ``Σ_n x̃_n x̃_nᵀ ⊗ (diag π_n − π_n π_nᵀ)`` (multinomial, ``docs/derivations.md``),
and ``t`` halved from 1 until the Armijo condition holds. The objective,
``Σ_i NLL_i + λ/2 ‖Mθ‖²``, is scikit-learn's ``LogisticRegression(C=1/λ)`` objective times ``C``.

Convergence follows scikit-learn's ``newton-cholesky`` test on the *mean* objective (``J/n``),
checked after each step on the new gradient and the decrement of the step just taken (so no
Hessian is formed at the final point)::

    max |g| / n ≤ tol    and    ½ gᵀH⁻¹g / n ≤ tol          (Newton decrement)

Multinomial null directions: adding a constant to every class's intercept (or, with ``λ = 0``,
a vector to every class's coefficients) leaves the probabilities unchanged, so the Hessian is
singular along it. As scikit-learn does, the last class's intercept (and, with ``λ = 0``, its
coefficient column) is held at zero during the iterations, and the result is centred afterwards
(``Σ_a b_a = 0``, and ``Σ_a Θ_{ia} = 0`` with ``λ = 0``; with ``λ > 0`` the penalty already centres
``Θ``). Predictions do not change.

Singular Hessians (duplicated or constant columns with ``λ = 0``) and linearly separable data with
``λ = 0`` (no finite maximiser of the likelihood) raise :class:`SingularHessianError` instead of
returning diverging or NaN coefficients. A Hessian counts as singular when a pivot of the Cholesky
factor of its Jacobi-scaled form ``D^{-1/2} H D^{-1/2}`` falls below ``1000 ε``.
"""

from __future__ import annotations

import functools
import inspect
import mmap
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from . import reference
from ._validation import as_number, describe_non_finite, is_bool, static_int
from .rules.logistic import softmax_weighted_gram, weighted_gram
from .rules.softmax import log_softmax


class NewtonResult(NamedTuple):
    """The result of a Newton fit.

    Attributes:
      coef: ``(d,)`` for binary, ``(d, k)`` for multinomial (scikit-learn's ``coef_`` is its
        transpose, ``(1, d)`` or ``(k, d)``).
      intercept: a scalar for binary, ``(k,)`` for multinomial; zero when not fitted.
      n_iter: Newton steps taken.
      converged: whether both convergence tests held within ``max_iter`` steps.
      grad_norm: ``max |∇J| / n`` at the returned parameters (the mean objective's gradient).
    """

    coef: jax.Array
    intercept: jax.Array
    n_iter: int
    converged: bool
    grad_norm: float


class SingularHessianError(ValueError):
    """The Newton system has no unique solution: the fit is not identifiable without ``l2 > 0``."""


# Status codes of the compiled loop. _NON_FINITE: the gradient at the start is not finite, which
# (since every entry of X meets a non-zero residual there) means X holds a NaN or inf, or values so
# large that Xᵀ(π − y) overflows; or a Hessian is not finite (X's squares overflow). The host then
# names the first NaN or inf, or says that X's values are too large.
_RUNNING, _CONVERGED, _SINGULAR, _LINE_SEARCH_FAILED, _NON_FINITE = 0, 1, 2, 3, 4
_MAX_ITER = 2**31 - 1  # the loop's step counter is an int32


class _Objective(NamedTuple):
    """What the Newton loop needs of an objective ``J(w)``, with ``aux`` a cache of ``w``'s linear
    predictor (``Xθ + b``, ``XΘ + 1bᵀ``) so that the line search never touches ``X``:

    * ``value(w, aux)``, ``grad(w, aux)``, ``hess(w, aux)``: ``J``, ``∇J`` and ``∇²J`` at ``w``;
    * ``ray(w, aux, p)``: the change of ``aux`` along ``p`` (``Xp``: one pass over ``X``);
    * ``move(aux, ray, t)``: ``aux`` at ``w + t p`` (``aux + t·ray``).

    * ``grad_hess(w, aux)`` (optional): ``(∇J, ∇²J)`` from one pass over ``X``; the loop uses it
      after a step that surely is not the last (its Newton decrement is above ``tol``).

    The autodiff baseline has no cache: ``aux = ()``, and ``value`` recomputes ``J(w + tp)``.
    """

    value: Callable
    grad: Callable
    hess: Callable
    ray: Callable
    move: Callable
    grad_hess: Callable | None = None


# --------------------------------------------------------------------------------------------
# The compiled Newton loop


def _newton_step(g, H):
    """``p = −H⁻¹g`` by Cholesky of the Jacobi-scaled ``H``, and whether ``H`` is singular."""
    h = jnp.diagonal(H)
    bad_diag = jnp.any(~(h > 0))  # also catches NaN
    s = 1 / jnp.sqrt(jnp.where(h > 0, h, 1))
    L = jnp.linalg.cholesky(H * s[:, None] * s[None, :])
    pivots = jnp.diagonal(L) ** 2
    singular = bad_diag | ~jnp.all(jnp.isfinite(L)) | (jnp.min(pivots) < 1e3 * jnp.finfo(H.dtype).eps)
    p = -s * cho_solve((L, True), s * g)
    return p, singular


def _newton(obj: _Objective, w0, aux0, n, tol, max_iter):
    """Damped Newton from ``w0`` inside ``lax.while_loop``: returns (w, aux, n_iter, status, |g|∞/n).

    Each step: the Hessian at ``w``, ``p = −H⁻¹g`` by Cholesky, one ray ``Xp``, a backtracking
    (Armijo) line search on the cached predictor, and the gradient at the new point. As in
    scikit-learn, convergence is tested after each step, on the new gradient and the decrement of the
    step just taken, so no Hessian is formed at the final point. When the decrement already rules
    convergence out, the next Hessian is formed with the new gradient (``obj.grad_hess``, one pass
    over ``X`` for both) instead of in a pass of its own.
    """
    eps = jnp.finfo(w0.dtype).eps
    fused = obj.grad_hess is not None

    def cond(state):
        return (state[-1] == _RUNNING) & (state[-2] < max_iter)

    def body(state):
        w, aux, f0, g, H, have_H, it, _ = state
        H = jax.lax.cond(have_H, lambda: H, lambda: obj.hess(w, aux)) if fused else obj.hess(w, aux)
        overflow = ~jnp.all(jnp.isfinite(H))  # a finite X whose squares overflow (|x| ≳ 1e154 in float64)
        p, singular = _newton_step(g, H)
        singular = singular | overflow
        slope = g @ p  # = −gᵀH⁻¹g < 0
        ray = obj.ray(w, aux, p)
        value_at = lambda t: obj.value(w + t * p, obj.move(aux, ray, t))
        slack = 16 * eps * jnp.abs(f0)  # accept steps that change f only at rounding level

        def not_enough_decrease(ls):
            t, f_new = ls
            return ~(f_new <= f0 + 1e-4 * t * slope + slack) & (t > 2.0**-40)  # NaN: not enough

        def halve(ls):
            return ls[0] / 2, value_at(ls[0] / 2)

        t, f_t = jax.lax.while_loop(lambda ls: ~singular & not_enough_decrease(ls), halve,
                                    (jnp.ones((), w.dtype), value_at(jnp.ones((), w.dtype))))
        failed = ~singular & (t <= 2.0**-40)
        moved = ~singular & ~failed
        w_new = jnp.where(moved, w + t * p, w)
        aux_new = jax.tree.map(lambda new, old: jnp.where(moved, new, old), obj.move(aux, ray, t), aux)
        f_new = jnp.where(moved, f_t, f0)
        decrement_ok = -slope / (2 * n) <= tol
        if fused:  # another step is certain: its Hessian comes with this gradient
            another = moved & ~decrement_ok & (it + 1 < max_iter)
            g_new, H_new = jax.lax.cond(another, lambda: obj.grad_hess(w_new, aux_new),
                                        lambda: (obj.grad(w_new, aux_new), H))
        else:
            another, g_new, H_new = jnp.zeros((), bool), obj.grad(w_new, aux_new), H
        converged = moved & (jnp.max(jnp.abs(g_new)) / n <= tol) & decrement_ok
        status = jnp.select([overflow, singular, failed, converged],
                            [_NON_FINITE, _SINGULAR, _LINE_SEARCH_FAILED, _CONVERGED], _RUNNING)
        return w_new, aux_new, f_new, g_new, H_new, another, it + moved.astype(it.dtype), status

    if fused:
        g0, H0 = obj.grad_hess(w0, aux0)
    else:
        g0, H0 = obj.grad(w0, aux0), jnp.zeros((w0.size, w0.size), w0.dtype)
    status0 = jnp.where(jnp.all(jnp.isfinite(g0)), _RUNNING, _NON_FINITE)
    state = (w0, aux0, obj.value(w0, aux0), g0, H0, jnp.asarray(fused), jnp.zeros((), jnp.int32), status0)
    w, aux, _, g, _, _, it, status = jax.lax.while_loop(cond, body, state)
    return w, aux, it, status, jnp.max(jnp.abs(g)) / n


def _autodiff(value):
    """The same Newton method on ``jax.grad`` and ``jax.hessian`` of a plain-JAX objective: the
    ``derivatives="autodiff"`` baseline of the solvers (and of ``train.grad: autodiff``). No cache:
    every value in the line search recomputes the objective from ``X``."""
    return _Objective(value=lambda w, aux: value(w), grad=lambda w, aux: jax.grad(value)(w),
                      hess=lambda w, aux: jax.hessian(value)(w), ray=lambda w, aux, p: (),
                      move=lambda aux, ray, t: ())


def _with_ones(X):
    """``[X 1]``, for the autodiff baseline only (the closed form never forms it)."""
    return jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)


@functools.partial(jax.jit, static_argnames=("fit_intercept", "hessian_dtype", "derivatives"))
def _fit_binary(X, y, l2, tol, max_iter, fit_intercept, hessian_dtype, derivatives):
    """The binary fit, one compiled program: ``w = [θ, b]`` (``b`` only with an intercept).

    The closed form carries the margins ``z = Xθ + b``. Per Newton step it reads ``X`` twice: the
    ray ``Xp``, and the gradient ``[(π − y)ᵀX + λθ, Σ(π − y)]`` (eq. 3.9) together with the next
    Hessian ``[Xᵀ diag(s) X, Xᵀs; sᵀX, Σs]`` (``s = σ(z)σ(−z)``, eq. 3.14; the Gram matrix by row
    chunks and upper column blocks) in one pass, or the gradient alone after the last step (see
    :func:`_newton`). The intercept's row and column come from the same chunks: ``[X 1]`` is never
    formed. With ``hessian_dtype`` below ``X``'s the Hessian reads a lower-precision copy of ``X``.
    """
    n, d = X.shape
    D = d + int(fit_intercept)
    mask = jnp.arange(D) < d  # the penalty's mask: the intercept is not penalised
    theta = lambda w: w[:d]
    if derivatives == "autodiff":
        Xa = _with_ones(X) if fit_intercept else X
        obj = _autodiff(lambda w: reference.logistic_loss(w, Xa, y) + l2 * jnp.sum(theta(w) ** 2) / 2)
        w, _, it, status, gnorm = _newton(obj, jnp.zeros(D, X.dtype), (), n, tol, max_iter)
        separated = jnp.all((2 * y - 1) * (Xa @ w) > 0)
        return w, it, status, gnorm, separated

    Xh = X.astype(hessian_dtype)  # X itself when hessian_dtype is X's

    def value(w, z):
        # Σ −y log σ(z) − (1 − y) log σ(−z), as in rules.logistic (finite for any margin)
        nll = jnp.sum(y * jax.nn.softplus(-z) + (1 - y) * jax.nn.softplus(z))
        return nll + l2 * jnp.sum(theta(w) ** 2) / 2

    def grad(w, z):
        r = jax.nn.sigmoid(z) - y  # π − y
        g = r @ X + l2 * theta(w)  # (π − y)ᵀX as a row-vector product: XLA:CPU's Xᵀr is ~8× slower
        return jnp.concatenate([g, jnp.sum(r, keepdims=True)]) if fit_intercept else g

    def hess(w, z):
        zh = z.astype(hessian_dtype)
        s = jax.nn.sigmoid(zh) * jax.nn.sigmoid(-zh)  # π(1 − π) without cancellation
        G = weighted_gram(Xh, s, ones=fit_intercept)  # of [X 1] with an intercept, without forming it
        return G.astype(X.dtype) + jnp.diag(jnp.where(mask, l2, 0))

    def grad_hess(w, z):
        if jnp.dtype(hessian_dtype) != X.dtype:  # the gradient must stay in X's precision: two passes
            return grad(w, z), hess(w, z)
        s = jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)
        G, g = weighted_gram(X, s, ones=fit_intercept, v=jax.nn.sigmoid(z) - y)  # Hessian and (π − y)ᵀ[X 1]
        return g + l2 * jnp.where(mask, w, 0), G + jnp.diag(jnp.where(mask, l2, 0))

    def ray(w, z, p):
        return X @ p[:d] + p[d] if fit_intercept else X @ p

    obj = _Objective(value, grad, hess, ray, move=lambda z, u, t: z + t * u, grad_hess=grad_hess)
    z0 = jax.lax.optimization_barrier(jnp.zeros(n, X.dtype))  # margins at w = 0 (not constant-folded at compile time)
    w, z, it, status, gnorm = _newton(obj, jnp.zeros(D, X.dtype), z0, n, tol, max_iter)
    return w, it, status, gnorm, jnp.all((2 * y - 1) * z > 0)


@functools.partial(jax.jit, static_argnames=("n_classes", "fit_intercept", "fix_column", "derivatives"))
def _fit_multinomial(X, labels, l2, tol, max_iter, n_classes, fit_intercept, fix_column, derivatives):
    """The multinomial fit, one compiled program, over the free entries of ``Φ = [Θ; bᵀ]`` (``D × k``).

    The closed form carries the logits ``A = XΘ + 1bᵀ``; per step it reads ``X`` for the Hessian
    (:func:`~mdc_jax.rules.logistic.softmax_weighted_gram`), the ray ``XP`` and the gradient ``Xᵀ(Π − Y)``.
    """
    (n, d), k = X.shape, n_classes
    D = d + int(fit_intercept)
    free = np.ones((D, k), bool)
    if fit_intercept:
        free[d, k - 1] = False  # the reference class's intercept
    if fix_column:
        free[:d, k - 1] = False  # with λ = 0, the reference class's coefficients as well
    free_idx = np.flatnonzero(free.ravel())  # row-major, the flattening of H.reshape(Dk, Dk)
    P_mask = jnp.asarray(np.arange(D)[:, None] < d, X.dtype) * jnp.ones((1, k), X.dtype)  # penalty mask
    Y = jax.nn.one_hot(labels, k, dtype=X.dtype)

    def unflatten(w):
        return jnp.zeros(D * k, w.dtype).at[free_idx].set(w).reshape(D, k)

    def penalty(Phi):
        return l2 * jnp.sum((P_mask * Phi) ** 2) / 2  # intercepts (P_mask = 0) are not penalised

    w0 = jnp.zeros(free_idx.size, X.dtype)
    if derivatives == "autodiff":
        Xa = _with_ones(X) if fit_intercept else X
        obj = _autodiff(lambda w: reference.multinomial_loss(unflatten(w), Xa, Y) + penalty(unflatten(w)))
        w, _, it, status, gnorm = _newton(obj, w0, (), n, tol, max_iter)
        A = Xa @ unflatten(w)
    else:
        def logits_of(Phi):
            return X @ Phi[:d] + Phi[d][None, :] if fit_intercept else X @ Phi

        def value(w, A):
            return -jnp.sum(Y * log_softmax(A, axis=1)) + penalty(unflatten(w))

        def grad(w, A):
            E = jnp.exp(log_softmax(A, axis=1)) - Y  # Π − Y
            G = E.T @ X  # (k, d): XᵀE transposed
            G = jnp.concatenate([G.T, jnp.sum(E, axis=0)[None]], axis=0) if fit_intercept else G.T
            return (G + l2 * P_mask * unflatten(w)).reshape(-1)[free_idx]

        def hess(w, A):
            H = softmax_weighted_gram(X, jnp.exp(log_softmax(A, axis=1)), ones=fit_intercept)  # (D, k, D, k)
            H = H.reshape(D * k, D * k) + jnp.diag(l2 * P_mask.reshape(-1))  # row-major Φ's flattening
            return H[free_idx][:, free_idx]

        ray = lambda w, A, p: logits_of(unflatten(p))
        obj = _Objective(value, grad, hess, ray, move=lambda A, U, t: A + t * U)
        A0 = jax.lax.optimization_barrier(jnp.zeros((n, k), X.dtype))  # logits at w = 0 (not constant-folded)
        w, A, it, status, gnorm = _newton(obj, w0, A0, n, tol, max_iter)
    correct = jnp.take_along_axis(A, labels[:, None], axis=1)[:, 0]
    others = jnp.where(Y > 0, -jnp.inf, A)
    return unflatten(w), it, status, gnorm, jnp.all(correct > jnp.max(others, axis=1))


# --------------------------------------------------------------------------------------------
# Input checks (on concrete arrays, before the compiled loop)


def _refuse_traced(fn, *args):
    """The fits check their data on the host and compile their own Newton loop: no tracers."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args)):
        raise ValueError(f"{fn}: got a traced argument (a call inside jax.jit, vmap or grad); the fit checks its "
                         f"data on the host and runs its own compiled Newton loop, so call it outside jit.")


def _as_numpy(fn, name, x, expected):
    """``np.asarray(x)``, with NumPy's own error for ragged nested lists or odd objects named by argument."""
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{fn}: {name} must be {expected}; NumPy cannot make an array of it ({err}).") from None


def _check_X_shape(fn, shape, dtype):
    """The checks that need only X's shape and dtype (and so also run on a traced X)."""
    if len(shape) != 2:
        raise ValueError(f"{fn}: X must be 2-D with shape (n, d), samples as rows; got shape {shape}.")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{fn}: X has shape {shape}; expected at least one row and one column.")
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_)):
        raise ValueError(f"{fn}: X has dtype {dtype} (shape {shape}); expected a real numeric dtype.")


def _check_X(fn, X):
    X = _as_numpy(fn, "X", X, "an (n, d) array-like of numbers, samples as rows")
    _check_X_shape(fn, tuple(X.shape), X.dtype)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(np.float64)
    problem = describe_non_finite("X", X)
    if problem:
        raise ValueError(f"{fn}: {problem}; expected finite values.")
    return X


# jax.device_put(..., may_alias=True) lets a NumPy buffer back a JAX array without a copy on CPU.
_CAN_ALIAS = "may_alias" in inspect.signature(jax.device_put).parameters
_ALIGN = 64  # XLA:CPU's buffer alignment: a NumPy array aligned to it and C-contiguous can be aliased


def _aligned_buffer(nbytes: int):
    """A writable buffer of ``nbytes`` aligned to ``_ALIGN`` bytes. On Linux a private anonymous
    mapping advised for transparent huge pages (page-aligned; 160 MB is then ~80 page faults instead
    of ~40000: measured 38 vs 147 ms to fill without the advice); elsewhere a NumPy allocation."""
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


def _fit_input(fn, X):
    """``X`` as the JAX array the compiled fit reads, checked for shape and dtype (its values are
    checked inside the fit: see ``_NON_FINITE``), float (integer and bool input become float64).

    A JAX array is used as it is. A NumPy array is aliased when its buffer allows it (C order,
    64-byte aligned), and otherwise copied once by NumPy into an aligned buffer which JAX then
    aliases: ``jnp.asarray`` of a misaligned array (NumPy's default allocation is 16-byte aligned)
    copies it at about a quarter of NumPy's speed (measured: 119 vs 30 ms for 160 MB).
    """
    if isinstance(X, jax.Array):
        _check_X_shape(fn, tuple(X.shape), X.dtype)
        return X if jnp.issubdtype(X.dtype, jnp.floating) else X.astype(jax.dtypes.canonicalize_dtype(np.float64))
    X = _as_numpy(fn, "X", X, "an (n, d) array-like of numbers, samples as rows")
    _check_X_shape(fn, tuple(X.shape), X.dtype)
    dtype = X.dtype if jnp.issubdtype(X.dtype, jnp.floating) else np.dtype(np.float64)
    # float64 becomes float32 without jax_enable_x64; big-endian data is copied to the native order
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(dtype)).newbyteorder("=")
    if not _CAN_ALIAS:
        return jnp.asarray(X, dtype)
    if not (X.dtype == dtype and X.flags.c_contiguous and X.ctypes.data % _ALIGN == 0):
        X = _aligned_copy(X, dtype)
    return jax.device_put(X, may_alias=True)


def _raise_non_finite(fn, X, hessian_dtype=None):
    """For ``_NON_FINITE``: name the first NaN or inf of ``X``, or say that its values overflow."""
    problem = describe_non_finite("X", np.asarray(X))
    if problem:
        raise ValueError(f"{fn}: {problem}; expected finite values.")
    dtypes = {np.dtype(X.dtype).name, np.dtype(hessian_dtype or X.dtype).name}
    raise ValueError(f"{fn}: X's values are too large (max |x| = {float(np.max(np.abs(np.asarray(X)))):.3g}): the "
                     f"gradient Xᵀ(π − y) or the Hessian XᵀWX overflows {' / '.join(sorted(dtypes))}; rescale the "
                     f"columns of X.")


def _check_options(fn, l2, tol, max_iter):
    """l2, tol and max_iter as Python numbers: Python or NumPy numbers, or 0-d arrays; not bools."""
    l2_value, tol_value, iters = as_number(l2), as_number(tol), static_int(max_iter)
    if l2_value is None or not (0 <= l2_value < np.inf):
        raise ValueError(f"{fn}: l2 must be a finite number >= 0; got {l2!r}.")
    if tol_value is None or not (0 < tol_value < np.inf):
        raise ValueError(f"{fn}: tol must be a finite number > 0; got {tol!r}.")
    if iters is None or iters < 1:
        raise ValueError(f"{fn}: max_iter must be an int >= 1; got {max_iter!r}.")
    if iters > _MAX_ITER:
        raise ValueError(f"{fn}: max_iter must be at most 2**31 - 1 = {_MAX_ITER} (the step counter is int32); "
                         f"got {max_iter!r}.")
    return l2_value, tol_value, iters


def _check_bool(fn, name, x):
    if not is_bool(x):
        raise ValueError(f"{fn}: {name} must be a bool (True or False); got {x!r}.")
    return bool(x)


def _check_hessian_dtype(fn, hessian_dtype, X_dtype):
    if hessian_dtype is None:
        return X_dtype
    try:
        dtype = None if isinstance(hessian_dtype, bool | int | float) else jnp.dtype(hessian_dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in ("float32", "float64"):  # (np.dtype == None holds for float64)
        raise ValueError(f"{fn}: hessian_dtype must be None (X's dtype), 'float32' or 'float64'; got {hessian_dtype!r}.")
    return dtype


def _check_labels(fn, name, labels, n, allowed: str):
    labels = _as_numpy(fn, name, labels, f"an (n,) array-like of integer labels in {allowed}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{fn}: {name} has shape {labels.shape}; expected ({n},), one label per row of X.")
    if not (np.issubdtype(labels.dtype, np.number) or labels.dtype == bool):
        raise ValueError(f"{fn}: {name} has dtype {labels.dtype}; expected integer labels in {allowed}.")
    if labels.dtype.kind in "fc" and (not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels))):
        bad = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        raise ValueError(f"{fn}: {name} must hold integer labels in {allowed}; got non-integer value(s) {bad[:5]}.")
    if labels.dtype.kind in "fc" and np.any(np.abs(labels) >= 2**62):  # would wrap around as int64
        raise ValueError(f"{fn}: {name} must hold integer labels in {allowed}; got value(s) "
                         f"{np.unique(labels[np.abs(labels) >= 2**62])[:5]} outside it.")
    return labels.astype(np.int64)


def _check_derivatives(fn, derivatives):
    if derivatives not in ("closed", "autodiff"):
        raise ValueError(f"{fn}: derivatives must be 'closed' or 'autodiff'; got {derivatives!r}.")


def _raise_on_failure(fn, status, it, l2):
    if status == _SINGULAR:
        hint = "use l2 > 0, or remove duplicated or constant columns of X" if l2 == 0 else \
            "check X for duplicated or constant columns, or increase l2"
        raise SingularHessianError(f"{fn}: the Hessian became singular at Newton step {it} (l2={l2}); the "
                                   f"parameters are not identifiable: {hint}.")


def _raise_if_separable(fn, separated: bool, l2):
    if l2 == 0 and separated:
        raise SingularHessianError(f"{fn}: the classes in X are linearly separable and l2=0, so the likelihood "
                                   f"has no finite maximiser (the coefficients diverge); use l2 > 0.")


# --------------------------------------------------------------------------------------------
# Public API


def fit_logistic_newton(X, y, l2: float = 1.0, fit_intercept: bool = True, tol: float = 1e-8,
                        max_iter: int = 50, hessian_dtype=None, derivatives: str = "closed") -> NewtonResult:
    """Binary ridge logistic regression by Newton's method on the closed-form gradient and Hessian.

    Minimises

    .. math::

       J(\\theta, b) = \\sum_i -y_i\\log\\pi_i - (1-y_i)\\log(1-\\pi_i) + \\frac{\\lambda}{2}\\|\\theta\\|^2,
       \\qquad \\pi = \\sigma[X\\theta + b\\mathbf 1],

    with Newton steps ``H p = −g`` (``H = X̃ᵀdiag(π(1−π))X̃ + λ diag(M)``, §3.2 eq. 3.14) solved by
    Cholesky, a backtracking line search, and scikit-learn's convergence test, all in one compiled
    ``lax.while_loop``. Equals ``LogisticRegression(C=1/l2, solver="newton-cholesky")``.

    The fit checks its data on the host and runs its own compiled loop, so it is not traceable: call
    it outside ``jax.jit`` (a traced argument raises ``ValueError``). :func:`predict_proba_logistic`
    is traceable.

    Args:
      X: ``(n, d)`` finite observations, samples as rows (NumPy or JAX; float32 stays float32,
        integer input becomes float64).
      y: ``(n,)`` labels in ``{0, 1}`` (bool, integer, or integral floats), both classes present.
      l2: the ridge weight λ ≥ 0 on the coefficients (``1/C`` in scikit-learn); the intercept is
        not penalised. Like ``tol`` a Python or NumPy number or a 0-d array (not a bool).
      fit_intercept: fit ``b``; otherwise ``b = 0``. A bool (or ``np.bool_``).
      tol: tolerance on ``max|g|/n`` and on half the Newton decrement ``gᵀH⁻¹g/(2n)``; ``> 0``.
      max_iter: the most Newton steps, an int in ``1..2**31 − 1`` (Python, NumPy or 0-d array).
      derivatives: ``"closed"`` (the closed-form gradient and Hessian) or ``"autodiff"``
        (``jax.grad`` and ``jax.hessian`` of the plain reference objective): the same method, for
        comparison.
      hessian_dtype: the precision of the Hessian ``X̃ᵀdiag(π(1−π))X̃``: ``None`` (default: ``X``'s),
        ``"float32"`` or ``"float64"`` (or the NumPy/JAX dtypes of those names). With
        ``"float32"`` for float64 ``X`` the Gram matrix, which is nearly all the cost, runs in
        float32: an inexact Newton method that may take a step or two more, while the gradient,
        line search and convergence test stay in float64, so it converges to the same solution.

    Returns:
      A :class:`NewtonResult`; ``coef`` is ``(d,)`` and ``intercept`` a scalar.

    Raises:
      ValueError: for non-finite ``X``, labels outside ``{0, 1}``, one class only, mismatched shapes
        or bad options, naming the argument; for a traced argument (a call inside ``jax.jit``).
      SingularHessianError: (a ``ValueError``) for a singular Hessian or separable data with
        ``l2 = 0``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.2, eq. 3.9 and 3.14.
    """
    fn = "fit_logistic_newton"
    _refuse_traced(fn, X, y, l2, fit_intercept, tol, max_iter)
    X = _fit_input(fn, X)
    n, d = X.shape
    l2, tol, max_iter = _check_options(fn, l2, tol, max_iter)
    fit_intercept = _check_bool(fn, "fit_intercept", fit_intercept)
    labels = _check_labels(fn, "y", y, n, "{0, 1}")
    outside = (labels != 0) & (labels != 1)
    if outside.any():
        raise ValueError(f"{fn}: y must hold labels in {{0, 1}}; got value(s) {np.unique(labels[outside])[:5]} "
                         f"outside it. For more than two classes use fit_multinomial_newton.")
    if labels.min() == labels.max():
        raise ValueError(f"{fn}: y contains only the class {labels[0]}; both classes 0 and 1 must be present.")
    _check_derivatives(fn, derivatives)
    hessian_dtype = _check_hessian_dtype(fn, hessian_dtype, X.dtype)
    w, it, status, gnorm, separated = _fit_binary(
        X, labels.astype(X.dtype), jnp.asarray(l2, X.dtype), jnp.asarray(tol, X.dtype),
        jnp.asarray(max_iter, jnp.int32), fit_intercept=fit_intercept,
        hessian_dtype=jnp.dtype(hessian_dtype).name, derivatives=derivatives)
    status, it = int(status), int(it)
    if status == _NON_FINITE:
        _raise_non_finite(fn, X, hessian_dtype)
    _raise_on_failure(fn, status, it, l2)
    _raise_if_separable(fn, bool(separated), l2)
    coef, intercept = w[:d], (w[d] if fit_intercept else jnp.zeros((), w.dtype))
    return NewtonResult(coef, intercept, it, status == _CONVERGED, float(gnorm))


def fit_multinomial_newton(X, labels, l2: float = 1.0, fit_intercept: bool = True, tol: float = 1e-8,
                           max_iter: int = 50, n_classes: int | None = None,
                           derivatives: str = "closed") -> NewtonResult:
    """Multinomial ridge logistic regression by Newton's method on the closed-form gradient and Hessian.

    Minimises

    .. math::

       J(\\Theta, b) = -\\sum_i y_i^T\\log s(\\Theta^Tx_i + b) + \\frac{\\lambda}{2}\\Theta\\cdot\\Theta,

    with ``Y`` the one-hot labels, the ``(d+1)k``-dimensional Newton system of
    :func:`~mdc_jax.rules.logistic.multinomial_hessian` solved by Cholesky after fixing the last
    class's intercept (see the module docstring), and the result centred. Equals scikit-learn's
    multinomial ``LogisticRegression(C=1/l2)``, whose ``coef_`` is ``coef.T``.

    Not traceable, as :func:`fit_logistic_newton`: call it outside ``jax.jit``.

    Args:
      X: ``(n, d)`` finite observations, samples as rows.
      labels: ``(n,)`` integer class labels in ``0..k−1``, every class present.
      l2: the ridge weight λ ≥ 0 on the coefficients; the intercepts are not penalised.
      fit_intercept: fit the ``k`` intercepts. A bool (or ``np.bool_``).
      tol: tolerance on ``max|g|/n`` and ``gᵀH⁻¹g/(2n)``, as in :func:`fit_logistic_newton`.
      max_iter: the most Newton steps, as in :func:`fit_logistic_newton`.
      derivatives: ``"closed"`` (the closed-form gradient and Hessian) or ``"autodiff"``
        (``jax.grad`` and ``jax.hessian`` of the plain reference objective): the same method, for
        comparison.
      n_classes: ``k``, an int >= 2 (Python, NumPy or 0-d array); defaults to ``max(labels) + 1``.

    Returns:
      A :class:`NewtonResult`; ``coef`` is ``(d, k)``, ``intercept`` ``(k,)``.

    Raises:
      ValueError: for non-finite ``X``, labels outside ``0..k−1`` or a class without samples, fewer
        than two classes, mismatched shapes or bad options, naming the argument; for a traced argument.
      SingularHessianError: for a singular Hessian or separable data with ``l2 = 0``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.3 and ``docs/derivations.md``.
    """
    fn = "fit_multinomial_newton"
    _refuse_traced(fn, X, labels, l2, fit_intercept, tol, max_iter, n_classes)
    X = _fit_input(fn, X)
    n, d = X.shape
    l2, tol, max_iter = _check_options(fn, l2, tol, max_iter)
    fit_intercept = _check_bool(fn, "fit_intercept", fit_intercept)
    _check_derivatives(fn, derivatives)
    labels = _check_labels(fn, "labels", labels, n, "0..k−1")
    if n_classes is None:
        if labels.min() == labels.max():
            raise ValueError(f"{fn}: only one class is present in labels (every label is {labels[0]}); a "
                             f"multinomial fit needs at least two classes.")
        n_classes, source = int(labels.max()) + 1, " (max(labels) + 1)"
    else:
        source = ""
    k = static_int(n_classes)
    if k is None or k < 2:
        raise ValueError(f"{fn}: n_classes must be an int >= 2; got {n_classes!r}{source}.")
    outside = (labels < 0) | (labels >= k)
    if outside.any():
        raise ValueError(f"{fn}: labels must lie in 0..{k - 1}; got value(s) {np.unique(labels[outside])[:5]} "
                         f"outside it.")
    counts = np.bincount(labels, minlength=k)
    if np.any(counts == 0):
        raise ValueError(f"{fn}: labels has no sample of class(es) {np.flatnonzero(counts == 0).tolist()} in "
                         f"0..{k - 1}; every class needs at least one sample.")
    Phi, it, status, gnorm, separated = _fit_multinomial(
        X, labels.astype(np.int32), jnp.asarray(l2, X.dtype), jnp.asarray(tol, X.dtype),
        jnp.asarray(max_iter, jnp.int32), n_classes=k, fit_intercept=fit_intercept, fix_column=(l2 == 0),
        derivatives=derivatives)
    status, it = int(status), int(it)
    if status == _NON_FINITE:
        _raise_non_finite(fn, X)
    _raise_on_failure(fn, status, it, l2)
    _raise_if_separable(fn, bool(separated), l2)
    coef = Phi[:d]
    if l2 == 0:
        coef = coef - jnp.mean(coef, axis=1, keepdims=True)  # Σ_a Θ_ia = 0, the minimum-norm solution
    intercept = Phi[d] - jnp.mean(Phi[d]) if fit_intercept else jnp.zeros(k, Phi.dtype)
    return NewtonResult(coef, intercept, it, status == _CONVERGED, float(gnorm))


def _check_predict(fn, fit, X, ndim):
    """X in the fit's dtype; shape checks only on a traced X (so that predictions run under jit)."""
    if not isinstance(fit, NewtonResult):
        maker = "fit_logistic_newton" if ndim == 1 else "fit_multinomial_newton"
        raise ValueError(f"{fn}: fit must be a NewtonResult (what {maker} returns); got {type(fit).__name__}.")
    coef = fit.coef
    if jnp.ndim(coef) != ndim:
        other = "predict_proba_multinomial" if ndim == 1 else "predict_proba_logistic"
        raise ValueError(f"{fn}: fit.coef has shape {jnp.shape(coef)}; expected {ndim}-D. Use {other} for it.")
    if isinstance(X, jax.core.Tracer):
        _check_X_shape(fn, tuple(X.shape), X.dtype)  # its values are unknown under jit
    else:
        X = _check_X(fn, X)
    if X.shape[1] != jnp.shape(coef)[0]:
        raise ValueError(f"{fn}: X has shape {tuple(X.shape)}; expected (n, {jnp.shape(coef)[0]}), the fit's features.")
    return jnp.asarray(X, jnp.result_type(coef))


def predict_proba_logistic(fit: NewtonResult, X) -> jax.Array:
    """``P(y = 1 | x) = σ(xᵀθ + b)`` for each row of ``X``, ``(n,)``.

    scikit-learn's ``predict_proba(X)[:, 1]``. ``fit`` is a :class:`NewtonResult` of
    :func:`fit_logistic_newton`. Traceable: under ``jax.jit`` only ``X``'s shape and dtype are
    checked (a concrete ``X`` must also be finite).
    """
    X = _check_predict("predict_proba_logistic", fit, X, 1)
    return jax.nn.sigmoid(X @ fit.coef + fit.intercept)


def predict_proba_multinomial(fit: NewtonResult, X) -> jax.Array:
    """``s(Θᵀx + b)`` for each row of ``X``, ``(n, k)``, as scikit-learn's ``predict_proba``.

    ``fit`` is a :class:`NewtonResult` of :func:`fit_multinomial_newton`; traceable as
    :func:`predict_proba_logistic`.
    """
    X = _check_predict("predict_proba_multinomial", fit, X, 2)
    return jax.nn.softmax(X @ fit.coef + fit.intercept[None, :], axis=1)
