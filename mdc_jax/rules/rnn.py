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

The recursions, chunk by chunk, live in :mod:`.rnn_bptt` (re-exported here: the in-package API); the
checkpointed walk over segments (``checkpoint_every``) in :mod:`.rnn_segments`. This module holds the rule,
one ``jax.custom_vjp`` for either head, and the public API.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from . import linear_ce, rnn_segments
from .rnn_bptt import CHUNK as CHUNK
from .rnn_bptt import Backward as Backward
from .rnn_bptt import RNNParams as RNNParams
from .rnn_bptt import backward as backward
from .rnn_bptt import bptt_step as bptt_step
from .rnn_bptt import chunk_size as chunk_size
from .rnn_bptt import chunks as chunks
from .rnn_bptt import dense_targets as dense_targets
from .rnn_bptt import forward as forward
from .rnn_bptt import id_rows as id_rows
from .rnn_bptt import input_term as input_term
from .rnn_bptt import is_ids as is_ids
from .rnn_bptt import output_log_probs as output_log_probs
from .rnn_bptt import state_step as state_step
from .rnn_bptt import states_out as states_out
from .rnn_bptt import unchunk as unchunk
from .softmax import cross_entropy_error

# The names these helpers had before the split (callers inside the package may still use them).
_input_term, _rows, _is_ids, _dense_targets = input_term, id_rows, is_ids, dense_targets


class RuleOptions(NamedTuple):
    """The static options of a call, checked (:func:`check_options`): the fused head's (token, vocabulary)
    blocks over all ``τN`` states (None: the plain head) and its :class:`~.linear_ce.HeadOptions`, and the
    BPTT segment length (None: every state kept). Hashable: the rule's ``nondiff`` argument."""

    blocks: tuple[int, int] | None = None
    head_options: linear_ce.HeadOptions | None = None
    checkpoint_every: int | None = None


def head_blocks(options: RuleOptions, rows: int) -> tuple[int, int]:
    """The fused head's blocks for a run of ``rows`` states (a segment's: the token block at most ``rows``,
    what :func:`.linear_ce.resolve_blocks` gives for ``rows``)."""
    bn, bk = options.blocks
    return min(bn, rows), bk


def _fused_targets(Y, K):
    """``(targets, soft)`` for linear_ce, kept time-major: ``(τ, N)`` int32 labels or ``(τ, N, K)`` rows."""
    targets, soft = linear_ce.as_targets(Y, K)
    return targets.reshape(*Y.shape[:2], *targets.shape[1:]), soft


def _run_loss(params, N, soft, options):
    """``loss(Z, X_s, T_s) -> (J_s, Z_end, Zs, lse)``: a run of steps' loss from its first state, with its
    states ``Z_{t−1}`` (chunked) and, for the fused head, each token's log-sum-exp ``(steps, N)``."""
    if options.blocks is None:
        def plain(Z, X_s, Y_s):
            J, Z_end, Zs = forward(params, Z, X_s, Y_s)  # the loss summed chunk by chunk: no τ × N × K logits
            return J, Z_end, Zs, None
        return plain

    acc = linear_ce.acc_dtype(params.V.dtype)

    def fused(Z, X_s, T_s):
        _J, Z_end, Zs = forward(params, Z, X_s, None)  # the recursion alone: no logits
        rows = states_out(unchunk(Zs), Z_end).reshape(-1, Z_end.shape[-1])  # Z_1..Z_m as (mN, H) rows
        lse, losses = linear_ce.forward(rows, params.V, params.c, unchunk(T_s), soft, *head_blocks(options, rows.shape[0]),
                                        acc, options.head_options)
        return jnp.sum(losses) / N, Z_end, Zs, lse.reshape(X_s.shape[:2])  # J = Σ_t J_t, each a mean over N
    return fused


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _rnn(params, Z0, X, Y, options):
    return _rnn_fwd(params, Z0, X, Y, options)[0]


