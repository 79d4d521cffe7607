"""The damped Newton loop, one ``lax.while_loop`` for any objective that supplies its derivatives.

With ``w`` the free parameters, ``aux`` a cache of their linear predictor (see :class:`Objective`)
and ``J`` the objective, each iteration solves the Newton system by Cholesky::

    g = ∇J(w),      H = ∇²J(w),      H p = −g,      w ← w + t p

with ``t`` halved from 1 until the Armijo condition holds. Convergence follows scikit-learn's
``newton-cholesky`` test on the *mean* objective (``J/n``), checked after each step on the new
gradient and the decrement of the step just taken (so no Hessian is formed at the final point)::

    max |g| / n ≤ tol    and    ½ gᵀH⁻¹g / n ≤ tol          (Newton decrement)

A Hessian counts as singular when a pivot of the Cholesky factor of its Jacobi-scaled form
``D^{-1/2} H D^{-1/2}`` falls below ``1000 ε``; the loop then stops with :data:`SINGULAR`, and the
fit raises :class:`SingularHessianError` instead of returning diverging or NaN coefficients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve


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


# Status codes of the compiled loop. NON_FINITE: the gradient at the start is not finite, which
# (since every entry of X meets a non-zero residual there) means X holds a NaN or inf, or values so
# large that Xᵀ(π − y) overflows; or a Hessian is not finite (X's squares overflow). The host then
# names the first NaN or inf, or says that X's values are too large.
RUNNING, CONVERGED, SINGULAR, LINE_SEARCH_FAILED, NON_FINITE = 0, 1, 2, 3, 4
MAX_ITER = 2**31 - 1  # the loop's step counter is an int32


class Objective(NamedTuple):
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


def newton_step(g, H):
    """``p = −H⁻¹g`` by Cholesky of the Jacobi-scaled ``H``, and whether ``H`` is singular."""
    h = jnp.diagonal(H)
    bad_diag = jnp.any(~(h > 0))  # also catches NaN
    s = 1 / jnp.sqrt(jnp.where(h > 0, h, 1))
    L = jnp.linalg.cholesky(H * s[:, None] * s[None, :])
    pivots = jnp.diagonal(L) ** 2
    singular = bad_diag | ~jnp.all(jnp.isfinite(L)) | (jnp.min(pivots) < 1e3 * jnp.finfo(H.dtype).eps)
    p = -s * cho_solve((L, True), s * g)
    return p, singular


def newton(obj: Objective, w0, aux0, n, tol, max_iter):
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
        return (state[-1] == RUNNING) & (state[-2] < max_iter)

    def body(state):
        w, aux, f0, g, H, have_H, it, _ = state
        H = jax.lax.cond(have_H, lambda: H, lambda: obj.hess(w, aux)) if fused else obj.hess(w, aux)
        overflow = ~jnp.all(jnp.isfinite(H))  # a finite X whose squares overflow (|x| ≳ 1e154 in float64)
        p, singular = newton_step(g, H)
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
                            [NON_FINITE, SINGULAR, LINE_SEARCH_FAILED, CONVERGED], RUNNING)
        return w_new, aux_new, f_new, g_new, H_new, another, it + moved.astype(it.dtype), status

    if fused:
        g0, H0 = obj.grad_hess(w0, aux0)
    else:
        g0, H0 = obj.grad(w0, aux0), jnp.zeros((w0.size, w0.size), w0.dtype)
    status0 = jnp.where(jnp.all(jnp.isfinite(g0)), RUNNING, NON_FINITE)
    state = (w0, aux0, obj.value(w0, aux0), g0, H0, jnp.asarray(fused), jnp.zeros((), jnp.int32), status0)
    w, aux, _, g, _, _, it, status = jax.lax.while_loop(cond, body, state)
    return w, aux, it, status, jnp.max(jnp.abs(g)) / n
