"""Curvature of the §6.4 RNN from its closed-form backpropagation through time: GGN-vector products, GGN
diagonals and Kronecker factors (BackPACK's ``DiagGGNExact``, ``DiagGGNMC``, ``BatchDiagGGNExact``, ``KFLR``,
``KFAC``).

Seed: ``000_3fed0c34b422d74e.txt`` §6.4 (eq. 45 and the final equations). Samples are rows and time leads:
``X`` is ``τ × N × D``, ``W`` ``H × H``, ``U`` ``D × H``, ``V`` ``H × K``. Example ``i`` is sequence ``i``,
``ℓ_i = −Σ_t ln s¹(o_{t,i})·y_{t,i}``, ``J = (1/N) Σ_i ℓ_i`` (:func:`mdc_jax.rnn_loss`; no L2 penalty here: its
curvature is ``λI``). The outputs of example ``i`` are all its ``o_{t,i}``, so ``H_i`` is block diagonal over
time with blocks ``H_{t,i} = (1ᵀy_{t,i})(diag p − ppᵀ)``, and with ``F_{t,i}`` its symmetric factor
(``factors.sqrt_hessian``, ``K`` columns ``f``)::

    G = (1/N) Σ_i J_iᵀ H_i J_i = (1/N) Σ_i Σ_{t''} Σ_c g g ᵀ,    g = J_iᵀ (f_c placed at O_{t''})

``g`` is §6.4's backward with ``∇_{O_t} := δ_{t t''} f_c``: columns ``s_t = ∇_{A_t}`` (zero for ``t > t''``) and,
the weights being shared over time, ``g(W) = Σ_t z_{t−1} s_tᵀ``, ``g(U) = Σ_t x_t s_tᵀ``, ``g(b) = Σ_t s_t``,
``g(V) = z_{t''} f_cᵀ``, ``g(c) = f_c``.

GGN-vector product: the forward differential ``dA_t = dZ_{t−1}W + Z_{t−1}dW + X_t dU + 1dbᵀ``,
``dZ_t = (1 − Z_t²) ⊙ dA_t`` (``dZ_0 = 0``), ``dO_t = dZ_tV + Z_t dV + 1dcᵀ``, then the BPTT with
``∇_{O_t} := H_t dO_t / N``; structural damping adds ``(w/N) dZ_t`` to ``∇_{Z_t}`` (the states' own Gauss–Newton
matrix, output Hessian ``I``). The Gram matrix ``[v_aᵀGv_b] = (1/N) Σ_{t,i} dO_{a,t,i}ᵀ H_{t,i} dO_{b,t,i}`` of ``k``
tangents needs the forward differential alone, the tangents as one more axis: no backward.

Exact columns (``diag_ggn``, ``batch_diag_ggn``, ``kflr``: one pass). Output time ``t''``'s ``K`` columns live only
at ``t ≤ t''``, so they are back-propagated one output time at a time from ``t''`` down (``τ(τ+1)K/2``
column-steps, half of sending all ``τK`` through every step), holding one output time's ``τ × K × N × H`` steps.
For ``W`` (``a_t = z_{t−1}``; ``U``: ``a_t = x_t``) the sum over columns of squared sums over time comes from
``τ × τ`` Gram matrices of the columns, accumulated as each step meets the later ones,

    Σ_col (Σ_t a_{t,h} s_{t,g})² = Σ_{t,u} a_{t,h} a_{u,h} M[g,t,u],    M[g,t,u] = Σ_col s_{t,g} s_{u,g},

``τ²(d_a + C)`` multiply-adds per example and hidden unit against ``τ C d_a`` for the per-column gradients
(``C = τK`` columns): about ``K``× fewer, and no ``τK × N × d_a × H`` tensor. Held at once: one output
time's steps and ``M``, ``(K + τ) τNH`` floats (about ``K + 1`` gradients' worth of temporaries while
``τ ≲ K``). ``V``'s columns touch one output each: ``diag(V) = (1/N) Σ_{t,i} (z_{t,i} ⊙ z_{t,i}) diag(H_{t,i})ᵀ``,
``diag H = (1ᵀy)(p − p ⊙ p)``.

Monte Carlo (``diag_ggn_mc``, ``kfac``: one set of samples). ``M = mc_samples`` sampled columns ``F̂``
(``factors.sampled_sqrt_hessian``) are drawn at every ``(t, i)``, and column ``m`` covers all times: the draws
are independent with mean zero, so ``E[F̂_t F̂_{t'}ᵀ] = δ_{tt'} H_t`` and ``M`` columns (not ``τM``) give an
unbiased estimate of ``G``. They ride in the gradient's own backward as leading column axes of
``rules.rnn.backward``; the diagonal squares each example's ``Σ_t a_t s_tᵀ`` (or the Gram form when ``M > τ``
makes it cheaper), one example at a time.

Kronecker factors, independence across time (Martens, Ba & Johnson, ICLR 2018): ``G``'s block of a shared weight
is approximated by ``A ⊗ B`` with ``A = (1/(Nτ)) Σ_{t,i} a aᵀ`` and ``B = (1/N) Σ_{t,i} Σ_col s sᵀ``. ``Σ_t Z_tᵀZ_t``
for ``V`` is ``W``'s ``Σ_t Z_{t−1}ᵀZ_{t−1}`` less ``Z_0ᵀZ_0`` plus ``Z_τᵀZ_τ`` (one matmul fewer). ``A`` and ``B``
are summed step by step inside the backward (``tap``), never from all steps at once.

Nothing here calls ``jax.grad``, ``jax.vjp``, ``jax.jvp`` or ``jax.linearize``: the derivations are in
``docs/curvature.md``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ... import _validation as v
from ...activations import tanh_derivative
from ...kernels import lead
from .. import rnn
from ..softmax import cross_entropy_error
from . import factors
from ._checks import require_stacked

RNN_QUANTITIES = ("diag_ggn", "diag_ggn_mc", "batch_diag_ggn", "kflr", "kfac")
"""What :func:`rnn_quantities` computes: the FCNN's ``QUANTITIES`` but ``diag_hessian``."""
_TASK = "classification"
_EXACT = ("diag_ggn", "batch_diag_ggn", "kflr")
_SAMPLED = ("diag_ggn_mc", "kfac")


