"""Recurrent neural network: the closed-form backpropagation through time of §6.4.

Seed: ``000_3fed0c34b422d74e.txt``, Part II, §6.4 "Recurrent Neural Network (RNN)" (eq. 45–49 and
the final equations). Samples are rows and time is the leading axis: ``X`` is ``τ × N × D``
(``X_t`` is ``N × D``), ``W`` is ``H × H``, ``U`` is ``D × H``, ``V`` is ``H × K``.

Forward (§6.4, eq. 45)::

    A_t = Z_{t−1} W + X_t U + 1 bᵀ,   Z_t = tanh(A_t),   O_t = Z_t V + 1 cᵀ,   t = 1..τ
    J   = Σ_t J_t,   J_t = −(1/N) ln(s¹(O_t))·Y_t

Backward, §6.4 final equations (``∇_{A_{τ+1}}J = 0``)::

    ∇_{O_t}J = (s¹(O_t) − Y_t) / N
    ∇_{A_t}J = (11ᵀ − tanh²(A_t)) ⊙ (∇_{A_{t+1}}J Wᵀ + ∇_{O_t}J Vᵀ)
    ∇_W J = Σ_t Z_{t−1}ᵀ ∇_{A_t}J      ∇_U J = Σ_t X_tᵀ ∇_{A_t}J      ∇_b J = Σ_t ∇_{A_t}Jᵀ 1
    ∇_V J = Σ_t Z_tᵀ ∇_{O_t}J          ∇_c J = Σ_t ∇_{O_t}Jᵀ 1

As in ``fcnn.py`` we keep the factor ``1ᵀy`` that §6.3.1 drops: ``∇_{O_t}J = (s¹(O_t) ⊙ (Y_t1)1ᵀ − Y_t)/N``,
the seed's formula for probability rows and exact for rows that do not sum to one. ``tanh'`` is
``(1 − Z_t)(1 + Z_t)``, as in the activation registry.

The rule also returns the cotangents the seed does not need, so that it composes with layers before
it (an embedding feeding ``X``) and with truncated BPTT::

    ∇_{Z_0}J = ∇_{A_1}J Wᵀ,   ∇_{X_t}J = ∇_{A_t}J Uᵀ,   ∇_{Y_t}J = −ln(s¹(O_t))/N

and it honours a cotangent ``∇_{Z_τ}`` of the final state (``rnn_loss_and_state``) by starting the
recursion from ``∇_{A_{τ+1}}J Wᵀ := ∇_{Z_τ}``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from ..activations import tanh_derivative
from ..kernels import lead
from . import linear_ce
from .softmax import cross_entropy_error, log_softmax


class RNNParams(NamedTuple):
    """The parameters of §6.4, named as in the paper."""

    W: jax.Array  # (H, H) hidden-to-hidden
    U: jax.Array  # (D, H) input-to-hidden
    b: jax.Array  # (H,)   hidden bias
    V: jax.Array  # (H, K) hidden-to-output
    c: jax.Array  # (K,)   output bias


# --------------------------------------------------------------------------------------------
# Forward and backward of §6.4: the in-package API (the per-example rules use it too)
#
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


def _input_term(X_k, U, b):
    """``X_tU + 1bᵀ`` for a chunk's steps at once; for token ids ``X_tU`` is the rows ``U[x_t]`` (the
    product with the one-hot rows, without forming them)."""
    XU = U.at[_rows(X_k, U.shape[0])].get(mode="fill", fill_value=0) if _is_ids(X_k) else X_k @ U
    return XU + b[None, None, :]


def _rows(ids, D: int):
    """Token ids as rows of U; an id outside ``[0, D)`` (unchecked under ``jit``) becomes ``D``, which the
    gather fills with a zero row and the scatter drops: what the id's one-hot row (all zeros) would give."""
    return jnp.where(ids < 0, D, ids)


def _is_ids(X) -> bool:
    return jnp.issubdtype(X.dtype, jnp.integer)


def _dense_targets(Y_k, K, dtype):
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
        XU = _input_term(X_k, U, b)  # X_tU + 1bᵀ for the chunk's steps at once
        Z, Z_in = jax.lax.scan(lambda Z_prev, XU_t: (state_step(Z_prev, W, XU_t), Z_prev), Z, XU)  # Z_in: Z_{t−1}
        if Y_k is not None:
            Z_out = states_out(Z_in, Z)  # the chunk's Z_t
            logS = output_log_probs(Z_out, V, c)
            J = J - jnp.sum(_dense_targets(Y_k, V.shape[1], logS.dtype) * logS) / N
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
    ids = _is_ids(X)

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
            dU = dU.at[_rows(X_k, U.shape[0]).reshape(-1)].add(G.reshape(-1, G.shape[-1]), mode="drop")
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


