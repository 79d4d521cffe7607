"""Seed 000's Part I made executable: the bracket-notation operators, their differentials (§4.2) and
function application with its generalized gradient (§4.3), as rules with closed-form VJPs.

Seed: ``000_3fed0c34b422d74e.txt`` §2.1–§2.5 (eq. 1–9), §3 (eq. 12–14), §4.2, §4.3 (eq. 16–32).
Positions are 1-based, as in the seed. ``I = i_1…i_n`` indexes ``A``, ``J = j_1…j_m`` indexes ``B``::

    explicit form   (A_ijk B_lji | ijkl)   an index not right of "|" is summed          §2.1, eq. 1
    A ⊗ B         = (A_I B_J | I J)                                                     §2.2
    A^P ⊙^Q B     = (A_{I[P]←K} B_{J[Q]←K} | (I[P]←K) J[−Q])                           eq. 3
    A^{P̄R} ⊙^{QS} B: as eq. 3, the barred positions P (and their partners Q) summed     §2.2
    A^{P·Q} B     = A^{P̄} ⊙^Q B                                                        §2.2
    A ⊙_k B       = A^{(n−k+1)…n} ⊙^{1…k} B,      A ·_k B = A^{(n−k+1)…n · 1…k} B       §2.2, §2.5
    A_P           = (A_{i_1…i_N} | i_{p_1}…i_{p_N})                                     eq. 6
    A_{1[23]}     = (A_ikk | ik),   A_{1[2 3̄]} = (A_ikk | i)   (square brackets, bars)  end of §2.2

Differentials (§4.2). Every operator is one term ``T = (F_1 … F_m | R)`` of the explicit form, and

    d(F_1 … F_m | R) = Σ_k (F_1 … dF_k … F_m | R)                    one term per occurrence

so the generalized gradient (eq. 28, laid out ``P R``: the indices of X first) of T with respect to
X is a sum over the occurrences ``F_k = X_L``: drop ``X_L`` and give its indices ``L`` the fresh
names ``P`` of ``∂X_P``. A summed index ``l`` is renamed to its ``p`` (``Σ_l … δ_{lp} = …|_{l=p}``); an
index that is also in the result, or repeats inside ``L`` (a diagonal of X), keeps an identity
``δ_{lp}``; a ``p`` that appears nowhere else gets an all-ones ``1_p`` (§2.3)::

    ∇_X (X_ij C_jk | ik) = (δ_ip C_qk | pqik)
    ∇_X (a_i X_ij X_kj a_k | ) = (a_p X_kq a_k | pq) + (a_i X_iq a_p | pq)  = 2aaᵀX

The VJP of a term for the cotangent ``G_R`` is this rule applied to the scalar ``(G_R F_1 … F_m | )``:
``X̄_P = Σ_k (G_R Π_{j≠k} F_j Π δ 1 | P)``, evaluated by ``jnp.einsum``.

Function application (§4.3). For ``f : T_{n−k} → T_m`` and positions ``P = p_1…p_k`` of ``X ∈ T_n``::

    f^P(X)_{I_k I_m} = f(X_{I_k^P ·})_{I_m}                            eq. 27
    ∇f(X)_{I_n I_m}  = ∂f(X)_{I_m} / ∂X_{I_n}                          eq. 28, generalized gradient
    ∇f^P(X)          = (∇f)^P(X)                                        eq. 31
    df^P(X; dX)      = ∇f^P(X)^{1…k \\overline{(k+1)…n}} ⊙^{P(−P)} dX     eq. 32, bar restored

so ``X̄_{P(−P)} = ∇f^P(X)^{1…k \\overline{(n+1)…(n+m)}} ⊙^{1…(k+m)} G``. Element-wise ``f`` (§4.3.1):
``df = f'(X) ⊙ dX`` (eq. 17). Softmax (§4.3.5): ``∇s = diag(s) − ssᵀ``.

Seed slips (``jax.grad`` is the arbiter; tests show the corrected forms):

* eq. 32 prints ``∇f^P(X)^{1…n} ⊙^{P(−P)} dX`` without the bar over ``(k+1)…n``; unbarred, the result
  would keep the ``n − k`` dimensions of the subtensors. §4.3.5 applies it with the bar.
* §4.3.5 writes ``∇s^1(A)^{12} ⊙^{1\\bar 2} dA``, the bar on the right operand; §2.2 puts bars on the
  left (``A^{\\bar P Q} ⊙^{RS} B``). Both mean the fused dimension is summed, and a ``~`` in either
  position string is accepted here.
* The text copy of the seed prints the dot operator's ``·`` as a comma (``A^{1,1}B``, ``M^{345,123}dx``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validation as v
from .softmax import log_softmax

DELTA = "δ"  # the identity δ_{ip} (ASCII: delta)
ONES = "1"  # the all-ones tensor 1_{pq…} (§2.3)
_EINSUM_LETTERS = "ijklmnopqrstuvwxyzabcdefghIJKLMNOPQRSTUVWXYZABCDEFGH"  # einsum's 52 labels
_FRESH = "pqrstuvwxyzabcdefghijklmnoPQRSTUVWXYZABCDEFGHIJKLMNO"  # fresh names for ∂X_P, the seed's p, q, …


# --------------------------------------------------------------------------------------------
# The explicit form: terms, sums of terms, and the parser


@dataclasses.dataclass(frozen=True)
class Factor:
    """One factor of a term: a tensor name (or ``δ``, ``1``) and one index per dimension."""

    name: str
    indices: tuple[str, ...]

    def to_string(self, ascii: bool = False) -> str:
        name = "delta" if ascii and self.name == DELTA else self.name
        return f"{name}_{''.join(self.indices)}" if self.indices else name

    def __str__(self) -> str:
        return self.to_string()


@dataclasses.dataclass(frozen=True)
class Term:
    """``(F_1 … F_m | R)``: the product of the factors, laid out by ``result``; other indices summed."""

    factors: tuple[Factor, ...]
    result: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The tensors, in order of first appearance (``δ`` and ``1`` are constants, not tensors)."""
        return tuple(dict.fromkeys(f.name for f in self.factors if f.name not in (DELTA, ONES)))

    @property
    def indices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(i for f in self.factors for i in f.indices))

    def to_string(self, ascii: bool = False) -> str:
        return f"({' '.join(f.to_string(ascii) for f in self.factors)} | {''.join(self.result)})"

    def __str__(self) -> str:
        return self.to_string()


