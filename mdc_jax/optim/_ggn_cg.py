"""Truncated Gauss–Newton (Hessian-free) as an optax transformation, on the closed-form GGN-vector product.

Each step, with ``g`` the gradient, ``G`` the GGN of the loss on the same batch and ``λ`` the damping::

    (G + λI) p = −g                by CG from p₀ = warm_start·p_prev, ≤ cg_iters steps, ‖r‖ ≤ cg_tol·‖g‖
    ρ = (J(θ + p) − J(θ)) / (gᵀp + ½ pᵀ(G + λI)p)       (the damped quadratic's predicted change)
    λ ← λ·3/2 if ρ < 1/4,  λ·2/3 if ρ > 3/4              (Levenberg–Marquardt, clamped at min_damping)
    α = the first of 1, 0.8, 0.8², … (8 at most) with J(θ + αp) ≤ J(θ) + 10⁻²·α·gᵀp;  Δθ = η(t)·α·p

``pᵀ(G + λI)p`` comes free from CG's residual ``r = −g − (G + λI)p``: ``pᵀ(−g − r)``. Nothing here
differentiates anything: ``G v`` and ``J`` come from the caller (``Model.curvature.ggn_vp``, ``Model.loss``),
through optax's extra arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from .. import _validation as v
from ._common import (
    add_scaled,
    common_dtype,
    levenberg_marquardt,
    reduction_ratio,
    require_curvature_args,
    require_unit_interval,
    scalar,
    scalar_or_schedule,
    scale,
)

ARMIJO = 1e-2  # the line search's sufficient decrease, J(θ + αp) ≤ J(θ) + ARMIJO·α·gᵀp
BACKTRACK = 0.8  # α ∈ {1, 0.8, 0.8², ...}
TRIES = 8  # step sizes tried at most; none accepted: α = 0 (no move)
DROP, RAISE = 2 / 3, 3 / 2  # the Levenberg–Marquardt rule's factors, for ρ > 3/4 and ρ < 1/4


class GGNCGState(NamedTuple):
    """The state of :func:`ggn_cg`: scalars as 0-d arrays (a checkpoint holds them), shapes fixed by ``params``.

    Attributes:
      count: the steps taken (int32); the learning-rate schedule reads it.
      damping: ``λ`` for the next step (adapted by the Levenberg–Marquardt rule when ``adapt_damping``).
      direction: the last CG solution ``p`` (before the line search's ``α``), like ``params``: the next
        CG starts from ``warm_start·p``.
      rho: the last reduction ratio ``ρ`` (0 where the quadratic predicted no decrease; NaN where the
        loss at ``θ + p`` was not finite).
      step_size: the last line search's ``α`` (1 without the line search, 0 when it accepted none).
      cg_steps: the CG iterations of the last step (int32).
    """

    count: jax.Array
    damping: jax.Array
    direction: Any
    rho: jax.Array
    step_size: jax.Array
    cg_steps: jax.Array


def conjugate_gradient(matvec: Callable, b, x0, *, maxiter: int, tol) -> tuple[Any, Any, jax.Array]:
    """Solves ``M x = b`` for a symmetric positive definite ``M`` by conjugate gradients, over pytrees.

    Stops after ``maxiter`` steps, when ``‖r‖ ≤ tol`` (``r = b − M x``), or when a direction has no
    positive curvature ``dᵀMd ≤ 0`` (``M`` not positive definite in floating point; the iterate so far
    is kept).

    Args:
      matvec: ``x -> M x``, on pytrees like ``b``.
      b, x0: the right-hand side and the start, pytrees of one structure.
      maxiter: the most iterations, a static int.
      tol: the absolute residual norm at which to stop (a scalar).

    Returns:
      ``(x, r, steps)``: the solution, its residual ``b − M x`` (kept by the recurrence, not recomputed)
      and the iterations taken (int32).

    References:
      Hestenes & Stiefel (1952); Nocedal & Wright, Numerical Optimization, Algorithm 5.2.
    """
    vdot = optax.tree_utils.tree_vdot
    r0 = jax.tree.map(jnp.subtract, b, matvec(x0))
    rr0 = vdot(r0, r0)
    tol2 = scalar(tol, rr0.dtype) ** 2

    def cond(carry):
        _, _, _, rr, k, curved = carry
        return (k < maxiter) & (rr > tol2) & curved

    def body(carry):
        x, r, d, rr, k, _ = carry
        Md = matvec(d)
        curvature = vdot(d, Md)
        curved = curvature > 0
        alpha = jnp.where(curved, rr / jnp.where(curved, curvature, 1), 0)
        x = add_scaled(x, alpha, d)
        r = add_scaled(r, -alpha, Md)
        rr_new = vdot(r, r)
        d = add_scaled(r, rr_new / jnp.where(rr > 0, rr, 1), d)
        return x, r, d, rr_new, k + curved.astype(jnp.int32), curved

    x, r, _, _, k, _ = lax.while_loop(cond, body, (x0, r0, r0, rr0, jnp.zeros([], jnp.int32), jnp.array(True)))
    return x, r, k


def ggn_cg(learning_rate=1.0, *, damping=1.0, cg_iters: int = 50, cg_tol: float = 1e-4, adapt_damping: bool = True,
           line_search: bool = True, warm_start: float = 0.95, structural_damping: float = 0.0,
           min_damping: float = 1e-8) -> optax.GradientTransformationExtraArgs:
    """Truncated Gauss–Newton (Hessian-free): each step solves the damped GGN system by conjugate gradients.

    .. math::

       (G + \\lambda I)\\,p = -g,\\qquad
       \\rho = \\frac{J(\\theta + p) - J(\\theta)}{g^Tp + \\tfrac12 p^T(G + \\lambda I)p},\\qquad
       \\Delta\\theta = \\eta(t)\\,\\alpha\\,p

    * CG (at most ``cg_iters`` steps, stopping at ``‖r‖ ≤ cg_tol·‖g‖``) starts from ``warm_start·p_prev``, the
      previous step's solution (Martens 2010, §4.5).
    * With ``adapt_damping``, Levenberg–Marquardt: ``λ ← 3λ/2`` if ``ρ < 1/4`` (or ``ρ`` is NaN), ``2λ/3`` if
      ``ρ > 3/4``, never below ``min_damping`` (Martens 2010, §4.1). ``ρ`` is 0 where the quadratic predicts
      no decrease (``gᵀp + ½pᵀ(G + λI)p ≥ 0``, so ``λ`` rises).
    * With ``line_search``, ``α`` is the first of ``1, 0.8, 0.8², …`` (8 at most) with the Armijo decrease
      ``J(θ + αp) ≤ J(θ) + 10⁻²·α·min(gᵀp, 0)`` (the ``min``: a step that raises the loss is never accepted),
      else ``α = 0``: no move (Martens & Sutskever 2012, §8.8). Without it, ``α = 1``.
    * With ``structural_damping = μ > 0`` the curvature is ``G + λμS`` (Martens & Sutskever 2011): ``ggn_vp``
      is called as ``ggn_vp(v, structural=λ·μ)`` and must return ``(G + λμS) v``.

    The update takes the curvature and the loss as optax extra arguments::

        opt = ggn_cg(1.0, damping=1.0)
        state = opt.init(params)
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params, ggn_vp=lambda t: fcnn_ggn_vp(params, X, Y, acts, t),
                                    loss=loss, value=value)

    and so composes with ``optax.chain`` (a clipping before it clips the ``g`` that CG sees).

    Args:
      learning_rate: ``η``, a number ``>= 0`` or an optax schedule (a callable of the step count).
      damping: the initial ``λ > 0``.
      cg_iters: ``>= 1``, the most CG iterations per step.
      cg_tol: ``>= 0``, CG stops at ``‖r‖ ≤ cg_tol·‖g‖``.
      adapt_damping: adapt ``λ`` by the Levenberg–Marquardt rule.
      line_search: backtrack along ``p``.
      warm_start: ``∈ [0, 1]``, CG's start as a fraction of the previous solution.
      structural_damping: ``μ >= 0``.
      min_damping: ``> 0``, the floor of the adapted ``λ``.

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`: ``init(params)`` and ``update(grads, state, params,
      *, ggn_vp, loss, value=None)``: ``ggn_vp`` maps a pytree ``v`` like ``params`` to ``G v`` (the GGN of
      ``loss`` at ``params``, on the batch of ``grads``); ``loss`` maps parameters to the scalar loss on that
      batch; ``value``: ``loss(params)`` when the caller has it (it is computed otherwise). Other extra
      arguments are ignored.

    Raises:
      ValueError: naming the argument: ``damping <= 0``, ``cg_iters < 1``, ``cg_tol < 0``, ``warm_start``
        outside ``[0, 1]``, ``structural_damping < 0``, ``min_damping <= 0``, a bad ``learning_rate``; at
        ``update``, a missing ``params``, ``ggn_vp`` or ``loss``.

    References:
      Martens, "Deep learning via Hessian-free optimization" (ICML 2010), §4.1 (Levenberg–Marquardt), §4.5
      (CG warm start); Martens & Sutskever, "Learning recurrent neural networks with Hessian-free
      optimization" (ICML 2011), §3 (structural damping); Martens & Sutskever, "Training deep and recurrent
      networks with Hessian-free optimization" (2012), §8 (line search, reduction ratio).
    """
    fn = "ggn_cg"
    lr = scalar_or_schedule(fn, "learning_rate", learning_rate, positive=False)
    damping = v.require_number(fn, "damping", damping, positive=True)
    cg_iters = v.require_static_int(fn, "cg_iters", cg_iters)
    cg_tol = v.require_number(fn, "cg_tol", cg_tol)
    adapt_damping = v.require_bool(fn, "adapt_damping", adapt_damping)
    line_search = v.require_bool(fn, "line_search", line_search)
    warm_start = require_unit_interval(fn, "warm_start", warm_start, closed=True)
    mu = v.require_number(fn, "structural_damping", structural_damping)
    min_damping = v.require_number(fn, "min_damping", min_damping, positive=True)

    def init_fn(params):
        dtype = common_dtype(fn, params)
        return GGNCGState(count=jnp.zeros([], jnp.int32), damping=scalar(damping, dtype),
                          direction=optax.tree_utils.tree_zeros_like(params), rho=jnp.zeros([], dtype),
                          step_size=jnp.zeros([], dtype), cg_steps=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None, *, ggn_vp=None, loss=None, value=None, **extra_args):
        del extra_args
        require_curvature_args(fn, params, ggn_vp, loss)
        g, lam, dtype = updates, state.damping, state.damping.dtype
        curvature = (lambda t: ggn_vp(t, structural=lam * mu)) if mu else ggn_vp
        damped = lambda t: add_scaled(scale(lam, t), 1, curvature(t))  # (G + λI) t, in t's dtypes (a fixed CG carry)
        p, r, steps = conjugate_gradient(damped, scale(-1, g), scale(warm_start, state.direction), maxiter=cg_iters,
                                         tol=cg_tol * optax.tree_utils.tree_norm(g))
        J = scalar(loss(params) if value is None else value, dtype)
        J_new = scalar(loss(add_scaled(params, 1, p)), dtype)
        gp = scalar(optax.tree_utils.tree_vdot(g, p), dtype)
        predicted = gp + scalar(optax.tree_utils.tree_vdot(p, scale(-1, jax.tree.map(jnp.add, g, r))), dtype) / 2
        rho = reduction_ratio(J_new, J, predicted)
        lam_next = levenberg_marquardt(lam, rho, drop=DROP, rise=RAISE, low=min_damping) if adapt_damping else lam
        if line_search:
            alpha = _backtrack(lambda a: loss(add_scaled(params, a, p)), J, J_new, gp)
        else:
            alpha = jnp.ones([], dtype)
        new_updates = scale(scalar(lr(state.count), dtype) * alpha, p)
        return new_updates, GGNCGState(optax.safe_increment(state.count), lam_next, p, rho, alpha, steps)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _backtrack(loss_at: Callable, J, J_first, gp) -> jax.Array:
    """The first ``α = 0.8^k`` (``k < 8``) with ``J(θ + αp) ≤ J(θ) + 10⁻²·α·min(gᵀp, 0)``; 0 if none.
    ``J_first``: the loss at ``α = 1``, known already."""
    slope = ARMIJO * jnp.minimum(gp, 0)
    ok = lambda alpha, J_alpha: J_alpha <= J + alpha * slope  # False for a NaN loss

    def body(carry):
        k, _ = carry
        alpha = BACKTRACK ** (k + 1).astype(J.dtype)
        return k + 1, ok(alpha, scalar(loss_at(alpha), J.dtype))

    k, accepted = lax.while_loop(lambda c: ~c[1] & (c[0] < TRIES - 1), body,
                                 (jnp.zeros([], jnp.int32), ok(jnp.ones([], J.dtype), J_first)))
    return jnp.where(accepted, BACKTRACK ** k.astype(J.dtype), 0).astype(J.dtype)
