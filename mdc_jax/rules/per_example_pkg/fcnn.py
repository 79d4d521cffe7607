"""Per-example gradients, their norms and clipping, from the closed-form backward's own ``Z`` and ``S``.

Seed: ``000_3fed0c34b422d74e.txt`` §6.2 (FCNN regression), §6.3.1 (classification), §6.4 (RNN).

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

RNN (§6.4). ``W``, ``U``, ``b``, ``V``, ``c`` are shared over time, so ``g_i(W) = Σ_t z_{t−1,i} s_{t,i}ᵀ``
(``s_t = ∇_{A_t}ℓ_i``), ``g_i(U) = Σ_t x_{t,i} s_{t,i}ᵀ``, ``g_i(V) = Σ_t z_{t,i} h_{t,i}ᵀ``
(``h_t = ∇_{O_t}ℓ_i``). The squared norm of a sum of outer products is, per example,

    ‖Σ_t a_t b_tᵀ‖² = Σ_{t,t'} (a_t·a_{t'}) (b_t·b_{t'}) = ⟨A Aᵀ, B Bᵀ⟩     (τ × τ Gram matrices)

which costs ``τ²(d_a + d_b)`` per example against ``τ d_a d_b`` for materialising ``g_i``: each
parameter takes the cheaper of the two (the "mixed ghost norm" of book-keeping DP, Bu et al. 2023).

Nothing here calls ``jax.grad``, ``jax.vjp`` or ``jax.vmap``: every quantity is a matmul or a
row-wise reduction of the closed-form backward's arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import _validation as v
from . import fcnn, rnn
from .softmax import cross_entropy_error

QUANTITIES = ("batch_grad", "batch_l2", "grad_norm", "sum_grad_squared", "variance")
TASKS = fcnn.TASKS


# --------------------------------------------------------------------------------------------
# Input checks: _validation's vocabulary


def _check_clipping(fn: str, clip_norm, weights, N: int, dtype):
    """The clipping bound ``C > 0`` and the optional ``(N,)`` weights (finite, ``>= 0``), in ``dtype``."""
    v.require_positive(fn, "clip_norm", clip_norm, "the per-example gradient norm bound C > 0")
    v.require_weights(fn, "weights", weights, N)
    return None if weights is None else jnp.asarray(weights).astype(dtype)


def _clip_factors(sq_norms, clip_norm):
    """``min(1, C/‖g_i‖)``; 1 for a zero gradient (nothing is divided by zero)."""
    norms = jnp.sqrt(sq_norms)
    C = jnp.asarray(clip_norm, sq_norms.dtype)
    return jnp.where(norms > C, C / jnp.where(norms > C, norms, 1), 1)


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
    w = _check_clipping(fn, clip_norm, weights, N, jnp.result_type(X))
    ell, Zs, Ss = _fcnn_rows(pairs, X, Y, acts, task)
    c = _clip_factors(sum(a + b for a, b in _fcnn_layer_sq_norms(Zs, Ss)), clip_norm)
    if w is not None:
        c, ell = c * w, ell * w
    loss = jnp.mean(ell) + l2 * fcnn.penalty(pairs)
    return loss, fcnn.restructure(params, _fcnn_weighted_grads(pairs, Zs, Ss, c, N, l2))


# --------------------------------------------------------------------------------------------
# RNN: §6.4 with ∇_{O_t} taken from ℓ_i


def _rnn_rows(params, Z0, X, Y):
    """Per-example losses ``ℓ`` (N,) and the time-stacked arrays of the §6.4 backward, without ``1/N``:
    ``Z_in`` (``Z_{t−1}``), ``Z_out`` (``Z_t``), ``G`` (``∇_{A_t}ℓ_i`` in row i), ``Hs`` (``∇_{O_t}ℓ_i``),
    each ``(τ, N, ·)``: the rule's own chunked backward, its head taking ``∇_{O_t}`` from ``ℓ_i``."""
    V = params.V
    _, Z_tau, Zs = rnn.forward(params, Z0, X, None)

    def head(Z_out, Y_k, ell):
        logS = rnn.output_log_probs(Z_out, V, params.c)
        H = cross_entropy_error(jnp.exp(logS), Y_k)  # ∇_{O_t}ℓ_i (§6.3.1 without 1/N)
        return H @ V.T, ell - jnp.sum(Y_k * logS, axis=(0, 2)), H

    ell0 = jnp.zeros(X.shape[1], Z_tau.dtype)
    out = rnn.backward(params, Zs, Z_tau, X, jnp.zeros_like(Z_tau), head, rnn.chunks(Y, Zs.shape[1]), ell0,
                       per_step=True)
    flat = lambda A: A.reshape(-1, *A.shape[2:])
    Z_in = flat(Zs)
    Z_out = rnn.states_out(Z_in, Z_tau)
    return out.head_acc, Z_in, Z_out, flat(out.steps), flat(out.head_out)


