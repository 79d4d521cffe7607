"""Fully connected networks: the closed-form backward passes of §6.1–6.3.1.

Seed: ``000_3fed0c34b422d74e.txt``, Part II, §6 "Deep Learning". Samples are rows, as in the seed:
``X`` is ``N × d_0``, ``W_j`` is ``d_{j−1} × d_j``, ``b_j`` has ``d_j`` entries.

Forward (§6.2)::

    Z_0 = X,   A_j = Z_{j−1} W_j + 1 b_jᵀ,   Z_j = f_j(A_j),   j = 1..L

Regression, §6.2 final equations::

    J        = 1/(2N) (Z_L − Y)·(Z_L − Y) + λ/2 Σ_j W_j·W_j
    ∇_{Z_L}J = (Z_L − Y) / N
    S_j      = ∇_{Z_j}J ⊙ f'_j(A_j)
    ∇_{Z_j}J = S_{j+1} W_{j+1}ᵀ            (j = 0 gives ∇_X J)
    ∇_{W_j}J = Z_{j−1}ᵀ S_j + λ W_j
    ∇_{b_j}J = S_jᵀ 1

Classification, §6.3 (eq. 37–40) and §6.3.1 (eq. 41–44): the last layer is ``Z_L = s¹(A_L)``,
``J = −(1/N) ln(Z_L)·Y + λ/2 Σ_j W_j·W_j``, and the recursion above starts from
``S_L = ∇_{A_L}J = E`` with

    E = (Z_L − Y) / N                                   (§6.3.1, eq. 43–44; the default)
    E = −(1/N) (Y ⊘ Z_L)^{12̄} ⊙^{13} ∇s¹(A_L)             (§6.3, eq. 40; ``backward="general"``)

Seed slips corrected here: §6.3 writes the penalty as ``Σ W_k·W_k`` but its final equations use
``λW``, i.e. the penalty ``λ/2 Σ W_k·W_k`` of §6.2. §6.3.1 drops ``1ᵀy_i`` using ``Σ_j y_ij = 1``;
we keep it, ``E = (Z_L ⊙ (Y1)1ᵀ − Y)/N``, which is the seed's ``E`` for probability rows and stays
exact for rows that do not sum to one.

Both rules also return the cotangents of ``X`` (``S_1 W_1ᵀ``), ``Y`` and ``λ`` so that they compose
inside larger models.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .. import _validation as v
from ..activations import Activation, get_activation, list_activations
from ..kernels import lead
from . import linear_ce
from .softmax import cross_entropy_error, log_softmax, softmax_vjp

Params = Sequence[tuple[jax.Array, jax.Array]]
TASKS = ("classification", "regression")  # the losses: §6.3 (softmax cross-entropy) and §6.2 (squared error)


# --------------------------------------------------------------------------------------------
# Shared forward and backward of §6.2: the in-package API (the per-example rules use it too)


def hidden_forward(params, X, acts):
    """§6.2's forward: ``Z_0..Z_m`` (``Z_0 = X``) and the ``A_j`` an activation needs (``None`` where
    ``f'`` is taken from ``Z_j``), for checked ``params`` (pairs) and :class:`~mdc_jax.activations.Activation` tuple."""
    Zs, As = [X], []
    for (W, b), act in zip(params, acts):
        A = Zs[-1] @ W + b[None, :]  # 1bᵀ: the broadcast made explicit
        As.append(None if act.from_output else A)
        Zs.append(act.fn(A))
    return Zs, As