def _steps(A):
    """A per-chunk stack ``(τ/k, k, ...)`` as one time axis ``(τ, ...)``."""
    return A.reshape(-1, *A.shape[2:])


# --------------------------------------------------------------------------------------------
# GGN-vector product: forward differential, output Hessian, closed-form BPTT


def _check_tangents(fn: str, params, tangents, *, stacked: bool = False) -> rnn.RNNParams:
    """``tangents`` in the structure of ``params``: five arrays, each of its parameter's shape and dtype (with
    ``stacked``, each ``(k, *shape)``: ``k`` tangents on a leading axis); cast to the checked ``params``' dtypes."""
    v.require_sequence(fn, "tangents", tangents, "an RNNParams (W, U, b, V, c) in the structure of params"
                       + (", each leaf with a leading axis of k stacked tangents" if stacked else ""), length=5)
    like, tangents = rnn.RNNParams(*params), rnn.RNNParams(*tangents)
    if stacked:
        require_stacked(fn, tangents, like)
    else:
        v.require_like(fn, "tangents", tangents, "params", like)
    return tangents


def _tangent_states(params, dparams, Z_in, Z_out, X):
    """The forward differential of §6.4: ``dZ_t = (1 − Z_t²) ⊙ (dZ_{t−1}W + Z_{t−1}dW + X_t dU + 1dbᵀ)``,
    ``dZ_0 = 0``, stacked ``(τ, N, H)``; ``(τ, k, N, H)`` for tangents stacked on a leading axis ``k`` (time
    leads: the scan). The terms without ``dZ_{t−1}`` are batched matmuls over all steps; only ``dZ_{t−1}W``
    runs step by step."""
    E = jnp.einsum("tnh,...hg->t...ng", Z_in, dparams.W) + jnp.einsum("tnd,...dg->t...ng", X, dparams.U)
    E = E + lead(dparams.b[..., None, :], E)
    step = lambda dZ, xs: (lambda d: (d, d))(lead(xs[0], dZ) * (dZ @ params.W + xs[1]))
    return jax.lax.scan(step, jnp.zeros(E.shape[1:], E.dtype), (tanh_derivative(Z_out), E))[1]


def _output_differential(Z_out, dZ, V, dparams):
    """``dO_t = dZ_tV + Z_t dV + 1dcᵀ`` for a run of steps ``Z_out`` ``(k, N, H)``, ``dZ`` ``(k, ..., N, H)``
    (any axes of stacked tangents after time's, as ``dparams``' leading ones)."""
    dO = dZ @ V + jnp.einsum("tnh,...hk->t...nk", Z_out, dparams.V)
    return dO + lead(dparams.c[..., None, :], dO)


