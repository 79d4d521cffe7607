"""The operators of seed 000 §2.2 and §2.5, each one term of the explicit form evaluated (and
differentiated, by §4.2) by :mod:`.engine`. ``I = i_1…i_n`` indexes ``A``, ``J = j_1…j_m`` indexes ``B``::

    A ⊗ B         = (A_I B_J | I J)                                                     §2.2
    A^P ⊙^Q B     = (A_{I[P]←K} B_{J[Q]←K} | (I[P]←K) J[−Q])                           eq. 3
    A^{P̄R} ⊙^{QS} B: as eq. 3, the barred positions P (and their partners Q) summed     §2.2
    A^{P·Q} B     = A^{P̄} ⊙^Q B                                                        §2.2
    A ⊙_k B       = A^{(n−k+1)…n} ⊙^{1…k} B,      A ·_k B = A^{(n−k+1)…n · 1…k} B       §2.2, §2.5
    A_P           = (A_{i_1…i_N} | i_{p_1}…i_{p_N})                                     eq. 6
    A_{1[23]}     = (A_ikk | ik),   A_{1[2 3̄]} = (A_ikk | i)   (square brackets, bars)  end of §2.2

Each public function checks its positions in one call to :mod:`.positions`; the ``*_term`` functions
write the definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from .engine import run
from .expr import Factor, Term, letters
from .positions import Items, fused_positions, k_positions, permutation, tensor_shape


def otimes_term(n: int, m: int) -> Term:
    """``A ⊗ B = (A_I B_J | I J)`` for ``A ∈ T_n``, ``B ∈ T_m``."""
    I, J = letters(n), letters(m, n)
    return Term((Factor("A", tuple(I)), Factor("B", tuple(J))), (*I, *J))


def odot_term(n: int, m: int, p: Sequence[int], q: Sequence[int], bar=()) -> Term:
    """Eq. 3's explicit form: ``A^P ⊙^Q B = (A_{I[P]←K} B_{J[Q]←K} | (I[P]←K)[−bar] J[−Q])``."""
    I, J = letters(n), letters(m, n)
    for a, b in zip(p, q):
        J[b - 1] = I[a - 1]  # the fused dimensions share K
    result = [I[a - 1] for a in range(1, n + 1) if a not in bar] + [J[b - 1] for b in range(1, m + 1) if b not in q]
    return Term((Factor("A", tuple(I)), Factor("B", tuple(J))), tuple(result))


def permute_term(n: int, items: Items, barred: set[int]) -> Term:
    """``A_P`` with square-bracket groups: one index per item, shared inside a group; barred items summed."""
    names = letters(len(items))
    I = [""] * n
    for letter, item in zip(names, items):
        for pos in item:
            I[pos - 1] = letter
    result = tuple(letter for letter, item in zip(names, items) if not barred & set(item))
    return Term((Factor("A", tuple(I)),), result)


def otimes(A: jax.Array, B: jax.Array) -> jax.Array:
    """The Kronecker (tensor) product ``A ⊗ B = (A_I B_J | I J)``, of rank ``n + m``.

    ``v ⊗ w = vwᵀ`` for vectors; in general ``A ⊗ B ≠ B ⊗ A``. The VJP (§4.2) is
    ``Ā = (G_{IJ} B_J | I) = G ·_m B`` and ``B̄ = (G_{IJ} A_I | J) = A ·_n G``.

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2 (the Kronecker product), eq. 7.
    """
    n, m = len(tensor_shape("otimes", "A", A)), len(tensor_shape("otimes", "B", B))
    return run(otimes_term(n, m), A=A, B=B)


def _fused(fn: str, A, B, p, q, bar=(), dot: bool = False) -> jax.Array:
    """``A^P ⊙^Q B`` with ``bar`` summed (``dot``: every fused dimension summed), checked as ``fn``."""
    a_shape, b_shape = tensor_shape(fn, "A", A), tensor_shape(fn, "B", B)
    P, Q, barred = fused_positions(fn, p, q, bar, a_shape, b_shape)
    return run(odot_term(len(a_shape), len(b_shape), P, Q, set(P) if dot else barred), A=A, B=B)


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
    return _fused("odot", A, B, p, q, bar)


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
    return _fused("dot", A, B, p, q, dot=True)


def odot_k(A: jax.Array, B: jax.Array, k: int) -> jax.Array:
    """``A ⊙_k B = A^{(n−k+1)…n} ⊙^{1…k} B``: the last ``k`` dimensions of A fused with B's first ``k``.

    Associative where ``max(k, h) ≤ dim(B)``: ``(A ⊙_k B) ⊙_h C = A ⊙_k (B ⊙_h C)`` (§2.5).

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2, §2.5.
    """
    return _fused("odot_k", A, B, *k_positions("odot_k", k, A, B))


def dot_k(A: jax.Array, B: jax.Array, k: int) -> jax.Array:
    """``A ·_k B = A^{(n−k+1)…n · 1…k} B``: the last ``k`` dimensions of A contracted with B's first ``k``.

    ``AB = A ·_1 B``. Associative where ``k + h ≤ dim(B)``: ``(A ·_k B) ·_h C = A ·_k (B ·_h C)`` (§2.5).

    References:
      ``000_3fed0c34b422d74e.txt`` §2.2, §2.5.
    """
    return _fused("dot_k", A, B, *k_positions("dot_k", k, A, B), dot=True)


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
    shape = tensor_shape("permute", "A", A)
    items, barred = permutation("permute", p, bar, shape)
    return run(permute_term(len(shape), items, barred), A=A)