def layer_errors(params, Zs, As, acts, S):
    """§6.2's backward recursion from ``S_L = ∇_{A_L}J`` down to layer 1: ``[S_1, ..., S_L]``.

    ``S_{j−1} = (S_j W_jᵀ) ⊙ f'_{j−1}(A_{j−1})``; ``Zs``, ``As`` as :func:`hidden_forward` returns them
    (``Zs[j]`` is layer ``j``'s input, 0-based). The recursion acts on each row alone, so an ``S_L`` built
    from one example's loss gives that example's rows (the per-example quantities). ``S`` may carry
    leading column axes (``C × N × d_L``, curvature's back-propagated columns); ``f'`` broadcasts over them.
    """
    Ss = [S]
    for j in range(len(params) - 1, 0, -1):
        S = S @ params[j][0].T
        S = S * lead(acts[j - 1].grad_from(As[j - 1], Zs[j]), S)  # S_j W_jᵀ ⊙ f'(A_{j−1})
        Ss.append(S)
    return Ss[::-1]


def param_grads(Zs, Ss):
    """``[(Z_{j−1}ᵀS_j, S_jᵀ1)]``: §6.2's ``∇W_j`` and ``∇b_j`` (penalty aside) from the layer inputs and errors."""
    return [(Z.T @ S, jnp.sum(S, axis=0)) for Z, S in zip(Zs, Ss)]


def _backward(params, Zs, As, acts, S, l2):
    """``(∇W_j, ∇b_j)`` per layer and ``∇_X J`` from ``S_L`` (§6.2 final equations)."""
    Ss = layer_errors(params, Zs, As, acts, S)
    grads = [(dW + l2 * W, db) for (W, _), (dW, db) in zip(params, param_grads(Zs, Ss))]  # + λW_j
    return grads, Ss[0] @ params[0][0].T  # ∇_X J = S_1 W_1ᵀ


def penalty(params):
    """``½ Σ_j W_j·W_j`` (biases are not penalised): the L2 term, times λ in the losses."""
    return sum(jnp.sum(W * W) for W, _ in params) / 2


def output_forward(task: str, params, X, Y, acts):
    """The forward to each example's loss, the penalty aside: ``(ℓ, Zs, As, out)``.

    ``ℓ_i = ½‖z_{L,i} − y_i‖²`` with ``out = Z_L`` (``"regression"``, §6.2), or ``ℓ_i = −ln s¹(a_{L,i})·y_i``
    with ``out = ln Z_L`` (``"classification"``, §6.3); ``Zs = [Z_0, ..., Z_{L−1}]`` (each layer's input)
    and ``As`` as :func:`hidden_forward`. The losses are ``J = (1/N) Σ_i ℓ_i + λ·penalty``.
    """
    if task == "classification":
        Zs, As = hidden_forward(params[:-1], X, acts)
        W, b = params[-1]
        logZ_L = log_softmax(Zs[-1] @ W + b[None, :])  # ln s¹(A_L), finite even for logits of ±1e4
        return -jnp.sum(Y * logZ_L, axis=1), Zs, As, logZ_L
    Zs, As = hidden_forward(params, X, acts)
    Z_L = Zs.pop()
    R = Z_L - Y
    return jnp.sum(R * R, axis=1) / 2, Zs, As, Z_L


def output_backward(task: str, acts, As, Y, out):
    """The output layer's backward row by row, without the ``1/N`` (the rules scale by ``g/N``):
    ``(S_L, ∇_Y ℓ)``, row ``i`` of ``S_L`` being ``∇_{a_{L,i}} ℓ_i``, for ``out`` from :func:`output_forward`.

    Classification, §6.3.1 keeping ``1ᵀy_i``: ``S_L = E = Z_L ⊙ (Y1)1ᵀ − Y``, ``∇_Y ℓ = −ln Z_L``.
    Regression, §6.2: ``S_L = (Z_L − Y) ⊙ f'_L(A_L)``, ``∇_Y ℓ = −(Z_L − Y)``.
    """
    if task == "classification":
        return cross_entropy_error(jnp.exp(out), Y), -out
    R = out - Y  # ∇_{Z_L}ℓ_i
    return R * acts[-1].grad_from(As[-1], out), -R