def rnn_ggn_vp(params, Z0, X, Y, tangents, *, structural=0.0) -> rnn.RNNParams:
    """The GGN-vector product ``G v`` of the §6.4 RNN, exact, from the forward differential and the BPTT.

    .. math::

       dZ_t = (\\mathbf{11}^T - Z_t^2)\\odot(dZ_{t-1}W + Z_{t-1}dW + X_t\\,dU + \\mathbf 1db^T),\\quad dZ_0 = 0,

       dO_t = dZ_tV + Z_t\\,dV + \\mathbf 1dc^T,\\qquad
       Gv = \\text{§6.4's backward with } \\nabla_{O_t} := \\tfrac1N (\\mathbf 1^Ty_t)(\\operatorname{diag}p_t
       - p_tp_t^T)\\,dO_t \\text{ row by row},

       (G + wS)v:\\quad \\nabla_{Z_t} := \\nabla_{O_t}V^T + \\tfrac wN\\,dZ_t.

    ``G = (1/N) Σ_i J_iᵀ H_i J_i`` over every output ``o_{t,i}`` (the module docstring); the L2 penalty's
    curvature ``λI`` is not included. One recursion-only forward, one forward-differential scan and one
    backward (the softmax recomputed chunk by chunk, as in :func:`mdc_jax.rnn_loss`).

    Structural damping (Martens & Sutskever 2011): with ``structural = w > 0`` the result is
    ``(G + wS)v``, ``S = (1/N) Σ_i Σ_t J_{Z,t,i}ᵀ J_{Z,t,i}`` the Gauss–Newton matrix of the hidden states
    ``Z_1..Z_τ`` (that of ``(1/(2N)) Σ_{t,i} ‖z_{t,i}(θ) − z_{t,i}(θ_0)‖²`` at ``θ = θ_0``): its output Hessian
    is ``I``, so ``∇_{Z_t} += (w/N) dZ_t`` enters the same backward beside ``∇_{O_t}Vᵀ``, in the same pass.

    Args:
      params, Z0, X, Y: as in :func:`mdc_jax.rnn_loss`, with floating ``X`` ``(τ, N, D)`` and probability
        rows ``Y`` ``(τ, N, K)`` (``jax.nn.one_hot`` integer labels first).
      tangents: ``v``, an :class:`~mdc_jax.RNNParams` (or 5-tuple) of the shapes and dtypes of ``params``.
      structural: ``w ≥ 0``, the weight of the hidden states' Gauss–Newton matrix ``S`` (a number or a 0-d
        array, traced or not: an optimizer passes its damping ``λ`` times the structural damping ``μ``).

    Returns:
      ``(G + wS) v`` as an :class:`~mdc_jax.RNNParams` (``G v`` for ``w = 0``).

    Raises:
      ValueError: naming the argument (and the leaf of ``tangents``) for inconsistent shapes or dtypes, or
      a ``structural`` that is not a finite number ``>= 0``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4; Schraudolph (2002), fast curvature-matrix-vector products;
      Martens & Sutskever, "Learning recurrent neural networks with Hessian-free optimization", ICML 2011.
    """
    fn = "rnn_ggn_vp"
    original = params
    params, Z0, X, Y = rnn.check_inputs(fn, params, Z0, X, Y)
    tangents = _check_tangents(fn, original, tangents)
    v.require_penalty(fn, "structural", structural)
    w = None if isinstance(structural, numbers.Real) and structural == 0 else jnp.asarray(structural).astype(X.dtype)
    dparams = rnn.RNNParams(*(jnp.asarray(t).astype(p.dtype) for t, p in zip(tangents, params)))
    V, c, N = params.V, params.c, X.shape[1]
    _, Z_tau, Zs = rnn.forward(params, Z0, X, None)  # the recursion alone: no logits
    k = Zs.shape[1]
    Z_in = _steps(Zs)
    dZ = _tangent_states(params, dparams, Z_in, rnn.states_out(Z_in, Z_tau), X)

    def head(Z_out, xs, acc):
        Y_k, dZ_k = xs
        P = jnp.exp(rnn.output_log_probs(Z_out, V, c))  # recomputed: s¹(O_t)
        dO = _output_differential(Z_out, dZ_k, V, dparams)
        HdO = factors.hessian_vp(_TASK, P, jnp.sum(Y_k, axis=-1, keepdims=True), dO) / N
        acc = (acc[0] + jnp.einsum("tnh,tnk->hk", Z_out, HdO), acc[1] + jnp.sum(HdO, axis=(0, 1)))
        if w is None:
            return HdO @ V.T, acc, None
        return HdO @ V.T + (w / N) * dZ_k, acc, None  # ∇_{Z_t} from O_t and, structural damping, from Z_t itself

    out = rnn.backward(params, Zs, Z_tau, X, jnp.zeros_like(Z_tau), head, (rnn.chunks(Y, k), rnn.chunks(dZ, k)),
                       (jnp.zeros_like(V), jnp.zeros_like(c)))
    return rnn.RNNParams(*out.grads, *out.head_acc)


