"""K-FAC as an optax transformation, on the closed-form Kronecker factors of :mod:`mdc_jax.curvature`.

Each step, with ``g`` the gradient and ``(A, B)`` the factors of the GGN block of a weight matrix
(``B`` alone for a vector), from the same batch::

    Ā ← ema·Ā + (1 − ema)·A,   B̄ ← ema·B̄ + (1 − ema)·B          (the first step takes A, B as they are)
    P  ← damped inverses (factored) or eigenbases (eigen) of Ā, B̄  (every update_every steps)
    v  ← μ·v + P g,            Δθ = −η(t)·v

``P g`` is ``(Ā ⊗ B̄ + λI)⁻¹ vec(g)``, exactly (``eigen``) or by Martens & Grosse's factored Tikhonov
damping (``factored``); the algebra is in :mod:`._blocks`. With ``adaptive=True`` the learning rate and the
momentum come from the exact quadratic model, and ``λ`` from the Levenberg–Marquardt rule (§6.5, §7)::

    Δ = −P g,  δ₀ = the previous update
    (α, μ) = argmin M(αΔ + μδ₀),  M(δ) = gᵀδ + ½ δᵀ(G + λI)δ        (a 2×2 system; [Δ δ₀]ᵀG[Δ δ₀] from ggn_gram)
    δ = αΔ + μδ₀;   every adapt_every steps: ρ = (J(θ + δ) − J(θ)) / M(δ),  λ ← λ·ω if ρ > 3/4, λ/ω if ρ < 1/4

Nothing here differentiates anything: the factors, the GGN's Gram matrix and ``J`` come from the caller
(``Model.curvature``, ``Model.loss``), through optax's extra arguments.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from .. import _validation as v
from . import _blocks as blocks
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

INVERSES = ("factored", "eigen")
"""How :func:`kfac` inverts the damped blocks: Martens & Grosse's factored Tikhonov damping, or exactly from
the factors' eigendecompositions."""
DECAY = 19 / 20  # adaptive: λ moves by ω = DECAY**adapt_every per adaptation (Martens & Grosse 2015, §6.5)


class KFACState(NamedTuple):
    """The state of :func:`kfac`; every shape and dtype is fixed by ``params`` at ``init`` (one compile).

    Attributes:
      count: the steps taken (int32); the schedules read it, and ``P`` is recomputed when
        ``count % update_every == 0``.
      factors: the running averages ``Ā, B̄`` in the structure of the factors (``params`` a prefix: a
        weight matrix maps to ``(Ā, B̄)``, a vector to ``B̄``), in each parameter's dtype.
      preconditioner: ``inverse="factored"``: the damped inverses ``((Ā + π√λI)⁻¹, (B̄ + √λ/π I)⁻¹)`` of a
        matrix, ``(B̄ + λI)⁻¹`` of a vector; ``"eigen"``: their ``Eigh``
        ``(Q, d)`` pairs (the damping is added when applied, at every step).
      velocity: like ``params``: the momentum buffer ``v``; ``adaptive``: the previous update ``δ₀``.
      damping: ``λ`` (0-d, the parameters' dtype): ``adaptive``: the damping of the next step, adapted;
        otherwise the schedule's value at the last step (the initial one after ``init``).
      rho: ``adaptive``: the reduction ratio ``ρ`` of the last adaptation (NaN before the first; 0 where the
        model predicted no decrease; NaN where the loss at ``θ + δ`` was not finite); otherwise NaN.
      alpha: the last step's learning rate: ``adaptive``: ``α``, the coefficient of ``Δ = −P g``; otherwise
        the schedule's ``η``.
      mu: the last step's momentum: ``adaptive``: ``μ``, the coefficient of ``δ₀``; otherwise ``momentum``.
    """

    count: jax.Array
    factors: Any
    preconditioner: Any
    velocity: Any
    damping: jax.Array
    rho: jax.Array
    alpha: jax.Array
    mu: jax.Array