def _rnn_fwd(params, Z0, X, Y, options):
    soft = not jnp.issubdtype(Y.dtype, jnp.integer)
    loss = _run_loss(params, X.shape[1], soft, options)
    T = Y if options.blocks is None else _fused_targets(Y, params.V.shape[1])[0]
    if options.checkpoint_every is None:
        J, Z_tau, saved, lse = loss(Z0, X, T)
    else:  # keep each segment's first state only
        J, Z_tau, saved, lse = rnn_segments.forward(Z0, X, T, options.checkpoint_every,
                                                    lambda *a: (lambda J, Z, _Zs, lse: (J, Z, lse))(*loss(*a)))
    # Residuals: the hidden states Z_0..Z_{τ−1} (or, checkpointed, every k-th of them) and Z_τ apart, the
    # inputs, and for the fused head each token's log-sum-exp (τN floats). Z_{t−1} gives ∇_W, Z_t gives
    # tanh' = (1 − Z_t)(1 + Z_t) and ∇_V; A_t is not needed, and O_t = Z_tV + 1cᵀ and its softmax are
    # recomputed in the backward (the plain head chunk by chunk, the fused one block by block).
    return (J.astype(Z0.dtype), Z_tau), (params, saved, Z_tau, X, Y, lse)


def _plain_head(params, scale, Y, lse, options):
    """The plain head's ``(head, head_xs, head_acc, prepare)``: each chunk's softmax recomputed from its states."""
    V, c = params.V, params.c
    labels = jnp.issubdtype(Y.dtype, jnp.integer)

    def head(Z_out, Y_k, acc):
        dV, dc = acc
        logS = output_log_probs(Z_out, V, c)  # recomputed: ln s¹(O_t)
        H = scale * cross_entropy_error(jnp.exp(logS), dense_targets(Y_k, V.shape[1], logS.dtype))  # ∇_{O_t}J
        acc = (dV + jnp.einsum("tnh,tnk->hk", Z_out, H),  # Σ_t Z_tᵀ ∇_{O_t}J
               dc + jnp.sum(H, axis=(0, 1)))  # Σ_t ∇_{O_t}Jᵀ 1
        dY = None if labels else -scale * logS  # ∇_{Y_t}J = −ln s¹(O_t)/N (no cotangent for integer labels)
        return H @ V.T, acc, dY

    return head, Y, (jnp.zeros_like(V), jnp.zeros_like(c)), None


def _fused_head(params, scale, Y, lse, options):
    """The fused head's ``(head, head_xs, head_acc, prepare)``: a run's states go through V by linear_ce's
    blocked §6.3.1 at once (``prepare``), with the log-sum-exp saved by the forward; ``head`` hands on each
    chunk's ``∇_{Z_t}J`` through V and, for soft labels, ``∇_{Y_t}J``."""
    V, c = params.V, params.c
    targets, soft = _fused_targets(Y, V.shape[1])
    acc = linear_ce.acc_dtype(V.dtype)

    def prepare(Z_out, xs, head_acc):
        T_s, lse_s = xs
        rows = Z_out.reshape(-1, Z_out.shape[-1])
        g = jnp.full(rows.shape[:1], scale, acc)  # ∂J/∂ℓ_ti = g/N for every token
        dZ, dV, dc, dT = linear_ce.backward(soft, *head_blocks(options, rows.shape[0]), acc,
                                            (rows, V, c, unchunk(T_s), unchunk(lse_s)), g, options.head_options)
        dY = dT.reshape(T_s.shape) if soft else None
        return (dZ.reshape(Z_out.shape), dY), (head_acc[0] + dV.astype(acc), head_acc[1] + dc.astype(acc))

    head = lambda Z_out, xs, a: (xs[0], a, xs[1])  # ∇_{O_t}J Vᵀ from prepare, and ∇_{Y_t}J
    return head, (targets, lse), (jnp.zeros(V.shape, acc), jnp.zeros(c.shape, acc)), prepare