def _cotangents(params, X, l2, grads, dX, dl2):
    dparams = tuple((v.cast_like(dW, W), v.cast_like(db, b)) for (dW, db), (W, b) in zip(grads, params))
    return dparams, v.cast_like(dX, X), v.cast_like(dl2, l2)


# --------------------------------------------------------------------------------------------
# Regression (§6.1–6.2) and classification (§6.3 general, eq. 38–40; §6.3.1 simple, eq. 41–44): one
# forward and one backward, the output layer's rows from output_forward and output_backward


def _forward(task, acts, params, X, Y, l2):
    ell, Zs, As, out = output_forward(task, params, X, Y, acts)
    return jnp.sum(ell) / X.shape[0] + l2 * penalty(params), Zs, As, out


def _fwd(task, acts, params, X, Y, l2):
    J, Zs, As, out = _forward(task, acts, params, X, Y, l2)
    # Residuals: the layer inputs Z_0..Z_{L−1} (∇W_j = Z_{j−1}ᵀS_j; tanh, sigmoid, relu, softplus and identity
    # take f'_j from Z_j), A_j only for an activation whose f' needs its input, Y, and the output: Z_L for
    # regression (Z_L − Y is recomputed: one subtraction, not a buffer kept), ln Z_L for classification
    # (∇_Y J needs it; Z_L is its exp, recomputed).
    return J, (params, Zs, As, Y, out, l2)


def _bwd(task, backward, acts, res, g):
    params, Zs, As, Y, out, l2 = res
    scale = g / Zs[0].shape[0]  # g/N
    S, dY = output_backward(task, acts, As, Y, out)  # S_L and ∇_Y ℓ, without 1/N
    if backward == "general":  # §6.3 eq. 40: E_i = −(1/N) ∇s(a_i) (y_i ⊘ s(a_i)), ∇s = diag(s) − ssᵀ row-wise
        Z_L = jnp.exp(out)
        S = softmax_vjp(Z_L, -Y / Z_L, axis=1)
    grads, dX = _backward(params, Zs, As, acts, scale * S, g * l2)
    dparams, dX, dl2 = _cotangents(params, Zs[0], l2, grads, dX, g * penalty(params))
    return dparams, dX, v.cast_like(scale * dY, Y), dl2


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _regression(acts, params, X, Y, l2):
    return _forward("regression", acts, params, X, Y, l2)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _classification(backward, acts, params, X, Y, l2):
    return _forward("classification", acts, params, X, Y, l2)[0]


_regression.defvjp(functools.partial(_fwd, "regression"), functools.partial(_bwd, "regression", "simple"))
_classification.defvjp(lambda backward, *args: _fwd("classification", *args), functools.partial(_bwd, "classification"))


# --------------------------------------------------------------------------------------------
# Classification with the fused head: §6.3.1's E block by block (linear_ce), never the N × d_L logits


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _classification_fused(acts, blocks, params, X, Y, l2):
    return _classification_fused_fwd(acts, blocks, params, X, Y, l2)[0]


def _classification_fused_fwd(acts, blocks, params, X, Y, l2):
    Zs, As = hidden_forward(params[:-1], X, acts)
    W, b = params[-1]
    targets, soft = linear_ce.as_targets(Y, W.shape[1])
    acc = linear_ce.acc_dtype(jnp.result_type(Zs[-1], W, b))
    lse, losses = linear_ce.forward(Zs[-1], W, b, targets, soft, *blocks, acc)
    dtype = jnp.result_type(X, *(a for layer in params for a in layer), *([Y] if soft else []))  # the plain head's
    J = (jnp.sum(losses) / X.shape[0]).astype(dtype) + l2 * penalty(params)
    # Residuals: the hidden outputs Z_0..Z_{L−1} (and any A_j), Y, and the N log-sum-exps: the logits
    # A_L are recomputed block by block in the backward.
    return J, (params, Zs, As, Y, lse, l2)


