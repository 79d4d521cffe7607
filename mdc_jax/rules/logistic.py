"""Binary and multinomial logistic regression: closed-form gradients and Hessians.

Seed: ``004_c4a3fcbc5e77e7ce.txt``, §3.2 (binary, eq. 3.3–3.15) and §3.3 (multinomial, left
unfinished there; finished in ``docs/derivations.md``). The seed stacks samples as columns
(``X`` is ``d × n``); here samples are rows, ``X`` is ``n × d``, so the seed's ``Xᵀθ`` is our ``Xθ``
and its ``X(π − y)`` is our ``Xᵀ(π − y)``. We add the ridge term ``λ/2 ‖θ‖²`` of the solvers.

Binary, ``z = Xθ``, ``π = σ[z]`` (seed: ``π = σ[Xᵀθ]``)::

    L(θ)   = −yᵀ log[π] − (1 − y)ᵀ log[1 − π] + λ/2 θᵀθ
           = yᵀ softplus[−z] + (1 − y)ᵀ softplus[z] + λ/2 θᵀθ      (finite for any margin)
    ∇_θ L  = Xᵀ(π − y) + λθ                                        (eq. 3.9, transposed)
    ∇²_θ L = Xᵀ diag(π ∘ (1 − π)) X + λI                           (eq. 3.14)

Multinomial, ``A = XΘ`` (``Θ`` is ``d × k``), ``Π = s¹(A)`` the row-wise softmax (seed: the
column-wise ``σ(ΘᵀX)``, the transpose), ``r = Y1`` (ones for one-hot rows)::

    L(Θ)   = −1ᵀ (Y ∘ log[Π]) 1 + λ/2 Θ·Θ
    ∇_Θ L  = Xᵀ(Π ∘ r1ᵀ − Y) + λΘ          = Xᵀ(Π − Y) + λΘ for one-hot or probability rows
    ∇²_Θ L [i,a,j,b] = Σ_n r_n x_ni x_nj (δ_ab π_na − π_na π_nb) + λ δ_ij δ_ab

The seed's eq. 3.19–3.20 apply ``diag(Π)⁻¹`` and the softmax Jacobian in the wrong order and
lose the sum over classes; the derivation in ``docs/derivations.md`` replaces them.

The loss rules also return cotangents for ``X`` (``(π − y)θᵀ``, ``(Π − Y)Θᵀ``), for the labels
(``−z``, ``−log Π``) and for ``λ`` (``½‖θ‖²``), so they compose inside larger programs.

Each likelihood and its derivatives in the linear predictor is written once, here, as a function
of the margins ``z`` or the log-probabilities ``log Π``: :func:`logistic_nll`,
:func:`logistic_residual` (``π − y``), :func:`logistic_weights` (``π(1 − π)``),
:func:`multinomial_nll` and :func:`multinomial_error` (``E``), and so is the penalty, :func:`ridge`.
The loss rules, the gradient and Hessian functions and the Newton solvers' objectives
(``mdc_jax/solvers/objectives.py``) call them.
The Gram matrices of the Hessians are :mod:`mdc_jax.kernels`'.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from .. import _validation as v
from .. import kernels
from ..kernels import softmax_weighted_gram, weighted_gram
from .softmax import cross_entropy_error, log_softmax

# --------------------------------------------------------------------------------------------
# The ridge term λ/2 ‖θ‖² of every loss here (and of the solvers' objectives)


def ridge(theta: jax.Array, l2) -> jax.Array:
    """``λ/2 ‖θ‖²``, the ridge penalty of every loss here and of the solvers' objectives (which pass
    only the penalised entries, or mask the others). Linear in λ: its derivative in λ, the loss rules'
    cotangent for ``l2``, is ``ridge(θ, 1) = ½‖θ‖²``."""
    return l2 * jnp.sum(theta**2) / 2


# --------------------------------------------------------------------------------------------
# Binary logistic regression, §3.2: the NLL and its derivatives in the margins z = Xθ, written once
# (the loss rule, logistic_gradient/hessian and the Newton solver's objective all call these)


def logistic_nll(z: jax.Array, y: jax.Array) -> jax.Array:
    """``Σ_i −y_i log σ(z_i) − (1 − y_i) log σ(−z_i) = yᵀ softplus[−z] + (1 − y)ᵀ softplus[z]``.

    The binary negative log-likelihood of the margins ``z`` (``Xθ``, plus an intercept in the
    solvers), without the cancellation of ``softplus(z) − yz``: finite for any margin.
    """
    return jnp.sum(y * jax.nn.softplus(-z) + (1 - y) * jax.nn.softplus(z))


def logistic_residual(z: jax.Array, y: jax.Array) -> jax.Array:
    """``π − y = σ(z) − y``, the NLL's gradient in the margins (eq. 3.9: ``∇_θ L = Xᵀ(π − y)``)."""
    return jax.nn.sigmoid(z) - y


