"""Reference for the per-example quantities: ``jax.vmap(jax.grad(...))`` of the plain losses.

Each example's gradient ``g_i`` is ``jax.grad`` of the plain reference loss on that example alone
(a batch of one, penalty 0); every statistic is then computed from the stacked ``g_i``. This is the
autodiff baseline the closed forms of :mod:`mdc_jax.rules.per_example` are checked and timed against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .fcnn import fcnn_classification_loss, fcnn_regression_loss, l2_penalty
from .rnn import rnn_loss


def fcnn_batch_grads(params, X, Y, activations, *, task="classification"):
    """``g_i`` for every example, each leaf ``(N, *param.shape)``."""
    loss = fcnn_classification_loss if task == "classification" else fcnn_regression_loss
    one = lambda p, x, y: loss(p, x[None], y[None], activations, 0.0)
    return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, X, Y)


def rnn_batch_grads(params, Z0, X, Y, **options):
    """``g_i`` of sequence ``i`` (``Z0[i]``, ``X[:, i]``, ``Y[:, i]``), each leaf ``(N, *param.shape)``; ``options``
    (``ignore_index``, ``head_options``) go to the reference loss."""
    one = lambda p, z, x, y: rnn_loss(p, z[None], x[:, None], y[:, None], **options)
    return jax.vmap(jax.grad(one), in_axes=(None, 0, 1, 1))(params, Z0, X, Y)


def quantities_from_batch_grads(batch_grads, penalty_grad=None) -> dict:
    """Every quantity of ``fcnn_quantities`` / ``rnn_quantities`` from stacked per-example gradients;
    ``penalty_grad`` (a tree like the parameters, or None) is added to ``"grad"``."""
    N = jax.tree.leaves(batch_grads)[0].shape[0]
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), batch_grads)
    sq = jax.tree.map(lambda g: jnp.sum(g.reshape(N, -1) ** 2, axis=1), batch_grads)
    sgs = jax.tree.map(lambda g: jnp.sum(g * g, axis=0), batch_grads)
    return {"grad": mean if penalty_grad is None else jax.tree.map(jnp.add, mean, penalty_grad),
            "batch_grad": batch_grads, "batch_l2": sq, "grad_norm": jnp.sqrt(sum(jax.tree.leaves(sq))),
            "sum_grad_squared": sgs, "variance": jax.tree.map(lambda s, m: s / N - m * m, sgs, mean)}


def clipped_from_batch_grads(batch_grads, clip_norm, weights=None, penalty_grad=None):
    """``(1/N) Σ_i w_i min(1, C/‖g_i‖) g_i (+ ∇penalty)``, clipping the stacked ``g_i``."""
    N = jax.tree.leaves(batch_grads)[0].shape[0]
    norms = quantities_from_batch_grads(batch_grads)["grad_norm"]
    c = jnp.minimum(1.0, clip_norm / jnp.maximum(norms, jnp.finfo(norms.dtype).tiny))
    if weights is not None:
        c = c * weights
    clipped = jax.tree.map(lambda g: jnp.tensordot(c, g, axes=1) / N, batch_grads)
    return clipped if penalty_grad is None else jax.tree.map(jnp.add, clipped, penalty_grad)


def fcnn_penalty_grad(params, l2):
    """``∇(λ/2 Σ_j W_j·W_j)`` in the structure of ``params``."""
    return jax.grad(lambda p: l2 * l2_penalty(p))(params)