def rnn_ggn_gram(params, Z0, X, Y, tangents) -> jax.Array:
    """The Gram matrix ``[v_aᵀ G v_b]`` of ``k`` stacked tangents under the GGN of the §6.4 RNN, from the
    forward differential alone: no backward through time.

    .. math::

       v_a^TGv_b = \\frac1N\\sum_{t,i}\\big(dO_{t,i}^{(a)}\\big)^T H_{t,i}\\, dO_{t,i}^{(b)},\\qquad
       H_{t,i} = (\\mathbf 1^Ty_{t,i})(\\operatorname{diag}p_{t,i} - p_{t,i}p_{t,i}^T)

    ``dO^{(a)}_t = dZ_tV + Z_t\\,dV + 1dcᵀ`` the forward differential at ``v_a`` (as in :func:`rnn_ggn_vp`);
    the ``k`` tangents run through the forward-differential scan as one axis, and the softmax is recomputed
    chunk by chunk of time (no ``τ × N × K`` probabilities stacked). ``G`` as in :func:`rnn_ggn_vp` (no L2
    penalty, no structural damping): this is its quadratic form ``[v_a · G v_b]``, at the cost of the forward
    differential, what a step chosen on the quadratic model needs (K-FAC's adaptive ``α``, ``μ``).

    Args:
      params, Z0, X, Y: as in :func:`rnn_ggn_vp`.
      tangents: ``k`` tangents stacked on a leading axis: an :class:`~mdc_jax.RNNParams` (or 5-tuple) whose
        leaves are ``(k, *param.shape)`` in their parameters' dtypes.

    Returns:
      ``(k, k)``, entry ``(a, b)`` equal to ``v_aᵀ G v_b``, in the parameters' dtype.

    Raises:
      ValueError: naming the argument (and the leaf of ``tangents``) for inconsistent shapes or dtypes, or a
        leading axis that differs between the leaves of ``tangents``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4; Martens & Grosse, KFAC (ICML 2015), §7.
    """
    fn = "rnn_ggn_gram"
    original = params
    params, Z0, X, Y = rnn.check_inputs(fn, params, Z0, X, Y)
    tangents = _check_tangents(fn, original, tangents, stacked=True)
    dparams = rnn.RNNParams(*(jnp.asarray(t).astype(p.dtype) for t, p in zip(tangents, params)))
    V, c, N, k = params.V, params.c, X.shape[1], dparams.c.shape[0]
    _, Z_tau, Zs = rnn.forward(params, Z0, X, None)  # the recursion alone: no logits
    steps = Zs.shape[1]  # the forward's chunks of time
    Z_in = _steps(Zs)
    Z_out = rnn.states_out(Z_in, Z_tau)
    dZ = _tangent_states(params, dparams, Z_in, Z_out, X)  # (τ, k, N, H)

    def chunk(gram, xs):
        Z_s, dZ_s, Y_s = xs
        P = jnp.exp(rnn.output_log_probs(Z_s, V, c))[:, None]  # recomputed: s¹(O_t), broadcast over the tangents
        dO = _output_differential(Z_s, dZ_s, V, dparams)  # (steps, k, N, K)
        HdO = factors.hessian_vp(_TASK, P, jnp.sum(Y_s, axis=-1, keepdims=True)[:, None], dO)
        return gram + jnp.einsum("tank,tbnk->ab", dO, HdO), None  # Σ_{t,i} dO_aᵀ H dO_b over the chunk

    xs = (rnn.chunks(Z_out, steps), rnn.chunks(dZ, steps), rnn.chunks(Y, steps))
    gram = jax.lax.scan(chunk, jnp.zeros((k, k), Z_tau.dtype), xs)[0]
    return gram / N


# --------------------------------------------------------------------------------------------
# Diagonals of shared weights: Σ_col (Σ_t a_t ⊗ s_t)⊙²


def use_gram(tau: int, columns: int, d_in: int) -> bool:
    """Whether ``Σ_col (Σ_t a_t s_tᵀ)⊙²`` over weights with ``d_in`` input rows in all is cheaper from the
    ``τ × τ`` Gram matrices of the columns (``τ²(d_in + C)`` multiply-adds per example and output unit)
    than from the materialised per-column gradients (``τ C d_in``)."""
    return tau * (d_in + columns) < columns * d_in


