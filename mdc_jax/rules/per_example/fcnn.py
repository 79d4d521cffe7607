"""Per-example gradients, their norms and clipping, from the closed-form backward's own ``Z`` and ``S``.

Seed: ``000_3fed0c34b422d74e.txt`` §6.2 (FCNN regression), §6.3.1 (classification).

Convention. The mdc-jax losses are means over examples, ``J = (1/N) Σ_i ℓ_i + penalty``; ``g_i`` is
the gradient of example ``i``'s own loss ``ℓ_i`` (for the RNN ``ℓ_i`` sums over the time steps),
without the L2 penalty. Samples are rows.

FCNN (§6.2). The backward recursion ``S_j = (S_{j+1} W_{j+1}ᵀ) ⊙ f'_j(A_j)`` acts on each row alone,
so with ``S_L`` built from ``ℓ_i`` instead of ``J`` (no ``1/N``: ``S_L = Z_L ⊙ (Y1)1ᵀ − Y`` for
classification, §6.3.1; ``(Z_L − Y) ⊙ f'_L(A_L)`` for regression, §6.2), row ``i`` of ``S_j`` is
``∇_{a_{j,i}} ℓ_i``, and ``∇_{W_j}J = (1/N) Z_{j−1}ᵀ S_j`` is the mean of the outer products
``g_i(W_j) = z_{j−1,i} s_{j,i}ᵀ``, ``g_i(b_j) = s_{j,i}``. Hence, with no ``N × d_{j−1} × d_j`` tensor:

    ‖g_i(W_j)‖² = ‖z_{j−1,i}‖² ‖s_{j,i}‖²                    (the "ghost norm", Goodfellow 2015)
    Σ_i g_i(W_j) ⊙ g_i(W_j) = (Z_{j−1} ⊙ Z_{j−1})ᵀ (S_j ⊙ S_j)   (one matmul)
    (1/N) Σ_i c_i g_i(W_j) = (1/N) Z_{j−1}ᵀ diag(c) S_j          (the plain gradient's matmul)

with ``c_i = min(1, C/‖g_i‖)`` for clipping at ``C``: no second backward pass.

RNN (§6.4): :mod:`.per_example_rnn` (the same convention, with ``ℓ_i`` summed over a sequence's tokens).

Nothing here calls ``jax.grad``, ``jax.vjp`` or ``jax.vmap``: every quantity is a matmul or a
row-wise reduction of the closed-form backward's arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from ... import _validation as v
from .. import fcnn
from ._clip import QUANTITIES, check_clipping, clip_factors

TASKS = fcnn.TASKS


# --------------------------------------------------------------------------------------------
# Input checks: _validation's vocabulary


# --------------------------------------------------------------------------------------------
# FCNN: §6.2 and §6.3.1 with S_L taken from ℓ_i


def _fcnn_rows(pairs, X, Y, acts, task):
    """Per-example losses ``ℓ`` (N,) and, per layer, the input ``Z_{j−1}`` and ``S_j`` whose row i is
    ``∇_{a_{j,i}} ℓ_i`` (the §6.2 recursion run from ``S_L`` of ``ℓ_i``, without the ``1/N``)."""
    ell, Zs, As, out = fcnn.output_forward(task, pairs, X, Y, acts)
    S = fcnn.output_backward(task, acts, As, Y, out)[0]  # §6.3.1's E or (Z_L − Y) ⊙ f'_L, times N
    return ell, Zs, fcnn.layer_errors(pairs, Zs, As, acts, S)


def _fcnn_layer_sq_norms(Zs, Ss):
    """``[(‖g_i(W_j)‖², ‖g_i(b_j)‖²)]`` per layer, each ``(N,)``."""
    out = []
    for Z, S in zip(Zs, Ss):
        s2 = jnp.sum(S * S, axis=1)
        out.append((jnp.sum(Z * Z, axis=1) * s2, s2))
    return out


def _fcnn_weighted_grads(pairs, Zs, Ss, c, N, l2):
    """``(1/N) Σ_i c_i g_i + ∇penalty`` per layer: ``Z_{j−1}ᵀ diag(c) S_j / N + λW_j``, ``Sᵀc / N``."""
    grads = []
    for (W, _), Z, S in zip(pairs, Zs, Ss):
        cS = S if c is None else S * c[:, None]
        grads.append((Z.T @ cS / N + l2 * W, jnp.sum(cS, axis=0) / N))
    return grads


def _prepare_fcnn(fn, params, X, Y, activations, l2, task):
    pairs, acts = fcnn.check_task_inputs(fn, params, X, Y, activations, task, l2)
    return pairs, acts, v.as_penalty(l2, jnp.result_type(X))


def fcnn_quantities(params, X, Y, activations: Sequence[str], l2=0.0, *, task: str = "classification",
                    quantities: Sequence[str] = ("batch_l2", "grad_norm")) -> dict:
    """Loss, gradient and per-example gradient statistics of an FCNN, from one closed-form backward.

    ``g_i`` is the gradient of example ``i``'s own loss ``ℓ_i`` (the mdc-jax loss is
    ``J = (1/N) Σ_i ℓ_i + (λ/2) Σ_j W_j·W_j``; the penalty is not part of ``g_i``): for
    ``task="classification"`` ``ℓ_i = −ln s¹(a_{L,i})·y_i`` (§6.3.1), for ``"regression"``
    ``ℓ_i = ½‖z_{L,i} − y_i‖²`` (§6.2). See the module docstring for the formulas.

    Args:
      params: ``[(W_1, b_1), ..., (W_L, b_L)]`` as in :func:`mdc_jax.fcnn_classification_loss`.
      X: ``(N, d_0)``; Y: ``(N, d_L)`` (probability rows for classification, targets for regression).
      activations: as the corresponding loss takes them: one per hidden layer (classification; the
        last layer is the softmax) or one per layer (regression, the last usually ``"identity"``).
      l2: the L2 weight λ (in ``"loss"`` and ``"grad"``, never in ``g_i``).
      task: ``"classification"`` or ``"regression"``.
      quantities: any of

        * ``"batch_grad"``: ``g_i`` for every example, each leaf shaped ``(N, *param.shape)``
          (this one does materialise ``N × d_{j−1} × d_j``);
        * ``"batch_l2"``: ``‖g_i‖²`` per parameter, each leaf ``(N,)``;
        * ``"grad_norm"``: ``‖g_i‖`` over all parameters, ``(N,)``;
        * ``"sum_grad_squared"``: ``Σ_i g_i ⊙ g_i``, each leaf shaped like the parameter;
        * ``"variance"``: ``mean_i g_i² − (mean_i g_i)²``, element-wise, shaped like the parameter.

    Returns:
      A dict with ``"loss"`` (``J``), ``"grad"`` (``∇J``, equal to ``jax.grad`` of the mdc-jax loss)
      and each requested quantity. Per-parameter results have the structure of ``params``.

    Raises:
      ValueError: naming the argument, for inconsistent shapes, an unknown task or quantity.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.2 (final equations), §6.3.1 (eq. 43–44).
    """
    fn = "fcnn_quantities"
    quantities = v.require_names(fn, "quantities", quantities, QUANTITIES, "quantity")
    pairs, acts, l2 = _prepare_fcnn(fn, params, X, Y, activations, l2, task)
    N = X.shape[0]
    ell, Zs, Ss = _fcnn_rows(pairs, X, Y, acts, task)
    out = {"loss": jnp.mean(ell) + l2 * fcnn.penalty(pairs),
           "grad": fcnn.restructure(params, _fcnn_weighted_grads(pairs, Zs, Ss, None, N, l2))}
    if "batch_grad" in quantities:
        out["batch_grad"] = fcnn.restructure(params, [(Z[:, :, None] * S[:, None, :], S) for Z, S in zip(Zs, Ss)])
    if "batch_l2" in quantities or "grad_norm" in quantities:
        sq = _fcnn_layer_sq_norms(Zs, Ss)
        if "batch_l2" in quantities:
            out["batch_l2"] = fcnn.restructure(params, sq)
        if "grad_norm" in quantities:
            out["grad_norm"] = jnp.sqrt(sum(a + b for a, b in sq))
    if "sum_grad_squared" in quantities or "variance" in quantities:
        sgs = [((Z * Z).T @ (S * S), jnp.sum(S * S, axis=0)) for Z, S in zip(Zs, Ss)]
        if "sum_grad_squared" in quantities:
            out["sum_grad_squared"] = fcnn.restructure(params, sgs)
        if "variance" in quantities:
            means = _fcnn_weighted_grads(pairs, Zs, Ss, None, N, 0.0)
            out["variance"] = fcnn.restructure(params, [tuple(s / N - m * m for s, m in zip(sg, mg))
                                                    for sg, mg in zip(sgs, means)])
    return out


def fcnn_clipped_grad(params, X, Y, activations: Sequence[str], l2=0.0, *, task: str = "classification",
                      clip_norm, weights=None):
    """The mean of per-example gradients clipped to norm ``clip_norm``, plus the penalty's gradient.

    .. math::

       J = \\frac1N\\sum_i w_i\\ell_i + \\frac\\lambda2\\sum_j W_j\\cdot W_j,\\qquad
       \\text{grads} = \\frac1N\\sum_i w_i \\min\\Big(1, \\frac{C}{\\|g_i\\|}\\Big) g_i + \\lambda W

    computed as ``Z_{j−1}ᵀ diag(c) S_j / N``: the plain gradient's matmul with the rows of ``S_j``
    rescaled (module docstring), so one forward and one backward pass. ``‖g_i‖`` is the norm over all
    parameters (flat clipping, as Opacus and DP-SGD); an example with ``g_i = 0`` is left as is.

    Args:
      params, X, Y, activations, l2, task: as in :func:`fcnn_quantities`.
      clip_norm: ``C > 0`` (keyword-only, required).
      weights: optional ``(N,)`` per-example weights ``w_i ≥ 0`` (default 1): 0 masks a padding row
        out; DP-SGD with Poisson sampling uses ``w_i = N / (expected batch size)`` on sampled rows.

    Returns:
      ``(loss, grads)``, ``grads`` in the structure of ``params``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.2, §6.3.1; the ghost clipping of Opacus (Li et al. 2022).
    """
    fn = "fcnn_clipped_grad"
    pairs, acts, l2 = _prepare_fcnn(fn, params, X, Y, activations, l2, task)
    N = X.shape[0]
    w = check_clipping(fn, clip_norm, weights, N, jnp.result_type(X))
    ell, Zs, Ss = _fcnn_rows(pairs, X, Y, acts, task)
    c = clip_factors(sum(a + b for a, b in _fcnn_layer_sq_norms(Zs, Ss)), clip_norm)
    if w is not None:
        c, ell = c * w, ell * w
    loss = jnp.mean(ell) + l2 * fcnn.penalty(pairs)
    return loss, fcnn.restructure(params, _fcnn_weighted_grads(pairs, Zs, Ss, c, N, l2))
