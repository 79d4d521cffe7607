"""Array kernels below the rules: blocked loops that are not a closed form of their own.

A rule or a solver that walks an axis in fixed-size blocks (the fused head's token and vocabulary
blocks, the Newton solvers' row chunks) keeps one compiled body for every block by **moving the last
block back** so that it ends at the axis's end; the rows (or columns) it shares with the block before
were counted there and are masked out by :func:`fresh_mask`. Written once here, used by
``rules/linear_ce.py`` and the weighted Gram kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def block_starts(total: int, block: int) -> np.ndarray:
    """Starts of the ``⌈total/block⌉`` blocks of ``block`` entries covering ``0..total``, as int32.

    Block ``i`` starts at ``i·block``, except the last, which is moved back to ``total − block`` so that
    every block has the same static size (it overlaps the one before; :func:`fresh_mask` masks the
    overlap). ``block`` must be in ``1..total``.
    """
    n = -(-total // block)
    return np.minimum(np.arange(n) * block, total - block).astype(np.int32)


def fresh_mask(start, index, block: int) -> jax.Array:
    """``(block,)`` bools: which entries of block ``index`` (starting at ``start``, see :func:`block_starts`)
    no earlier block covered. All true except in a moved-back last block."""
    return (start + jnp.arange(block, dtype=jnp.int32)) >= index * block