def _classification_fused_bwd(acts, blocks, res, g):
    params, Zs, As, Y, lse, l2 = res
    (W, b), N = params[-1], Zs[0].shape[0]
    targets, soft = linear_ce.as_targets(Y, W.shape[1])
    acc = linear_ce.acc_dtype(jnp.result_type(Zs[-1], W, b))
    # E = (g/N)(Z_L − Y), applied block by block: ∇_{Z_{L−1}}J = E W_Lᵀ, ∇_{W_L}J = Z_{L−1}ᵀ E, ∇_{b_L}J = Eᵀ1
    dZ, dW, db, dY = linear_ce.backward(soft, *blocks, acc, (Zs[-1], W, b, targets, lse), jnp.full((N,), g / N, acc))
    dZ = dZ.astype(Zs[-1].dtype)
    if len(params) > 1:  # then §6.2's recursion from S_{L−1} = ∇_{Z_{L−1}}J ⊙ f'_{L−1}(A_{L−1})
        grads, dX = _backward(params[:-1], Zs, As, acts, dZ * acts[-1].grad_from(As[-1], Zs[-1]), g * l2)
    else:
        grads, dX = [], dZ
    grads = [*grads, (dW + g * l2 * W, db)]
    dparams, dX, dl2 = _cotangents(params, Zs[0], l2, grads, dX, g * penalty(params))
    return dparams, dX, (v.cast_like(dY, Y) if soft else dY), dl2  # ∇_Y J = −(g/N) ln Z_L; none for labels


_classification_fused.defvjp(_classification_fused_fwd, _classification_fused_bwd)


# --------------------------------------------------------------------------------------------
# Public API and input checks


def check_inputs(fn: str, params, X, Y, activations, l2, *, n_activations: int | None, task: str | None = None,
                 labels: bool = False):
    """The FCNN rules' input checks, at trace time; returns (params as pairs, the Activation tuple).

    ``task``: ``"classification"`` (``Y`` holds label rows, non-negative and finite when concrete; with
    ``labels`` also integer class labels ``(N,)``), ``"regression"`` (any floating targets), ``None``
    (no ``Y``: :func:`fcnn_forward`). Used by the losses and by ``mdc_jax.per_example``.
    """
    v.require_floating(fn, "X", X)
    N, d_0 = v.require_ndim(fn, "X", X, 2, "(N, d_0)")
    v.require_samples(fn, "X", (N, d_0))
    pairs, K = v.require_mlp_params(fn, params, d_0)
    if task is not None:
        alt = " or use head='fused', which takes them as they are" if fn == "fcnn_classification_loss" and not labels else ""
        also = f"; or integer labels of shape ({N},)" if labels else ""
        v.require_labels(fn, "Y", Y, (N,), K, dims="(N, d_L)",
                         why=f"(N, d_L): X's {N} rows and the last layer's {K} columns{also}",
                         integer=f"integer labels: one class index per row of X ({N} rows)" if labels else None,
                         what="rows of probabilities" if task == "classification" else "rows",
                         hint=f"for integer class labels pass jax.nn.one_hot(labels, {K}){alt}",
                         probabilities=task == "classification")
    per = "one per layer" if n_activations == len(pairs) else "one per hidden layer; the last layer is the softmax"
    acts = v.require_activations(fn, activations, n_activations, f"for {len(pairs)} layers ({per})", _activation,
                                 list_activations())
    if task is not None:  # the losses always take an l2; fcnn_forward none
        v.require_penalty(fn, "l2", l2)
    return pairs, acts


def check_task_inputs(fn: str, params, X, Y, activations, task: str, l2=0.0):
    """:func:`check_inputs` for a ``task`` argument (``"classification"``: one activation per hidden layer,
    the last layer is the softmax; ``"regression"``: one per layer): the checked ``(pairs, activations)``.
    Used by ``mdc_jax.per_example`` and ``mdc_jax.curvature``."""
    v.require_choice(fn, "task", task, TASKS)
    n = len(params) if isinstance(params, list | tuple) else None
    n_acts = n if task == "regression" or n is None else n - 1
    return check_inputs(fn, params, X, Y, activations, l2, n_activations=n_acts, task=task)