def _gram_diag(a, M, pairs, per_example: bool):
    """``Σ_{t,u} (a_t ⊙ a_u) ⊗ M[t,u]`` over the examples (or per example) for the symmetric ``M`` held as its
    upper rows ``(τ, d, N, τ)`` (``M[t, :, :, u]``, ``u ≥ t``; ``pairs`` weighs them: 2 above the diagonal, 1 on
    it) and ``a`` ``(τ, N, d_a)``: per ``t`` one ``(d_a × Nτ)(Nτ × d)`` matmul (no ``τ²N d_a`` temporary)."""
    a_u = jnp.transpose(a, (1, 0, 2))  # (N, τ, d_a)
    out = "nag" if per_example else "ag"

    def one(acc, xs):
        a_t, M_t, w_t = xs  # (N, d_a), (d, N, τ), (τ,)
        aa = a_t[:, None, :] * (a_u * w_t[None, :, None])  # (N, τ, d_a): a_t ⊙ a_u, weighed
        return acc + jnp.einsum(f"nua,gnu->{out}", aa, M_t), None

    init = jnp.zeros((*(a.shape[1:] if per_example else a.shape[2:]), M.shape[1]), M.dtype)
    return jax.lax.scan(one, init, (a, M, pairs))[0]


def _sampled_diags(S, inputs):
    """``Σ_{m,i} (Σ_t a_{t,i} ⊗ s_{t,m,i})⊙²`` for each of ``inputs`` (``(τ, N, d_a)``) and ``Σ_{m,i} (Σ_t s_{t,m,i})⊙²``
    (the bias) for the columns ``S`` ``(τ, M, N, d)``, one example at a time (a scan: no ``M × N × d_a × d``
    tensor), by :func:`use_gram`'s cheaper form."""
    tau, M, N, d = S.shape
    gram = use_gram(tau, M, sum(a.shape[-1] for a in inputs))

    def one(acc, i):
        S_i = jax.lax.dynamic_index_in_dim(S, i, axis=2, keepdims=False)  # (τ, M, d)
        rows = [jax.lax.dynamic_index_in_dim(a, i, axis=1, keepdims=False) for a in inputs]  # (τ, d_a)
        if gram:
            Mg = jnp.sum(S_i[:, None] * S_i[None], axis=2)  # M[t,u] = Σ_m s_t ⊙ s_u
            terms = [jnp.einsum("tua,tug->ag", r[:, None] * r[None], Mg) for r in rows]
        else:
            P = [(r.T @ S_i.reshape(tau, -1)).reshape(-1, M, d) for r in rows]  # each column's gradient
            terms = [jnp.sum(p * p, axis=1) for p in P]
        return [x + y for x, y in zip(acc, terms)], None

    weights = jax.lax.scan(one, [jnp.zeros((a.shape[-1], d), S.dtype) for a in inputs], jnp.arange(N))[0]
    s = jnp.sum(S, axis=0)
    return weights, jnp.sum(s * s, axis=(0, 1))


def _exact_columns(params, Z_out, P, w, *, diag: bool, kron: bool):
    """The ``τK`` exact columns, one output time (slot) ``s`` at a time: its ``K`` columns ``F_s Vᵀ`` enter at
    ``O_s`` and go back through §6.4's recursion to ``t = 1`` only (``t ≤ s``: ``τ(τ+1)K/2`` column-steps, not
    ``τ²K``), so one slot's ``τ × K × N × H`` steps are held at a time. The columns are kept transposed,
    ``S_tᵀ`` ``(H, N, K)`` (columns last, so that ``Σ_col`` is contiguous and ``S_{t+1}Wᵀ`` is ``W S_{t+1}ᵀ``,
    one matmul). Returns the upper rows ``u ≥ t`` of ``M[t,u] = Σ_col s_t ⊙ s_u`` ``(τ, H, N, τ)``, zeros below
    (each step meets the slot's later ones; slots go up, so the buffer below ``t`` holds the previous slot's
    steps and is masked) and ``B = Σ_t Σ_col s_tᵀ s_t``."""
    W, V = params.W, params.V
    tau, N, H = Z_out.shape
    K = V.shape[1]
    zeros = lambda *shape: jnp.zeros(shape, Z_out.dtype)
    Z_T = jnp.transpose(Z_out, (0, 2, 1))[..., None]  # (τ, H, N, 1): tanh' broadcast over the columns
    u = jnp.arange(tau)

    def slot(carry, s):
        def step(j, c):
            R, buf, M, B = c
            t = s - j
            G = rnn.bptt_step(R, Z_T[t], 0)  # s_tᵀ = (1 − Z_t²)ᵀ ⊙ (W s_{t+1}ᵀ), F_sVᵀ entering at t = s
            if diag:
                buf = jax.lax.dynamic_update_slice(buf, G[:, :, None, :], (0, 0, t, 0))
                row = jnp.where((u >= t)[None, None, :], jnp.einsum("hnc,hnuc->hnu", G, buf), 0)  # Σ_col s_t ⊙ s_u
                M = jax.lax.dynamic_update_index_in_dim(M, M[t] + row, t, 0)
            G = G.reshape(H, -1)
            if kron:
                B = B + G @ G.T
            return (W @ G).reshape(H, N, K), buf, M, B

        F = factors.sqrt_hessian(_TASK, P[s], w[s])  # (K columns, N, K)
        FV = (V @ jnp.transpose(F, (2, 1, 0)).reshape(K, -1)).reshape(H, N, K)  # (F_sVᵀ)ᵀ
        return jax.lax.fori_loop(0, s + 1, step, (FV, *carry))[1:], None

    init = (zeros(H, N, tau, K) if diag else None, zeros(tau, H, N, tau) if diag else None, zeros(H, H) if kron else None)
    return jax.lax.scan(slot, init, u)[0][1:]


