"""Positions, as the operators take them, read and checked in one place: ``(2, 3)``, ``"23"``,
``"~2 3"`` (a bar), and the square-bracket groups ``"1[23]"`` of ``A_P``.

Each operator states its checks in one call here (:func:`fused_positions` for ``⊙`` and ``·``,
:func:`k_positions` for ``⊙_k`` and ``·_k``, :func:`permutation` for ``A_P``,
:func:`subtensor_positions` for ``f^P``); the generic checks (a floating array, an int) are
:mod:`mdc_jax._validation`'s. Positions are 1-based, as in the seed; every error names the function,
the argument as given, and the tensor's shape.

Seed: ``000_3fed0c34b422d74e.txt`` §2.2 (positions, bars, square brackets), §2.5, §4.3.4.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ... import _validation as v

Items = tuple[tuple[int, ...], ...]  # one tuple per item: a single position, or a square-bracket group


def tensor_shape(fn: str, name: str, x) -> tuple[int, ...]:
    """The shape of an operator's tensor, after checking that it is a floating array."""
    v.require_floating(fn, name, x)
    return v.shape_of(x)


def read_positions(fn: str, arg: str, value, groups: bool) -> tuple[Items, set[int]]:
    """``value`` as items and the positions marked ``~`` (a bar). A string holds one-digit positions,
    ``[…]`` groups (where ``groups``) and ``~`` marks; spaces and commas are ignored."""
    if isinstance(value, str):
        return _read_string(fn, arg, value, groups)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, Sequence):
        v.fail(fn, f"{arg} must be a sequence of 1-based positions (or a string such as '23'); got {value!r}.")
    items = []
    for item in value:
        ints = tuple(v.static_int(i) for i in item) if groups and isinstance(item, tuple | list) else (v.static_int(item),)
        if None in ints or not ints:
            kind = "ints or tuples of ints (square-bracket groups)" if groups else "ints"
            v.fail(fn, f"{arg} must hold 1-based positions as {kind}; got {value!r}.")
        items.append(ints)
    return tuple(items), set()


def _read_string(fn: str, arg: str, value: str, groups: bool) -> tuple[Items, set[int]]:
    items, marks, group = [], set(), None
    for tok in re.findall(r"~?\d|\[|\]|[\s,]+|.", value):
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


def require_in_range(fn: str, arg: str, value, positions: Sequence[int], tensor: str, shape: tuple) -> None:
    """Each position is one of ``tensor``'s (1-based), and none repeats."""
    for p in positions:
        if not 1 <= p <= len(shape):
            v.fail(fn, f"{arg}={value!r} has position {p}, out of range for {tensor} of shape {shape} "
                       f"(positions are 1-based: 1..{len(shape)}).")
    for p in positions:
        if list(positions).count(p) > 1:
            v.fail(fn, f"{arg}={value!r} repeats position {p} (lists of positions are without repetition, §2.2).")


def flat_positions(fn: str, arg: str, value, tensor: str, shape: tuple) -> tuple[tuple[int, ...], set[int]]:
    """Positions without groups, checked against ``tensor``'s shape, and the ones marked ``~``."""
    items, marks = read_positions(fn, arg, value, groups=False)
    positions = tuple(p for (p,) in items)
    require_in_range(fn, arg, value, positions, tensor, shape)
    return positions, marks


def bar_positions(fn: str, bar) -> set[int]:
    """``bar`` as a set of positions: ints, or a digit string (its ``~`` marks are redundant)."""
    if isinstance(bar, str):
        return {p for (p,) in read_positions(fn, "bar", bar.replace("~", ""), groups=False)[0]}
    if not isinstance(bar, Sequence | set | frozenset) or any(v.static_int(b) is None for b in bar):
        v.fail(fn, f"bar must be a collection of 1-based positions (ints); got {bar!r}.")
    return {int(b) for b in bar}


