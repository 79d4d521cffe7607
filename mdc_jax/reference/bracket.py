"""Reference for the bracket operators of seed 000 §2–§4: plain ``jnp.einsum``, for ``jax.grad``.

Each operator is written as the einsum string its definition spells out, built here from the
positions independently of :mod:`mdc_jax.rules.bracket` (which evaluates the same definitions
through its own terms and differentiates them by §4.2). Never used inside a rule.
"""

from __future__ import annotations

import re
import string

import jax
import jax.numpy as jnp

from ..registry import RuleSpec, register_rule
from ..rules import bracket as rules
from ._sampling import integers, numpy_rng, uniform

SEED = "000_3fed0c34b422d74e.txt"
LETTERS = string.ascii_letters


def otimes(A, B):
    """``(A_I B_J | I J)``."""
    I, J = LETTERS[:A.ndim], LETTERS[A.ndim:A.ndim + B.ndim]
    return jnp.einsum(f"{I},{J}->{I}{J}", A, B)


def odot(A, B, p, q, bar=()):
    """Eq. 3 with barred positions: B's letter at ``q_t`` is A's at ``p_t``; barred ones left out of the result."""
    I, J = list(LETTERS[:A.ndim]), list(LETTERS[A.ndim:A.ndim + B.ndim])
    for a, b in zip(p, q):
        J[b - 1] = I[a - 1]
    out = [I[a] for a in range(A.ndim) if a + 1 not in bar] + [J[b] for b in range(B.ndim) if b + 1 not in q]
    return jnp.einsum(f"{''.join(I)},{''.join(J)}->{''.join(out)}", A, B)


def dot(A, B, p, q):
    return odot(A, B, p, q, bar=tuple(p))


def odot_k(A, B, k):
    return odot(A, B, tuple(range(A.ndim - k + 1, A.ndim + 1)), tuple(range(1, k + 1)))


def dot_k(A, B, k):
    return dot(A, B, tuple(range(A.ndim - k + 1, A.ndim + 1)), tuple(range(1, k + 1)))


def permute(A, p, bar=()):
    """``A_P``; an item of ``p`` that is a tuple is a square-bracket group (a diagonal)."""
    items = [item if isinstance(item, tuple) else (item,) for item in p]
    I = [""] * A.ndim
    for letter, item in zip(LETTERS, items):
        for pos in item:
            I[pos - 1] = letter
    out = [letter for letter, item in zip(LETTERS, items) if not set(bar) & set(item)]
    return jnp.einsum(f"{''.join(I)}->{''.join(out)}", A)


def einsum_of(expr: str) -> tuple[list[str], str]:
    """``"(A_ijk B_lji | ijkl)"`` → ``(["A", "B"], "ijk,lji->ijkl")``: one term, plain tensors, unprimed indices."""
    body = re.fullmatch(r"\s*\((.*)\|(.*)\)\s*", expr)
    factors = [f.split("_") for f in body.group(1).split()]
    names = [f[0] for f in factors]
    subscripts = ",".join(f[1] if len(f) > 1 else "" for f in factors)
    return names, f"{subscripts}->{body.group(2).replace(' ', '')}"


def bracket(expr: str, **tensors):
    names, spec = einsum_of(expr)
    return jnp.einsum(spec, *[tensors[n] for n in names])


def apply(f, X, p):
    """``f^P(X)`` (eq. 27) for a plain ``f`` on one subtensor: P moved to the front, f mapped over it."""
    P = [a - 1 for a in p]
    Xt = jnp.moveaxis(X, P, list(range(len(P))))
    for _ in P:
        f = jax.vmap(f)
    return f(Xt)


def softmax(x):
    return jax.nn.softmax(x, axis=-1)


# --------------------------------------------------------------------------------------------
# Registry entries: one instance of each kind of term, the shapes drawn from the key


def eq4_barred_rule(A, B):
    """``A^{1\\bar 2} ⊙^{32} B = (A_ijk B_lji | ikl)``: eq. 4 with position 2 barred."""
    return rules.odot(A, B, (1, 2), (3, 2), bar=(2,))


def eq4_barred(A, B):
    return odot(A, B, (1, 2), (3, 2), bar=(2,))


def diagonal_rule(A):
    """``A_{3[1 4]\\bar 2} = (A_jmij | ij)``: a diagonal of positions 1 and 4, position 2 summed."""
    return rules.permute(A, (3, (1, 4), 2), bar=(2,))


def diagonal(A):
    return permute(A, (3, (1, 4), 2), bar=(2,))


def gram_rule(a, X):
    """``(a_i X_ij X_kj a_k | ) = aᵀXXᵀa``: X twice, so §4.2 gives two terms."""
    return rules.bracket("(a_i X_ij X_kj a_k | )", a=a, X=X)


def gram(a, X):
    return bracket("(a_i X_ij X_kj a_k | )", a=a, X=X)


def softmax_cols_rule(A):
    """``s^2(A)``: the softmax of A's columns, returned as rows (eq. 27, §4.3.5)."""
    return rules.apply(rules.softmax, A, (2,))


def softmax_cols(A):
    return apply(softmax, A, (2,))


def _sample(kind):
    def sample(key, dtype):
        rng = numpy_rng(key)
        n, m, r = integers(rng, 3, 1, 4)
        shapes = {"odot": [(n, m, r), (r + 1, m, n)], "permute": [(n, m, r, n)], "gram": [(n,), (n, m)],
                  "softmax": [(n, m)]}[kind]
        return tuple(uniform(rng, s, dtype, 2.0) for s in shapes)

    return sample


for _name, _where, _rule, _ref, _kind in [
    ("bracket_odot", "§2.2 eq. 3-4 (barred)", eq4_barred_rule, eq4_barred, "odot"),
    ("bracket_permute", "§2.2 eq. 6 (square brackets)", diagonal_rule, diagonal, "permute"),
    ("bracket_term", "§4.2, §5", gram_rule, gram, "gram"),
    ("bracket_apply_softmax", "§4.3.4-4.3.5 eq. 27, 32", softmax_cols_rule, softmax_cols, "softmax"),
]:
    register_rule(RuleSpec(_name, f"{SEED} {_where}", _rule, _ref, _sample(_kind)))
