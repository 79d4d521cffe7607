"""Checkpointed backpropagation through time for §6.4 (Gruslys et al. 2016): segments recomputed, not stored.

Seed: ``000_3fed0c34b422d74e.txt`` §6.4 (final equations). The forward keeps only the first state of each
segment of ``k`` steps, ``Z_0, Z_k, Z_{2k}, …`` (the checkpoints, ``⌈τ/k⌉·N·H`` numbers), and ``Z_τ``. The
backward walks the segments back from the last: it recomputes a segment's states from its checkpoint with
:func:`.rnn_bptt.forward` and runs the closed-form :func:`.rnn_bptt.backward` over them, starting from the
``R = ∇_{A_{t+1}}J Wᵀ`` that the segment after it left (``∇_{Z_τ}`` for the last one)::

    ∇_{A_t}J = (11ᵀ − Z_t²) ⊙ (∇_{A_{t+1}}J Wᵀ + ∇_{O_t}J Vᵀ),   t = the segment's steps, last to first
    ∇_W J = Σ_segments Σ_t Z_{t−1}ᵀ ∇_{A_t}J   (and ∇_U, ∇_b, the head's sums alike)

The same recursion and the same sums as the unchekpointed rule, in segments: the states held are the
checkpoints and one segment's, ``O(τNH/k + kNH)`` instead of ``O(τNH)`` (least near ``k = √τ``), for one more
forward recursion. ``k`` need not divide ``τ``: the last segment is shorter. No autodiff runs here (this is
not ``jax.checkpoint``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import rnn_bptt as bptt


def _segment(tree, s, k: int):
    """Segment ``s`` (traced) of ``k`` steps of a pytree's leaves ``(τ, ...)``: a slice in place, so that the
    inputs are never copied into a stack of segments."""
    return jax.tree.map(lambda A: jax.lax.dynamic_slice_in_dim(A, s * k, k), tree)


def _rest(tree, k: int):
    """The steps after the whole segments: the shorter last segment, ``(τ mod k, ...)`` leaves."""
    return jax.tree.map(lambda A: A[A.shape[0] // k * k:], tree)


def _join(whole, last):
    """Per-segment outputs back on the time axis: ``(S, k, ...)`` leaves, then the last segment's ``(r, ...)``."""
    if last is None:
        return jax.tree.map(bptt.unchunk, whole)
    return jax.tree.map(lambda A, B: jnp.concatenate([bptt.unchunk(A), B]), whole, last)