@dataclasses.dataclass(frozen=True)
class Expr:
    """A sum of terms in the explicit form (one term: a single product). Call it to evaluate it."""

    terms: tuple[Term, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for t in self.terms for n in t.names))

    def rank_of(self, name: str) -> int:
        return next(len(f.indices) for t in self.terms for f in t.factors if f.name == name)

    def to_string(self, ascii: bool = False) -> str:
        return " + ".join(t.to_string(ascii) for t in self.terms)

    def __str__(self) -> str:
        return self.to_string()

    def __call__(self, /, *, sizes: Mapping[str, int] | None = None, **tensors) -> jax.Array:
        """Evaluates the expression, as :func:`bracket`."""
        return _evaluate("bracket", self, tensors, sizes)


_NAME = re.compile(r"(δ|delta|[A-Za-z][A-Za-z0-9]*|1)(?:_(?:\{([^{}]*)\}|([^\s{}|()]+)))?(?=\s|$)")
_INDEX = re.compile(r"[A-Za-z]'*")


def _indices(fn: str, text: str, where: str, expr: str) -> tuple[str, ...]:
    compact = re.sub(r"[\s,]", "", text)
    if not re.fullmatch(r"(?:[A-Za-z]'*)*", compact):
        v.fail(fn, f"cannot read the indices {text!r} of {where} in {expr!r}: an index is one ASCII letter, "
                   f"optionally primed (i, i', i'').")
    return tuple(_INDEX.findall(compact))


def _parse_term(fn: str, body: str, expr: str) -> Term:
    if body.count("|") != 1:
        v.fail(fn, f"cannot read the term ({body}) of {expr!r}: a term is '(factors | result indices)', with one '|'.")
    left, right = body.split("|")
    factors, pos, left = [], 0, left.strip()
    while pos < len(left):
        m = _NAME.match(left, pos)
        if not m:
            v.fail(fn, f"cannot read {left[pos:]!r} in {expr!r}: a factor is a name and its indices, e.g. A_ij, "
                       f"A_{{ij}}, A_i'j, δ_ip, 1_q; separate factors by spaces.")
        name = DELTA if m.group(1) == "delta" else m.group(1)
        text = m.group(2) if m.group(2) is not None else (m.group(3) or "")
        factors.append(Factor(name, _indices(fn, text, m.group(0), expr)))
        pos = m.end()
        while pos < len(left) and left[pos].isspace():
            pos += 1
    if not factors:
        v.fail(fn, f"the term ({body}) of {expr!r} has no factors.")
    return Term(tuple(factors), _indices(fn, right, "the result (right of '|')", expr))


def _check_expr(fn: str, e: Expr, text: str) -> None:
    ranks: dict[str, Factor] = {}
    for t in e.terms:
        for f in t.factors:
            if f.name == DELTA and len(f.indices) != 2:
                v.fail(fn, f"{f} in {text!r}: δ (the identity) takes two indices, e.g. δ_ip.")
            seen = ranks.setdefault(f.name, f)
            if f.name not in (DELTA, ONES) and len(seen.indices) != len(f.indices):
                v.fail(fn, f"{f.name} is used with {len(seen.indices)} indices ({seen}) and with {len(f.indices)} "
                           f"({f}) in {text!r}; a tensor has one rank.")
        for i in t.result:
            if t.result.count(i) > 1:
                v.fail(fn, f"index {i} appears {t.result.count(i)} times right of '|' in {t}; each result index "
                           f"names one dimension.")
            if i not in t.indices:
                v.fail(fn, f"index {i} right of '|' in {t} appears in no factor.")
        if len(t.indices) > len(_EINSUM_LETTERS):
            v.fail(fn, f"{t} has {len(t.indices)} distinct indices; at most {len(_EINSUM_LETTERS)} are supported.")
    if len({len(t.result) for t in e.terms}) > 1:
        v.fail(fn, f"the terms of {text!r} have results of different ranks {[len(t.result) for t in e.terms]}; "
                   f"a sum needs one shape.")


def parse(expr: str | Expr) -> Expr:
    """Parses the explicit bracket form: ``"(A_ijk B_lji | ijkl)"``, or a sum ``"(…) + (…)"``.

    A factor is a name (letters and digits, starting with a letter) and its indices after ``_``
    (``A_ijk``, ``A_{i j k}``); an index is one ASCII letter, optionally primed (``i'``, ``i''``)
    for more than 52 names. ``δ_ip`` (ASCII ``delta_ip``) is the identity, ``1_pq`` the all-ones
    tensor, a bare name a scalar. Right of ``|``, the result's indices in order (none: a scalar).

    References:
      ``000_3fed0c34b422d74e.txt`` §2.1 (eq. 1), §2.3.
    """
    return _parse(expr, "parse")