def _rnn_factors(params, X, Z_in, Z_out, G, Hs):
    """For each parameter, ``(a, b)`` with ``g_i = Σ_t a_{t,i} b_{t,i}ᵀ`` (``a`` is None for a bias:
    ``g_i = Σ_t b_{t,i}``)."""
    return rnn.RNNParams(W=(Z_in, G), U=(X, G), b=(None, G), V=(Z_out, Hs), c=(None, Hs))


def use_ghost_norm(tau: int, d_a: int, d_b: int) -> bool:
    """Whether ``‖Σ_t a_t b_tᵀ‖²`` is cheaper from the τ × τ Gram matrices (``τ²(d_a + d_b)``
    multiply-adds per example) than from the materialised ``d_a × d_b`` gradient (``τ d_a d_b``)."""
    return tau * (d_a + d_b) < d_a * d_b


def _rnn_sq_norms(factors):
    """``‖g_i‖²`` per parameter (an ``RNNParams`` of ``(N,)`` arrays): the mixed ghost norm.

    ``‖Σ_t a_t b_tᵀ‖² = ⟨A_i A_iᵀ, B_i B_iᵀ⟩`` from τ × τ Gram matrices where that is cheaper
    (:func:`use_ghost_norm`), else from the materialised ``g_i``; ``‖Σ_t b_t‖²`` for a bias. The
    Gram matrices are formed one example at a time (a ``lax.map`` over the batch), so only τ × τ
    of them is alive at once and the time-major arrays are never transposed to example-major copies;
    within an example, ``G``'s Gram matrix serves both ``W`` and ``U``.
    """
    arrays = list({id(x): x for pair in factors for x in pair if x is not None}.values())
    index = {id(x): k for k, x in enumerate(arrays)}

    def one(i):
        rows = [jax.lax.dynamic_index_in_dim(x, i, axis=1, keepdims=False) for x in arrays]  # (τ, d) each
        grams = {}

        def gram(x):
            k = index[id(x)]
            if k not in grams:
                grams[k] = rows[k] @ rows[k].T
            return grams[k]

        def sq(a, b):
            rb = rows[index[id(b)]]
            if a is None:
                s = jnp.sum(rb, axis=0)
                return jnp.sum(s * s)
            if use_ghost_norm(a.shape[0], a.shape[2], b.shape[2]):
                return jnp.sum(gram(a) * gram(b))
            g = rows[index[id(a)]].T @ rb
            return jnp.sum(g * g)

        return jnp.stack([sq(a, b) for a, b in factors])

    N = arrays[0].shape[1]
    per = jax.lax.map(one, jnp.arange(N))  # (N, 5)
    return rnn.RNNParams(*per.T)


def _batch_grad(a, b):
    return jnp.sum(b, axis=0) if a is None else jnp.einsum("tna,tnb->nab", a, b)


def _weighted_sums(factors, c, N):
    """``(1/N) Σ_i c_i g_i`` per parameter (``c`` None: the plain mean): ``Σ_t a_tᵀ diag(c) b_t / N``,
    each ``b`` rescaled once (``G``'s rows serve ``W``, ``U`` and ``b``)."""
    scaled = {}

    def cb(b):
        if id(b) not in scaled:
            scaled[id(b)] = b if c is None else b * c[None, :, None]
        return scaled[id(b)]

    return rnn.RNNParams(*((jnp.sum(cb(b), axis=(0, 1)) if a is None else jnp.einsum("tna,tnb->ab", a, cb(b))) / N
                            for a, b in factors))