def forward(Z0, X, xs, k: int, segment):
    """Walk the segments of ``k`` steps forward, keeping only the state each one starts from.

    Args:
      Z0: the initial state ``(N, H)``; ``X``: the inputs, time-major ``(τ, ...)``.
      xs: a pytree of per-step inputs for ``segment`` (leaves ``(τ, ...)``), or None.
      k: the segment length, ``1 <= k <= τ``; the last segment has ``τ mod k`` steps when ``k`` does not divide ``τ``.
      segment: ``segment(Z, X_s, x_s) -> (J_s, Z_end, out_s)``: a segment's loss and last state from its first
        state, its inputs and its slice of ``xs``; ``out_s`` leaves lead with the segment's steps.

    Returns:
      ``(J, Z_τ, checkpoints, outs)``: ``J = Σ_s J_s`` (in ``J_s``'s dtype), the final state, the checkpoints
      ``(⌈τ/k⌉, N, H)`` (segment ``s`` starts from ``Z_{sk}``) and the ``out_s`` joined on a leading ``τ`` axis.
    """
    def step(Z, seg):
        J_s, Z_end, out = segment(Z, *seg)
        return Z_end, (Z, J_s, out)

    by_index = lambda Z, s: step(Z, (_segment(X, s, k), _segment(xs, s, k)))
    Z, (checkpoints, J, outs) = jax.lax.scan(by_index, Z0, jnp.arange(X.shape[0] // k))
    J, last = jnp.sum(J), None
    if X.shape[0] % k:
        Z, (start, J_last, last) = step(Z, (_rest(X, k), _rest(xs, k)))
        checkpoints, J = jnp.concatenate([checkpoints, start[None]]), J + J_last
    return J, Z, checkpoints, _join(outs, last)


def checkpoints(params, Z0, X, k: int):
    """The recursion alone, keeping every ``k``-th state: ``(Z_τ, checkpoints)`` for :func:`backward` (the
    per-example and curvature passes, whose head needs no loss in the forward)."""
    recursion = lambda Z, X_s, _: (jnp.zeros((), Z.dtype), bptt.forward(params, Z, X_s, None)[1], None)
    _, Z_tau, kept, _ = forward(Z0, X, None, k, recursion)
    return Z_tau, kept


def backward(params, checkpoints, X, gZ, head, head_xs, head_acc, k: int, *, per_step: bool = False, tap=None,
             prepare=None) -> bptt.Backward:
    """:func:`.rnn_bptt.backward` over recomputed segments: the segment walker.

    Walks the segments of ``k`` steps back from the last; each one's states ``Z_{t−1}``, ``Z_t`` are recomputed
    from its checkpoint (:func:`.rnn_bptt.forward`, the recursion alone), then :func:`.rnn_bptt.backward` runs
    over the segment with the ``R = ∇_{A_{t+1}}J Wᵀ`` the later segment left, so ``head``, ``tap`` and
    ``per_step`` behave as there, chunk by chunk within each segment. ``Z_τ`` is not an argument: the last
    segment's recomputation gives it.

    Args:
      params: the :class:`.rnn_bptt.RNNParams`.
      checkpoints: ``(⌈τ/k⌉, N, H)``, the state each segment starts from (:func:`forward`'s).
      X: the inputs ``(τ, N, D)`` or token ids ``(τ, N)``.
      gZ: ``∇_{Z_τ}`` (any leading column axes are carried through, as in :func:`.rnn_bptt.backward`).
      head: ``head(Z_out, head_x, head_acc) -> (∇_{O_t}J Vᵀ, head_acc, head_out)`` per chunk, as in
        :func:`.rnn_bptt.backward`.
      head_xs: a pytree of per-step head inputs with leaves ``(τ, ...)``, **not chunked** (the walker cuts them
        into segments and chunks: chunk sizes differ between a whole segment and a shorter last one); or None.
      head_acc: the head's initial accumulator, carried through every segment.
      k: the segment length, ``1 <= k <= τ``, the one :func:`forward` used.
      per_step, tap: as in :func:`.rnn_bptt.backward`.
      prepare: optional ``prepare(Z_out, x_s, head_acc) -> (x_s, head_acc)``, called once per segment before its
        backward with the segment's recomputed states ``Z_t`` ``(m, N, H)`` and its slice of ``head_xs``; the
        ``x_s`` it returns (leaves leading with the segment's ``m`` steps) go to ``head``. For work over the
        whole segment at once: the fused head runs its blocked backward over the segment's ``m·N`` states here.

    Returns:
      A :class:`.rnn_bptt.Backward`: ``grads`` summed over the segments, ``dZ0``, ``dX`` (``X``'s shape; float0
      for token ids), ``head_acc``, and ``head_out`` and ``steps`` on a leading ``τ`` axis (the chunk and step
      axes of :func:`.rnn_bptt.backward` merged). None where that function gives None.
    """
    sums = not per_step and tap is None
    ids = bptt.is_ids(X)

    def segment(carry, xs):
        R, grads, acc = carry  # R = ∇_{A_{t+1}}J Wᵀ after the segment's last step
        Z_start, X_s, x_s = xs
        _, Z_end, Zs = bptt.forward(params, Z_start, X_s, None)  # recomputed: the segment's Z_{t−1} and last state
        if prepare is not None:
            x_s, acc = prepare(bptt.states_out(bptt.unchunk(Zs), Z_end), x_s, acc)
        steps = Zs.shape[1]  # per chunk: chunk_size of the segment's length
        out = bptt.backward(params, Zs, Z_end, X_s, R, head, jax.tree.map(lambda A: bptt.chunks(A, steps), x_s), acc,
                            per_step=per_step, tap=tap)
        grads = jax.tree.map(jnp.add, grads, out.grads) if sums else None
        per_segment = (out.dX if sums and not ids else None, jax.tree.map(bptt.unchunk, out.head_out),
                       None if out.steps is None else bptt.unchunk(out.steps))
        return (out.dZ0, grads, out.head_acc), per_segment

    full = X.shape[0] // k
    grads = tuple(jnp.zeros_like(p) for p in (params.W, params.U, params.b)) if sums else None
    carry, last = (gZ.astype(checkpoints.dtype), grads, head_acc), None
    if X.shape[0] % k:  # the shorter last segment comes first on the way back
        carry, last = segment(carry, (checkpoints[full], _rest(X, k), _rest(head_xs, k)))
    by_index = lambda carry, s: segment(carry, (checkpoints[s], _segment(X, s, k), _segment(head_xs, s, k)))
    carry, whole = jax.lax.scan(by_index, carry, jnp.arange(full), reverse=True)
    dZ0, grads, acc = carry
    dX, head_out, steps = _join(whole, last)
    if sums and ids:
        dX = np.zeros(X.shape, jax.dtypes.float0)
    return bptt.Backward(grads, dZ0, dX, acc, head_out, steps)