def _parse(expr: str | Expr, fn: str) -> Expr:
    if isinstance(expr, Expr):
        return expr
    if not isinstance(expr, str):
        v.fail(fn, f"expr must be a string such as '(A_ij B_jk | ik)'; got {type(expr).__name__}.")
    terms, rest = [], expr.strip()
    while True:
        m = re.match(r"\(([^()]*)\)\s*", rest)
        if not m:
            v.fail(fn, f"cannot read {expr!r} at {rest[:30]!r}: expected a term '(factors | result indices)'.")
        terms.append(_parse_term(fn, m.group(1), expr))
        rest = rest[m.end():]
        if not rest:
            break
        if not rest.startswith("+"):
            v.fail(fn, f"cannot read {expr!r} at {rest[:30]!r}: terms are joined by '+'.")
        rest = rest[1:].lstrip()
    e = Expr(tuple(terms))
    _check_expr(fn, e, expr)
    return e


# --------------------------------------------------------------------------------------------
# Evaluation (jnp.einsum) and the §4.2 rule as the VJP


def _sizes(fn: str, t: Term, shapes: Mapping[str, tuple], given: Mapping[str, int], text: str) -> dict[str, int]:
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


def _einsum(t: Term, arrays: Mapping[str, jax.Array], sizes: Mapping[str, int], dtype) -> jax.Array:
    """Evaluates one term: the tensors, ``δ`` as ``jnp.eye``, ``1`` as ``jnp.ones``, by ``jnp.einsum``."""
    letter = {i: _EINSUM_LETTERS[n] for n, i in enumerate(t.indices)}
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


def _fresh(used, n: int) -> tuple[str, ...]:
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


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What a contraction needs besides its arrays (static under ``jit``)."""

    term: Term
    names: tuple[str, ...]
    sizes: tuple[tuple[str, int], ...]
    dtype: np.dtype


def _forward(spec: _Spec, arrays: tuple) -> jax.Array:
    return _einsum(spec.term, dict(zip(spec.names, arrays)), dict(spec.sizes), spec.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _contract(spec: _Spec, arrays: tuple) -> jax.Array:
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
            P = _fresh(scalar.indices, len(f.indices))
            term = differentiate(scalar, k, P)
            part = _einsum(term, {n: by_name[n] for n in term.names}, {**sizes, **dict(zip(P, X.shape))}, G.dtype)
            total = part if total is None else total + part
        cotangents.append(v.cast_like(total, X))
    return (tuple(cotangents),)


_contract.defvjp(_contract_fwd, _contract_bwd)


def _floating(fn: str, tensors: Mapping[str, object]) -> None:
    for name, x in tensors.items():
        v.require_floating(fn, name, x)


def _check_sizes_arg(fn: str, sizes, e: Expr) -> dict[str, int]:
    if sizes is None:
        return {}
    if not isinstance(sizes, Mapping):
        v.fail(fn, f"sizes must be a dict from index to size, e.g. {{'p': 3}}; got {sizes!r}.")
    indices = {i for t in e.terms for i in t.indices}
    for i, n in sizes.items():
        if i not in indices:
            v.fail(fn, f"sizes names index {i!r}, which does not appear in {e}.")
        if v.static_int(n) is None or int(n) < 0:
            v.fail(fn, f"sizes[{i!r}] must be an int >= 0; got {n!r}.")
    return {i: int(n) for i, n in sizes.items()}


def _evaluate(fn: str, e: Expr, tensors: Mapping, sizes=None, dtype=None) -> jax.Array:
    text = str(e)
    for name in e.names:
        if name not in tensors:
            v.fail(fn, f"tensor {name} of {text} is missing; got {sorted(tensors) or 'none'}.")
    for name in tensors:
        if name not in e.names:
            v.fail(fn, f"tensor {name} was passed but {text} has no factor {name}.")
    _floating(fn, tensors)
    given = _check_sizes_arg(fn, sizes, e)
    shapes = {n: v.shape_of(x) for n, x in tensors.items()}
    if dtype is None:
        dtype = jnp.result_type(*tensors.values()) if tensors else jnp.zeros(()).dtype
    specs, shapes_out = [], []
    for t in e.terms:
        sizes_t = _sizes(fn, t, shapes, given, text)
        specs.append(_Spec(t, t.names, tuple(sorted(sizes_t.items())), np.dtype(dtype)))
        shapes_out.append(tuple(sizes_t[i] for i in t.result))
        if shapes_out[-1] != shapes_out[0]:
            v.fail(fn, f"the terms of {text} have different shapes: {shapes_out[0]} ({e.terms[0]}) and "
                       f"{shapes_out[-1]} ({t}).")
    return _sum(tuple(specs), tuple(tuple(tensors[n] for n in spec.names) for spec in specs))


@functools.partial(jax.jit, static_argnums=0)  # one compiled program per sum and shapes when called eagerly
def _sum(specs: tuple[_Spec, ...], arrays: tuple) -> jax.Array:
    return functools.reduce(jnp.add, (_contract(spec, a) for spec, a in zip(specs, arrays)))


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
    return _evaluate("bracket", _parse(expr, "bracket"), tensors, sizes)


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
        for name in needed:
            if name not in tensors:
                v.fail(fn, f"tensor {name} of {self.equation()} is missing; got {sorted(tensors) or 'none'}.")
        for name in tensors:
            if name not in needed:
                v.fail(fn, f"tensor {name} was passed but {self.equation()} has no tensor {name}.")
        _floating(fn, tensors)
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
            _sizes(fn, t, shapes, {i: n for i, n in sizes.items() if i in t.indices}, str(self.of))
        used = {n: tensors[n] for n in self.expr.names}
        return _evaluate(fn, self.expr, used, sizes, jnp.result_type(tensors[self.wrt]))


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

    References:
      ``000_3fed0c34b422d74e.txt`` §4.2, eq. 28–29; §5 for the examples.
    """
    fn = "gradient"
    previous = expr.index_sizes if isinstance(expr, Gradient) else ()
    e = expr.expr if isinstance(expr, Gradient) else _parse(expr, fn)
    if not isinstance(wrt, str) or wrt not in e.names:
        v.fail(fn, f"wrt={wrt!r} is not a tensor of {e}; its tensors are {', '.join(e.names)}.")
    P = _fresh({i for t in e.terms for i in t.indices}, e.rank_of(wrt))
    terms = tuple(differentiate(t, k, P) for t in e.terms for k, f in enumerate(t.factors) if f.name == wrt)
    return Gradient(e, wrt, P, Expr(terms), previous + tuple((p, wrt, a) for a, p in enumerate(P)))


