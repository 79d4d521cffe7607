"""Reference for the curvature rules: the GGN and the Hessian as explicit matrices, by autodiff.

The parameters are flattened row-major in mdc-jax's layout (FCNN: ``W_1, b_1, W_2, b_2, …``; RNN:
``W, U, b, V, c``), as :func:`jax.flatten_util.ravel_pytree` does. Then

    G = (1/N) Σ_i J_iᵀ H_i J_i,     J_i = ∂o_i/∂θ (``jax.jacfwd`` of the plain forward),

with ``o_i`` example ``i``'s outputs (the logits ``a_{L,i}`` of a classifier, ``z_{L,i} = f_L(a_{L,i})`` of a
regressor, every ``o_{t,i}`` of the RNN) and ``H_i`` the Hessian of ``ℓ_i`` with respect to them
(``(1ᵀy)(diag p − ppᵀ)`` per output row, ``I`` for regression). Every quantity of ``mdc_jax.curvature`` is
read off these matrices (its diagonal, its blocks, ``G·v``), or, for the Kronecker factors, computed from
their definitions. The losses carry no L2 penalty (its curvature is ``λI``). Explicit ``P × P`` matrices:
for the tests' small shapes only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..activations import Activation, get_activation
from ..rules.rnn import RNNParams
from .fcnn import fcnn_classification_loss, fcnn_regression_loss
from .rnn import rnn_forward

# --------------------------------------------------------------------------------------------
# Outputs and output Hessians


def fcnn_layer_inputs(params, X, activations):
    """``[Z_0, Z_1, …]``: ``Z_0 = X``, ``Z_j = f_j(Z_{j−1}W_j + 1b_jᵀ)`` for as many layers as activations."""
    Zs = [X]
    for (W, b), name in zip(params, activations, strict=False):
        act = name if isinstance(name, Activation) else get_activation(name)
        Zs.append(act.fn(Zs[-1] @ W + b[None, :]))
    return Zs


def fcnn_outputs(params, X, activations, task="classification"):
    """The outputs the GGN splits at, ``(N, d_L)``: the logits ``A_L`` (classification; ``activations`` are
    the hidden layers') or ``Z_L = f_L(A_L)`` (regression; one activation per layer)."""
    if task == "classification":
        W, b = params[-1]
        return fcnn_layer_inputs(params[:-1], X, activations)[-1] @ W + b[None, :]
    return fcnn_layer_inputs(params, X, activations)[-1]


def rnn_states(params, Z0, X):
    """``Z_1, …, Z_τ`` as ``(τ, N, H)``: the reference forward with ``V = I``, ``c = 0`` outputs the states."""
    W = params[0]
    H = W.shape[0]
    return rnn_forward(RNNParams(*params)._replace(V=jnp.eye(H, dtype=W.dtype), c=jnp.zeros(H, W.dtype)), Z0, X)[1]


def output_hessians(task, O, Y):
    """``H`` for every output row, ``(..., K, K)``: ``(1ᵀy)(diag p − ppᵀ)``, ``p = softmax(o)``
    (classification), ``I`` (regression)."""
    K = O.shape[-1]
    if task == "regression":
        return jnp.broadcast_to(jnp.eye(K, dtype=O.dtype), (*O.shape, K))
    P = jax.nn.softmax(O, axis=-1)
    diag = jnp.vectorize(jnp.diag, signature="(k)->(k,k)")(P)
    return jnp.sum(Y, axis=-1)[..., None, None] * (diag - P[..., :, None] * P[..., None, :])


# --------------------------------------------------------------------------------------------
# Explicit GGN and Hessian


def _batch_ggn(jac, H):
    """Example ``i``'s ``(1/N) Σ_t J_{t,i}ᵀ H_{t,i} J_{t,i}``, ``(N, P, P)``, from ``jac`` ``(τ, N, K, P)`` and
    ``H`` ``(τ, N, K, K)`` (``ℓ_i`` is a sum over the steps: ``H_i`` is block-diagonal in ``t``)."""
    return jnp.einsum("tikp,tikl,tilq->ipq", jac, H, jac) / jac.shape[1]


def fcnn_batch_ggn(params, X, Y, activations, *, task="classification"):
    """Each example's ``(1/N) J_iᵀ H_i J_i``, ``(N, P, P)``; their sum is ``G``."""
    theta, unravel = ravel_pytree(params)
    outputs = lambda th: fcnn_outputs(unravel(th), X, activations, task)
    return _batch_ggn(jax.jacfwd(outputs)(theta)[None], output_hessians(task, outputs(theta), Y)[None])


def rnn_batch_ggn(params, Z0, X, Y):
    """Each sequence's ``(1/N) Σ_t J_{t,i}ᵀ H_{t,i} J_{t,i}``, ``(N, P, P)``, over ``θ = (W, U, b, V, c)``."""
    theta, unravel = ravel_pytree(RNNParams(*params))
    outputs = lambda th: rnn_forward(unravel(th), Z0, X)[1]
    return _batch_ggn(jax.jacfwd(outputs)(theta), output_hessians("classification", outputs(theta), Y))


def rnn_batch_structural(params, Z0, X):
    """Each sequence's ``(1/N) Σ_t J_{Z,t,i}ᵀ J_{Z,t,i}``, ``(N, P, P)``, ``J_{Z,t,i} = ∂z_{t,i}/∂θ``: their sum is
    the hidden states' Gauss–Newton matrix ``S`` of Martens & Sutskever's structural damping, the GGN of
    ``(1/(2N)) Σ_{t,i} ‖z_{t,i}(θ) − z_{t,i}(θ_0)‖²`` at ``θ_0`` (output Hessian ``I``; ``V``, ``c`` columns zero)."""
    theta, unravel = ravel_pytree(RNNParams(*params))
    states = lambda th: rnn_states(unravel(th), Z0, X)
    Z = states(theta)
    return _batch_ggn(jax.jacfwd(states)(theta), output_hessians("regression", Z, Z))


def fcnn_hessian(params, X, Y, activations, *, task="classification"):
    """The Hessian of ``J`` (no penalty), ``(P, P)``, by ``jax.hessian`` of the reference loss."""
    theta, unravel = ravel_pytree(params)
    loss = fcnn_classification_loss if task == "classification" else fcnn_regression_loss
    return jax.hessian(lambda th: loss(unravel(th), X, Y, activations, 0.0))(theta)


# --------------------------------------------------------------------------------------------
# Reading the matrices back in the parameters' structure


def as_params(vector, params):
    """A flat vector ``(P,)`` in the structure and shapes of ``params``."""
    return ravel_pytree(params)[1](vector)


def diagonal(G, params):
    """``diag(G)``, each leaf shaped like its parameter."""
    return as_params(jnp.diag(G), params)


def batch_diagonal(Gs, params):
    """``diag`` of each example's ``Gs[i]``, each leaf ``(N, *param.shape)``."""
    return jax.vmap(lambda G: diagonal(G, params))(Gs)


def blocks(G, params):
    """``G``'s diagonal block of each parameter (``size × size``, row-major), in the structure of ``params``."""
    leaves, treedef = jax.tree.flatten(params)
    ends = np.cumsum([x.size for x in leaves])
    return jax.tree.unflatten(treedef, [G[e - x.size:e, e - x.size:e] for x, e in zip(leaves, ends)])


def ggn_vp(G, params, tangents):
    """``G·v`` in the structure of ``params``, ``v`` the flattened ``tangents``."""
    return as_params(G @ ravel_pytree(tangents)[0], params)


def ggn_gram(G, stacked):
    """``Vᵀ G V`` ``(k, k)``, column ``a`` of ``V`` the flattened slice ``a`` of ``stacked`` (tangents stacked on a
    leading axis, each leaf ``(k, *param.shape)``)."""
    V = jax.vmap(lambda t: ravel_pytree(t)[0])(stacked).T
    return V.T @ (G @ V)


# --------------------------------------------------------------------------------------------
# Kronecker factors from their definitions


def fcnn_kflr(params, X, G, activations):
    """Per layer ``((A_j, B_j), B_j)``: ``A_j = (1/N) Z_{j−1}ᵀZ_{j−1}`` from the forward and ``B_j`` = ``G``'s block
    of ``b_j`` (``∂o_i/∂b_j = ∂o_i/∂a_{j,i}``, so that block is ``(1/N) Σ_i Σ_c s_ic s_icᵀ`` for any ``N``)."""
    Zs = fcnn_layer_inputs(params, X, activations)[:len(params)]
    gram = [Z.T @ Z / X.shape[0] for Z in Zs]
    return [((A, B), B) for A, (_, B) in zip(gram, blocks(G, params))]


def rnn_kflr(params, Z0, X, Y):
    """``RNNParams((A_W, B_W), (A_U, B_W), B_W, (A_V, B_V), B_V)`` from their definitions (independence across
    time): ``A = (1/(Nτ)) Σ_{t,i} a aᵀ`` with ``a = Z_{t−1}, X_t, Z_t``; ``B_W = (1/N) Σ_{t,i} J_{t,i}ᵀH_iJ_{t,i}``
    with ``J_{t,i} = ∂o_{·,i}/∂a_{t,i}`` (every output time); ``B_V = (1/N) Σ_{t,i} H_{t,i}``."""
    params = RNNParams(*params)
    tau, N, _ = X.shape
    H = params.W.shape[0]
    Zs = rnn_states(params, Z0, X)
    gram = lambda a: jnp.einsum("tip,tiq->pq", a, a) / (N * tau)
    Hs = output_hessians("classification", rnn_forward(params, Z0, X)[1], Y)  # (τ, N, K, K)
    # ∂O/∂A_t: a perturbation δ_t of A_t enters as an extra input with weight I (X_tU + δ_t I).
    shifted = params._replace(U=jnp.concatenate([params.U, jnp.eye(H, dtype=X.dtype)], axis=0))
    outputs = lambda d: rnn_forward(shifted, Z0, jnp.concatenate([X, d], axis=-1))[1]
    J = jax.jacfwd(outputs)(jnp.zeros((tau, N, H), X.dtype))  # (s, i, k, t, i', h)
    B_W = jnp.einsum("siktih,sikl,siltig->hg", J, Hs, J) / N
    B_V = jnp.sum(Hs, axis=(0, 1)) / N
    Z_prev = jnp.concatenate([Z0[None], Zs[:-1]], axis=0)
    return RNNParams((gram(Z_prev), B_W), (gram(X), B_W), B_W, (gram(Zs), B_V), B_V)
