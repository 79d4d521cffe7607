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

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import _validation as v
from .softmax import log_softmax


class RNNParams(NamedTuple):
    """The parameters of §6.4, named as in the paper."""

    W: jax.Array  # (H, H) hidden-to-hidden
    U: jax.Array  # (D, H) input-to-hidden
    b: jax.Array  # (H,)   hidden bias
    V: jax.Array  # (H, K) hidden-to-output
    c: jax.Array  # (K,)   output bias


# --------------------------------------------------------------------------------------------
# Forward and backward of §6.4
#
# Both passes walk the sequence in chunks of k ≤ _CHUNK steps (k divides τ). Only the recursions
# Z_{t−1} ↦ Z_t and ∇_{A_{t+1}}J ↦ ∇_{A_t}J run step by step; everything that does not depend on the
# previous step (X_tU, O_t and its softmax, ∇_{O_t}J Vᵀ, and the sums over t of ∇_W, ∇_U, ∇_V) is
# one matmul over the chunk's k·N rows, which runs faster than k matmuls over N rows. The cost is a
# few k × N × H buffers (with k = 4 about 5 MiB in the benchmark case; see docs/rnn.md). τ with
# no divisor in 2..4 (a prime) runs with k = 1: correct, but without the batching.

_CHUNK = 4


def _chunk_size(tau: int) -> int:
    return max(k for k in range(1, _CHUNK + 1) if tau % k == 0)