def logistic_weights(z: jax.Array) -> jax.Array:
    """``π ∘ (1 − π)``, the NLL's second derivative in each margin (eq. 3.14's ``diag``), computed
    as ``σ(z)σ(−z)``: no cancellation when ``π ≈ 1``."""
    return jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)


def _logistic_value(theta, X, y, l2):
    z = X @ theta
    return logistic_nll(z, y) + ridge(theta, l2), z


@jax.custom_vjp
def _logistic_loss(theta, X, y, l2):
    return _logistic_value(theta, X, y, l2)[0]


def _logistic_loss_fwd(theta, X, y, l2):
    L, z = _logistic_value(theta, X, y, l2)
    # Residuals: the margins z = Xθ (π = σ(z) is recomputed: one element-wise op), θ and X for the
    # two matrix products of the backward, y, and λ.
    return L, (theta, X, y, z, l2)


def _logistic_loss_bwd(res, g):
    theta, X, y, z, l2 = res
    e = logistic_residual(z, y)  # π − y
    dtheta = g * (e @ X + l2 * theta)  # ∇_θ L = Xᵀ(π − y) + λθ (as eᵀX: XLA:CPU's Xᵀe is slower, docs/newton.md)
    dX = g * (e[:, None] * theta[None, :])  # ∇_X L = (π − y)θᵀ
    dy = -g * z  # ∇_y L = softplus(−z) − softplus(z) = −z
    dl2 = g * ridge(theta, 1)  # ∂L/∂λ = ½‖θ‖²
    return (v.cast_like(dtheta, theta), v.cast_like(dX, X), v.cast_like(dy, y), v.cast_like(dl2, l2))


_logistic_loss.defvjp(_logistic_loss_fwd, _logistic_loss_bwd)


def _check_binary(fn, theta, X, y, l2):
    n, d = v.require_matrix(fn, "X", X, "(n, d): samples are rows")
    v.require_floating(fn, "theta", theta)
    v.require_shape(fn, "theta", theta, (d,), f"one weight per column of X, d = {d}")
    v.require_samples(fn, "X", (n, d))
    v.require_floating(fn, "y", y, "Pass labels in {0, 1} as floats, e.g. y.astype(X.dtype).")
    v.require_shape(fn, "y", y, (n,), f"one label per row of X, n = {n}")
    v.require_unit_interval(fn, "y", y)
    v.require_penalty(fn, "l2", l2)
    return v.as_penalty(l2, jnp.result_type(theta))