# --------------------------------------------------------------------------------------------
# Positions: (2, 3), "23", "~2 3", and the square-bracket groups "1[23]" of A_P


def _read_positions(fn: str, arg: str, value, groups: bool) -> tuple[tuple[tuple[int, ...], ...], set[int]]:
    """``value`` as items (one tuple of positions per item: a group, or a single position) and the
    positions marked ``~`` (a bar). A string holds one-digit positions, ``[…]`` groups and ``~`` marks;
    spaces and commas are ignored."""
    if isinstance(value, str):
        items, marks, group = [], set(), None
        tokens = re.findall(r"~?\d|\[|\]|[\s,]+|.", value)
        for tok in tokens:
            if re.fullmatch(r"[\s,]+", tok):
                continue
            if tok == "[" and groups and group is None:
                group = []
            elif tok == "]" and group is not None:
                if not group:
                    v.fail(fn, f"{arg}={value!r} has an empty square-bracket group.")
                items.append(tuple(group))
                group = None
            elif re.fullmatch(r"~?\d", tok):
                pos = int(tok[-1])
                if tok.startswith("~"):
                    marks.add(pos)
                if group is not None:
                    group.append(pos)
                else:
                    items.append((pos,))
            else:
                spelled = "digits, '~' marks (a bar), '[…]' groups" if groups else "digits and '~' marks (a bar)"
                v.fail(fn, f"cannot read {arg}={value!r} at {tok!r}: a position string holds {spelled}; "
                           f"for positions above 9 pass a tuple of ints.")
        if group is not None:
            v.fail(fn, f"{arg}={value!r} has an unclosed '['.")
        return tuple(items), marks
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Sequence):
        v.fail(fn, f"{arg} must be a sequence of 1-based positions (or a string such as '23'); got {value!r}.")
    items = []
    for item in value:
        if groups and isinstance(item, tuple | list):
            ints = tuple(v.static_int(i) for i in item)
        else:
            ints = (v.static_int(item),)
        if None in ints or not ints:
            kind = "ints or tuples of ints (square-bracket groups)" if groups else "ints"
            v.fail(fn, f"{arg} must hold 1-based positions as {kind}; got {value!r}.")
        items.append(ints)
    return tuple(items), set()


def _check_range(fn: str, arg: str, value, positions: Sequence[int], tensor: str, shape: tuple) -> None:
    for p in positions:
        if not 1 <= p <= len(shape):
            v.fail(fn, f"{arg}={value!r} has position {p}, out of range for {tensor} of shape {shape} "
                       f"(positions are 1-based: 1..{len(shape)}).")
    for p in positions:
        if list(positions).count(p) > 1:
            v.fail(fn, f"{arg}={value!r} repeats position {p} (lists of positions are without repetition, §2.2).")


def _flat_positions(fn: str, arg: str, value, tensor: str, shape: tuple) -> tuple[tuple[int, ...], set[int]]:
    items, marks = _read_positions(fn, arg, value, groups=False)
    positions = tuple(p for (p,) in items)
    _check_range(fn, arg, value, positions, tensor, shape)
    return positions, marks


def _bar_positions(fn: str, bar) -> set[int]:
    if isinstance(bar, str):
        return {p for (p,) in _read_positions(fn, "bar", bar.replace("~", ""), groups=False)[0]}
    if not isinstance(bar, Sequence | set | frozenset) or any(v.static_int(b) is None for b in bar):
        v.fail(fn, f"bar must be a collection of 1-based positions (ints); got {bar!r}.")
    return {int(b) for b in bar}


def _array(fn: str, name: str, x) -> tuple[int, ...]:
    v.require_floating(fn, name, x)
    return v.shape_of(x)


