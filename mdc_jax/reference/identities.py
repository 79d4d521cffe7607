"""References for the matrix identities of seed 000 §4.4 and §5 (eq. 33–36).

Forward passes only, for ``jax.grad`` / ``jax.jacrev`` to differentiate; never used inside a rule.
"""
from __future__ import annotations

import jax.numpy as jnp


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
