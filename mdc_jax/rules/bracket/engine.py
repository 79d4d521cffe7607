"""§4.2 as code: a bracket expression evaluated by ``jnp.einsum``, its VJP by the one-term-per-occurrence
rule, and the same rule printed as a symbolic :class:`Gradient`.

Every operator is one term ``T = (F_1 … F_m | R)`` of the explicit form, and

    d(F_1 … F_m | R) = Σ_k (F_1 … dF_k … F_m | R)                    one term per occurrence

so the generalized gradient (eq. 28, laid out ``P R``: the indices of X first) of T with respect to
X is a sum over the occurrences ``F_k = X_L``: drop ``X_L`` and give its indices ``L`` the fresh
names ``P`` of ``∂X_P``. A summed index ``l`` is renamed to its ``p`` (``Σ_l … δ_{lp} = …|_{l=p}``); an
index that is also in the result, or repeats inside ``L`` (a diagonal of X), keeps an identity
``δ_{lp}``; a ``p`` that appears nowhere else gets an all-ones ``1_p`` (§2.3)::

    ∇_X (X_ij C_jk | ik) = (δ_ip C_qk | pqik)
    ∇_X (a_i X_ij X_kj a_k | ) = (a_p X_kq a_k | pq) + (a_i X_iq a_p | pq)  = 2aaᵀX

The VJP of a term for the cotangent ``G_R`` is this rule applied to the scalar ``(G_R F_1 … F_m | )``:
``X̄_P = Σ_k (G_R Π_{j≠k} F_j Π δ 1 | P)``, evaluated by ``jnp.einsum``. Each sum of terms compiles to
one program per expression and shapes (:func:`sum_terms`, its specs static).

Seed: ``000_3fed0c34b422d74e.txt`` §2.1 (eq. 1), §2.3, §4.2 (eq. 28–29), §5.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ... import _validation as v
from .expr import DELTA, EINSUM_LETTERS, MAX_INDICES, ONES, Expr, Factor, Term, parse_as

_FRESH = "pqrstuvwxyzabcdefghijklmnoPQRSTUVWXYZABCDEFGHIJKLMNO"  # fresh names for ∂X_P, the seed's p, q, …


def term_sizes(fn: str, t: Term, shapes: Mapping[str, tuple], given: Mapping[str, int], text: str) -> dict[str, int]:
    """The size of every index of ``t``: from the tensors' shapes, ``given``, and δ's ties; checked."""
    sizes, seen = {}, {}
    for i in t.indices:
        if i in given:
            sizes[i], seen[i] = given[i], f"sizes[{i!r}]"
    for f in t.factors:
        if f.name in (DELTA, ONES):
            continue
        shape = tuple(shapes[f.name])
        if len(shape) != len(f.indices):
            v.fail(fn, f"{f.name} has shape {shape} (rank {len(shape)}) but {text} writes {f}, with "
                       f"{len(f.indices)} indices.")
        for i, n in zip(f.indices, shape):
            if i in sizes and sizes[i] != n:
                v.fail(fn, f"index {i} is used inconsistently in {text}: size {sizes[i]} in {seen[i]} but {n} in {f} "
                           f"({f.name} has shape {shape}).")
            if i not in sizes:
                sizes[i], seen[i] = n, f"{f} ({f.name} has shape {shape})"
    deltas = [f for f in t.factors if f.name == DELTA]
    changed = True
    while changed:  # δ_ab is square: a size known at one end is the other's
        changed = False
        for f in deltas:
            a, b = f.indices
            if a in sizes and b in sizes and sizes[a] != sizes[b]:
                v.fail(fn, f"{f} in {text} is an identity, so {a} and {b} need one size; got {sizes[a]} ({seen[a]}) "
                           f"and {sizes[b]} ({seen[b]}).")
            for known, other in ((a, b), (b, a)):
                if known in sizes and other not in sizes:
                    sizes[other], seen[other], changed = sizes[known], str(f), True
    for i in t.indices:
        if i not in sizes:
            v.fail(fn, f"the size of index {i} in {text} is not determined: it appears only in δ or 1 factors. "
                       f"Pass it, e.g. sizes={{{i!r}: 3}}.")
    return sizes


def einsum_term(t: Term, arrays: Mapping[str, jax.Array], sizes: Mapping[str, int], dtype, what: str = "") -> jax.Array:
    """Evaluates one term: the tensors, ``δ`` as ``jnp.eye``, ``1`` as ``jnp.ones``, by ``jnp.einsum``.
    ``what`` names the term in the error for more indices than einsum has labels."""
    if len(t.indices) > MAX_INDICES:
        raise ValueError(f"bracket: {what or t} needs {len(t.indices)} distinct indices; at most {MAX_INDICES} are "
                         f"supported.")
    letter = {i: EINSUM_LETTERS[n] for n, i in enumerate(t.indices)}
    dtype = jnp.result_type(*arrays.values()) if arrays else dtype
    operands = []
    for f in t.factors:
        if f.name == DELTA:
            operands.append(jnp.eye(sizes[f.indices[0]], dtype=dtype))
        elif f.name == ONES:
            operands.append(jnp.ones(tuple(sizes[i] for i in f.indices), dtype))
        else:
            operands.append(arrays[f.name])
    subscripts = ",".join("".join(letter[i] for i in f.indices) for f in t.factors)
    return jnp.einsum(f"{subscripts}->{''.join(letter[i] for i in t.result)}", *operands)


def fresh(used, n: int) -> tuple[str, ...]:
    """``n`` index names not in ``used``: p, q, r, … as in the seed, then primed ones."""
    out, primes = [], ""
    while len(out) < n:
        out += [c + primes for c in _FRESH if c + primes not in used][: n - len(out)]
        primes += "'"
    return tuple(out)


def differentiate(t: Term, k: int, P: Sequence[str]) -> Term:
    """§4.2 for one occurrence: the term of ``∂(F_1…F_m | R)_R / ∂X_P`` from ``F_k = X_L``, laid out ``P R``.

    ``X_L`` is dropped. A summed index ``l ∈ L`` is renamed to its ``p`` (``Σ_l … δ_{lp}`` collapses);
    a result index, or one repeated inside ``L``, keeps an identity ``δ_{lp}``; a ``p`` used nowhere
    else gets ``1_p``. The δ's and the 1 take the place of ``X_L``.
    """
    L = t.factors[k].indices
    rename: dict[str, str] = {}
    inserted = []
    for l, p in zip(L, P):
        if l in t.result:
            inserted.append(Factor(DELTA, (l, p)))  # ∂X_{…l…}/∂X_{…p…} = δ_{lp}, l kept by the result
        elif l in rename:
            inserted.append(Factor(DELTA, (rename[l], p)))  # l repeats in L: a diagonal of X
        else:
            rename[l] = p
    sub = lambda f: Factor(f.name, tuple(rename.get(i, i) for i in f.indices))
    before = [sub(f) for f in t.factors[:k]]
    after = [sub(f) for f in t.factors[k + 1:]]
    used = {i for f in (*before, *inserted, *after) for i in f.indices}
    alone = tuple(p for p in P if p not in used)
    if alone:
        inserted.append(Factor(ONES, alone))
    return Term((*before, *inserted, *after), (*P, *t.result))


# --------------------------------------------------------------------------------------------
# One term as a custom_vjp rule; a sum of terms as one compiled program


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a contraction needs besides its arrays (static under ``jit``, hashed by value)."""

    term: Term
    names: tuple[str, ...]
    sizes: tuple[tuple[str, int], ...]
    dtype: np.dtype