def _chunks(A, k):
    return A.reshape(A.shape[0] // k, k, *A.shape[1:])


def _forward(params, Z0, X, Y):
    """J, Z_τ and each step's input state Z_{t−1}, shaped (τ/k, k, N, H) (the backward's residual).

    The loss is summed chunk by chunk, so no ``τ × N × K`` logits are ever stacked.
    """
    W, U, b, V, c = params
    N = X.shape[1]

    def chunk(carry, xs):
        Z, J = carry
        X_k, Y_k = xs
        XU = X_k @ U + b[None, None, :]  # X_tU + 1bᵀ for the chunk's steps at once

        def step(Z_prev, XU_t):
            return jnp.tanh(Z_prev @ W + XU_t), Z_prev  # Z_t = tanh(A_t), A_t = Z_{t−1}W + X_tU + 1bᵀ

        Z, Z_in = jax.lax.scan(step, Z, XU)  # Z_in: the chunk's Z_{t−1}
        Z_out = jnp.concatenate([Z_in[1:], Z[None]])  # the chunk's Z_t
        logS = log_softmax(Z_out @ V + c[None, None, :])  # ln s¹(O_t), O_t = Z_tV + 1cᵀ
        return (Z, J - jnp.sum(Y_k * logS) / N), Z_in

    k = _chunk_size(X.shape[0])
    J0 = jnp.zeros((), jnp.result_type(Z0, X, Y, *params))
    (Z_tau, J), Zs = jax.lax.scan(chunk, (Z0, J0), (_chunks(X, k), _chunks(Y, k)))
    return J, Z_tau, Zs


@jax.custom_vjp
def _rnn(params, Z0, X, Y):
    J, Z_tau, _ = _forward(params, Z0, X, Y)
    return J, Z_tau


def _rnn_fwd(params, Z0, X, Y):
    J, Z_tau, Zs = _forward(params, Z0, X, Y)
    # Residuals: the hidden states Z_0..Z_τ (Z_τ apart, so the stack needs no concatenation) and
    # the inputs. Z_{t−1} gives ∇_W, Z_t gives tanh' = (1 − Z_t)(1 + Z_t) and ∇_V; nothing else of
    # size τ·N·H or τ·N·K is kept: A_t is not needed, and O_t = Z_tV + 1cᵀ and its softmax are
    # recomputed chunk by chunk in the backward (one matmul per chunk, τ·N·H·K multiply-adds in all).
    return (J, Z_tau), (params, Zs, Z_tau, X, Y)


def _rnn_bwd(res, cts):
    params, Zs, Z_tau, X, Y = res
    gJ, gZ = cts  # cotangents of J and of the final state Z_τ
    W, U, _b, V, c = params
    scale = gJ / X.shape[1]  # g/N

    def chunk(carry, xs):
        # Going back from the last chunk: Z = the chunk's last state, R = ∇_{A_{t+1}}J Wᵀ for the
        # step after the chunk (∇_{Z_τ} after the last one), then the running sums.
        Z, R, dW, dU, db, dV, dc = carry
        Z_in, X_k, Y_k = xs  # Z_in: the chunk's Z_{t−1}
        Z_out = jnp.concatenate([Z_in[1:], Z[None]])  # the chunk's Z_t
        logS = log_softmax(Z_out @ V + c[None, None, :])  # recomputed: ln s¹(O_t)
        H = scale * (jnp.exp(logS) * jnp.sum(Y_k, axis=-1, keepdims=True) - Y_k)  # ∇_{O_t}J

        def step(R, xs):
            Z_t, HV_t = xs
            G = (1 - Z_t) * (1 + Z_t) * (R + HV_t)  # ∇_{A_t}J = (11ᵀ − Z_t²) ⊙ (∇_{A_{t+1}}J Wᵀ + ∇_{O_t}J Vᵀ)
            return G @ W.T, G

        R, G = jax.lax.scan(step, R, (Z_out, H @ V.T), reverse=True)
        carry = (Z_in[0], R,
                 dW + jnp.einsum("tnh,tng->hg", Z_in, G),  # Σ_t Z_{t−1}ᵀ ∇_{A_t}J
                 dU + jnp.einsum("tnd,tng->dg", X_k, G),  # Σ_t X_tᵀ ∇_{A_t}J
                 db + jnp.sum(G, axis=(0, 1)),  # Σ_t ∇_{A_t}Jᵀ 1
                 dV + jnp.einsum("tnh,tnk->hk", Z_out, H),  # Σ_t Z_tᵀ ∇_{O_t}J
                 dc + jnp.sum(H, axis=(0, 1)))  # Σ_t ∇_{O_t}Jᵀ 1
        return carry, (G @ U.T, -scale * logS)  # ∇_{X_t}J = ∇_{A_t}J Uᵀ,  ∇_{Y_t}J = −ln s¹(O_t)/N

    k = Zs.shape[1]
    init = (Z_tau, gZ.astype(Z_tau.dtype), *(jnp.zeros_like(p) for p in params))
    (_, dZ0, *dparams), (dX, dY) = jax.lax.scan(chunk, init, (Zs, _chunks(X, k), _chunks(Y, k)), reverse=True)
    dparams = RNNParams(*(v.cast_like(d, p) for d, p in zip(dparams, params)))
    # ∇_{Z_0}J = ∇_{A_1}J Wᵀ: the R left after the first step
    return dparams, v.cast_like(dZ0, Z_tau), v.cast_like(dX.reshape(X.shape), X), v.cast_like(dY.reshape(Y.shape), Y)


_rnn.defvjp(_rnn_fwd, _rnn_bwd)


# --------------------------------------------------------------------------------------------
# Public API and input checks


def _check(fn: str, params, Z0, X, Y=None):
    """Validates shapes at trace time; returns (RNNParams, Z0, X, Y) cast to one floating dtype."""
    if not isinstance(params, (list, tuple)) or len(params) != 5:
        v.fail(fn, f"params must be an RNNParams(W, U, b, V, c) (or a 5-tuple in that order); got "
                   f"{type(params).__name__}" + (f" of length {len(params)}" if isinstance(params, (list, tuple)) else "") + ".")
    params = RNNParams(*params)
    for name, p in zip(RNNParams._fields, params):
        v.require_floating(fn, name, p)
    v.require_floating(fn, "X", X, "Embed integer tokens first (or pass jax.nn.one_hot(tokens, D)).")
    tau, N, D = v.require_ndim(fn, "X", X, 3, "(τ, N, D), time-major")
    if tau == 0 or N == 0:
        v.fail(fn, f"X has shape {(tau, N, D)}; expected at least one time step and one sequence.")
    H = v.require_ndim(fn, "W", params.W, 2, "(H, H)")[0]
    v.require_shape(fn, "W", params.W, (H, H), "hidden-to-hidden weights must be square")
    v.require_ndim(fn, "U", params.U, 2, "(D, H)")
    v.require_shape(fn, "U", params.U, (D, H), f"rows: X's feature size D = {D}; columns: W's hidden size H = {H}")
    v.require_shape(fn, "b", params.b, (H,), f"one bias per hidden unit, H = {H}")
    K = v.require_ndim(fn, "V", params.V, 2, "(H, K)")[1]
    v.require_shape(fn, "V", params.V, (H, K), f"rows: W's hidden size H = {H}")
    v.require_shape(fn, "c", params.c, (K,), f"one bias per column of V, K = {K}")
    v.require_floating(fn, "Z0", Z0)
    v.require_shape(fn, "Z0", Z0, (N, H), f"(N, H): X's {N} sequences and W's hidden size {H}")
    arrays = [*params, Z0, X]
    if Y is not None:
        if K == 0:
            v.fail(fn, f"V has shape {(H, K)}; expected at least one column (K >= 1 classes for the softmax).")
        v.require_array(fn, "Y", Y)
        dtype = jnp.result_type(Y)
        if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
            v.fail(fn, f"Y has dtype {dtype} and shape {v.shape_of(Y)}; expected floating rows of probabilities "
                       f"of shape (τ, N, K) = ({tau}, {N}, {K}). For integer class labels pass "
                       f"jax.nn.one_hot(labels, {K}).")
        v.require_floating(fn, "Y", Y)
        v.require_shape(fn, "Y", Y, (tau, N, K), f"(τ, N, K): X's {tau} steps and {N} sequences, V's {K} columns")
        v.require_label_rows(fn, "Y", Y)
        arrays.append(Y)
    dtype = jnp.result_type(*arrays)
    cast = [jnp.asarray(a).astype(dtype) for a in arrays]  # a no-op when the dtypes agree
    return RNNParams(*cast[:5]), cast[5], cast[6], (cast[7] if Y is not None else None)


def rnn_loss_and_state(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array) -> tuple[jax.Array, jax.Array]:
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
      X: inputs ``(τ, N, D)``, time-major: ``X[t]`` holds step ``t + 1`` of all ``N`` sequences.
      Y: targets ``(τ, N, K)``, rows of class probabilities (one-hot or soft), non-negative and finite
        (checked when concrete). Integer labels are rejected; convert them with ``jax.nn.one_hot``.

    Returns:
      ``(J, Z_τ)``: the scalar loss and the final state ``(N, H)``. ``jax.grad`` runs the closed-form
      backward and returns cotangents for ``params``, ``Z0``, ``X`` and ``Y``.

    Raises:
      ValueError: at trace time, naming the argument and the shapes, for inconsistent input.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.3.1 (eq. 41–44), §6.4 (eq. 45–49, final equations).
    """
    params, Z0, X, Y = _check("rnn_loss_and_state", params, Z0, X, Y)
    return _rnn(params, Z0, X, Y)


def rnn_loss(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array) -> jax.Array:
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
      params, Z0, X, Y: as in :func:`rnn_loss_and_state`.

    Returns:
      The scalar loss. ``jax.grad`` returns cotangents for every argument: ``params`` (an
      :class:`RNNParams`), ``Z0`` (``∇_{A_1}J Wᵀ``), ``X`` (``∇_{A_t}J Uᵀ`` per step) and ``Y``.

    Raises:
      ValueError: at trace time, for inconsistent shapes or integer ``Y``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4 (final equations).
    """
    params, Z0, X, Y = _check("rnn_loss", params, Z0, X, Y)
    return _rnn(params, Z0, X, Y)[0]


def rnn_forward(params: RNNParams, Z0: jax.Array, X: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The forward pass alone, for evaluation and sampling: ``(Z_τ, O)``.

    Args:
      params, Z0, X: as in :func:`rnn_loss_and_state`.

    Returns:
      ``Z_τ`` ``(N, H)`` and the logits ``O`` ``(τ, N, K)`` (``O[t] = Z_{t+1}V + 1cᵀ``); apply
      ``jax.nn.softmax(O, axis=-1)`` for probabilities. Plain JAX: differentiable by autodiff, but
      training should go through :func:`rnn_loss`, which never stacks ``O``.
    """
    params, Z0, X, _ = _check("rnn_forward", params, Z0, X)
    W, U, b, V, c = params

    def step(Z_prev, X_t):
        Z = jnp.tanh(Z_prev @ W + X_t @ U + b[None, :])
        return Z, Z @ V + c[None, :]

    return jax.lax.scan(step, Z0, X)


def rnn_truncated_bptt_grads(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array,
                             chunk: int) -> tuple[jax.Array, RNNParams, jax.Array]:
    """Truncated BPTT with one parameter set: the chunk losses and their summed gradients.

    The sequence is cut into chunks of ``chunk`` steps (the last may be shorter); each chunk starts
    from the previous chunk's final state, with the gradient path through that state cut. Returns
    ``(Σ_k J_k, Σ_k ∇_params J_k, Z_τ)``; the summed loss equals :func:`rnn_loss` (only gradients are
    truncated). The chunks run in one ``lax.scan``, so the program size does not grow with ``τ``.
    To update the parameters after every chunk instead, call
    ``jax.value_and_grad(rnn_loss_and_state, has_aux=True)`` once per chunk (see ``docs/rnn.md``).

    Args:
      params, Z0, X, Y: as in :func:`rnn_loss_and_state`.
      chunk: steps per chunk, a positive int (static: a Python or NumPy int, or a concrete integer 0-d
        array; under ``jax.jit`` mark it static).

    Returns:
      ``(J, grads, Z_τ)``, ``grads`` an :class:`RNNParams`.
    """
    fn = "rnn_truncated_bptt_grads"
    if isinstance(chunk, jax.core.Tracer):
        v.fail(fn, f"chunk is a traced value ({chunk!r}); it must be static, as it fixes the shapes of the "
                   f"chunks: pass a Python int, e.g. jax.jit(rnn_truncated_bptt_grads, static_argnames='chunk').")
    steps = v.static_int(chunk)
    if steps is None or steps < 1:
        v.fail(fn, f"chunk must be a positive int (steps per chunk); got {chunk!r}.")
    chunk = steps
    params, Z0, X, Y = _check(fn, params, Z0, X, Y)
    tau = X.shape[0]
    full, rest = divmod(tau, chunk)

    def one_chunk(carry, xs):
        Z, J, grads = carry
        (J_k, Z_next), res = _rnn_fwd(params, Z, *xs)
        # The closed-form backward, called directly: cotangent 1 for J_k and 0 for the chunk's final
        # state, which is the truncation (the next chunk's gradient does not flow back into this one).
        g = _rnn_bwd(res, (jnp.ones_like(J_k), jnp.zeros_like(Z_next)))[0]
        return (Z_next, J + J_k, jax.tree.map(jnp.add, grads, g)), None

    carry = (Z0, jnp.zeros((), X.dtype), jax.tree.map(jnp.zeros_like, params))
    if full:
        split = lambda A: A[:full * chunk].reshape(full, chunk, *A.shape[1:])
        carry, _ = jax.lax.scan(one_chunk, carry, (split(X), split(Y)))
    if rest:
        carry, _ = one_chunk(carry, (X[full * chunk:], Y[full * chunk:]))
    Z, J, grads = carry
    return J, grads, Z