def _label_cotangent(Y, dY):
    return np.zeros(Y.shape, jax.dtypes.float0) if jnp.issubdtype(Y.dtype, jnp.integer) else v.cast_like(dY, Y)


# --- the plain head: each chunk's softmax recomputed from its states ------------------------


@jax.custom_vjp
def _rnn(params, Z0, X, Y):
    J, Z_tau, _ = forward(params, Z0, X, Y)
    return J, Z_tau


def _rnn_fwd(params, Z0, X, Y):
    J, Z_tau, Zs = forward(params, Z0, X, Y)
    # Residuals: the hidden states Z_0..Z_τ (Z_τ apart, so the stack needs no concatenation) and
    # the inputs. Z_{t−1} gives ∇_W, Z_t gives tanh' = (1 − Z_t)(1 + Z_t) and ∇_V; nothing else of
    # size τ·N·H or τ·N·K is kept: A_t is not needed, and O_t = Z_tV + 1cᵀ and its softmax are
    # recomputed chunk by chunk in the backward (one matmul per chunk, τ·N·H·K multiply-adds in all).
    return (J, Z_tau), (params, Zs, Z_tau, X, Y)


def _rnn_bwd(res, cts):
    params, Zs, Z_tau, X, Y = res
    gJ, gZ = cts  # cotangents of J and of the final state Z_τ
    V, c = params.V, params.c
    scale = gJ / X.shape[1]  # g/N
    labels = jnp.issubdtype(Y.dtype, jnp.integer)

    def head(Z_out, Y_k, acc):
        dV, dc = acc
        logS = output_log_probs(Z_out, V, c)  # recomputed: ln s¹(O_t)
        H = scale * cross_entropy_error(jnp.exp(logS), _dense_targets(Y_k, V.shape[1], logS.dtype))  # ∇_{O_t}J
        acc = (dV + jnp.einsum("tnh,tnk->hk", Z_out, H),  # Σ_t Z_tᵀ ∇_{O_t}J
               dc + jnp.sum(H, axis=(0, 1)))  # Σ_t ∇_{O_t}Jᵀ 1
        dY = None if labels else -scale * logS  # ∇_{Y_t}J = −ln s¹(O_t)/N (no cotangent for integer labels)
        return H @ V.T, acc, dY

    out = backward(params, Zs, Z_tau, X, gZ, head, chunks(Y, Zs.shape[1]), (jnp.zeros_like(V), jnp.zeros_like(c)))
    dparams = RNNParams(*(v.cast_like(d, p) for d, p in zip((*out.grads, *out.head_acc), params)))
    return dparams, out.dZ0, out.dX, _label_cotangent(Y, None if labels else out.head_out.reshape(Y.shape))


_rnn.defvjp(_rnn_fwd, _rnn_bwd)


# --- the fused head: every state through V by linear_ce's blocked §6.3.1 ----------------------


