"""Reference for the softmax and sigmoid rules (seed 000 §4.3.5; seed 004 §2.2–2.3)."""

from __future__ import annotations

import jax

from ..registry import RuleSpec, register_rule
from ..rules import softmax as rules
from ._sampling import integers, numpy_rng, uniform

SEED0 = "000_3fed0c34b422d74e.txt"
SEED4 = "004_c4a3fcbc5e77e7ce.txt"


def softmax(A, axis=-1):
    return jax.nn.softmax(A, axis=axis)


def sigmoid(x):
    return jax.nn.sigmoid(x)


def sample_matrix(key, dtype):
    """One ``(rows, cols)`` matrix of logits in ``[−4, 4)``, the shape drawn from ``key``."""
    rng = numpy_rng(key)
    return (uniform(rng, integers(rng, 2, 1, 9), dtype, 4.0),)


register_rule(RuleSpec("softmax", f"{SEED0} §4.3.5; {SEED4} §2.3 eq. 2.10", rules.softmax, softmax, sample_matrix))
register_rule(RuleSpec("sigmoid", f"{SEED4} §2.2 eq. 2.4", rules.sigmoid, sigmoid, sample_matrix))