def _rnn_bwd(options, res, cts):
    params, saved, Z_tau, X, Y, lse = res
    gJ, gZ = cts  # cotangents of J and of the final state Z_τ
    pieces = _plain_head if options.blocks is None else _fused_head
    head, head_xs, head_acc, prepare = pieces(params, gJ / X.shape[1], Y, lse, options)  # g/N
    if options.checkpoint_every is not None:  # each segment recomputed from its checkpoint
        out = rnn_segments.backward(params, saved, X, gZ, head, head_xs, head_acc, options.checkpoint_every, prepare=prepare)
    else:
        if prepare is not None:
            head_xs, head_acc = prepare(states_out(unchunk(saved), Z_tau), head_xs, head_acc)
        k = saved.shape[1]
        out = backward(params, saved, Z_tau, X, gZ, head, jax.tree.map(lambda A: chunks(A, k), head_xs), head_acc)
        out = out._replace(head_out=jax.tree.map(unchunk, out.head_out))
    dparams = RNNParams(*(v.cast_like(d, p) for d, p in zip((*out.grads, *out.head_acc), params)))
    dY = np.zeros(Y.shape, jax.dtypes.float0) if jnp.issubdtype(Y.dtype, jnp.integer) else v.cast_like(out.head_out, Y)
    return dparams, out.dZ0, out.dX, dY


_rnn.defvjp(_rnn_fwd, _rnn_bwd)


# --------------------------------------------------------------------------------------------
# Public API and input checks


def check_inputs(fn: str, params, Z0, X, Y=None, *, tokens: bool = False, ignore_index=None):
    """The RNN rules' input checks, at trace time; returns (RNNParams, Z0, X, Y) with the floating ones cast
    to one dtype. ``tokens``: integer ``X`` of shape ``(τ, N)`` (rows of ``U``) and integer ``Y`` of shape
    ``(τ, N)`` (classes) are accepted. ``ignore_index``: a static int allowed among integer labels, returned
    as ``-1`` (int32 labels, any label outside ``[0, K)`` ``-1`` too: the zero row both heads give it).
    Used by the losses and by ``mdc_jax.per_example``."""
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
    if ignore_index is not None:
        ignore_index = v.require_static_int(fn, "ignore_index", ignore_index, minimum=None, what="an int or None",
                                            static_why=": it selects the tokens that contribute nothing")
    labels = Y is not None and v.require_labels(
        fn, "Y", Y, (tau, N), v.require_classes(fn, "V", (H, K)), dims="(τ, N, K)",
        why=f"(τ, N, K): X's {tau} steps and {N} sequences, V's {K} columns",
        integer=f"integer labels (τ, N): X's {tau} steps and {N} sequences" if tokens else None,
        hint=f"for integer class labels pass jax.nn.one_hot(labels, {K})", ignore=ignore_index)
    if ignore_index is not None and Y is not None and not labels:
        v.fail(fn, f"ignore_index applies to integer labels Y only; got ignore_index={ignore_index} with floating "
                   f"Y of shape {v.shape_of(Y)} (give an ignored token a row of zeros instead).")
    floating = [*params, Z0] + ([] if ids else [X]) + ([Y] if Y is not None and not labels else [])
    cast = lambda a: jnp.asarray(a).astype(jnp.result_type(*floating))  # a no-op when the dtypes agree
    if labels and ignore_index is not None:  # -1 matches no class: the zero row, in either head
        Y = jnp.where(jnp.asarray(Y) == ignore_index, -1, _fused_targets(jnp.asarray(Y), K)[0])
    return (RNNParams(*map(cast, params)), cast(Z0), jnp.asarray(X) if ids else cast(X),
            None if Y is None else jnp.asarray(Y) if labels else cast(Y))


def check_options(fn: str, X, params, *, head="plain", block_size=None, head_options=None, checkpoint_every=None,
                  steps: int | None = None, what: str = "X's steps") -> RuleOptions:
    """The static options of the RNN rule, checked: the head and its blocks and options (``head_options`` with
    the fused head only) and ``checkpoint_every`` in ``[1, steps]`` (default ``τ``; ``what`` names ``steps``)."""
    fused = linear_ce.check_head(fn, head, block_size)
    if head_options is not None and not fused:
        v.fail(fn, f"head_options applies to head='fused' only; got head_options={head_options!r} with head={head!r}.")
    every = checkpoint_every
    if every is not None:
        every = v.require_static_int(fn, "checkpoint_every", every, what="a positive int (steps per BPTT segment) or None",
                                     static_why=", as it fixes the segments' shapes: pass a Python int, e.g. "
                                                "jax.jit(rnn_loss, static_argnames='checkpoint_every')")
        steps = X.shape[0] if steps is None else steps
        if every > steps:
            v.fail(fn, f"checkpoint_every must be at most {what}, {steps}; got {every}.")
    if not fused:
        return RuleOptions(checkpoint_every=every)
    blocks = linear_ce.resolve_blocks(fn, block_size, X.shape[0] * X.shape[1], params.V.shape[1])
    return RuleOptions(blocks, linear_ce.head_options(fn, head_options), every)