def _run(term: Term, **arrays) -> jax.Array:
    """Evaluates an operator's term (already checked) through the §4.2 rule."""
    shapes = {n: v.shape_of(x) for n, x in arrays.items()}
    sizes = _sizes("bracket", term, shapes, {}, str(term))
    spec = _Spec(term, term.names, tuple(sorted(sizes.items())), np.dtype(jnp.result_type(*arrays.values())))
    return _sum((spec,), (tuple(arrays[n] for n in term.names),))


# --------------------------------------------------------------------------------------------
# The operators of §2.2 and §2.5


def _letters(n: int, start: int = 0) -> list[str]:
    if start + n > len(_EINSUM_LETTERS):
        raise ValueError(f"bracket operators: {start + n} dimensions in all; at most {len(_EINSUM_LETTERS)} are supported.")
    return list(_EINSUM_LETTERS[start:start + n])


def otimes_term(n: int, m: int) -> Term:
    """``A ⊗ B = (A_I B_J | I J)`` for ``A ∈ T_n``, ``B ∈ T_m``."""
    I, J = _letters(n), _letters(m, n)
    return Term((Factor("A", tuple(I)), Factor("B", tuple(J))), (*I, *J))


def otimes(A: jax.Array, B: jax.Array) -> jax.Array:
    """The Kronecker (tensor) product ``A ⊗ B = (A_I B_J | I J)``, of rank ``n + m``.

    ``v ⊗ w = vwᵀ`` for vectors; in general ``A ⊗ B ≠ B ⊗ A``. The VJP (§4.2) is
    ``Ā = (G_{IJ} B_J | I) = G ·_m B`` and ``B̄ = (G_{IJ} A_I | J) = A ·_n G``.

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2 (the Kronecker product), eq. 7.
    """
    fn = "otimes"
    return _run(otimes_term(len(_array(fn, "A", A)), len(_array(fn, "B", B))), A=A, B=B)


def odot_term(n: int, m: int, p: Sequence[int], q: Sequence[int], bar=()) -> Term:
    """Eq. 3's explicit form: ``A^P ⊙^Q B = (A_{I[P]←K} B_{J[Q]←K} | (I[P]←K)[−bar] J[−Q])``."""
    I, J = _letters(n), _letters(m, n)
    for a, b in zip(p, q):
        J[b - 1] = I[a - 1]  # the fused dimensions share K
    result = [I[a - 1] for a in range(1, n + 1) if a not in bar] + [J[b - 1] for b in range(1, m + 1) if b not in q]
    return Term((Factor("A", tuple(I)), Factor("B", tuple(J))), tuple(result))


def odot(A: jax.Array, B: jax.Array, p=None, q=None, bar=()) -> jax.Array:
    """``A^P ⊙^Q B`` (eq. 3), with the positions in ``bar`` summed over (§2.2, barred positions).

    .. math::

       A^P \\odot^Q B = (A_{I[P]\\leftarrow K}\\, B_{J[Q]\\leftarrow K} \\mid (I[P]\\leftarrow K)\\, J[-Q])

    Dimension ``p_t`` of A is multiplied element-wise with dimension ``q_t`` of B. The result keeps
    A's dimensions in order (the fused ones at A's positions, the barred ones summed and removed),
    then B's free dimensions in order. ``A^{12} ⊙^{32} B = (A_ijk B_lji | ijkl)`` (eq. 4); the two
    orders differ by a permutation of the result (eq. 4–5, 8–9). Omitting ``p`` and ``q`` means all
    positions: ``odot(W, W)`` is the Hadamard product ``W ⊙ W``.

    Args:
      A: ``T_n``; B: ``T_m``.
      p: positions of A (1-based): a sequence of ints, or a string of digits (``"23"``) in which
        ``~`` bars a position (``"~2"`` is the seed's ``\\bar 2``).
      q: as many positions of B, paired with ``p``; a ``~`` here bars the fused dimension as well
        (§4.3.5 writes the bar on this side).
      bar: positions of A, a subset of ``p``, whose fused dimensions are summed.

    Returns:
      The product, of rank ``n + m − len(p) − len(bar)``.

    Raises:
      ValueError: naming the argument, the shapes and the positions, for a position out of range or
        repeated, ``bar`` not a subset of ``p``, or fused dimensions of different sizes.

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2, eq. 2–5; §2.3 eq. 8–9; §4.2 for the VJP.
    """
    fn = "odot"
    return _run(_odot_checked(fn, A, B, p, q, bar, dot=False), A=A, B=B)


def _odot_checked(fn, A, B, p, q, bar, dot: bool) -> Term:
    a_shape, b_shape = _array(fn, "A", A), _array(fn, "B", B)
    if p is None and q is None:
        if len(a_shape) != len(b_shape):
            v.fail(fn, f"with p and q omitted (all positions) A and B must have the same rank; got shapes "
                       f"{a_shape} and {b_shape}.")
        p = q = tuple(range(1, len(a_shape) + 1))
    elif p is None or q is None:
        v.fail(fn, f"give both p and q, or neither (all positions); got p={p!r}, q={q!r}.")
    P, marks_p = _flat_positions(fn, "p", p, "A", a_shape)
    Q, marks_q = _flat_positions(fn, "q", q, "B", b_shape)
    if len(P) != len(Q):
        v.fail(fn, f"p={p!r} and q={q!r} must have the same length (position p_t of A is fused with q_t of B); "
                   f"A has shape {a_shape}, B has shape {b_shape}.")
    barred = _bar_positions(fn, bar) | marks_p | {P[Q.index(b)] for b in marks_q}
    if not barred <= set(P):
        v.fail(fn, f"bar={bar!r} must be a subset of p={p!r} (only fused dimensions are barred); "
                   f"A has shape {a_shape}.")
    for a, b in zip(P, Q):
        if a_shape[a - 1] != b_shape[b - 1]:
            v.fail(fn, f"A's position {a} (size {a_shape[a - 1]}; A has shape {a_shape}) is fused with B's position "
                       f"{b} (size {b_shape[b - 1]}; B has shape {b_shape}): fused sizes must match (p={p!r}, q={q!r}).")
    return odot_term(len(a_shape), len(b_shape), P, Q, set(P) if dot else barred)