# --------------------------------------------------------------------------------------------
# The quantities: one forward, the backward of [gradient | M sampled columns], the exact slots


def _head(params, N: int, q, key, M: int):
    """Each chunk's output layer: the loss, ``∇_{O_t}J`` and its ``∇_V``, ``∇_c``; ``M`` sampled columns ``F̂_t``
    (``Σ F̂F̂ᵀ`` for ``kfac``). Returns ``[∇_{O_t}J | F̂_t] Vᵀ`` ``(k, 1 + M, N, H)`` and, stacked, ``P_t`` for the
    exact columns and ``F̂_t`` for ``diag_ggn_mc``."""
    V, c = params.V, params.c
    sampled = bool(q & set(_SAMPLED))

    def head(Z_out, xs, acc):
        Y_k, index = xs
        logS = rnn.output_log_probs(Z_out, V, c)  # recomputed: ln s¹(O_t)
        P = jnp.exp(logS)
        E = cross_entropy_error(P, Y_k) / N  # ∇_{O_t}J
        acc = dict(acc, J=acc["J"] - jnp.sum(Y_k * logS) / N, dV=acc["dV"] + jnp.einsum("tnh,tnk->hk", Z_out, E),
                   dc=acc["dc"] + jnp.sum(E, axis=(0, 1)))
        HV, F = [(E @ V.T)[:, None]], None
        if sampled:
            F = factors.sampled_sqrt_hessian(_TASK, jax.random.fold_in(key, index), P, w=jnp.sum(Y_k, -1, keepdims=True),
                                             mc_samples=M)
            F = jnp.moveaxis(F, 0, 1)  # (k, M, N, K)
            HV.append(F @ V.T)
            if "kfac" in q:
                acc = dict(acc, B_Vm=acc["B_Vm"] + jnp.einsum("tmnk,tmnl->kl", F, F))
        out = (P if q & set(_EXACT) else None, F if "diag_ggn_mc" in q else None)
        return jnp.concatenate(HV, axis=1), acc, out

    return head


def _tap(q):
    """Each chunk's ``∇_{A_t}`` stack ``G`` ``(k, 1 + M, N, H)``: the gradient's sums from column 0; for the
    Kronecker factors ``Σ_t Z_{t−1}ᵀZ_{t−1}`` and ``Σ_t X_tᵀX_t`` in the same matmuls as ``∇_W``, ``∇_U``
    (``Z_{t−1}ᵀ[∇_{A_t} | Z_{t−1}]``), and ``B_W``'s ``Σ_t Σ_m s sᵀ`` (no step is kept)."""
    kron = bool(q & {"kflr", "kfac"})

    def tap(acc, G, Z_in, X_k):
        g, H = G[:, 0], G.shape[-1]
        ZG = jnp.einsum("tnh,tng->hg", Z_in, jnp.concatenate([g, Z_in], axis=-1) if kron else g)
        XG = jnp.einsum("tnd,tng->dg", X_k, jnp.concatenate([g, X_k], axis=-1) if kron else g)
        acc = dict(acc, dW=acc["dW"] + ZG[:, :H], dU=acc["dU"] + XG[:, :H], db=acc["db"] + jnp.sum(g, axis=(0, 1)))
        if kron:
            acc = dict(acc, A_W=acc["A_W"] + ZG[:, H:], A_U=acc["A_U"] + XG[:, H:])
        if "kfac" in q:
            acc = dict(acc, B_Wm=acc["B_Wm"] + jnp.einsum("tcng,tcnh->gh", G[:, 1:], G[:, 1:]))
        return acc

    return tap


