"""Reference for the Jacobians and the cross-entropy rule (seed 004 §2.1–2.3, §3.1).

The Jacobians are checked against ``jax.jacrev`` of :func:`mdc_jax.reference.softmax.softmax` and
``sigmoid``; the cross-entropy is a rule with a VJP and has its plain forward here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..registry import RuleSpec, register_rule
from ..rules import jacobians
from ._sampling import integers, numpy_rng

SEED = "004_c4a3fcbc5e77e7ce.txt"


def cross_entropy(p, q):
    """H(p, q) = −pᵀ log[q] (§3.1, eq. 3.1), summed over every entry."""
    return -jnp.sum(p * jnp.log(q))


def sample_cross_entropy(key, dtype):
    """Two probability vectors of a length in 2..10."""
    rng = numpy_rng(key)
    (n,) = integers(rng, 1, 2, 10)
    p, q = (jax.nn.softmax(jnp.asarray(rng.normal(size=n), dtype)) for _ in range(2))
    return p, q


register_rule(RuleSpec("cross_entropy", f"{SEED} §3.1 eq. 3.1", jacobians.cross_entropy, cross_entropy,
                       sample_cross_entropy))