def dot(A: jax.Array, B: jax.Array, p=None, q=None) -> jax.Array:
    """The dot operator ``A^{P·Q} B = A^{\\bar P} ⊙^Q B``: every fused dimension summed.

    ``AB = A^{2·1}B``; ``vᵀw = v · w`` (``p``, ``q`` omitted: all positions, the full inner
    product ``A · B``). ``M^{345·123} dx`` is ``dot(M, dx, (3, 4, 5), (1, 2, 3))`` (eq. 13).

    Args:
      A, B, p, q: as for :func:`odot`.

    Returns:
      The contraction, of rank ``n + m − 2·len(p)``.

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2 (the dot operator), eq. 13–14.
    """
    fn = "dot"
    return _run(_odot_checked(fn, A, B, p, q, (), dot=True), A=A, B=B)


def _k_checked(fn: str, A, B, k) -> tuple[tuple[int, ...], tuple[int, ...]]:
    a_shape, b_shape = _array(fn, "A", A), _array(fn, "B", B)
    k_int = v.static_int(k)
    if k_int is None or k_int < 0:
        v.fail(fn, f"k must be an int >= 0; got {k!r}.")
    if k_int > min(len(a_shape), len(b_shape)):
        v.fail(fn, f"k={k_int} does not fit: it pairs the last k dimensions of A (shape {a_shape}, rank "
                   f"{len(a_shape)}) with the first k of B (shape {b_shape}, rank {len(b_shape)}); k must be <= "
                   f"{min(len(a_shape), len(b_shape))}.")
    n = len(a_shape)
    return tuple(range(n - k_int + 1, n + 1)), tuple(range(1, k_int + 1))


def odot_k(A: jax.Array, B: jax.Array, k: int) -> jax.Array:
    """``A ⊙_k B = A^{(n−k+1)…n} ⊙^{1…k} B``: the last ``k`` dimensions of A fused with B's first ``k``.

    Associative where ``max(k, h) ≤ dim(B)``: ``(A ⊙_k B) ⊙_h C = A ⊙_k (B ⊙_h C)`` (§2.5).

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2, §2.5.
    """
    P, Q = _k_checked("odot_k", A, B, k)
    return odot(A, B, P, Q)


def dot_k(A: jax.Array, B: jax.Array, k: int) -> jax.Array:
    """``A ·_k B = A^{(n−k+1)…n · 1…k} B``: the last ``k`` dimensions of A contracted with B's first ``k``.

    ``AB = A ·_1 B``. Associative where ``k + h ≤ dim(B)``: ``(A ·_k B) ·_h C = A ·_k (B ·_h C)`` (§2.5).

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2, §2.5.
    """
    P, Q = _k_checked("dot_k", A, B, k)
    return dot(A, B, P, Q)


def permute_term(n: int, items: Sequence[Sequence[int]], barred: set[int]) -> Term:
    """``A_P`` with square-bracket groups: one index per item, shared inside a group; barred items summed."""
    letters = _letters(len(items))
    I = [""] * n
    for letter, item in zip(letters, items):
        for pos in item:
            I[pos - 1] = letter
    result = tuple(letter for letter, item in zip(letters, items) if not barred & set(item))
    return Term((Factor("A", tuple(I)),), result)


def permute(A: jax.Array, p, bar=()) -> jax.Array:
    """``A_P = (A_{i_1…i_N} | i_{p_1}…i_{p_N})`` (eq. 6), with square brackets and bars (end of §2.2).

    Result dimension ``t`` is A's dimension ``p_t`` (so ``permute(A, p)`` is
    ``jnp.transpose(A, [p_t − 1])``). Positions in square brackets are multiplied element-wise into
    one dimension (a diagonal), placed where the group stands; a barred position (or group) is
    summed. ``A_{1[23]} = (A_ikk | ik)``, ``A_{\\bar 1[23]} = (A_ikk | k)``.

    ASCII spelling: a string of one-digit positions with ``[…]`` for a group and ``~`` before a
    position for its bar, spaces and commas ignored: ``"~1[257]3[4~6]8"`` is the seed's
    ``A_{\\bar 1[2 5 7] 3 [4 \\bar 6] 8}``. The same as a sequence: ``p=(1, (2, 5, 7), 3, (4, 6), 8)``,
    ``bar=(1, 6)``; use the sequence above rank 9.

    Args:
      A: ``T_N``.
      p: every position of A exactly once, as above.
      bar: positions to sum (one per group at most: "the mark must be put only on one of them").

    Returns:
      ``A_P``: one dimension per unbarred item of ``p``.

    Raises:
      ValueError: naming ``p`` or ``bar`` and A's shape, for a missing, repeated or out-of-range
        position, a group whose sizes differ, or two bars in one group.

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2, eq. 6 and the square-bracket form after it.
    """
    fn = "permute"
    shape = _array(fn, "A", A)
    items, marks = _read_positions(fn, "p", p, groups=True)
    flat = [pos for item in items for pos in item]
    _check_range(fn, "p", p, flat, "A", shape)
    missing = [pos for pos in range(1, len(shape) + 1) if pos not in flat]
    if missing:
        v.fail(fn, f"p={p!r} misses position(s) {tuple(missing)} of A of shape {shape}: A_P lists every position once.")
    barred = _bar_positions(fn, bar) | marks
    for b in barred:
        if b not in flat:
            v.fail(fn, f"bar={bar!r} has position {b}, not in p={p!r} (A has shape {shape}).")
    for item in items:
        sizes = tuple(shape[pos - 1] for pos in item)
        if len(set(sizes)) > 1:
            v.fail(fn, f"the square-bracket group {list(item)} of p={p!r} multiplies A's dimensions element-wise; "
                       f"their sizes {sizes} must match (A has shape {shape}).")
        if len(barred & set(item)) > 1:
            v.fail(fn, f"bar marks {sorted(barred & set(item))}, all in the group {list(item)} of p={p!r}; mark one "
                       f"position of a group (§2.2).")
    return _run(permute_term(len(shape), items, barred), A=A)