def _require_matrices_and_vectors(fn: str, params) -> None:
    """Every parameter a floating weight matrix (factors ``(A, B)``) or vector (a block ``B``), named by path."""
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        where = f"params{jax.tree_util.keystr(path)}"
        v.require_floating(fn, where, p)
        if len(v.shape_of(p)) not in (1, 2):
            v.fail(fn, f"{where} has shape {v.shape_of(p)}; kfac preconditions weight matrices (2-D, factors (A, B)) "
                       f"and vectors (1-D, a block B) only.")


def zero_factors(params):
    """Zero factors in the structure ``factors`` takes: ``(A, B)`` ``((d_in, d_in), (d_out, d_out))`` for a
    weight matrix ``(d_in, d_out)``, ``B`` ``(d, d)`` for a vector ``(d,)``, in the parameter's dtype."""
    square = lambda d, p: jnp.zeros((d, d), p.dtype)
    return jax.tree.map(lambda p: tuple(square(d, p) for d in p.shape) if p.ndim == 2 else square(p.shape[0], p), params)


def _check_factors(fn: str, grads, factors, averages):
    """``factors`` with ``grads``' structure as a prefix, each matrix's ``(A, B)`` and each vector's ``B`` of
    the shapes its parameter implies; returned in the structure (and dtypes) of the running ``averages``."""
    if factors is None:
        v.fail(fn, "update needs factors=...: the Kronecker factors of the GGN, with params as a prefix (a weight "
                   "matrix mapped to (A, B), a vector to B), as Model.curvature.factors and "
                   "mdc_jax.curvature.fcnn_quantities return them; got None.")
    flat, treedef = jax.tree_util.tree_flatten_with_path(grads)
    try:
        parts = treedef.flatten_up_to(factors)
    except (ValueError, TypeError) as err:
        v.fail(fn, f"factors must have the structure of params as a prefix (a weight matrix mapped to (A, B), a "
                   f"vector to B); got {jax.tree.structure(factors)} for params {treedef} ({err}).")
    checked = []
    for (path, g), f in zip(flat, parts):
        where = f"factors{jax.tree_util.keystr(path)}"
        shape = v.shape_of(g)
        if len(shape) == 2:
            if not (isinstance(f, list | tuple) and len(f) == 2):
                v.fail(fn, f"{where} must be a pair (A, B) of shapes {(shape[0],) * 2} and {(shape[1],) * 2} for the "
                           f"weight matrix of shape {shape}; got {type(f).__name__}.")
            for name, factor, d in (("A", f[0], shape[0]), ("B", f[1], shape[1])):
                v.require_floating(fn, f"{where} ({name})", factor)
                v.require_shape(fn, f"{where} ({name})", factor, (d, d),
                                f"the weight matrix of shape {shape} needs A {(shape[0],) * 2} and B {(shape[1],) * 2}")
            checked.append(tuple(f))
        else:
            v.require_floating(fn, where, f)
            v.require_shape(fn, where, f, (shape[0],) * 2, f"the block B of the vector of shape {shape}")
            checked.append(f)
    new = treedef.unflatten(checked)
    return jax.tree.map(lambda f, a: f.astype(a.dtype), new, averages)


def quadratic_coefficients(A: jax.Array, b: jax.Array) -> jax.Array:
    """The minimiser ``w = −A⁻¹b`` of the 2-D quadratic ``wᵀb + ½ wᵀAw`` (Martens & Grosse 2015, §7).

    ``A`` ``(2, 2)`` is the damped curvature of the model on ``[Δ, δ₀]``, ``b`` ``(2,)`` the gradient on them.
    Where ``A`` is singular in floating point (``δ₀ = 0`` at the first step, or ``δ₀ ∥ Δ``: ``det A ≤
    100·eps·A₀₀A₁₁``) or not positive definite, or the solution is not finite: ``(−b₀/A₀₀, 0)``, ``Δ`` alone
    (kfac-jax's ``psd_solve_maybe_zero_last_idx``); where that is not defined either (``A₀₀ ≤ 0``): ``(0, 0)``.
    """
    a, c, d = A[0, 0], (A[0, 1] + A[1, 0]) / 2, A[1, 1]
    det = a * d - c * c
    both = (a > 0) & (d > 0) & (det > 100 * jnp.finfo(A.dtype).eps * a * d)
    w2 = jnp.stack([c * b[1] - d * b[0], c * b[0] - a * b[1]]) / jnp.where(both, det, 1)
    one = a > 0
    w1 = jnp.stack([-b[0] / jnp.where(one, a, 1), jnp.zeros_like(b[0])])
    w1 = jnp.where(one & jnp.all(jnp.isfinite(w1)), w1, 0)
    return jnp.where(both & jnp.all(jnp.isfinite(w2)), w2, w1)


