"""Reference for the matrix identities of seed 000 §4.4 and §5 (eq. 33–36).

Forward passes only, for ``jax.grad`` / ``jax.jacrev`` to differentiate; never used inside a rule.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..registry import RuleSpec, register_rule
from ..rules import identities as rules
from ._sampling import integers, numpy_rng, uniform

SEED = "000_3fed0c34b422d74e.txt"


def linear(a, x):
    return jnp.dot(a, x)


def quadratic(x, A):
    return x @ A @ x


def bilinear(a, X, b):
    return a @ X @ b


def gram_quadratic(a, X):
    return a @ X @ X.T @ a


def trace_inverse_product(A, X, B):
    return jnp.trace(A @ jnp.linalg.inv(X) @ B)


def trace(X):
    return jnp.trace(X)


def inverse(X):
    return jnp.linalg.inv(X)


def det(X):
    return jnp.linalg.det(X)


def logdet(X):
    return jnp.linalg.slogdet(X)[1]


def outer_self(x):
    return jnp.outer(x, x)


def _sampler(spec: str):
    """Arguments by letter: 'v' a vector of n, 'm' an n × n matrix, 'w' a well-conditioned n × n
    matrix (n·I plus noise: invertible, positive determinant); n in 1..6 drawn from the key."""

    def sample(key, dtype):
        rng = numpy_rng(key)
        (n,) = integers(rng, 1, 1, 6)
        shapes = {"v": (n,), "m": (n, n), "w": (n, n)}
        return tuple(uniform(rng, shapes[kind], dtype) + (n * jnp.eye(n, dtype=dtype) if kind == "w" else 0)
                     for kind in spec)

    return sample


for _name, _where, _spec in [
    ("linear", "§5 eq. 33", "vv"), ("quadratic", "§5", "vm"), ("bilinear", "§5", "vmv"),
    ("gram_quadratic", "§5", "vm"), ("trace_inverse_product", "§5 eq. 34", "mwm"), ("trace", "§4.4", "m"),
    ("inverse", "§4.4", "w"), ("det", "§4.4", "w"), ("logdet", "§4.4", "w"), ("outer_self", "§5 eq. 35-36", "v"),
]:
    register_rule(RuleSpec(f"identity_{_name}", f"{SEED} {_where}", getattr(rules, _name), globals()[_name],
                           _sampler(_spec)))