def _kron(A, B_W, B_V):
    """``RNNParams(W=(A_W, B_W), U=(A_U, B_W), b=B_W, V=(A_V, B_V), c=B_V)``."""
    A_W, A_U, A_V = A
    return rnn.RNNParams((A_W, B_W), (A_U, B_W), B_W, (A_V, B_V), B_V)


def rnn_quantities(params, Z0, X, Y, *, quantities: Sequence[str] = ("diag_ggn",), key=None,
                   mc_samples=1) -> dict:
    """Loss, gradient and GGN curvature of the §6.4 RNN, from one forward and one backward (plus, for the
    exact quantities, the ``τK`` exact columns one output time at a time).

    ``G = (1/N) Σ_i J_iᵀ H_i J_i`` over every output ``o_{t,i}`` (the module docstring derives each
    quantity; the L2 penalty's curvature ``λI`` is not included). The backward carries, as leading
    column axes of §6.4's BPTT, the gradient's column and ``mc_samples`` sampled columns (``diag_ggn_mc``
    and ``kfac`` share them); ``diag_ggn``, ``batch_diag_ggn`` and ``kflr`` share one pass of the exact ones.

    .. math::

       \\operatorname{diag}G_W = \\frac1N\\sum_i\\sum_{t,u} (z_{t-1,i}\\odot z_{u-1,i})\\,M_i[t,u]^T,\\quad
       M_i[t,u] = \\sum_{\\text{col}} s_{t,i}\\odot s_{u,i},\\qquad
       \\operatorname{diag}G_V = \\frac1N\\sum_{t,i}(z_{t,i}\\odot z_{t,i})\\operatorname{diag}(H_{t,i})^T,

       G_W \\approx A_W\\otimes B_W,\\quad A_W = \\frac1{N\\tau}\\sum_t Z_{t-1}^TZ_{t-1},\\quad
       B_W = \\frac1N\\sum_t\\sum_{\\text{col}} S_t^TS_t,\\qquad
       G_V \\approx A_V\\otimes B_V,\\quad B_V = \\frac1N\\sum_{t,i}H_{t,i}.

    Args:
      params, Z0, X, Y: as in :func:`mdc_jax.rnn_loss`, with floating ``X`` ``(τ, N, D)`` and probability
        rows ``Y`` ``(τ, N, K)`` (``jax.nn.one_hot`` integer labels first).
      quantities: any of :data:`RNN_QUANTITIES`:

        * ``"diag_ggn"``: the exact diagonal of ``G`` (BackPACK's ``DiagGGNExact``), shaped like ``params``;
        * ``"diag_ggn_mc"``: its Monte-Carlo estimate from ``mc_samples`` columns (``DiagGGNMC``), unbiased;
        * ``"batch_diag_ggn"``: each example's ``(1/N) diag(J_iᵀH_iJ_i)``, leaves ``(N, *param.shape)``
          (``BatchDiagGGNExact``); its sum over axis 0 is ``"diag_ggn"``;
        * ``"kflr"`` (exact) / ``"kfac"`` (sampled): Kronecker factors under independence across time,
          ``RNNParams(W=(A_W, B_W), U=(A_U, B_W), b=B_W, V=(A_V, B_V), c=B_V)``; ``G``'s block of a
          row-major ``vec`` of a weight ``≈ kron(A, B)``, exact for ``N = τ = 1``, where they equal the
          FCNN factors of the one-hidden-layer network ``[Z_0, X_1] ↦ tanh(·[W; U] + b) ↦ ·V + c``.
      key: a ``jax.random`` key, required for ``"diag_ggn_mc"`` and ``"kfac"``.
      mc_samples: ``M``, sampled columns per output row (an int ``>= 1``).

    Returns:
      A dict with ``"loss"`` (``J``), ``"grad"`` (``∇J``, equal to ``jax.grad`` of :func:`mdc_jax.rnn_loss`)
      and each requested quantity, per-parameter ones as :class:`~mdc_jax.RNNParams`.

    Raises:
      ValueError: naming the argument, for an unknown quantity, a sampled quantity without ``key``,
      ``mc_samples < 1``, inconsistent shapes or integer labels.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4; Martens, Ba & Johnson, "Kronecker-factored curvature approximations
      for recurrent neural networks", ICLR 2018; Dangel, Kunstner & Hennig, "BackPACK", ICLR 2020.
    """
    fn = "rnn_quantities"
    quantities = v.require_names(fn, "quantities", quantities, RNN_QUANTITIES, "quantity")
    M = v.require_static_int(fn, "mc_samples", mc_samples, what="an int >= 1 (sampled columns per output row)",
                             static_why=", as it fixes the number of columns: pass a Python int")
    sampled = [q for q in quantities if q in _SAMPLED]
    if sampled and key is None:
        v.fail(fn, f"key is required for {', '.join(map(repr, sampled))}; pass key=jax.random.key(seed).")
    params, Z0, X, Y = rnn.check_inputs(fn, params, Z0, X, Y)
    q, (tau, N), (H, K) = set(quantities), X.shape[:2], params.V.shape
    diag, kron = bool(q & {"diag_ggn", "batch_diag_ggn"}), bool(q & {"kflr", "kfac"})
    _, Z_tau, Zs = rnn.forward(params, Z0, X, None)  # the recursion alone: the head forms the loss
    k = Zs.shape[1]
    zeros = lambda *shape: jnp.zeros(shape, Z_tau.dtype)
    acc = {"J": zeros(), **{f"d{name}": jnp.zeros_like(p) for name, p in zip("WUbVc", params)}}
    acc.update({"A_W": zeros(H, H), "A_U": zeros(X.shape[2], X.shape[2])} if kron else {})
    acc.update({"B_Wm": zeros(H, H), "B_Vm": zeros(K, K)} if "kfac" in q else {})
    C = 1 + (M if sampled else 0)
    out = rnn.backward(params, Zs, Z_tau, X, zeros(C, N, H), _head(params, N, q, key, M),
                       (rnn.chunks(Y, k), jnp.arange(tau // k)), acc, per_step="diag_ggn_mc" in q, tap=_tap(q))
    acc, (P, F) = out.head_acc, out.head_out
    result = {"loss": acc["J"], "grad": rnn.RNNParams(*(acc[f"d{name}"] for name in "WUbVc"))}
    Z_in = _steps(Zs)
    Z_out = rnn.states_out(Z_in, Z_tau)
    if q & set(_EXACT):
        P, w = _steps(P), jnp.sum(Y, axis=-1, keepdims=True)
        M_e, B_W = _exact_columns(params, Z_out, P, w, diag=diag, kron="kflr" in q)
        d = w * P * (1 - P)  # diag H_t = Σ_c F_c ⊙ F_c
        if diag:
            per = "batch_diag_ggn" in q
            dV = jnp.einsum(f"tnh,tnk->{'n' if per else ''}hk", Z_out * Z_out, d)
            u = jnp.arange(tau)
            pairs = jnp.where(u[None, :] > u[:, None], 2, 1).astype(d.dtype)  # Σ_{t,u} from the upper rows
            db = jnp.sum(M_e * pairs[:, None, None, :], axis=(0, 3)).T
            diags = rnn.RNNParams(_gram_diag(Z_in, M_e, pairs, per), _gram_diag(X, M_e, pairs, per),
                                  db if per else jnp.sum(db, axis=0), dV, jnp.sum(d, axis=(0,) if per else (0, 1)))
            diags = jax.tree.map(lambda a: a / N, diags)
            if per:
                result["batch_diag_ggn"] = diags
            if "diag_ggn" in q:
                result["diag_ggn"] = jax.tree.map(lambda a: jnp.sum(a, axis=0), diags) if per else diags
        if "kflr" in q:  # B_V = (1/N) Σ_{t,i} H_{t,i} = (1/N)(diag(Σ wp) − (wP)ᵀP)
            B_V = jnp.diag(jnp.sum(w * P, axis=(0, 1))) - jnp.einsum("tnk,tnl->kl", w * P, P)
    if "diag_ggn_mc" in q:
        (dW, dU), db = _sampled_diags(_steps(out.steps)[:, 1:], [Z_in, X])
        (dV,), dc = _sampled_diags(_steps(F), [Z_out])
        result["diag_ggn_mc"] = rnn.RNNParams(dW / N, dU / N, db / N, dV / N, dc / N)
    if kron:  # A_V's Σ_{t=1..τ} Z_tᵀZ_t is A_W's Σ_{t=0..τ−1} less Z_0ᵀZ_0 plus Z_τᵀZ_τ
        A = [a / (N * tau) for a in (acc["A_W"], acc["A_U"], acc["A_W"] - Z0.T @ Z0 + Z_tau.T @ Z_tau)]
        if "kflr" in q:
            result["kflr"] = _kron(A, B_W / N, B_V / N)
        if "kfac" in q:
            result["kfac"] = _kron(A, acc["B_Wm"] / N, acc["B_Vm"] / N)
    return result
