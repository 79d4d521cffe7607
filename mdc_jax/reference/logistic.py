"""Reference for seed 004 ch. 3 (binary and multinomial logistic regression).

Plain forward passes, written as the seed writes them (samples as rows here), for ``jax.grad`` and
``jax.hessian`` to differentiate. They are never used inside a rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..registry import RuleSpec, register_rule
from ..rules import logistic
from ._sampling import integers, numpy_rng, probability_rows, uniform

SEED = "004_c4a3fcbc5e77e7ce.txt"


def logistic_loss(theta, X, y, l2=0.0):
    """−yᵀ log σ[Xθ] − (1 − y)ᵀ log σ[−Xθ] + λ/2 θᵀθ (§3.2; 1 − σ(z) = σ(−z))."""
    z = X @ theta
    nll = -jnp.sum(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
    return nll + l2 * jnp.sum(theta * theta) / 2


def multinomial_loss(Theta, X, Y, l2=0.0):
    """−Σ_i y_iᵀ log s(Θᵀx_i) + λ/2 Θ·Θ (§3.3), the softmax taken along each row of XΘ."""
    logP = jax.nn.log_softmax(X @ Theta, axis=1)
    return -jnp.sum(Y * logP) + l2 * jnp.sum(Theta * Theta) / 2


def logistic_case(seed, n: int, d: int, dtype, scale: float = 1.5):
    """Random ``(theta, X, y)``: ``theta`` and ``X`` in ``[−scale, scale)``, labels in {0, 1}."""
    rng = numpy_rng(seed)
    return (uniform(rng, (d,), dtype, scale), uniform(rng, (n, d), dtype, scale),
            jnp.asarray(rng.integers(0, 2, n), dtype))


def multinomial_case(seed, n: int, d: int, k: int, dtype, *, one_hot: bool = True, scale: float = 1.5):
    """Random ``(Theta, X, Y)``: ``Theta`` and ``X`` in ``[−scale, scale)``, one-hot (or soft) label rows."""
    rng = numpy_rng(seed)
    return (uniform(rng, (d, k), dtype, scale), uniform(rng, (n, d), dtype, scale),
            probability_rows(rng, (n, k), dtype, one_hot))


def sample_logistic(key, dtype):
    rng = numpy_rng(key)
    return (*logistic_case(rng, *integers(rng, 2, 1, 12), dtype), jnp.asarray(0.3, dtype))


def sample_multinomial(key, dtype):
    rng = numpy_rng(key)
    n, d, k = integers(rng, 3, 1, 8)
    return (*multinomial_case(rng, n, d, max(k, 2), dtype), jnp.asarray(0.3, dtype))


register_rule(RuleSpec("logistic_loss", f"{SEED} §3.2 eq. 3.3-3.9", logistic.logistic_loss, logistic_loss,
                       sample_logistic))
register_rule(RuleSpec("multinomial_loss", f"{SEED} §3.3, docs/derivations.md", logistic.multinomial_loss,
                       multinomial_loss, sample_multinomial))