def restructure(params, layers):
    """Per-layer results ``[(for W_j, for b_j)]`` in the structure of ``params`` (a list of pairs stays a list
    of pairs, a tuple of lists a tuple of lists)."""
    pair = lambda layer, g: type(layer)(g) if isinstance(layer, tuple | list) else tuple(g)
    return type(params)(pair(layer, g) for layer, g in zip(params, layers))


def _activation(name) -> Activation:
    return name if isinstance(name, Activation) else get_activation(name)


def fcnn_regression_loss(params: Params, X: jax.Array, Y: jax.Array, activations: Sequence[str],
                         l2: float | jax.Array = 0.0) -> jax.Array:
    """Mean-squared-error loss of an L-layer network, with the closed-form backward of §6.2.

    .. math::

       J = \\frac{1}{2N}(Z_L - Y)\\cdot(Z_L - Y) + \\frac{\\lambda}{2}\\sum_j W_j\\cdot W_j,
       \\qquad \\nabla_{W_j}J = Z_{j-1}^T S_j + \\lambda W_j,\\quad \\nabla_{b_j}J = S_j^T\\mathbf 1,
       \\quad S_j = \\nabla_{Z_j}J\\odot f_j'(A_j),\\quad \\nabla_{Z_{j-1}}J = S_jW_j^T.

    Args:
      params: ``[(W_1, b_1), ..., (W_L, b_L)]``, ``W_j`` of shape ``(d_{j−1}, d_j)``, ``b_j`` ``(d_j,)``.
      X: inputs, ``(N, d_0)``; samples are rows.
      Y: targets, ``(N, d_L)``.
      activations: one registered activation name per layer (length L), e.g.
        ``["tanh", "identity"]``.
      l2: the L2 weight λ ≥ 0 (biases are not penalised): a number or a 0-d array (an integer one is cast
        to ``X``'s dtype).

    Returns:
      The scalar loss. ``jax.grad`` of it runs the closed-form backward and returns cotangents
      for every argument: all ``W_j``, ``b_j``, and ``X``, ``Y`` and ``l2``.

    Raises:
      ValueError: at trace time, naming the argument and the shapes, for any inconsistent input.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.1, §6.2 (final equations).
    """
    fn = "fcnn_regression_loss"
    n_layers = len(params) if isinstance(params, (list, tuple)) else None
    pairs, acts = check_inputs(fn, params, X, Y, activations, l2, n_activations=n_layers, task="regression")
    return _regression(acts, pairs, X, Y, v.as_penalty(l2, jnp.result_type(X)))


