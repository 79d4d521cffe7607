"""Curvature of the FCNN losses (§6.2, §6.3.1): GGN-vector products, GGN and Hessian diagonals, Kronecker
factors, from one forward and the closed-form backward applied to a matrix of columns.

Seed: ``000_3fed0c34b422d74e.txt`` §6.2 (forward, backward recursion), §6.3.1 (``E``). Samples are rows.
``J = (1/N) Σ_i ℓ_i`` without the L2 penalty (its curvature is ``λI``, added by the caller if wanted); the
output ``o_i`` is the logit row ``a_{L,i}`` (classification) or ``z_{L,i} = f_L(a_{L,i})`` (regression),
``H_i`` the Hessian of ``ℓ_i`` in ``o_i`` (:mod:`.factors`) and

    G = (1/N) Σ_i J_iᵀ H_i J_i,   H_i = F_i F_iᵀ   (F_i: K exact columns, or M sampled ones).

**GGN-vector product.** The forward differential of §6.2 with ``dZ_0 = 0``,

    dA_j = dZ_{j−1} W_j + Z_{j−1} dW_j + 1 db_jᵀ,   dZ_j = f'_j(A_j) ⊙ dA_j,

gives ``do`` (``dA_L`` or ``dZ_L``); ``H_i do_i / N`` is then back-propagated by §6.2's recursion as the
gradient's ``S_L`` is (regression: ``S_L = H do/N ⊙ f'_L(A_L)``): ``G v = [(Z_{j−1}ᵀ S_j, S_jᵀ 1)]``.

**Gram matrix.** ``v_aᵀ G v_b = (1/N) Σ_i do_{a,i}ᵀ H_i do_{b,i}`` needs the forward differentials alone: ``k``
tangents stacked on a leading axis run through it at once, and ``H`` is applied at the output; no backward.

**Columns.** Each column ``c`` of ``F`` at the output, moved to ``A_L``, runs down the same recursion
(a leading axis: all columns at once, or in chunks for many) to ``S_j^{(c)}`` (``N × d_j``), whose row ``i`` is ``J_{A_j,i}``'s
transpose applied to ``F_i``'s column ``c``. As ``∂a_{j,i}/∂W_j[a, b] = z_{j−1,i,a} e_b``:

    diag G(W_j)        = (1/N) (Z_{j−1} ⊙ Z_{j−1})ᵀ Σ_c S_j^{(c)} ⊙ S_j^{(c)},   diag G(b_j) = (1/N) 1ᵀ Σ_c S ⊙ S
    batch_diag G(W_j)_i = (1/N) z_{j−1,i}² ⊗ Σ_c s_{j,ic}²                      (sums over i to diag G)
    A_j = (1/N) Z_{j−1}ᵀ Z_{j−1},   B_j = (1/N) Σ_c S_j^{(c)ᵀ} S_j^{(c)}         (KFLR; KFAC with sampled F)

**Hessian diagonal.** For ``θ`` in layer ``k ≤ j`` the Hessian adds, to the GGN, ``J_{A_j}ᵀ diag(r_j) J_{A_j}``
at every curved activation ``f_j``, with ``r_j = f''_j(A_j) ⊙ ∇_{Z_j}J`` row by row (``∇_{Z_j}J = S_{j+1}
W_{j+1}ᵀ`` from the gradient's own recursion; ``(Z_L − Y)/N`` for regression's last layer). Its diagonal for
layer ``k`` is ``(Z_{k−1}²)ᵀ Q_k`` and ``1ᵀQ_k`` with ``Q_j = r_j``, ``Q_{j−1} = (r_j (W_j ⊙ W_j)ᵀ) ⊙ f'_{j−1}²`` and,
below, ``Q_k = Σ_u r_{j,·u} ⊙ (T_k^{(u)})²``, ``T^{(u)}`` the unit column ``e_u`` at ``A_j`` run down the recursion.
The softmax's curvature is all in ``H_i``: no residual at the classifier's output.

BackPACK's names: ``DiagGGNExact``, ``DiagGGNMC``, ``BatchDiagGGNExact``, ``KFLR``, ``KFAC``, ``DiagHessian``
(its ``[G, A]`` factors are ``(B_j, A_j)`` here). Nothing here calls ``jax.grad``, ``jax.vjp`` or ``jax.jvp``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ... import _validation as v
from ...kernels import block_starts, fresh_mask, lead
from .. import fcnn
from . import factors
from ._checks import require_stacked

QUANTITIES = ("diag_ggn", "diag_ggn_mc", "batch_diag_ggn", "kflr", "kfac", "diag_hessian")
"""What :func:`fcnn_quantities` computes (BackPACK's DiagGGNExact, DiagGGNMC, BatchDiagGGNExact, KFLR, KFAC, DiagHessian)."""
_EXACT = ("diag_ggn", "batch_diag_ggn", "kflr", "diag_hessian")  # from the K exact columns, one backward
_SAMPLED = ("diag_ggn_mc", "kfac")  # from the M sampled columns, one backward
_COLUMN_CHUNK = 8  # more columns are back-propagated in chunks of at most this many (a lax.scan): at K = 10,
# two chunks of 5 take the time of one of 10 with 2/3 of its memory (XLA:CPU, 784-512-512-10, N = 256)


# --------------------------------------------------------------------------------------------
# Input checks: _validation's vocabulary


def _labels(pairs) -> list[str]:
    """The names of the leaves of ``params``, for the messages: ``W_1, b_1, W_2, ...``."""
    return [f"{name}_{j + 1}" for j in range(len(pairs)) for name in "Wb"]


def _require_second_derivatives(fn, acts, n_layers):
    for j, act in enumerate(acts):
        if act.second_derivative is None:
            v.fail(fn, f"diag_hessian needs f'' of every activation; activations[{j}] ({act.name!r}, layer "
                       f"{j + 1} of {n_layers}) has none: register it with second_derivative=... "
                       f"(mdc_jax.register_activation).")


# --------------------------------------------------------------------------------------------
# The primitives: the forward differential, columns moved to A_L, and columns run down §6.2's recursion


def _at_logits(task, acts, As, out, F):
    """Columns (or rows) at the output moved to ``A_L``, where §6.2's recursion starts: ``F`` itself for
    classification (``o = A_L``), ``F ⊙ f'_L(A_L)`` for regression (``o = Z_L``); leading column axes allowed."""
    if task == "classification":
        return F
    return F * lead(acts[-1].grad_from(As[-1], out), F)


def _forward_differential(pairs, Zs, As, acts, out, tangents):
    """§6.2's forward differential at ``tangents = [(dW_j, db_j)]``: ``dA_L`` when the last layer has no
    activation here (classification: the logits), else ``dZ_L``; ``dZ_0 = 0``. Tangents stacked on a leading
    axis (``(k, d_{j−1}, d_j)``, ``(k, d_j)``) give the ``k`` differentials at once, ``(k, N, d_L)``."""
    L, dZ = len(pairs), None
    for j, ((W, _), (dW, db)) in enumerate(zip(pairs, tangents)):
        dA = Zs[j] @ dW + db[..., None, :]  # Z_{j−1} dW_j + 1 db_jᵀ
        if dZ is not None:
            dA = dA + dZ @ W  # + dZ_{j−1} W_j
        if j == len(acts):
            return dA
        dZ = lead(acts[j].grad_from(As[j], Zs[j + 1] if j + 1 < L else out), dA) * dA  # f'_j(A_j) ⊙ dA_j
    return dZ


def _column_sums(pairs, Zs, As, acts, columns, C: int, need_sq: bool, need_B: bool):
    """Per layer ``(Σ_c S_j^{(c)} ⊙ S_j^{(c)}, Σ_c S_j^{(c)ᵀ} S_j^{(c)})`` (``N × d_j``, ``d_j × d_j``; ``None``
    where not needed) for ``C`` columns at ``A_L`` run down §6.2's recursion, ``columns(start, size)`` building
    columns ``start .. start + size − 1`` (``size × N × d_L``): all at once, or in chunks of at most
    ``_COLUMN_CHUNK`` (a ``lax.scan`` whose body builds its own chunk), so that one chunk's columns and ``S``
    per layer are alive, never ``C × d_{j−1} × d_j`` per example."""

    def sums(S_L):
        out = []
        for S in fcnn.layer_errors(pairs, Zs, As, acts, S_L):
            rows = S.reshape(-1, S.shape[-1])  # (c, n) as one axis: Σ_c S_cᵀS_c is one matmul
            # Σ_c S_c ⊙ S_c as a sum of slices: XLA:CPU reduces the leading axis of a 3-D array ~50× slower
            sq = sum(S[c] * S[c] for c in range(S.shape[0])) if need_sq else None
            out.append((sq, rows.T @ rows if need_B else None))
        return out

    chunks = -(-C // _COLUMN_CHUNK)
    if chunks == 1:
        return sums(columns(0, C))
    chunk = -(-C // chunks)  # balanced: the moved-back last chunk repeats fewer than `chunks` columns
    starts = block_starts(C, chunk)

    def body(acc, xs):
        index, start = xs
        block = columns(start, chunk)
        fresh = fresh_mask(start, index, chunk).astype(block.dtype)  # a moved-back last chunk counts its own only
        return jax.tree_util.tree_map(jnp.add, acc, sums(block * fresh[:, None, None])), None

    shape = jax.eval_shape(lambda: columns(0, chunk))
    init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(sums, shape))
    xs = (jnp.arange(len(starts), dtype=jnp.int32), jnp.asarray(starts))
    return jax.lax.scan(body, init, xs)[0]


def _hessian_residuals(pairs, Zs, As, acts, Es, Y, out, N):
    """Per layer ``k`` the row weights ``Q_k`` (``N × d_k``, or ``None``) whose ``(Z_{k−1}²)ᵀ Q_k`` and
    ``1ᵀQ_k`` add the curved activations' terms to the GGN's diagonal (module docstring)."""
    L = len(pairs)
    Q = [None] * L

    def add(k, q):
        Q[k] = q if Q[k] is None else Q[k] + q

    for j in range(1, len(acts) + 1):  # f_j: hidden layers, and the last for regression
        act = acts[j - 1]
        if not act.curved:
            continue
        if j < L:
            grad_Z, Z_j = Es[j] @ pairs[j][0].T, Zs[j]  # ∇_{Z_j}J = S_{j+1} W_{j+1}ᵀ, rows (1/N) ∇ℓ_i
        else:
            grad_Z, Z_j = (out - Y) / N, out  # regression's ∇_{Z_L}J
        r = act.second_from(As[j - 1], Z_j) * grad_Z  # f''_j(A_j) ⊙ ∇_{Z_j}J
        add(j - 1, r)
        if j < 2:
            continue
        W = pairs[j - 1][0]
        fp = acts[j - 2].grad_from(As[j - 2], Zs[j - 1])  # f'_{j−1}(A_{j−1})
        add(j - 2, (r @ (W * W).T) * (fp * fp))  # Σ_u r_u W_j[·, u]² ⊙ f'²: T^{(u)}_{j−1} = W_j[·, u] ⊙ f'
        if j < 3:
            continue
        T = W.T[:, None, :] * fp[None]  # T^{(u)}_{j−1}, (d_j, N, d_{j−1})
        Ts = fcnn.layer_errors(pairs[: j - 1], Zs, As, acts, T)  # down to A_1: [T_1, ..., T_{j−1}]
        for k in range(j - 2):
            add(k, jnp.einsum("uni,nu->ni", Ts[k] * Ts[k], r))  # Σ_u r_{·u} ⊙ (T_k^{(u)})²
    return Q


# --------------------------------------------------------------------------------------------
# Public API


def fcnn_ggn_vp(params, X, Y, activations: Sequence[str], tangents, *, task: str = "classification"):
    """The exact GGN-vector product ``G v`` of an FCNN loss, from the forward differential and §6.2's backward.

    .. math::

       dA_j = dZ_{j-1}W_j + Z_{j-1}\\,dW_j + \\mathbf 1\\,db_j^T,\\quad dZ_j = f_j'(A_j)\\odot dA_j,\\quad dZ_0 = 0;
       \\qquad S_L = \\frac1N H\\,do \\;(\\odot f_L'(A_L)),\\qquad Gv = [(Z_{j-1}^TS_j,\\ S_j^T\\mathbf 1)]

    with ``S_j`` from §6.2's recursion, ``do = dA_L`` and ``H do = (1ᵀy)(diag p − ppᵀ) do`` row by row for
    classification, ``do = dZ_L`` and ``H = I`` for regression. ``G = (1/N) Σ_i J_iᵀH_iJ_i`` is the GGN of
    ``J`` without the L2 penalty (whose curvature is ``λI``: add ``λ dW_j`` if wanted).

    Args:
      params: ``[(W_1, b_1), ..., (W_L, b_L)]``, ``W_j`` ``(d_{j−1}, d_j)``; samples are rows.
      X: ``(N, d_0)``; Y: ``(N, d_L)`` (probability rows for classification, targets for regression).
      activations: one per hidden layer (classification; the last layer is the softmax) or one per layer
        (regression), as :func:`mdc_jax.per_example.fcnn_quantities` takes them.
      tangents: ``v``, in the structure of ``params``, each leaf of its parameter's shape and dtype.
      task: ``"classification"`` or ``"regression"``.

    Returns:
      ``G v`` in the structure of ``params``.

    Raises:
      ValueError: naming the argument, for inconsistent inputs; naming the leaf, for a tangent whose
        structure, shape or dtype differs from ``params``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.2, §6.3.1; BackPACK's GGN-vector product.
    """
    fn = "fcnn_ggn_vp"
    pairs, acts = fcnn.check_task_inputs(fn, params, X, Y, activations, task)
    dpairs = v.require_like(fn, "tangents", tangents, "params", params, _labels(pairs))
    N = X.shape[0]
    _, Zs, As, out = fcnn.output_forward(task, pairs, X, Y, acts)
    dO = _forward_differential(pairs, Zs, As, acts, out, dpairs)
    P = jnp.exp(out) if task == "classification" else out  # Z_L = s¹(A_L) from ln Z_L
    HV = factors.hessian_vp(task, P, jnp.sum(Y, axis=1, keepdims=True), dO) / N
    Ss = fcnn.layer_errors(pairs, Zs, As, acts, _at_logits(task, acts, As, out, HV))
    return fcnn.restructure(params, fcnn.param_grads(Zs, Ss))


def fcnn_ggn_gram(params, X, Y, activations: Sequence[str], tangents, *, task: str = "classification") -> jax.Array:
    """The Gram matrix ``[v_aᵀ G v_b]`` of ``k`` stacked tangents under the GGN of an FCNN loss, from one forward
    and the ``k`` forward differentials: no backward.

    .. math::

       v_a^TGv_b = \\frac1N\\sum_i \\big(do_i^{(a)}\\big)^T H_i\\, do_i^{(b)},\\qquad do_i^{(a)} = J_iv_a

    with ``do^{(a)}`` §6.2's forward differential at ``v_a`` (as in :func:`fcnn_ggn_vp`: ``dA_L`` for
    classification, ``dZ_L`` for regression) and ``H_i do = (1ᵀy_i)(diag p_i − p_ip_iᵀ) do`` (classification)
    or ``do`` (regression). The ``k`` differentials run as one leading axis. ``G`` is the GGN of ``J`` without
    the L2 penalty (whose curvature adds ``λ Σ_j v_a(W_j)·v_b(W_j)``). This is the quadratic form of
    :func:`fcnn_ggn_vp`, ``[v_a · G v_b]``, at the cost of the forward differentials alone: what a step chosen
    on the quadratic model needs (K-FAC's adaptive ``α``, ``μ``).

    Args:
      params, X, Y, activations, task: as in :func:`fcnn_ggn_vp`.
      tangents: ``k`` tangents stacked on a leading axis, in the structure of ``params``: each leaf
        ``(k, *param.shape)`` in its parameter's dtype (``jnp.stack`` of ``k`` pytrees like ``params``, leaf by
        leaf).

    Returns:
      ``(k, k)``, entry ``(a, b)`` equal to ``v_aᵀ G v_b``, in the parameters' dtype.

    Raises:
      ValueError: naming the argument, for inconsistent inputs; naming the leaf, for a tangent whose
        structure, shape or dtype differs from ``params`` stacked ``k`` times (``k`` shared by every leaf).

    References:
      ``000_3fed0c34b422d74e.txt`` §6.2, §6.3.1; Martens & Grosse, KFAC (ICML 2015), §7 (the exact quadratic
      model on a few directions).
    """
    fn = "fcnn_ggn_gram"
    pairs, acts = fcnn.check_task_inputs(fn, params, X, Y, activations, task)
    dpairs = require_stacked(fn, tangents, params, _labels(pairs))
    N = X.shape[0]
    _, Zs, As, out = fcnn.output_forward(task, pairs, X, Y, acts)
    dO = _forward_differential(pairs, Zs, As, acts, out, dpairs)  # (k, N, d_L): row i of slice a is J_i v_a
    P = jnp.exp(out) if task == "classification" else out  # Z_L = s¹(A_L) from ln Z_L
    HdO = factors.hessian_vp(task, lead(P, dO), lead(jnp.sum(Y, axis=1, keepdims=True), dO), dO)
    k = dO.shape[0]
    return dO.reshape(k, -1) @ HdO.reshape(k, -1).T / N  # Σ_i (J_i v_a)ᵀ H_i (J_i v_b) / N


def fcnn_quantities(params, X, Y, activations: Sequence[str], *, task: str = "classification",
                    quantities: Sequence[str] = ("diag_ggn",), key=None, mc_samples: int = 1) -> dict:
    """Loss, gradient and curvature of an FCNN loss from one forward: GGN diagonals, Kronecker factors and
    the Hessian's diagonal, each from the closed-form backward applied to the loss Hessian's factor columns.

    .. math::

       \\operatorname{diag}G(W_j) = \\frac1N (Z_{j-1}\\odot Z_{j-1})^T\\sum_c S_j^{(c)}\\odot S_j^{(c)},\\qquad
       A_j = \\frac1N Z_{j-1}^TZ_{j-1},\\quad B_j = \\frac1N\\sum_c S_j^{(c)T}S_j^{(c)}

    ``S_j^{(c)}``: column ``c`` of ``H_i``'s factor (``K`` exact columns, or ``mc_samples`` sampled ones)
    back-propagated to ``A_j`` by §6.2's recursion; see the module docstring for every quantity. The exact
    quantities share one backward of the ``K`` columns, the sampled ones one backward of the ``M`` columns.
    The loss has no L2 penalty; its curvature ``λI`` is not included.

    Args:
      params, X, Y, activations, task: as in :func:`fcnn_ggn_vp`.
      quantities: any of

        * ``"diag_ggn"``: the diagonal of ``G``, each leaf shaped like its parameter (``DiagGGNExact``);
        * ``"diag_ggn_mc"``: its unbiased Monte-Carlo estimate from ``mc_samples`` labels drawn from the
          model's predictive distribution with ``key`` (``DiagGGNMC``);
        * ``"batch_diag_ggn"``: example ``i``'s ``(1/N) diag(J_iᵀH_iJ_i)``, leaves ``(N, *param.shape)``
          (``BatchDiagGGNExact``);
        * ``"kflr"`` / ``"kfac"``: per layer ``((A_j, B_j), B_j)``: ``G``'s block of the row-major
          ``vec(W_j)`` is approximated by ``kron(A_j, B_j)`` (exact for ``N = 1``), the bias's by ``B_j``;
          ``B_j`` from the exact (``KFLR``) or the sampled (``KFAC``, ``key``) columns;
        * ``"diag_hessian"``: the diagonal of the Hessian of ``J``, the GGN's plus every curved activation's
          ``f''`` term (``DiagHessian``); every activation must have a second derivative.
      key: a ``jax.random`` key, required by ``"diag_ggn_mc"`` and ``"kfac"`` (they share its samples).
      mc_samples: ``M >= 1``, the sampled columns per example.

    Returns:
      A dict with ``"loss"`` (``J``), ``"grad"`` (``∇J``, as ``jax.grad`` of the mdc-jax loss with ``l2=0``)
      and each requested quantity, per-layer results in the structure of ``params``.

    Raises:
      ValueError: naming the argument: an unknown quantity, a missing ``key``, ``mc_samples < 1``, an
        activation without a second derivative for ``"diag_hessian"``, inconsistent inputs.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.2, §6.3.1; Dangel, Kunstner & Hennig, BackPACK (ICLR 2020); Martens &
      Grosse, KFAC (ICML 2015); Botev, Ritter & Barber, KFLR (ICML 2017).
    """
    fn = "fcnn_quantities"
    quantities = v.require_names(fn, "quantities", quantities, QUANTITIES, "quantity")
    M = v.require_static_int(fn, "mc_samples", mc_samples)
    pairs, acts = fcnn.check_task_inputs(fn, params, X, Y, activations, task)
    sampled = [q for q in quantities if q in _SAMPLED]
    if sampled and key is None:
        v.fail(fn, f"key is required for {', '.join(map(repr, sampled))} (a jax.random key: the labels are "
                   f"sampled from the model); got None.")
    if "diag_hessian" in quantities:
        _require_second_derivatives(fn, acts, len(pairs))
    N, K = X.shape[0], pairs[-1][0].shape[1]
    ell, Zs, As, out = fcnn.output_forward(task, pairs, X, Y, acts)
    Es = fcnn.layer_errors(pairs, Zs, As, acts, fcnn.output_backward(task, acts, As, Y, out)[0] / N)  # S_j of J
    result = {"loss": jnp.mean(ell), "grad": fcnn.restructure(params, fcnn.param_grads(Zs, Es))}
    P = jnp.exp(out) if task == "classification" else out  # Z_L = s¹(A_L); regression: any array of o's shape
    w = jnp.sum(Y, axis=1, keepdims=True)  # 1ᵀy_i
    Z2 = [Z * Z for Z in Zs] if set(quantities) - {"kflr", "kfac"} else None
    A = [Z.T @ Z / N for Z in Zs] if {"kflr", "kfac"} & set(quantities) else None

    def assemble(sums, names):
        for name in names:
            if name in ("diag_ggn", "diag_ggn_mc"):
                layers = [(z2.T @ sq / N, jnp.sum(sq, axis=0) / N) for z2, (sq, _) in zip(Z2, sums)]
            elif name == "batch_diag_ggn":
                layers = [(z2[:, :, None] * (sq / N)[:, None, :], sq / N) for z2, (sq, _) in zip(Z2, sums)]
            elif name in ("kflr", "kfac"):
                layers = [((a, B / N), B / N) for a, (_, B) in zip(A, sums)]
            else:  # diag_hessian: the GGN's row weights S²/N plus the residuals' Q_k, one matmul per layer
                Q = _hessian_residuals(pairs, Zs, As, acts, Es, Y, out, N)
                weights = [sq / N if q is None else sq / N + q for (sq, _), q in zip(sums, Q)]
                layers = [(z2.T @ q, jnp.sum(q, axis=0)) for z2, q in zip(Z2, weights)]
            result[name] = fcnn.restructure(params, layers)

    exact = [q for q in quantities if q in _EXACT]
    if exact:
        columns = lambda start, size: _at_logits(task, acts, As, out, factors.sqrt_hessian(task, P, w, start, size))
        assemble(_column_sums(pairs, Zs, As, acts, columns, K, set(exact) != {"kflr"}, "kflr" in exact), exact)
    if sampled:
        S_L = _at_logits(task, acts, As, out, factors.sampled_sqrt_hessian(task, key, P, w, M))  # M columns
        columns = lambda start, size: jax.lax.dynamic_slice_in_dim(S_L, start, size, axis=0)
        assemble(_column_sums(pairs, Zs, As, acts, columns, M, "diag_ggn_mc" in sampled, "kfac" in sampled), sampled)
    return {"loss": result.pop("loss"), "grad": result.pop("grad"),
            **{name: result[name] for name in quantities}}