def _forward(spec: Spec, arrays: tuple) -> jax.Array:
    return einsum_term(spec.term, dict(zip(spec.names, arrays)), dict(spec.sizes), spec.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def contract(spec: Spec, arrays: tuple) -> jax.Array:
    """One term, evaluated; its VJP is §4.2's rule (module docstring)."""
    return _forward(spec, arrays)


def _contract_fwd(spec, arrays):
    return _forward(spec, arrays), arrays  # residuals: the tensors; each one's cotangent is a term in the others


def _contract_bwd(spec, arrays, G):
    """§4.2: ``X̄ = Σ_{occurrences of X} ∇`` of ``(G_R F_1 … F_m | )``, one term per occurrence."""
    g = "_G"  # the cotangent's name: no parsed name starts with "_"
    scalar = Term((*spec.term.factors, Factor(g, spec.term.result)), ())
    by_name = {**dict(zip(spec.names, arrays)), g: G}
    sizes = dict(spec.sizes)
    cotangents = []
    for name, X in zip(spec.names, arrays):
        total = None
        for k, f in enumerate(scalar.factors):
            if f.name != name:
                continue
            P = fresh(scalar.indices, len(f.indices))
            term = differentiate(scalar, k, P)
            part = einsum_term(term, {n: by_name[n] for n in term.names}, {**sizes, **dict(zip(P, X.shape))}, G.dtype,
                               f"the VJP of {spec.term} for {name}, {term},")
            total = part if total is None else total + part
        cotangents.append(v.cast_like(total, X))
    return (tuple(cotangents),)


contract.defvjp(_contract_fwd, _contract_bwd)


@functools.partial(jax.jit, static_argnums=0)  # one compiled program per sum and shapes when called eagerly
def sum_terms(specs: tuple[Spec, ...], arrays: tuple) -> jax.Array:
    """The sum of the terms ``specs``, each a :func:`contract` of its tensors."""
    return functools.reduce(jnp.add, (contract(spec, a) for spec, a in zip(specs, arrays)))


def run(term: Term, **arrays) -> jax.Array:
    """Evaluates an operator's term (already checked) through the §4.2 rule."""
    shapes = {n: v.shape_of(x) for n, x in arrays.items()}
    sizes = term_sizes("bracket", term, shapes, {}, str(term))
    spec = Spec(term, term.names, tuple(sorted(sizes.items())), np.dtype(jnp.result_type(*arrays.values())))
    return sum_terms((spec,), (tuple(arrays[n] for n in term.names),))


# --------------------------------------------------------------------------------------------
# Evaluating a parsed expression


def require_tensors(fn: str, needed: Sequence[str], tensors: Mapping[str, object], text: str, noun: str) -> None:
    """Exactly the tensors ``needed`` by ``text`` (each one, and no other; ``noun`` names what ``text``
    lacks), every one a floating array."""
    for name in needed:
        if name not in tensors:
            v.fail(fn, f"tensor {name} of {text} is missing; got {sorted(tensors) or 'none'}.")
    for name in tensors:
        if name not in needed:
            v.fail(fn, f"tensor {name} was passed but {text} has no {noun} {name}.")
    for name, x in tensors.items():
        v.require_floating(fn, name, x)


def _given_sizes(fn: str, sizes, e: Expr) -> dict[str, int]:
    if sizes is None:
        return {}
    if not isinstance(sizes, Mapping):
        v.fail(fn, f"sizes must be a dict from index to size, e.g. {{'p': 3}}; got {sizes!r}.")
    indices = {i for t in e.terms for i in t.indices}
    for i in sizes:
        if i not in indices:
            v.fail(fn, f"sizes names index {i!r}, which does not appear in {e}.")
    return {i: v.require_static_int(fn, f"sizes[{i!r}]", n, minimum=0,
                                    static_why=", as it fixes the result's shape") for i, n in sizes.items()}


def evaluate(fn: str, e: Expr, tensors: Mapping, sizes=None, dtype=None) -> jax.Array:
    """``e`` for ``tensors`` (every tensor of ``e``, and no other), checked; errors carry ``fn``."""
    text = str(e)
    require_tensors(fn, e.names, tensors, text, "factor")
    given = _given_sizes(fn, sizes, e)
    shapes = {n: v.shape_of(x) for n, x in tensors.items()}
    if dtype is None:
        dtype = jnp.result_type(*tensors.values()) if tensors else jnp.zeros(()).dtype
    specs, shapes_out = [], []
    for t in e.terms:
        sizes_t = term_sizes(fn, t, shapes, given, text)
        specs.append(Spec(t, t.names, tuple(sorted(sizes_t.items())), np.dtype(dtype)))
        shapes_out.append(tuple(sizes_t[i] for i in t.result))
        if shapes_out[-1] != shapes_out[0]:
            v.fail(fn, f"the terms of {text} have different shapes: {shapes_out[0]} ({e.terms[0]}) and "
                       f"{shapes_out[-1]} ({t}).")
    return sum_terms(tuple(specs), tuple(tuple(tensors[n] for n in spec.names) for spec in specs))


def bracket(expr: str | Expr, /, *, sizes: Mapping[str, int] | None = None, **tensors) -> jax.Array:
    """Evaluates the explicit form, e.g. ``bracket("(A_ijk B_lji | ijkl)", A=A, B=B)``.

    .. math::

       (A_{ijk} B_{lji} \\mid ijkl)_{ijkl} = A_{ijk} B_{lji},\\qquad
       (A_{ij} B_{jm} \\mid im) = \\textstyle\\sum_j A_{ij} B_{jm} = AB \\quad\\text{(eq. 1)}

    An index not right of ``|`` is summed (repeated or not: a lone one is a barred dimension). The
    VJP is §4.2's rule, one term per occurrence of a tensor (module docstring).

    Args:
      expr: a string for :func:`parse` (a sum ``"(…) + (…)"`` too), or a parsed :class:`Expr`.
      sizes: sizes of indices no tensor fixes (those only in ``δ`` or ``1`` factors), e.g. ``{"p": 3}``.
      **tensors: one floating array per tensor name; every name in ``expr``, and no other.

    Returns:
      The array, laid out as the indices right of ``|``.

    Raises:
      ValueError: naming the tensor or index, for a missing or unused tensor, a rank that does not
        match its indices, an index whose sizes disagree, or a syntax error.

    References:
      ``000_3fed0c34b422d74e.txt`` §2.1 (eq. 1), §2.3, §4.2.
    """
    return evaluate("bracket", parse_as(expr, "bracket"), tensors, sizes)


# --------------------------------------------------------------------------------------------
# §4.2 as a symbolic gradient


@dataclasses.dataclass(frozen=True)
class Gradient:
    """The generalized gradient (eq. 28) of a bracket expression: a sum of terms, one per occurrence.

    Attributes:
      of: the expression differentiated.
      wrt: the tensor's name.
      indices: the fresh indices ``P`` of ``∂X_P``; the gradient is laid out ``P`` then ``of``'s result.
      expr: the sum of terms (``str(gradient)`` prints it; :func:`bracket` evaluates it).
      index_sizes: ``(index, tensor, axis)``: where each fresh index takes its size (for nesting).
    """

    of: Expr
    wrt: str
    indices: tuple[str, ...]
    expr: Expr
    index_sizes: tuple[tuple[str, str, int], ...]

    def to_string(self, ascii: bool = False) -> str:
        return self.expr.to_string(ascii)

    def __str__(self) -> str:
        return self.to_string()

    def equation(self, ascii: bool = False) -> str:
        """``∇_X (a_i X_ij b_j | ) = (a_p b_q | pq)``."""
        nabla = "grad" if ascii else "∇"
        of = self.of.to_string(ascii)
        return f"{nabla}_{self.wrt} {of if len(self.of.terms) == 1 else f'({of})'} = {self.to_string(ascii)}"

    def __call__(self, /, **tensors) -> jax.Array:
        """Evaluates the gradient for the tensors of ``of`` (``wrt`` included: it fixes ``P``'s sizes)."""
        fn = "Gradient"
        needed = tuple(dict.fromkeys((*self.of.names, *(name for _, name, _ in self.index_sizes))))
        require_tensors(fn, needed, tensors, self.equation(), "tensor")
        shapes = {n: v.shape_of(x) for n, x in tensors.items()}
        for name in self.of.names:
            if len(shapes[name]) != self.of.rank_of(name):
                v.fail(fn, f"{name} has shape {shapes[name]} but {self.of} gives it {self.of.rank_of(name)} indices.")
        for p, name, axis in self.index_sizes:
            if axis >= len(shapes[name]):
                v.fail(fn, f"{name} has shape {shapes[name]}; {self.equation()} takes the size of {p} from its "
                           f"dimension {axis + 1}.")
        sizes = {p: shapes[name][axis] for p, name, axis in self.index_sizes}
        for t in self.of.terms:  # the differentiated expression's own sizes, checked and named as written
            term_sizes(fn, t, shapes, {i: n for i, n in sizes.items() if i in t.indices}, str(self.of))
        used = {n: tensors[n] for n in self.expr.names}
        return evaluate(fn, self.expr, used, sizes, jnp.result_type(tensors[self.wrt]))


def gradient(expr: str | Expr | Gradient, wrt: str) -> Gradient:
    """§4.2's rule as a symbolic gradient: ``∇_X`` of a bracket expression, one term per occurrence of X.

    .. math::

       d\\,B(X, \\dots, X) = B(dX, X, \\dots, X) + \\dots + B(X, \\dots, dX)

    For a tensor result the gradient is the generalized gradient of eq. 28,
    ``∇f_{I_n I_m} = ∂f_{I_m}/∂X_{I_n}``: laid out with X's (fresh) indices ``P`` first, then the
    result's; an index of X that is also in the result needs an identity ``δ`` (module docstring)::

        gradient("(a_i X_ij X_kj a_k | )", "X")  ->  (a_p X_kq a_k | pq) + (a_i X_iq a_p | pq)   # 2aaᵀX
        gradient("(X_ij C_jk | ik)", "X")        ->  (δ_ip C_qk | pqik)

    A :class:`Gradient` may be differentiated again (second derivatives, the new ``P`` first).

    Args:
      expr: a string for :func:`parse`, an :class:`Expr`, or a :class:`Gradient`.
      wrt: the name of a tensor in ``expr``.

    Returns:
      A :class:`Gradient`: print it, call it with the tensors, or evaluate ``str()`` of it with
      :func:`bracket` (passing ``sizes`` for indices that only ``δ`` or ``1`` carry).

    Raises:
      ValueError: for ``wrt`` not a tensor of ``expr``, or a gradient term with more distinct indices
        than the 52 an expression may hold (X's fresh indices come on top of the expression's own).

    References:
      ``000_3fed0c34b422d74e.txt`` §4.2, eq. 28–29; §5 for the examples.
    """
    fn = "gradient"
    previous = expr.index_sizes if isinstance(expr, Gradient) else ()
    e = expr.expr if isinstance(expr, Gradient) else parse_as(expr, fn)
    if not isinstance(wrt, str) or wrt not in e.names:
        v.fail(fn, f"wrt={wrt!r} is not a tensor of {e}; its tensors are {', '.join(e.names)}.")
    P = fresh({i for t in e.terms for i in t.indices}, e.rank_of(wrt))
    terms = tuple(differentiate(t, k, P) for t in e.terms for k, f in enumerate(t.factors) if f.name == wrt)
    for t in terms:
        if len(t.indices) > MAX_INDICES:
            v.fail(fn, f"∇_{wrt} {e} needs {len(t.indices)} distinct indices in its term {t} ({wrt}'s "
                       f"{len(P)} fresh indices {''.join(P)} besides the expression's own); at most {MAX_INDICES} "
                       f"are supported.")
    return Gradient(e, wrt, P, Expr(terms), previous + tuple((p, wrt, a) for a, p in enumerate(P)))
