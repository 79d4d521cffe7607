"""Input checks shared by the curvature modules, in :mod:`mdc_jax._validation`'s vocabulary: below both
:mod:`.fcnn` and :mod:`.rnn`, which stay independent of each other."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ... import _validation as v


def require_stacked(fn: str, tangents, params, labels: Sequence[str] | None = None):
    """``tangents``: ``k`` tangents stacked on a leading axis, in the structure of ``params`` (compared by
    ``jax.tree_util`` paths, as :func:`~mdc_jax._validation.require_like` does), each leaf ``(k, *shape)`` of
    its parameter's ``shape`` and dtype, ``k`` the same for every leaf. Returns ``tangents``' leaves in the
    structure of ``params``. ``labels``: one name per leaf for the messages (``"W_2"``)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    got = jax.tree_util.tree_flatten_with_path(tangents)[0]
    if [path for path, _ in got] != [path for path, _ in flat]:
        v.require_like(fn, "tangents", tangents, "params", params, labels)  # names both structures
    k, first = None, None
    for i, ((path, t), (_, p)) in enumerate(zip(got, flat)):
        where = f"tangents{jax.tree_util.keystr(path)}" + (f" ({labels[i]})" if labels else "")
        v.require_array(fn, where, t)
        shape, expected = v.shape_of(t), v.shape_of(p)
        if i == 0 and len(shape) == len(expected) + 1:
            k, first = shape[0], where
        if shape != (k, *expected):
            stacked = ("k tangents stacked on a leading axis" if k is None else
                       f"k = {k} tangents (the leading axis of {first}: the same for every leaf)")
            v.fail(fn, f"{where} has shape {shape}; expected ({', '.join(map(str, ['k' if k is None else k, *expected]))}): "
                       f"{stacked}, each of params{jax.tree_util.keystr(path)}'s shape {expected}.")
        if jnp.result_type(t) != jnp.result_type(p):
            v.fail(fn, f"{where} has dtype {jnp.result_type(t)}; expected {jnp.result_type(p)}, the dtype of "
                       f"params{jax.tree_util.keystr(path)}.")
    return jax.tree_util.tree_unflatten(treedef, [t for _, t in got])