# --------------------------------------------------------------------------------------------
# Function application, §4.3


@dataclasses.dataclass(frozen=True, eq=False)
class Function:
    """``f : T_r → T_m`` with its generalized gradient (eq. 28), for :func:`apply`.

    Attributes:
      fn: ``x ↦ f(x)`` on one subtensor ``x ∈ T_r``.
      grad: ``(x, y) ↦ ∇f(x)`` with ``y = f(x)``: ``∇f(x)_{I_r I_m} = ∂f(x)_{I_m}/∂x_{I_r}``, shape
        ``x.shape + y.shape`` (the subtensor's dimensions first). Closed form, no autodiff.
      name: for messages.
      rank: ``r`` when f needs subtensors of one rank (softmax: 1); ``None`` for any.
    """

    fn: Callable
    grad: Callable
    name: str = "f"
    rank: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Elementwise:
    """``f : ℝ → ℝ`` applied element-wise (§4.3.1, eq. 16), with ``df = f'(X) ⊙ dX`` (eq. 17).

    Attributes:
      fn: ``X ↦ f(X)``, element-wise.
      derivative: ``(x, y) ↦ f'(x)`` element-wise, with ``y = f(x)`` (use whichever is cheaper).
      name: for messages.
    """

    fn: Callable
    derivative: Callable
    name: str = "f"


def _softmax_vector(a):
    return a if a.shape[-1] == 0 else jnp.exp(log_softmax(a, axis=-1))  # an empty vector's softmax is empty


def _softmax_grad(a, s):
    return jnp.diag(s) - jnp.outer(s, s)  # §4.3.5: ∇s = s ⊙_1 (I − 1sᵀ) = diag(s) − ssᵀ


softmax = Function(_softmax_vector, _softmax_grad, "softmax", rank=1)
exp = Elementwise(jnp.exp, lambda x, y: y, "exp")
log = Elementwise(jnp.log, lambda x, y: 1 / x, "log")
tanh = Elementwise(jnp.tanh, lambda x, y: (1 - y) * (1 + y), "tanh")
sigmoid = Elementwise(jax.nn.sigmoid, lambda x, y: y * (1 - y), "sigmoid")


def _over_leading(f: Callable, k: int) -> Callable:
    """``f`` applied to every subtensor indexed by the ``k`` leading axes (eq. 27's ``I_k``)."""
    for _ in range(k):
        f = jax.vmap(f)
    return f


def _order(P: tuple[int, ...], n: int) -> tuple[int, ...]:
    """``P(−P)``, 0-based: the positions P, then the others in increasing order."""
    return (*P, *(a for a in range(n) if a not in P))


def _subtensors(f, P, X):
    """``X_{P(−P)}`` (``Xt[I_k]`` is the subtensor ``X_{I_k^P ·}``) and ``f^P(X)`` (eq. 27)."""
    Xt = jnp.transpose(X, _order(P, X.ndim))
    Z = f.fn(Xt) if isinstance(f, Elementwise) else _over_leading(f.fn, len(P))(Xt)
    return Xt, Z


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _apply(f, P, X):
    return _subtensors(f, P, X)[1]


def _apply_fwd(f, P, X):
    Xt, Z = _subtensors(f, P, X)
    return Z, (Xt, Z)  # residuals: the subtensors and f's outputs, from which ∇f (or f') is formed


def _apply_bwd(f, P, res, G):
    Xt, Z = res
    k, n = len(P), Xt.ndim
    if isinstance(f, Elementwise):
        Xbar_t = f.derivative(Xt, Z) * G  # eq. 17: ∇f is diagonal, eq. 32 reduces to f'(X) ⊙ dX
    else:
        N = _over_leading(f.grad, k)(Xt, Z)  # ∇f^P(X) = (∇f)^P(X), eq. 31: I_k, then J_{n−k}, then I_m
        m = N.ndim - n
        lead, out = tuple(range(1, k + 1)), tuple(range(n + 1, n + m + 1))
        # eq. 32 transposed: X̄_{P(−P)} = ∇f^P(X)^{1…k \bar{(n+1)…(n+m)}} ⊙^{1…(k+m)} G
        term = odot_term(N.ndim, G.ndim, lead + out, tuple(range(1, k + m + 1)), set(out))
        Xbar_t = _einsum(term, {"A": N, "B": G}, {}, G.dtype)
    return (v.cast_like(jnp.transpose(Xbar_t, np.argsort(_order(P, n))), Xt),)


