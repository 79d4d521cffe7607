"""The explicit bracket form (seed 000 §2.1, eq. 1; §2.3): factors, terms, sums of terms, their parser
and printer. Evaluating and differentiating them is :mod:`.engine`'s job.

    (A_ijk B_lji | ijkl)     an index not right of "|" is summed                  §2.1, eq. 1
    δ_ip, 1_pq               the identity and the all-ones tensor                 §2.3
    (…) + (…)                a sum of terms with results of one shape
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import jax

from ... import _validation as v

DELTA = "δ"  # the identity δ_{ip} (ASCII: delta)
ONES = "1"  # the all-ones tensor 1_{pq…} (§2.3)
EINSUM_LETTERS = "ijklmnopqrstuvwxyzabcdefghIJKLMNOPQRSTUVWXYZABCDEFGH"  # einsum's 52 labels
MAX_INDICES = len(EINSUM_LETTERS)  # distinct indices a term may hold


def letters(n: int, start: int = 0) -> list[str]:
    """``n`` einsum labels from ``start``: the index names of an operator's term."""
    if start + n > MAX_INDICES:
        raise ValueError(f"bracket operators: {start + n} dimensions in all; at most {MAX_INDICES} are supported.")
    return list(EINSUM_LETTERS[start:start + n])


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
        """Evaluates the expression, as :func:`~mdc_jax.bracket.bracket`."""
        from .engine import evaluate  # the engine imports this module

        return evaluate("bracket", self, tensors, sizes)


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
        if len(t.indices) > MAX_INDICES:
            v.fail(fn, f"{t} has {len(t.indices)} distinct indices; at most {MAX_INDICES} are supported.")
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
    return parse_as(expr, "parse")


def parse_as(expr: str | Expr, fn: str) -> Expr:
    """:func:`parse` for the public function ``fn``, whose name the errors carry (an ``Expr`` passes)."""
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