def kfac(learning_rate=1e-3, *, damping=1e-3, ema: float = 0.95, update_every: int = 10, momentum: float = 0.0,
         inverse: str = "factored", adaptive: bool = False, adapt_every: int = 5, min_damping: float = 1e-8,
         max_damping: float | None = None) -> optax.GradientTransformationExtraArgs:
    """K-FAC: the gradient preconditioned by the damped inverse of the Kronecker-factored GGN.

    .. math::

       \\bar A \\leftarrow \\epsilon\\bar A + (1-\\epsilon)A,\\quad \\bar B \\leftarrow \\epsilon\\bar B + (1-\\epsilon)B,
       \\qquad v \\leftarrow \\mu v + (\\bar A\\otimes\\bar B + \\lambda I)^{-1}\\operatorname{vec}(g),
       \\qquad \\Delta\\theta = -\\eta(t)\\,v

    with ``(Ā ⊗ B̄)`` applied as ``Ā G B̄ᵀ`` (row-major ``vec``), and the inverse either

    * ``"factored"`` (§6.3): ``(Ā + π√λ I)⁻¹ G (B̄ + √λ/π I)⁻¹``, ``π = sqrt((tr Ā/dim Ā)/(tr B̄/dim B̄))``, the
      inverses formed every ``update_every`` steps with the damping of that step; or
    * ``"eigen"``: exact, ``Q_A[(Q_Aᵀ G Q_B) / (d_A d_Bᵀ + λ)]Q_Bᵀ`` from eigendecompositions formed every
      ``update_every`` steps, ``λ`` the current damping at every step.

    A vector parameter (a bias) with block ``B̄`` gets ``(B̄ + λI)⁻¹ g`` (``Q_B[(Q_Bᵀg)/(d_B + λ)]``). The first
    step takes the factors as they are; ``P`` is recomputed when ``count % update_every == 0`` (so at the
    first step) by a ``lax.cond``, so the update compiles once.

    The update takes the factors as an optax extra argument::

        opt = kfac(1e-3, damping=1e-3)
        state = opt.init(params)
        out = fcnn_quantities(params, X, Y, acts, quantities=("kfac",), key=key)
        updates, state = opt.update(out["grad"], state, params, factors=out["kfac"])

    and so composes with ``optax.chain`` (``optax.chain(optax.clip_by_global_norm(1.0), kfac(...))``: the
    extra arguments reach every transformation that takes them).

    With ``adaptive=True`` (Martens & Grosse 2015, §6.5 and §7; kfac-jax's ``use_adaptive_learning_rate``,
    ``use_adaptive_momentum`` and ``use_adaptive_damping``) the step is chosen on the exact quadratic model
    of the loss, ``M(δ) = gᵀδ + ½ δᵀ(G + λI)δ``, ``G`` the GGN on the batch:

    .. math::

       \\Delta = -Pg,\\qquad
       \\begin{pmatrix}\\Delta^T\\hat G\\Delta & \\Delta^T\\hat G\\delta_0\\\\
       \\delta_0^T\\hat G\\Delta & \\delta_0^T\\hat G\\delta_0\\end{pmatrix}
       \\begin{pmatrix}\\alpha\\\\ \\mu\\end{pmatrix} = -\\begin{pmatrix}g^T\\Delta\\\\ g^T\\delta_0\\end{pmatrix},
       \\qquad \\hat G = G + \\lambda I,\\qquad \\delta = \\alpha\\Delta + \\mu\\delta_0

    ``δ₀`` the previous update (0 at the first step: ``α`` alone; see :func:`quadratic_coefficients` for the
    singular cases). ``learning_rate`` and ``momentum`` are not used: ``α`` and ``μ`` replace them (kfac-jax
    refuses a learning-rate or momentum schedule in this mode). ``λ`` is state, ``damping`` its initial
    value, used by the preconditioner as in the fixed mode (the factored inverses take the ``λ`` of the step
    they are formed at). Every ``adapt_every = T₁`` steps (at counts ``T₁ − 1, 2T₁ − 1, …``, as kfac-jax) one
    more loss evaluation gives the reduction ratio, and the Levenberg–Marquardt rule moves ``λ``:

    .. math::

       \\rho = \\frac{J(\\theta + \\delta) - J(\\theta)}{M(\\delta) - M(0)},\\qquad
       \\lambda \\leftarrow \\begin{cases}\\omega\\lambda & \\rho > 3/4\\\\ \\lambda/\\omega & \\rho < 1/4\\end{cases},
       \\qquad \\omega = (19/20)^{T_1}

    (``ρ`` NaN: ``λ/ω``), clamped to ``[min_damping, max_damping]``. ``M`` includes ``λ`` here (as in
    :func:`~mdc_jax.optim.ggn_cg`; kfac-jax's ``include_damping_in_quad_change`` defaults to leaving it out).
    The quadratic model needs ``G`` only as the ``2 × 2`` Gram matrix ``[Δ, δ₀]ᵀG[Δ, δ₀]``: the update takes a
    function ``ggn_gram`` of the two directions stacked on a leading axis (each leaf ``(2, *param.shape)``),
    which :func:`mdc_jax.curvature.fcnn_ggn_gram` and :func:`~mdc_jax.curvature.rnn_ggn_gram` compute from one
    forward and the two forward differentials (no backward)::

        opt = kfac(damping=1.0, adaptive=True)
        gram = lambda V: fcnn_ggn_gram(params, X, Y, acts, V, task=task)  # (2, 2): [v_aᵀ G v_b]
        updates, state = opt.update(out["grad"], state, params, factors=out["kfac"], ggn_gram=gram,
                                    loss=lambda p: J(p), value=out["loss"])

    (with only ``v -> G v`` at hand: ``ggn_gram(V)[a, b] = v_a · G v_b``, ``v_a`` the slices of ``V``).

    Args:
      learning_rate: ``η``, a number ``>= 0`` or an optax schedule (a callable of the step count).
      damping: ``λ > 0``, a number or a schedule.
      ema: ``ε ∈ [0, 1)``, the decay of the factors' running averages.
      update_every: ``>= 1``: recompute the inverses (eigendecompositions) every this many steps.
      momentum: ``μ >= 0``.
      inverse: ``"factored"`` or ``"eigen"``.
      adaptive: choose ``α``, ``μ`` on the exact quadratic model and adapt ``λ`` (above); ``damping`` is then
        the initial ``λ``, a number.
      adapt_every: ``T₁ >= 1``, steps between the damping's adaptations (``adaptive``).
      min_damping: ``> 0``, the floor of the adapted ``λ``.
      max_damping: ``>= min_damping``, its ceiling (``None``: none).

    Returns:
      An :class:`optax.GradientTransformationExtraArgs`: ``init(params)`` and ``update(grads, state,
      params=None, *, factors)``. ``factors`` has ``params`` as a prefix: each weight matrix ``W``
      ``(d_in, d_out)`` maps to ``(A, B)`` (``(d_in, d_in)``, ``(d_out, d_out)``; ``W``'s GGN block ``≈ A ⊗ B``
      in the row-major ``vec``), each vector ``(d,)`` to its block ``B`` ``(d, d)``, as
      :func:`mdc_jax.curvature.fcnn_quantities` and :func:`~mdc_jax.curvature.rnn_quantities` return them.
      With ``adaptive``, ``update(grads, state, params, *, factors, ggn_gram, loss, value=None)``: ``ggn_gram``
      maps ``k`` tangents stacked on a leading axis (a pytree like ``params``, each leaf ``(k, *param.shape)``;
      here ``k = 2``, ``[Δ, δ₀]``) to their ``(k, k)`` Gram matrix ``[v_aᵀ G v_b]``, ``G`` the GGN of ``loss``
      at ``params`` on the batch of ``grads`` (as ``Model.curvature.ggn_gram``); ``loss`` maps parameters to
      the scalar loss on that batch, ``value`` is ``loss(params)`` when the caller has it. Other extra arguments
      are ignored.

    Raises:
      ValueError: naming the argument: ``damping <= 0`` (a number; a schedule with ``adaptive``), ``ema``
        outside ``[0, 1)``, ``update_every < 1``, ``momentum < 0``, an unknown ``inverse``, ``adaptive`` not a
        bool, ``adapt_every < 1``, ``min_damping <= 0``, ``max_damping < min_damping``; at ``init``, a
        parameter that is not a floating matrix or vector (named by its path); at ``update``, missing
        ``factors``, a factor whose structure or shape does not match its parameter (named by its path), and
        with ``adaptive`` a missing ``params``, ``ggn_gram`` or ``loss``, or a ``ggn_gram`` whose result is not
        ``(2, 2)``.

    References:
      Martens & Grosse, "Optimizing neural networks with Kronecker-factored approximate curvature" (ICML
      2015), §5 (the factors' running averages), §6.3 (factored Tikhonov damping), §6.5 (the
      Levenberg–Marquardt adaptation of λ), §7 (re-scaling and momentum from the exact quadratic model);
      Botev, Ritter & Barber, KFLR (ICML 2017); kfac-jax 0.0.8 (``pi_adjusted_kronecker_inverse``;
      ``Optimizer._solve_quad_model``, ``_compute_new_damping_and_rho``).
    """
    fn = "kfac"
    lr = scalar_or_schedule(fn, "learning_rate", learning_rate, positive=False)
    damp = scalar_or_schedule(fn, "damping", damping, positive=True)
    ema = require_unit_interval(fn, "ema", ema, closed=False)
    update_every = v.require_static_int(fn, "update_every", update_every)
    mu = v.require_number(fn, "momentum", momentum)
    v.require_choice(fn, "inverse", inverse, INVERSES)
    adaptive = v.require_bool(fn, "adaptive", adaptive)
    adapt_every = v.require_static_int(fn, "adapt_every", adapt_every)
    low = v.require_number(fn, "min_damping", min_damping, positive=True)
    high = None if max_damping is None else v.require_number(fn, "max_damping", max_damping)
    if high is not None and high < low:
        v.fail(fn, f"max_damping must be >= min_damping ({min_damping!r}); got {max_damping!r}.")
    if adaptive and callable(damping):
        v.fail(fn, f"damping must be a number with adaptive=True (the initial λ, then adapted); got {damping!r}.")
    omega = DECAY**adapt_every

    def precondition(like, averages, lam):
        """``P`` from the averages (``like``: a tree shaped like ``params``, whose leaves say which factors are a
        matrix's pair; ``lam``: the damping of this step, used by the factored inverses)."""
        def one(p, f):
            if inverse == "eigen":
                return tuple(map(blocks.psd_eigh, f)) if p.ndim == 2 else blocks.psd_eigh(f)
            lam_p = scalar(lam, p.dtype)
            return blocks.factored_inverses(*f, lam_p) if p.ndim == 2 else blocks.damped_inverse(f, lam_p)
        return jax.tree.map(one, like, averages)

    def apply(P, g, lam):
        """``P g`` for one parameter; ``lam`` is used by ``"eigen"`` (the factored inverses hold theirs)."""
        if inverse == "eigen":
            lam_g = scalar(lam, g.dtype)
            return blocks.eigen_kron_solve(*P, g, lam_g) if g.ndim == 2 else blocks.eigen_solve(P, g, lam_g)
        return blocks.kron_solve(*P, g) if g.ndim == 2 else P @ g

    def init_fn(params):
        _require_matrices_and_vectors(fn, params)
        dtype = common_dtype(fn, params)
        averages = zero_factors(params)
        P = jax.eval_shape(precondition, params, averages, 1.0)  # its shapes and dtypes; computed at count 0
        zero = jnp.zeros([], jnp.int32)
        return KFACState(count=zero, factors=averages,
                         preconditioner=jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), P),
                         velocity=optax.tree_utils.tree_zeros_like(params), damping=scalar(damp(zero), dtype),
                         rho=jnp.full([], jnp.nan, dtype), alpha=jnp.zeros([], dtype), mu=jnp.zeros([], dtype))

    def update_fn(updates, state, params=None, *, factors=None, ggn_gram=None, loss=None, value=None, **extra_args):
        new = _check_factors(fn, updates, factors, state.factors)
        if adaptive:
            hint = " (not ggn_vp: the quadratic model needs only [v_a^T G v_b])" if "ggn_vp" in extra_args else ""
            require_curvature_args(fn, params, ggn_gram, loss, when=f" with adaptive=True{hint}", name="ggn_gram")
        dtype, count = state.damping.dtype, state.count
        first = count == 0
        averages = jax.tree.map(lambda a, f: jnp.where(first, f, ema * a + (1 - ema) * f), state.factors, new)
        lam = state.damping if adaptive else damp(count)
        P = lax.cond(count % update_every == 0, lambda: precondition(updates, averages, lam),
                     lambda: state.preconditioner)
        Pg = jax.tree.map(lambda g, p: apply(p, g, lam), updates, P)
        if adaptive:
            delta, lam_next, rho, w = adaptive_step(updates, Pg, state, params, ggn_gram, loss, value)
            return delta, KFACState(optax.safe_increment(count), averages, P, delta, lam_next, rho, w[0], w[1])
        velocity = jax.tree.map(lambda u, w: mu * u + w, state.velocity, Pg) if mu else Pg
        eta = lr(count)
        return (scale(-1 * eta, velocity),
                KFACState(optax.safe_increment(count), averages, P, velocity, scalar(lam, dtype),
                          jnp.full([], jnp.nan, dtype), scalar(eta, dtype), scalar(mu, dtype)))

    def adaptive_step(g, Pg, state, params, ggn_gram, loss, value):
        """§7: ``δ = αΔ + μδ₀`` minimising the damped quadratic model; §6.5: every ``adapt_every`` steps, the
        reduction ratio ``ρ`` and the Levenberg–Marquardt move of ``λ``. Returns ``(δ, λ, ρ, (α, μ))``."""
        lam, dtype = state.damping, state.damping.dtype
        vdot = lambda x, y: scalar(optax.tree_utils.tree_vdot(x, y), dtype)
        Delta, d0 = scale(-1, Pg), state.velocity
        gram = ggn_gram(jax.tree.map(lambda a, b: jnp.stack([a, b]), Delta, d0))  # [Δ, δ₀]ᵀ G [Δ, δ₀]
        v.require_shape(fn, "ggn_gram(tangents)", gram, (2, 2), "the Gram matrix of the 2 stacked directions Δ, δ₀")
        A = scalar(gram, dtype) + lam * jnp.stack([jnp.stack([vdot(Delta, Delta), vdot(Delta, d0)]),
                                                   jnp.stack([vdot(d0, Delta), vdot(d0, d0)])])
        b = jnp.stack([vdot(g, Delta), vdot(g, d0)])
        w = quadratic_coefficients(A, b)
        delta = add_scaled(scale(w[0], Delta), w[1], d0)
        predicted = w @ b + w @ A @ w / 2  # M(δ) − M(0), λ included

        def adapt():
            J = scalar(loss(params) if value is None else value, dtype)
            rho = reduction_ratio(scalar(loss(add_scaled(params, 1, delta)), dtype), J, predicted)
            return levenberg_marquardt(lam, rho, drop=omega, rise=1 / omega, low=low, high=high), rho

        lam_next, rho = lax.cond((state.count + 1) % adapt_every == 0, adapt, lambda: (lam, state.rho))
        return delta, lam_next, rho, w

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