def rnn_loss_and_state(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array, *, head: str = "plain",
                       block_size=None, checkpoint_every: int | None = None, ignore_index: int | None = None,
                       head_options=None) -> tuple[jax.Array, jax.Array]:
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
      checkpoint_every: ``None`` (the forward keeps every state, ``τ·N·H`` numbers), or ``k`` in ``[1, τ]``,
        a static int: checkpointed BPTT (Gruslys et al. 2016). The forward keeps every ``k``-th state only;
        the backward recomputes each segment of ``k`` steps from its first state and runs the same
        closed-form recursion over it (the last segment is shorter when ``k`` does not divide ``τ``). The
        same gradients for ``O(τNH/k + kNH)`` memory instead of ``O(τNH)`` and one more forward recursion;
        ``k ≈ √τ`` holds the least. (Not ``train.checkpoint_every``, which is how often a run is saved.)
      ignore_index: with integer ``Y`` only: a label whose tokens contribute nothing (loss and gradient).
        ``J = (1/N) Σ_i ℓ_i`` still, ``ℓ_i`` the sum over sequence ``i``'s kept tokens (no token count).
      head_options: the fused head's options (``head="fused"`` only): a
        :class:`~mdc_jax.rules.linear_ce.HeadOptions` or a mapping with keys ``"z_loss"``,
        ``"label_smoothing"``, ``"softcap"`` (see :func:`mdc_jax.linear_softmax_cross_entropy`).

    Returns:
      ``(J, Z_τ)``: the scalar loss and the final state ``(N, H)``. ``jax.grad`` runs the closed-form
      backward and returns cotangents for ``params``, ``Z0``, ``X`` and ``Y``.

    Raises:
      ValueError: at trace time, naming the argument and the shapes, for inconsistent input.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.3.1 (eq. 41–44), §6.4 (eq. 45–49, final equations); Gruslys et al.,
      "Memory-efficient backpropagation through time", NeurIPS 2016.
    """
    fn = "rnn_loss_and_state"
    params, Z0, X, Y = check_inputs(fn, params, Z0, X, Y, tokens=True, ignore_index=ignore_index)
    options = check_options(fn, X, params, head=head, block_size=block_size, head_options=head_options,
                            checkpoint_every=checkpoint_every)
    return _rnn(params, Z0, X, Y, options)


def rnn_loss(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array, *, head: str = "plain",
             block_size=None, checkpoint_every: int | None = None, ignore_index: int | None = None,
             head_options=None) -> jax.Array:
    """The RNN loss ``J = −(1/N) Σ_t ln(s¹(O_t))·Y_t`` of §6.4, with the closed-form backward.

    .. math::

       \\nabla_{O_t}J = \\frac1N(s^1(O_t) - Y_t),\\quad
       \\nabla_{A_t}J = (\\mathbf{11}^T - Z_t^{2})\\odot(\\nabla_{A_{t+1}}J\\,W^T + \\nabla_{O_t}J\\,V^T),

       \\nabla_WJ = \\sum_t Z_{t-1}^T\\nabla_{A_t}J,\\quad \\nabla_UJ = \\sum_t X_t^T\\nabla_{A_t}J,\\quad
       \\nabla_bJ = \\sum_t\\nabla_{A_t}J^T\\mathbf 1,\\quad \\nabla_VJ = \\sum_t Z_t^T\\nabla_{O_t}J,\\quad
       \\nabla_cJ = \\sum_t\\nabla_{O_t}J^T\\mathbf 1.

    The backward is a reverse ``lax.scan`` over chunks of up to 4 steps (the largest size ≤ 4 that
    divides ``τ``; a prime above 3 walks step by step), so ``τ`` does not change the compiled program's
    size. It keeps only the hidden states from the forward pass (every ``checkpoint_every``-th of them,
    if given) and recomputes the softmax.

    Args:
      params, Z0, X, Y, head, block_size, checkpoint_every, ignore_index, head_options: as in
        :func:`rnn_loss_and_state`.

    Returns:
      The scalar loss. ``jax.grad`` returns cotangents for every argument: ``params`` (an
      :class:`RNNParams`), ``Z0`` (``∇_{A_1}J Wᵀ``), ``X`` (``∇_{A_t}J Uᵀ`` per step) and ``Y``.

    Raises:
      ValueError: at trace time, for inconsistent shapes or options.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4 (final equations).
    """
    params, Z0, X, Y = check_inputs("rnn_loss", params, Z0, X, Y, tokens=True, ignore_index=ignore_index)
    options = check_options("rnn_loss", X, params, head=head, block_size=block_size, head_options=head_options,
                            checkpoint_every=checkpoint_every)
    return _rnn(params, Z0, X, Y, options)[0]


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

    return jax.lax.scan(step, Z0, input_term(X, U, b))


def rnn_truncated_bptt_grads(params: RNNParams, Z0: jax.Array, X: jax.Array, Y: jax.Array, chunk: int, *,
                             head: str = "plain", block_size=None, checkpoint_every: int | None = None,
                             ignore_index: int | None = None, head_options=None) -> tuple[jax.Array, RNNParams, jax.Array]:
    """Truncated BPTT with one parameter set: the chunk losses and their summed gradients.

    The sequence is cut into chunks of ``chunk`` steps (the last may be shorter); each chunk starts
    from the previous chunk's final state, with the gradient path through that state cut. Returns
    ``(Σ_k J_k, Σ_k ∇_params J_k, Z_τ)``; the summed loss equals :func:`rnn_loss` (only gradients are
    truncated). The chunks run in one ``lax.scan``, so the program size does not grow with ``τ``.
    To update the parameters after every chunk instead, call
    ``jax.value_and_grad(rnn_loss_and_state, has_aux=True)`` once per chunk (see ``docs/rnn.md``).

    Args:
      params, Z0, X, Y, head, block_size, ignore_index, head_options: as in :func:`rnn_loss_and_state`.
      chunk: steps per chunk, a positive int (static: a Python or NumPy int, or a concrete integer 0-d
        array; under ``jax.jit`` mark it static).
      checkpoint_every: as in :func:`rnn_loss_and_state`, within each chunk: at most ``min(chunk, τ)``
        (a shorter last chunk uses at most its own length).

    Returns:
      ``(J, grads, Z_τ)``, ``grads`` an :class:`RNNParams`.
    """
    fn = "rnn_truncated_bptt_grads"
    chunk = v.require_static_int(fn, "chunk", chunk, what="a positive int (steps per chunk)",
                                 static_why=", as it fixes the shapes of the chunks: pass a Python int, e.g. "
                                            "jax.jit(rnn_truncated_bptt_grads, static_argnames='chunk')")
    params, Z0, X, Y = check_inputs(fn, params, Z0, X, Y, tokens=True, ignore_index=ignore_index)
    tau = X.shape[0]
    options = check_options(fn, X, params, head=head, block_size=block_size, head_options=head_options,
                            checkpoint_every=checkpoint_every, steps=min(chunk, tau),
                            what=f"the chunk's steps (chunk = {chunk}, τ = {tau})")
    full, rest = divmod(tau, chunk)

    def one_chunk(carry, xs):
        Z, J, grads = carry
        every = options.checkpoint_every
        window = options._replace(checkpoint_every=None if every is None else min(every, xs[0].shape[0]))
        (J_k, Z_next), res = _rnn_fwd(params, Z, *xs, window)
        # The closed-form backward, called directly: cotangent 1 for J_k and 0 for the chunk's final
        # state, which is the truncation (the next chunk's gradient does not flow back into this one).
        g = _rnn_bwd(window, res, (jnp.ones_like(J_k), jnp.zeros_like(Z_next)))[0]
        return (Z_next, J + J_k, jax.tree.map(jnp.add, grads, g)), None

    carry = (Z0, jnp.zeros((), Z0.dtype), jax.tree.map(jnp.zeros_like, params))
    if full:
        split = lambda A: A[:full * chunk].reshape(full, chunk, *A.shape[1:])
        carry, _ = jax.lax.scan(one_chunk, carry, (split(X), split(Y)))
    if rest:
        carry, _ = one_chunk(carry, (X[full * chunk:], Y[full * chunk:]))
    Z, J, grads = carry
    return J, grads, Z