def fcnn_classification_loss(params: Params, X: jax.Array, Y: jax.Array, activations: Sequence[str],
                             l2: float | jax.Array = 0.0, *, backward: str = "simple", head: str = "plain",
                             block_size=None) -> jax.Array:
    """Softmax cross-entropy loss of an L-layer network, with the closed-form backward of §6.3.

    .. math::

       Z_L = s^1(A_L),\\qquad J = -\\frac1N\\ln(Z_L)\\cdot Y + \\frac{\\lambda}{2}\\sum_j W_j\\cdot W_j,
       \\qquad \\nabla_{A_L}J = E = \\frac1N(Z_L - Y).

    The hidden layers then follow §6.2 with ``S_L = E``.

    Args:
      params: ``[(W_1, b_1), ..., (W_L, b_L)]`` as in :func:`fcnn_regression_loss`; ``d_L`` is the
        number of classes.
      X: inputs, ``(N, d_0)``.
      Y: ``(N, d_L)`` rows of class probabilities: one-hot labels or soft labels, non-negative and
        finite (checked when concrete). With ``head="fused"`` also integer class labels ``(N,)`` in
        ``[0, d_L)``; the plain head refuses them (convert them with ``jax.nn.one_hot``).
      activations: one activation name per *hidden* layer (length L − 1; empty for L = 1).
      l2: the L2 weight λ.
      backward: ``"simple"`` (§6.3.1's ``E = (Z_L − Y)/N``, from log-softmax, finite for any logits)
        or ``"general"`` (eq. 38–40 through ``∇s = diag(s) − ssᵀ``; kept to show that both agree,
        it divides by ``Z_L`` and so overflows when a probability underflows to zero).
      head: ``"plain"`` (the ``N × d_L`` logits are formed and kept) or ``"fused"``: the last layer is
        :func:`mdc_jax.linear_softmax_cross_entropy`'s blocked §6.3.1, which keeps only each row's
        log-sum-exp and recomputes the logits block by block in the backward (for many classes, e.g. a
        vocabulary). ``"fused"`` uses the simple ``E``.
      block_size: the fused head's blocks, as in :func:`mdc_jax.linear_softmax_cross_entropy`
        (``head="fused"`` only; ``None`` for its default).

    Returns:
      The scalar loss; ``jax.grad`` returns cotangents for all ``W_j``, ``b_j``, ``X``, ``Y``, ``l2``.

    Raises:
      ValueError: at trace time, for inconsistent shapes, integer ``Y`` or unknown names; for a concrete
        ``Y`` with negative or non-finite entries.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.3.5, §6.3 (eq. 37–40), §6.3.1 (eq. 41–44).
    """
    fn = "fcnn_classification_loss"
    v.require_choice(fn, "backward", backward, ("simple", "general"))
    fused = linear_ce.check_head(fn, head, block_size)  # the blocks once the shapes are known
    if fused and backward != "simple":
        v.fail(fn, f"head='fused' applies §6.3.1's simple E block by block; backward={backward!r} needs the "
                   f"plain head.")
    n_hidden = len(params) - 1 if isinstance(params, (list, tuple)) else None
    pairs, acts = check_inputs(fn, params, X, Y, activations, l2, n_activations=n_hidden, task="classification",
                               labels=fused)
    L = len(pairs)
    K = v.require_classes(fn, f"params[{L - 1}][0] (W_{L})", pairs[-1][0].shape, "d_L")
    l2 = v.as_penalty(l2, jnp.result_type(X))
    if fused:
        blocks = linear_ce.resolve_blocks(fn, block_size, X.shape[0], K)
        return _classification_fused(acts, blocks, pairs, X, jnp.asarray(Y), l2)
    return _classification(backward, acts, pairs, X, Y, l2)


def fcnn_forward(params: Params, X: jax.Array, activations: Sequence[str]) -> jax.Array:
    """The forward pass of §6.2 alone, ``Z_L``: for evaluation and prediction.

    .. math::

       Z_0 = X,\\qquad A_j = Z_{j-1}W_j + \\mathbf 1b_j^T,\\qquad Z_j = f_j(A_j),\\quad j = 1..L.

    The same computation as the losses' forward, in plain JAX (differentiable by autodiff; train
    through :func:`fcnn_regression_loss` or :func:`fcnn_classification_loss`). For a classifier's
    logits ``A_L`` pass the hidden activations followed by ``"identity"``.

    Args:
      params: ``[(W_1, b_1), ..., (W_L, b_L)]`` as in :func:`fcnn_regression_loss`.
      X: inputs, ``(N, d_0)``.
      activations: one registered activation name per layer (length L).

    Returns:
      ``Z_L``, ``(N, d_L)``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.2.
    """
    fn = "fcnn_forward"
    n_layers = len(params) if isinstance(params, (list, tuple)) else None
    pairs, acts = check_inputs(fn, params, X, None, activations, None, n_activations=n_layers)
    return jnp.asarray(hidden_forward(pairs, X, acts)[0][-1])  # a jax.Array even for NumPy input