def _all_states(Zs, Z_tau):
    """Z_1..Z_τ as (τN, H) rows, from the residual Z_0..Z_{τ−1} and Z_τ."""
    return states_out(Zs.reshape(-1, *Z_tau.shape), Z_tau).reshape(-1, Z_tau.shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _rnn_fused(params, Z0, X, Y, blocks):
    return _rnn_fused_fwd(params, Z0, X, Y, blocks)[0]


def _rnn_fused_fwd(params, Z0, X, Y, blocks):
    _J, Z_tau, Zs = forward(params, Z0, X, None)  # the recursion alone: no logits
    targets, soft = linear_ce.as_targets(Y, params.V.shape[1])
    acc = linear_ce.acc_dtype(Z0.dtype)
    lse, losses = linear_ce.forward(_all_states(Zs, Z_tau), params.V, params.c, targets, soft, *blocks, acc)
    J = (jnp.sum(losses) / X.shape[1]).astype(Z0.dtype)  # J = Σ_t J_t, each a mean over the N sequences
    # Residuals: as the plain head's, plus the per-row log-sum-exp of all τN logits (τN floats).
    return (J, Z_tau), (params, Zs, Z_tau, X, Y, lse)


def _rnn_fused_bwd(blocks, res, cts):
    params, Zs, Z_tau, X, Y, lse = res
    gJ, gZ = cts
    targets, soft = linear_ce.as_targets(Y, params.V.shape[1])
    acc = linear_ce.acc_dtype(Z_tau.dtype)
    g = jnp.full(lse.shape, gJ / X.shape[1], acc)  # ∂J/∂ℓ_ti = g/N for every token
    dZ, dV, dc, dT = linear_ce.backward(soft, *blocks, acc, (_all_states(Zs, Z_tau), params.V, params.c, targets, lse), g)
    k = Zs.shape[1]
    HV = chunks(dZ.reshape(X.shape[0], X.shape[1], -1), k)  # ∇_{Z_t}J through V: ∇_{O_t}J Vᵀ, per chunk
    out = backward(params, Zs, Z_tau, X, gZ, lambda Z_out, HV_k, a: (HV_k, a, None), HV, ())
    dparams = RNNParams(*(v.cast_like(d, p) for d, p in zip((*out.grads, dV, dc), params)))
    return dparams, out.dZ0, out.dX, _label_cotangent(Y, dT.reshape(Y.shape) if soft else None)


_rnn_fused.defvjp(_rnn_fused_fwd, _rnn_fused_bwd)


# --------------------------------------------------------------------------------------------
# Public API and input checks


def check_inputs(fn: str, params, Z0, X, Y=None, *, tokens: bool = False):
    """The RNN rules' input checks, at trace time; returns (RNNParams, Z0, X, Y) with the floating ones cast
    to one dtype. ``tokens``: integer ``X`` of shape ``(τ, N)`` (rows of ``U``) and integer ``Y`` of shape
    ``(τ, N)`` (classes) are accepted. Used by the losses and by ``mdc_jax.per_example``."""
    v.require_array(fn, "X", X)
    ids = tokens and jnp.issubdtype(jnp.result_type(X), jnp.integer)
    if ids:
        (tau, N), D = v.require_ndim(fn, "X", X, 2, "(τ, N) of token ids, time-major (or floating (τ, N, D))"), None
    else:
        v.require_floating(fn, "X", X, "Integer token ids are (τ, N)." if tokens else
                           "Embed integer tokens first (or pass jax.nn.one_hot(tokens, D)).")
        tau, N, D = v.require_ndim(fn, "X", X, 3, "(τ, N, D), time-major")
    if tau == 0 or N == 0:
        v.fail(fn, f"X has shape {v.shape_of(X)}; expected at least one time step and one sequence.")
    D, H, K = v.require_rnn_params(fn, params, D)
    params = RNNParams(*params)
    if ids:
        v.require_indices(fn, "X", X, D, "token (row of U)")
    v.require_floating(fn, "Z0", Z0)
    v.require_shape(fn, "Z0", Z0, (N, H), f"(N, H): X's {N} sequences and W's hidden size {H}")
    labels = Y is not None and v.require_labels(
        fn, "Y", Y, (tau, N), v.require_classes(fn, "V", (H, K)), dims="(τ, N, K)",
        why=f"(τ, N, K): X's {tau} steps and {N} sequences, V's {K} columns",
        integer=f"integer labels (τ, N): X's {tau} steps and {N} sequences" if tokens else None,
        hint=f"for integer class labels pass jax.nn.one_hot(labels, {K})")
    floating = [*params, Z0] + ([] if ids else [X]) + ([Y] if Y is not None and not labels else [])
    cast = lambda a: jnp.asarray(a).astype(jnp.result_type(*floating))  # a no-op when the dtypes agree
    return (RNNParams(*map(cast, params)), cast(Z0), jnp.asarray(X) if ids else cast(X),
            None if Y is None else jnp.asarray(Y) if labels else cast(Y))


def _check_head(fn: str, head: str, block_size, X, params):
    """``None`` for the plain head, the (token, vocabulary) blocks of the fused one over the τN states."""
    if linear_ce.check_head(fn, head, block_size):
        return linear_ce.resolve_blocks(fn, block_size, X.shape[0] * X.shape[1], params.V.shape[1])
    return None


def _loss_and_state(params, Z0, X, Y, blocks):
    return _rnn(params, Z0, X, Y) if blocks is None else _rnn_fused(params, Z0, X, Y, blocks)


def rnn_loss_and_state(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array, *, head: str = "plain",
                       block_size=None) -> tuple[jax.Array, jax.Array]:
    """Loss and final hidden state of the RNN of §6.4, with the closed-form backward.

    .. math::

       A_t = Z_{t-1}W + X_tU + \\mathbf 1b^T,\\quad Z_t = \\tanh(A_t),\\quad O_t = Z_tV + \\mathbf 1c^T,
       \\quad J = -\\frac1N\\sum_{t=1}^{\\tau}\\ln(s^1(O_t))\\cdot Y_t.

    For truncated backpropagation through time, differentiate with
    ``jax.value_and_grad(rnn_loss_and_state, has_aux=True)`` and feed the returned ``Z_τ`` to the
    next chunk as its ``Z0``: an aux output is not differentiated, so the gradient path through the
    carried state is cut at the chunk boundary (that is the truncation). Used without ``has_aux``, the
    rule is exact for ``Z_τ`` too: its cotangent enters the recursion as ``∇_{A_{τ+1}}J Wᵀ``, so
    chaining two calls inside one ``jax.grad`` is full BPTT.

    Args:
      params: :class:`RNNParams` ``(W, U, b, V, c)`` of shapes ``(H, H)``, ``(D, H)``, ``(H,)``,
        ``(H, K)``, ``(K,)`` (a plain 5-tuple in that order is accepted).
      Z0: the initial state ``(N, H)``.
      X: inputs ``(τ, N, D)``, time-major: ``X[t]`` holds step ``t + 1`` of all ``N`` sequences; or
        integer token ids ``(τ, N)`` in ``[0, D)``, which stand for one-hot rows: ``X_tU`` is the rows
        ``U[x_t]`` and ``∇_U J`` adds each row of ``∇_{A_t}J`` to row ``x_ti`` (no cotangent for ids).
      Y: targets ``(τ, N, K)``, rows of class probabilities (one-hot or soft), non-negative and finite
        (checked when concrete); or integer class labels ``(τ, N)`` in ``[0, K)``.
      head: ``"plain"`` (each chunk of up to 4 steps forms its ``k·N × K`` logits) or ``"fused"``
        (:func:`mdc_jax.linear_softmax_cross_entropy`'s blocked §6.3.1 over all ``τN`` states: the
        logits exist one block at a time; for large ``K``).
      block_size: the fused head's blocks (see :func:`mdc_jax.linear_softmax_cross_entropy`;
        the token axis is the ``τN`` states); ``None`` for its default. ``head="fused"`` only.

    Returns:
      ``(J, Z_τ)``: the scalar loss and the final state ``(N, H)``. ``jax.grad`` runs the closed-form
      backward and returns cotangents for ``params``, ``Z0``, ``X`` and ``Y``.

    Raises:
      ValueError: at trace time, naming the argument and the shapes, for inconsistent input.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.3.1 (eq. 41–44), §6.4 (eq. 45–49, final equations).
    """
    fn = "rnn_loss_and_state"
    params, Z0, X, Y = check_inputs(fn, params, Z0, X, Y, tokens=True)
    return _loss_and_state(params, Z0, X, Y, _check_head(fn, head, block_size, X, params))


def rnn_loss(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array, *, head: str = "plain",
             block_size=None) -> jax.Array:
    """The RNN loss ``J = −(1/N) Σ_t ln(s¹(O_t))·Y_t`` of §6.4, with the closed-form backward.

    .. math::

       \\nabla_{O_t}J = \\frac1N(s^1(O_t) - Y_t),\\quad
       \\nabla_{A_t}J = (\\mathbf{11}^T - Z_t^{2})\\odot(\\nabla_{A_{t+1}}J\\,W^T + \\nabla_{O_t}J\\,V^T),

       \\nabla_WJ = \\sum_t Z_{t-1}^T\\nabla_{A_t}J,\\quad \\nabla_UJ = \\sum_t X_t^T\\nabla_{A_t}J,\\quad
       \\nabla_bJ = \\sum_t\\nabla_{A_t}J^T\\mathbf 1,\\quad \\nabla_VJ = \\sum_t Z_t^T\\nabla_{O_t}J,\\quad
       \\nabla_cJ = \\sum_t\\nabla_{O_t}J^T\\mathbf 1.

    The backward is a reverse ``lax.scan`` over chunks of up to 4 steps (the largest size ≤ 4 that
    divides ``τ``; a prime above 3 walks step by step), so ``τ`` does not change the compiled program's
    size. It keeps only the hidden states from the forward pass and recomputes the softmax.

    Args:
      params, Z0, X, Y, head, block_size: as in :func:`rnn_loss_and_state`.

    Returns:
      The scalar loss. ``jax.grad`` returns cotangents for every argument: ``params`` (an
      :class:`RNNParams`), ``Z0`` (``∇_{A_1}J Wᵀ``), ``X`` (``∇_{A_t}J Uᵀ`` per step) and ``Y``.

    Raises:
      ValueError: at trace time, for inconsistent shapes or integer ``Y``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4 (final equations).
    """
    params, Z0, X, Y = check_inputs("rnn_loss", params, Z0, X, Y, tokens=True)
    return _loss_and_state(params, Z0, X, Y, _check_head("rnn_loss", head, block_size, X, params))[0]


def rnn_forward(params: RNNParams, Z0: jax.Array, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The forward pass alone, for evaluation and sampling: ``(Z_τ, O)``.

    Args:
      params, Z0, X: as in :func:`rnn_loss_and_state`.

    Returns:
      ``Z_τ`` ``(N, H)`` and the logits ``O`` ``(τ, N, K)`` (``O[t] = Z_{t+1}V + 1cᵀ``); apply
      ``jax.nn.softmax(O, axis=-1)`` for probabilities. Plain JAX: differentiable by autodiff, but
      training should go through :func:`rnn_loss`, which never stacks ``O``.
    """
    params, Z0, X, _ = check_inputs("rnn_forward", params, Z0, X, tokens=True)
    W, U, b, V, c = params

    def step(Z_prev, XU_t):
        Z = state_step(Z_prev, W, XU_t)
        return Z, Z @ V + c[None, :]  # O_t = Z_tV + 1cᵀ

    return jax.lax.scan(step, Z0, _input_term(X, U, b))


def rnn_truncated_bptt_grads(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array, chunk: int, *,
                             head: str = "plain", block_size=None) -> tuple[jax.Array, RNNParams, jax.Array]:
    """Truncated BPTT with one parameter set: the chunk losses and their summed gradients.

    The sequence is cut into chunks of ``chunk`` steps (the last may be shorter); each chunk starts
    from the previous chunk's final state, with the gradient path through that state cut. Returns
    ``(Σ_k J_k, Σ_k ∇_params J_k, Z_τ)``; the summed loss equals :func:`rnn_loss` (only gradients are
    truncated). The chunks run in one ``lax.scan``, so the program size does not grow with ``τ``.
    To update the parameters after every chunk instead, call
    ``jax.value_and_grad(rnn_loss_and_state, has_aux=True)`` once per chunk (see ``docs/rnn.md``).

    Args:
      params, Z0, X, Y, head, block_size: as in :func:`rnn_loss_and_state`.
      chunk: steps per chunk, a positive int (static: a Python or NumPy int, or a concrete integer 0-d
        array; under ``jax.jit`` mark it static).

    Returns:
      ``(J, grads, Z_τ)``, ``grads`` an :class:`RNNParams`.
    """
    fn = "rnn_truncated_bptt_grads"
    chunk = v.require_static_int(fn, "chunk", chunk, what="a positive int (steps per chunk)",
                                 static_why=", as it fixes the shapes of the chunks: pass a Python int, e.g. "
                                            "jax.jit(rnn_truncated_bptt_grads, static_argnames='chunk')")
    params, Z0, X, Y = check_inputs(fn, params, Z0, X, Y, tokens=True)
    _check_head(fn, head, block_size, X, params)
    tau = X.shape[0]

    def rule(X_k):  # the fused head's blocks follow the chunk's τ_k·N rows
        blocks = _check_head(fn, head, block_size, X_k, params)
        if blocks is None:
            return _rnn_fwd, _rnn_bwd
        return functools.partial(_rnn_fused_fwd, blocks=blocks), functools.partial(_rnn_fused_bwd, blocks)
    full, rest = divmod(tau, chunk)

    def one_chunk(carry, xs):
        Z, J, grads = carry
        fwd, bwd = rule(xs[0])
        (J_k, Z_next), res = fwd(params, Z, *xs)
        # The closed-form backward, called directly: cotangent 1 for J_k and 0 for the chunk's final
        # state, which is the truncation (the next chunk's gradient does not flow back into this one).
        g = bwd(res, (jnp.ones_like(J_k), jnp.zeros_like(Z_next)))[0]
        return (Z_next, J + J_k, jax.tree.map(jnp.add, grads, g)), None

    carry = (Z0, jnp.zeros((), Z0.dtype), jax.tree.map(jnp.zeros_like, params))
    if full:
        split = lambda A: A[:full * chunk].reshape(full, chunk, *A.shape[1:])
        carry, _ = jax.lax.scan(one_chunk, carry, (split(X), split(Y)))
    if rest:
        carry, _ = one_chunk(carry, (X[full * chunk:], Y[full * chunk:]))
    Z, J, grads = carry
    return J, grads, Z