_apply.defvjp(_apply_fwd, _apply_bwd)
_apply_jit = jax.jit(_apply, static_argnums=(0, 1))


def _apply_checked(fn: str, f, X, p) -> tuple[int, ...]:
    if not isinstance(f, Function | Elementwise):
        v.fail(fn, f"f must be a Function (fn with its generalized gradient ∇f, eq. 28) or an Elementwise (fn with "
                   f"f'), e.g. mdc_jax.bracket.softmax; got {f!r}. Wrap your own: Function(fn, grad).")
    shape = _array(fn, "X", X)
    P, marks = _flat_positions(fn, "p", p, "X", shape)
    if marks:
        v.fail(fn, f"p={p!r}: f^P takes no bars.")
    free = tuple(a for a in range(1, len(shape) + 1) if a not in P)
    if isinstance(f, Function):
        if f.rank is not None and len(free) != f.rank:
            v.fail(fn, f"{f.name} maps T_{f.rank} subtensors, so p must leave {f.rank} of X's positions free; X has "
                       f"shape {shape} and p={p!r} leaves {len(free)} {free}.")
        sub = jax.ShapeDtypeStruct(tuple(shape[a - 1] for a in free), jnp.result_type(X))
        y = jax.eval_shape(f.fn, sub)
        g = jax.eval_shape(f.grad, sub, y)
        if g.shape != sub.shape + y.shape:
            v.fail(fn, f"{f.name}.grad returned shape {g.shape} for a subtensor of shape {sub.shape} and f's output of "
                       f"shape {y.shape}; the generalized gradient of eq. 28 has shape {sub.shape + y.shape} (the "
                       f"subtensor's dimensions, then the output's).")
    return tuple(a - 1 for a in P)


def apply(f: Function | Elementwise, X: jax.Array, p) -> jax.Array:
    """``f^P(X)``: ``f`` applied to the subtensors ``X_{I_k^P ·}``, the result indexed ``I_k I_m`` (eq. 27).

    .. math::

       f^P(X)_{I_k I_m} = f(X_{I_k^P \\cdot})_{I_m},\\qquad
       df^P(X; dX) = \\nabla f^P(X)^{1\\dots k\\,\\overline{(k+1)\\dots n}} \\odot^{P(-P)} dX \\quad\\text{(eq. 32)}

    The subtensors fix X's positions ``P`` (in that order) and keep the others in increasing order;
    the result's first dimensions are ``P``'s, in the order given: ``apply(softmax, A, (1,))`` is the
    row-wise softmax ``s¹(A)`` of §4.3.5, ``apply(softmax, A, (2,))`` the softmax of A's columns,
    returned as rows. The VJP is eq. 32 transposed, with ``∇f`` in closed form (``f.grad``, or
    ``f'`` for an element-wise f, eq. 17); eq. 32 as printed lacks the bar (module docstring).

    Args:
      f: :data:`softmax`, an element-wise function (:data:`exp`, :data:`log`, :data:`tanh`,
        :data:`sigmoid`, or :class:`Elementwise`), or your own :class:`Function`.
      X: ``T_n``, floating.
      p: the positions ``P`` that index the subtensors (ints, or a digit string such as ``"31"``).

    Returns:
      ``f^P(X)``, of shape ``X.shape[P] + f(subtensor).shape``.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.3.1 (eq. 16–17), §4.3.4 (eq. 27–32), §4.3.5.
    """
    return _apply_jit(f, _apply_checked("apply", f, X, p), X)


def apply_gradient(f: Function | Elementwise, X: jax.Array, p) -> jax.Array:
    """``∇f^P(X) = (∇f)^P(X)`` (eq. 31): the generalized gradient of every subtensor, stacked.

    Laid out ``I_k J_{n−k} I_m``: the subtensor's position ``I_k``, the subtensor's own dimensions,
    then f's output. For §4.3.5's ``s¹(A)`` it is ``diag(s_i) − s_i s_iᵀ`` for every row ``i``; with
    it, eq. 32 (bar restored) is ``odot(apply_gradient(f, X, P), dX, range(1, n + 1), P(−P),
    bar=range(k + 1, n + 1))``. For an element-wise f, ``f'(X)`` times identities.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.3.4, eq. 28 and 31.
    """
    return _apply_gradient(f, _apply_checked("apply_gradient", f, X, p), X)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply_gradient(f, P, X):
    Xt, Z = _subtensors(f, P, X)
    if isinstance(f, Function):
        return _over_leading(f.grad, len(P))(Xt, Z)
    k, n = len(P), Xt.ndim  # ∇f(x)_{J I} = f'(x_J) δ_{J=I} on each subtensor
    K, J, I = _letters(k), _letters(n - k, k), _letters(n - k, n)
    deltas = tuple(Factor(DELTA, (j, i)) for j, i in zip(J, I))
    term = Term((Factor("D", (*K, *J)), *deltas), (*K, *J, *I))
    D = f.derivative(Xt, Z)
    return _einsum(term, {"D": D}, {**dict(zip(K + J, D.shape)), **dict(zip(I, D.shape[k:]))}, D.dtype)