def fused_positions(fn: str, p, q, bar, a_shape: tuple, b_shape: tuple) -> tuple[tuple, tuple, set[int]]:
    """``A^P ⊙^Q B``'s positions ``P``, ``Q`` and the barred positions of A (``bar``, and ``~`` in
    either string): in range, as many in ``p`` as in ``q``, bars among ``P``, fused sizes equal.
    ``p`` and ``q`` both omitted: every position, on operands of one rank."""
    if p is None and q is None:
        if len(a_shape) != len(b_shape):
            v.fail(fn, f"with p and q omitted (all positions) A and B must have the same rank; got shapes "
                       f"{a_shape} and {b_shape}.")
        p = q = tuple(range(1, len(a_shape) + 1))
    elif p is None or q is None:
        v.fail(fn, f"give both p and q, or neither (all positions); got p={p!r}, q={q!r}.")
    P, marks_p = flat_positions(fn, "p", p, "A", a_shape)
    Q, marks_q = flat_positions(fn, "q", q, "B", b_shape)
    if len(P) != len(Q):
        v.fail(fn, f"p={p!r} and q={q!r} must have the same length (position p_t of A is fused with q_t of B); "
                   f"A has shape {a_shape}, B has shape {b_shape}.")
    barred = bar_positions(fn, bar) | marks_p | {P[Q.index(b)] for b in marks_q}
    if not barred <= set(P):
        v.fail(fn, f"bar={bar!r} must be a subset of p={p!r} (only fused dimensions are barred); "
                   f"A has shape {a_shape}.")
    for a, b in zip(P, Q):
        if a_shape[a - 1] != b_shape[b - 1]:
            v.fail(fn, f"A's position {a} (size {a_shape[a - 1]}; A has shape {a_shape}) is fused with B's position "
                       f"{b} (size {b_shape[b - 1]}; B has shape {b_shape}): fused sizes must match (p={p!r}, q={q!r}).")
    return P, Q, barred


def k_positions(fn: str, k, A, B) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``⊙_k``/``·_k``: A's last ``k`` positions and B's first ``k``, for an int ``0 <= k <= min(rank)``."""
    a_shape, b_shape = tensor_shape(fn, "A", A), tensor_shape(fn, "B", B)
    k_int = v.require_static_int(fn, "k", k, minimum=0, static_why=", as it fixes which dimensions are paired")
    if k_int > min(len(a_shape), len(b_shape)):
        v.fail(fn, f"k={k_int} does not fit: it pairs the last k dimensions of A (shape {a_shape}, rank "
                   f"{len(a_shape)}) with the first k of B (shape {b_shape}, rank {len(b_shape)}); k must be <= "
                   f"{min(len(a_shape), len(b_shape))}.")
    n = len(a_shape)
    return tuple(range(n - k_int + 1, n + 1)), tuple(range(1, k_int + 1))


def permutation(fn: str, p, bar, shape: tuple) -> tuple[Items, set[int]]:
    """``A_P``'s items and barred positions: every position of A once, a group's sizes equal, at most
    one bar per group (§2.2: "the mark must be put only on one of them")."""
    items, marks = read_positions(fn, "p", p, groups=True)
    flat = [pos for item in items for pos in item]
    require_in_range(fn, "p", p, flat, "A", shape)
    missing = tuple(pos for pos in range(1, len(shape) + 1) if pos not in flat)
    if missing:
        v.fail(fn, f"p={p!r} misses position(s) {missing} of A of shape {shape}: A_P lists every position once.")
    barred = bar_positions(fn, bar) | marks
    for b in sorted(barred - set(flat)):
        v.fail(fn, f"bar={bar!r} has position {b}, not in p={p!r} (A has shape {shape}).")
    for item in items:
        sizes = tuple(shape[pos - 1] for pos in item)
        if len(set(sizes)) > 1:
            v.fail(fn, f"the square-bracket group {list(item)} of p={p!r} multiplies A's dimensions element-wise; "
                       f"their sizes {sizes} must match (A has shape {shape}).")
        if len(barred & set(item)) > 1:
            v.fail(fn, f"bar marks {sorted(barred & set(item))}, all in the group {list(item)} of p={p!r}; mark one "
                       f"position of a group (§2.2).")
    return items, barred


def subtensor_positions(fn: str, p, shape: tuple) -> tuple[int, ...]:
    """``f^P``'s positions ``P`` of X (1-based, no bars), checked against X's shape."""
    P, marks = flat_positions(fn, "p", p, "X", shape)
    if marks:
        v.fail(fn, f"p={p!r}: f^P takes no bars.")
    return P