def logistic_loss(theta: jax.Array, X: jax.Array, y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """Binary logistic negative log-likelihood with a ridge term, and its closed-form gradient.

    .. math::

       L(\\theta) = \\sum_i -y_i\\log\\sigma(x_i^T\\theta) - (1-y_i)\\log(1-\\sigma(x_i^T\\theta))
       + \\frac{\\lambda}{2}\\theta^T\\theta,\\qquad
       \\nabla_\\theta L = X^T(\\pi - y) + \\lambda\\theta,\\quad \\pi = \\sigma[X\\theta].

    The value is computed as ``yᵀ softplus[−Xθ] + (1 − y)ᵀ softplus[Xθ]``, finite for margins of
    any size.

    Args:
      theta: weights, ``(d,)``.
      X: observations, ``(n, d)``; samples are rows (the seed's ``X`` is our ``Xᵀ``).
      y: labels in ``[0, 1]``, ``(n,)``, floating.
      l2: the ridge weight λ ≥ 0: a number or a 0-d array (an integer one is cast to ``theta``'s dtype).

    Returns:
      The scalar loss; ``jax.grad`` returns cotangents for ``theta``, ``X`` (``(π − y)θᵀ``), ``y``
      (``−Xθ``) and ``l2`` (``½θᵀθ``).

    Raises:
      ValueError: at trace time, naming the argument and shapes, for inconsistent input.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.2, eq. 3.3–3.10.
    """
    l2 = _check_binary("logistic_loss", theta, X, y, l2)
    return _logistic_loss(theta, X, y, l2)


def logistic_gradient(theta: jax.Array, X: jax.Array, y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """``∇_θ L = Xᵀ(σ[Xθ] − y) + λθ`` (§3.2, eq. 3.9 transposed), as a plain function.

    The same formula as :func:`logistic_loss`'s backward, for solvers that want the gradient
    without the loss. Arguments as in :func:`logistic_loss`; returns ``(d,)``.
    """
    l2 = _check_binary("logistic_gradient", theta, X, y, l2)
    return logistic_residual(X @ theta, y) @ X + l2 * theta  # (π − y)ᵀX: see _logistic_loss_bwd


def logistic_hessian(theta: jax.Array, X: jax.Array, y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """The Hessian of :func:`logistic_loss` in θ, §3.2 eq. 3.14 plus the ridge.

    .. math::

       \\nabla^2_\\theta L = X^T\\operatorname{diag}(\\pi\\circ(1-\\pi))X + \\lambda I,
       \\qquad \\pi = \\sigma[X\\theta].

    ``π(1 − π)`` is :func:`logistic_weights`, and the Gram matrix :func:`~mdc_jax.kernels.weighted_gram`,
    which multiplies only the upper block triangle. ``y`` does not enter the Hessian; it is taken so
    that the signature matches the loss.

    Args:
      theta, X, y, l2: as in :func:`logistic_loss`.

    Returns:
      ``(d, d)``, symmetric, the layout of ``jax.hessian``.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.2, eq. 3.11–3.15.
    """
    l2 = _check_binary("logistic_hessian", theta, X, y, l2)
    H = weighted_gram(X, logistic_weights(X @ theta))  # Xᵀ diag(π ∘ (1 − π)) X
    return H + l2 * jnp.eye(theta.shape[0], dtype=H.dtype)


# --------------------------------------------------------------------------------------------
# Multinomial logistic regression, §3.3 (finished in docs/derivations.md)


def multinomial_nll(logP: jax.Array, Y: jax.Array) -> jax.Array:
    """``−1ᵀ (Y ∘ log Π) 1``, the multinomial negative log-likelihood, from the row-wise
    log-probabilities ``log Π = log s¹(A)`` of the logits ``A`` (``log_softmax(A, axis=1)``, finite
    for any logits; the loss keeps them as its residual)."""
    return -jnp.sum(Y * logP)


def multinomial_error(logP: jax.Array, Y: jax.Array, row_sums: jax.Array | float | None = None) -> jax.Array:
    """``E = ∇_A NLL = Π ∘ (Y1)1ᵀ − Y`` (``Π − Y`` for rows of ``Y`` summing to one): §6.3.1's ``E``,
    :func:`~mdc_jax.rules.softmax.cross_entropy_error` of ``Π = exp(log Π)``. ``row_sums`` is ``Y1`` when
    the caller knows it (``1.0`` for one-hot rows); by default ``Y``'s own row sums."""
    return cross_entropy_error(jnp.exp(logP), Y, row_sums)


def _multinomial_value(Theta, X, Y, l2):
    logP = log_softmax(X @ Theta, axis=1)  # log[Π], finite for any logits
    return multinomial_nll(logP, Y) + ridge(Theta, l2), logP


@jax.custom_vjp
def _multinomial_loss(Theta, X, Y, l2):
    return _multinomial_value(Theta, X, Y, l2)[0]


def _multinomial_loss_fwd(Theta, X, Y, l2):
    L, logP = _multinomial_value(Theta, X, Y, l2)
    # Residuals: log Π (Π = exp of it is recomputed, and ∇_Y needs log Π itself), Θ, X, Y, λ.
    return L, (Theta, X, Y, logP, l2)


def _multinomial_loss_bwd(res, g):
    Theta, X, Y, logP, l2 = res
    E = g * multinomial_error(logP, Y)
    dTheta = X.T @ E + (g * l2) * Theta  # ∇_Θ L = Xᵀ(Π − Y) + λΘ
    dX = E @ Theta.T  # ∇_X L = (Π − Y)Θᵀ
    dY = -g * logP  # ∇_Y L = −log[Π]
    dl2 = g * ridge(Theta, 1)  # ∂L/∂λ = ½Θ·Θ
    return (v.cast_like(dTheta, Theta), v.cast_like(dX, X), v.cast_like(dY, Y), v.cast_like(dl2, l2))


_multinomial_loss.defvjp(_multinomial_loss_fwd, _multinomial_loss_bwd)


def _check_multinomial(fn, Theta, X, Y, l2):
    n, d = v.require_matrix(fn, "X", X, "(n, d): samples are rows")
    theta_shape = v.require_matrix(fn, "Theta", Theta, f"(d, k) with d = {d}, X's columns", rows=d,
                                   why="one row per column of X")
    k = v.require_classes(fn, "Theta", theta_shape, count="k")
    v.require_samples(fn, "X", (n, d))
    v.require_floating(fn, "Y", Y, f"For integer labels pass jax.nn.one_hot(labels, {k}).")
    v.require_shape(fn, "Y", Y, (n, k), f"(n, k): X's {n} rows and Theta's {k} classes")
    v.require_label_rows(fn, "Y", Y)
    v.require_penalty(fn, "l2", l2)
    return v.as_penalty(l2, jnp.result_type(Theta))


def multinomial_loss(Theta: jax.Array, X: jax.Array, Y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """Multinomial (softmax) negative log-likelihood with a ridge term, closed-form gradient.

    .. math::

       L(\\Theta) = -\\sum_i y_i^T\\log s(\\Theta^T x_i) + \\frac{\\lambda}{2}\\Theta\\cdot\\Theta,
       \\qquad \\nabla_\\Theta L = X^T(\\Pi - Y) + \\lambda\\Theta,\\quad \\Pi = s^1(X\\Theta).

    For rows of ``Y`` that do not sum to one the exact gradient ``Xᵀ(Π ∘ (Y1)1ᵀ − Y) + λΘ`` is used.

    Args:
      Theta: weights, ``(d, k)``.
      X: observations, ``(n, d)``; samples are rows (the seed's ``X`` and ``Y`` are transposed).
      Y: one-hot or probability rows, ``(n, k)``, floating.
      l2: the ridge weight λ ≥ 0: a number or a 0-d array (an integer one is cast to ``Theta``'s dtype).

    Returns:
      The scalar loss; ``jax.grad`` returns cotangents for ``Theta``, ``X`` (``(Π − Y)Θᵀ``), ``Y``
      (``−log Π``) and ``l2`` (``½Θ·Θ``).

    Raises:
      ValueError: at trace time, naming the argument and shapes, for inconsistent input.

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §3.3 (completed in ``docs/derivations.md``);
      ``000_3fed0c34b422d74e.txt`` §6.3.1, eq. 41–44.
    """
    l2 = _check_multinomial("multinomial_loss", Theta, X, Y, l2)
    return _multinomial_loss(Theta, X, Y, l2)


def multinomial_gradient(Theta: jax.Array, X: jax.Array, Y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """``∇_Θ L = Xᵀ(Π − Y) + λΘ``, the formula of :func:`multinomial_loss`'s backward.

    Arguments as in :func:`multinomial_loss`; returns ``(d, k)``.
    """
    l2 = _check_multinomial("multinomial_gradient", Theta, X, Y, l2)
    return X.T @ multinomial_error(log_softmax(X @ Theta, axis=1), Y) + l2 * Theta


def multinomial_hessian(Theta: jax.Array, X: jax.Array, Y: jax.Array, l2: float | jax.Array = 0.0) -> jax.Array:
    """The Hessian of :func:`multinomial_loss` in Θ, as a ``(d, k, d, k)`` tensor.

    .. math::

       \\frac{\\partial^2 L}{\\partial\\Theta_{ia}\\,\\partial\\Theta_{jb}}
       = \\sum_n r_n\\, x_{ni}x_{nj}\\,(\\delta_{ab}\\pi_{na} - \\pi_{na}\\pi_{nb})
         + \\lambda\\,\\delta_{ij}\\delta_{ab},\\qquad r = Y\\mathbf 1,

    i.e. ``Σ_n (x_n x_nᵀ) ⊗ r_n(diag(π_n) − π_n π_nᵀ) + λI``: each sample's softmax Jacobian
    (seed 004 eq. 2.10) weighted by its outer product. ``r_n = 1`` for one-hot or probability rows.

    Args:
      Theta, X, Y, l2: as in :func:`multinomial_loss`.

    Returns:
      ``H`` of shape ``(d, k, d, k)``, the layout of ``jax.hessian``; ``H.reshape(d*k, d*k)`` is the
      matrix for the row-major flattening of ``Θ``. It is singular along ``Θ ↦ Θ + v1ᵀ`` when
      ``λ = 0`` (adding a vector to every class leaves the probabilities unchanged).

    References:
      ``004_c4a3fcbc5e77e7ce.txt`` §2.3 eq. 2.10 and §3.3; derivation in ``docs/derivations.md``.
    """
    l2 = _check_multinomial("multinomial_hessian", Theta, X, Y, l2)
    d, k = Theta.shape
    P = jnp.exp(log_softmax(X @ Theta, axis=1))
    H = softmax_weighted_gram(X, P, jnp.sum(Y, axis=1))  # by row chunks: no n × d × k × k array
    penalty = l2 * (jnp.eye(d, dtype=H.dtype)[:, None, :, None] * jnp.eye(k, dtype=H.dtype)[None, :, None, :])
    return H + penalty


# --------------------------------------------------------------------------------------------
# Names that lived here before the Gram kernels moved to mdc_jax.kernels: still importable, with a warning.
_MOVED_TO_KERNELS = ("gram_sizes", "row_chunk_sum", "softmax_rows")


def __getattr__(name: str):
    if name in _MOVED_TO_KERNELS:
        warnings.warn(f"mdc_jax.rules.logistic.{name} is deprecated; use mdc_jax.kernels.{name}.",
                      DeprecationWarning, stacklevel=2)
        return getattr(kernels, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
