"""§6.4's forward and closed-form backward through time, chunk by chunk: the in-package API.

Seed: ``000_3fed0c34b422d74e.txt``, Part II, §6.4 (eq. 45 and the final equations). The two recursions::

    Z_t = tanh(A_t),   A_t = Z_{t−1} W + X_t U + 1 bᵀ
    ∇_{A_t}J = (11ᵀ − Z_t²) ⊙ (∇_{A_{t+1}}J Wᵀ + ∇_{O_t}J Vᵀ)

written once here and used by the rule (:mod:`.rnn`), its checkpointed segments (:mod:`.rnn_segments`), the
per-example rules and the curvature. The output layer enters the backward through a ``head`` callback
(``∇_{O_t}J Vᵀ`` per chunk), so the plain softmax, the fused head and the curvature's products share it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from ..activations import tanh_derivative
from ..kernels import lead
from .softmax import log_softmax


class RNNParams(NamedTuple):
    """The parameters of §6.4, named as in the paper."""

    W: jax.Array  # (H, H) hidden-to-hidden
    U: jax.Array  # (D, H) input-to-hidden
    b: jax.Array  # (H,)   hidden bias
    V: jax.Array  # (H, K) hidden-to-output
    c: jax.Array  # (K,)   output bias


# --------------------------------------------------------------------------------------------
# Both passes walk the sequence in chunks of k ≤ CHUNK steps (k divides τ). Only the recursions
# Z_{t−1} ↦ Z_t and ∇_{A_{t+1}}J ↦ ∇_{A_t}J run step by step; everything that does not depend on the
# previous step (X_tU, O_t and its softmax, ∇_{O_t}J Vᵀ, and the sums over t of ∇_W, ∇_U, ∇_V) is
# one matmul over the chunk's k·N rows. Why k = 4, and what it costs: docs/rnn.md.

CHUNK = 4  # the largest chunk of steps


def chunk_size(tau: int) -> int:
    """The steps per chunk for a sequence of ``τ`` steps: the largest ``k ≤ CHUNK`` dividing ``τ`` (1 for a
    prime above ``CHUNK``: correct, without the batching)."""
    return max(k for k in range(1, CHUNK + 1) if tau % k == 0)


def chunks(A, k: int):
    """``A``'s leading (time) axis cut into chunks of ``k`` steps: ``(τ, ...)`` to ``(τ/k, k, ...)``."""
    return A.reshape(A.shape[0] // k, k, *A.shape[1:])


def unchunk(A):
    """The inverse of :func:`chunks`: ``(τ/k, k, ...)`` to ``(τ, ...)`` (any two leading axes merged)."""
    return A.reshape(-1, *A.shape[2:])


def state_step(Z_prev, W, XU_t):
    """One step of §6.4's forward: ``Z_t = tanh(A_t)``, ``A_t = Z_{t−1}W + X_tU + 1bᵀ`` (``XU_t`` holds
    ``X_tU + 1bᵀ``)."""
    return jnp.tanh(Z_prev @ W + XU_t)


def output_log_probs(Z_out, V, c):
    """``ln s¹(O_t)``, ``O_t = Z_tV + 1cᵀ``, for a stack of states ``Z_out`` ``(k, N, H)``: the output layer."""
    return log_softmax(Z_out @ V + c[None, None, :])


def states_out(Z_in, Z_last):
    """The states ``Z_t`` from the inputs ``Z_{t−1}`` of a run of steps (leading axis) and its last state."""
    return jnp.concatenate([Z_in[1:], Z_last[None]])


def bptt_step(R, Z_t, HV_t):
    """One step of §6.4's recursion: ``∇_{A_t}J = (11ᵀ − Z_t²) ⊙ (∇_{A_{t+1}}J Wᵀ + ∇_{O_t}J Vᵀ)``, with
    ``R = ∇_{A_{t+1}}J Wᵀ`` and ``HV_t = ∇_{O_t}J Vᵀ``; ``tanh'`` from ``Z_t = tanh(A_t)`` (broadcast over any
    leading column axes of ``R``)."""
    return lead(tanh_derivative(Z_t), R) * (R + HV_t)


class Backward(NamedTuple):
    """What :func:`backward` returns."""

    grads: tuple | None  # (∇_W, ∇_U, ∇_b); None with per_step
    dZ0: jax.Array  # ∇_{Z_0}J = ∇_{A_1}J Wᵀ
    dX: jax.Array | None  # ∇_X J (float0 for token ids); None with per_step
    head_acc: object  # the head's accumulated quantities
    head_out: object  # the head's per-chunk outputs, stacked
    steps: jax.Array | None  # every ∇_{A_t}J, (τ/k, k, N, H), with per_step; else None


def input_term(X_k, U, b):
    """``X_tU + 1bᵀ`` for a chunk's steps at once; for token ids ``X_tU`` is the rows ``U[x_t]`` (the
    product with the one-hot rows, without forming them)."""
    XU = U.at[id_rows(X_k, U.shape[0])].get(mode="fill", fill_value=0) if is_ids(X_k) else X_k @ U
    return XU + b[None, None, :]


def id_rows(ids, D: int):
    """Token ids as rows of U; an id outside ``[0, D)`` (unchecked under ``jit``) becomes ``D``, which the
    gather fills with a zero row and the scatter drops: what the id's one-hot row (all zeros) would give."""
    return jnp.where(ids < 0, D, ids)


def is_ids(X) -> bool:
    """Whether ``X`` holds token ids (integer, ``(τ, N)``) rather than input rows."""
    return jnp.issubdtype(X.dtype, jnp.integer)


def dense_targets(Y_k, K, dtype):
    """A chunk's target rows: ``Y`` itself, or the one-hot rows of integer labels."""
    if jnp.issubdtype(Y_k.dtype, jnp.integer):
        return jax.nn.one_hot(Y_k, K, dtype=dtype)
    return Y_k


def forward(params, Z0, X, Y):
    """§6.4's forward: J, Z_τ and each step's input state Z_{t−1}, shaped (τ/k, k, N, H) (the backward's residual).

    The loss is summed chunk by chunk, so no ``τ × N × K`` logits are ever stacked. ``Y=None`` runs
    the recursion alone (J = 0): the fused head forms the loss from the states afterwards.
    """
    W, U, b, V, c = params
    N = X.shape[1]

    def chunk(carry, xs):
        Z, J = carry
        X_k, Y_k = xs
        XU = input_term(X_k, U, b)  # X_tU + 1bᵀ for the chunk's steps at once
        Z, Z_in = jax.lax.scan(lambda Z_prev, XU_t: (state_step(Z_prev, W, XU_t), Z_prev), Z, XU)  # Z_in: Z_{t−1}
        if Y_k is not None:
            Z_out = states_out(Z_in, Z)  # the chunk's Z_t
            logS = output_log_probs(Z_out, V, c)
            J = J - jnp.sum(dense_targets(Y_k, V.shape[1], logS.dtype) * logS) / N
        return (Z, J), Z_in

    k = chunk_size(X.shape[0])
    J0 = jnp.zeros((), Z0.dtype)
    Y_chunks = None if Y is None else chunks(Y, k)
    (Z_tau, J), Zs = jax.lax.scan(chunk, (Z0, J0), (chunks(X, k), Y_chunks))
    return J, Z_tau, Zs


def backward(params, Zs, Z_tau, X, gZ, head, head_xs, head_acc, *, per_step: bool = False, tap=None):
    """The §6.4 recursion for ∇_{A_t}J, walking the chunks back from the last (:func:`bptt_step` per step).

    ``head(Z_out, head_x, head_acc) -> (∇_{O_t}J Vᵀ, head_acc, head_out)`` supplies each chunk's
    ``∇_{Z_t}`` from the output layer (and accumulates that layer's own quantities); ``gZ`` is ``∇_{Z_τ}``.
    Returns a :class:`Backward`. With ``per_step`` the sums over ``t`` and ``∇_X`` are skipped (``None``)
    and ``steps`` is the ``(τ/k, k, N, H)`` stack of every ``∇_{A_t}J`` (the per-example rows). With
    ``tap(head_acc, G, Z_in, X_k) -> head_acc`` the sums are skipped too and each chunk's ``∇_{A_t}`` stack
    ``G`` goes to ``tap`` instead (the curvature factors accumulate there, never all steps at once).
    Both carry any leading axes of ``gZ`` and ``HV`` (columns back-propagated together) through to ``G``.
    """
    W, U, b = params.W, params.U, params.b
    ids = is_ids(X)

    def chunk(carry, xs):
        # Going back from the last chunk: Z = the chunk's last state, R = ∇_{A_{t+1}}J Wᵀ for the
        # step after the chunk (∇_{Z_τ} after the last one), then the running sums.
        Z, R, dW, dU, db, acc = carry
        Z_in, X_k, head_x = xs  # Z_in: the chunk's Z_{t−1}
        Z_out = states_out(Z_in, Z)  # the chunk's Z_t
        HV, acc, head_out = head(Z_out, head_x, acc)

        def step(R, xs):
            G = bptt_step(R, *xs)  # ∇_{A_t}J
            return G @ W.T, G

        R, G = jax.lax.scan(step, R, (Z_out, HV), reverse=True)
        if per_step or tap is not None:
            acc = acc if tap is None else tap(acc, G, Z_in, X_k)
            return (Z_in[0], R, dW, dU, db, acc), (None, head_out, G if per_step else None)
        if ids:  # Σ_t X_tᵀ ∇_{A_t}J with one-hot X_t: row x_ti of U gets row i of ∇_{A_t}J
            dU = dU.at[id_rows(X_k, U.shape[0]).reshape(-1)].add(G.reshape(-1, G.shape[-1]), mode="drop")
        else:
            dU = dU + jnp.einsum("tnd,tng->dg", X_k, G)  # Σ_t X_tᵀ ∇_{A_t}J
        carry = (Z_in[0], R,
                 dW + jnp.einsum("tnh,tng->hg", Z_in, G),  # Σ_t Z_{t−1}ᵀ ∇_{A_t}J
                 dU,
                 db + jnp.sum(G, axis=(0, 1)),  # Σ_t ∇_{A_t}Jᵀ 1
                 acc)
        return carry, (None if ids else G @ U.T, head_out, None)  # ∇_{X_t}J = ∇_{A_t}J Uᵀ

    k = Zs.shape[1]
    init = (Z_tau, gZ.astype(Z_tau.dtype), jnp.zeros_like(W), jnp.zeros_like(U), jnp.zeros_like(b), head_acc)
    (_, dZ0, dW, dU, db, acc), (dX, head_out, steps) = jax.lax.scan(chunk, init, (Zs, chunks(X, k), head_xs),
                                                                    reverse=True)
    dZ0 = v.cast_like(dZ0, Z_tau)  # ∇_{Z_0}J = ∇_{A_1}J Wᵀ: the R left after the first step
    if per_step or tap is not None:
        return Backward(None, dZ0, None, acc, head_out, steps)
    dX = np.zeros(X.shape, jax.dtypes.float0) if ids else v.cast_like(dX.reshape(X.shape), X)
    return Backward((dW, dU, db), dZ0, dX, acc, head_out, None)