def rnn_quantities(params, Z0, X, Y, *, quantities: Sequence[str] = ("batch_l2", "grad_norm")) -> dict:
    """Loss, gradient and per-example gradient statistics of the §6.4 RNN, from one closed-form backward.

    Example ``i`` is sequence ``i`` (``X[:, i]``, ``Y[:, i]``, ``Z0[i]``); ``ℓ_i = −Σ_t ln s¹(o_{t,i})·y_{t,i}``
    sums over the time steps and ``J = (1/N) Σ_i ℓ_i`` is :func:`mdc_jax.rnn_loss`. The weights are
    shared over time, so ``g_i(W) = Σ_t z_{t−1,i} s_{t,i}ᵀ``; its norm is taken from the τ × τ Gram
    matrices of ``z`` and ``s`` or from the materialised ``g_i``, whichever costs fewer multiply-adds
    for that parameter's shape (:func:`use_ghost_norm`). ``"sum_grad_squared"``, ``"variance"`` and
    ``"batch_grad"`` materialise ``g_i`` (``N`` copies of each parameter).

    Args:
      params, Z0, X, Y: as in :func:`mdc_jax.rnn_loss` (time-major ``X`` ``(τ, N, D)``).
      quantities: as in :func:`fcnn_quantities`.

    Returns:
      A dict with ``"loss"``, ``"grad"`` (an :class:`~mdc_jax.RNNParams` equal to ``jax.grad`` of
      :func:`mdc_jax.rnn_loss`) and each requested quantity (per-parameter ones as ``RNNParams``).

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4 (final equations); Bu et al. 2023 (mixed ghost norm).
    """
    fn = "rnn_quantities"
    quantities = v.require_names(fn, "quantities", quantities, QUANTITIES, "quantity")
    params, Z0, X, Y = rnn.check_inputs(fn, params, Z0, X, Y)
    N = X.shape[1]
    ell, *arrays = _rnn_rows(params, Z0, X, Y)
    factors = _rnn_factors(params, X, *arrays)
    per = lambda f: rnn.RNNParams(*(f(a, b) for a, b in factors))
    out = {"loss": jnp.mean(ell), "grad": _weighted_sums(factors, None, N)}
    if "batch_l2" in quantities or "grad_norm" in quantities:
        sq = _rnn_sq_norms(factors)
        if "batch_l2" in quantities:
            out["batch_l2"] = sq
        if "grad_norm" in quantities:
            out["grad_norm"] = jnp.sqrt(sum(sq))
    if {"batch_grad", "sum_grad_squared", "variance"} & set(quantities):
        bg = per(_batch_grad)
        if "batch_grad" in quantities:
            out["batch_grad"] = bg
        sgs = rnn.RNNParams(*(jnp.sum(g * g, axis=0) for g in bg))
        if "sum_grad_squared" in quantities:
            out["sum_grad_squared"] = sgs
        if "variance" in quantities:
            out["variance"] = rnn.RNNParams(*(s / N - m * m for s, m in zip(sgs, out["grad"])))
    return out


def rnn_clipped_grad(params, Z0, X, Y, *, clip_norm, weights=None):
    """``(J, (1/N) Σ_i w_i min(1, C/‖g_i‖) g_i)`` for the §6.4 RNN, from one closed-form backward.

    ``‖g_i‖`` is the norm over all five parameters, from the mixed ghost norm (see
    :func:`rnn_quantities`); the clipped mean is ``Σ_t Z_{t−1}ᵀ diag(c) ∇_{A_t}`` (and likewise for
    ``U``, ``b``, ``V``, ``c``): the plain gradient's contractions with rescaled rows.

    Args:
      params, Z0, X, Y: as in :func:`mdc_jax.rnn_loss`.
      clip_norm: ``C > 0`` (keyword-only, required).
      weights: optional ``(N,)`` per-sequence weights ``w_i ≥ 0``, as in :func:`fcnn_clipped_grad`.

    Returns:
      ``(loss, grads)`` with ``loss = (1/N) Σ_i w_i ℓ_i`` and ``grads`` an :class:`~mdc_jax.RNNParams`.
    """
    fn = "rnn_clipped_grad"
    params, Z0, X, Y = rnn.check_inputs(fn, params, Z0, X, Y)
    N = X.shape[1]
    w = _check_clipping(fn, clip_norm, weights, N, X.dtype)
    ell, *arrays = _rnn_rows(params, Z0, X, Y)
    factors = _rnn_factors(params, X, *arrays)
    c = _clip_factors(sum(_rnn_sq_norms(factors)), clip_norm)
    if w is not None:
        c, ell = c * w, ell * w
    return jnp.mean(ell), _weighted_sums(factors, c, N)
