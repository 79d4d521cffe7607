"""What both optimizers share: their options' checks (in :mod:`mdc_jax._validation`'s vocabulary), optax-style
schedules, scalars applied to a pytree in each leaf's own dtype (float32 parameters stay float32 under x64), and
the Levenberg–Marquardt adaptation of the damping on the reduction ratio of a quadratic model."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from .. import _validation as v


def scalar_or_schedule(fn: str, name: str, x, *, positive: bool) -> Callable[[jax.Array], jax.Array]:
    """An option that is a finite number (``> 0`` with ``positive``, else ``>= 0``) or an optax schedule (a
    callable of the step count, as :func:`optax.scale_by_learning_rate` takes it); returns it as a schedule."""
    if callable(x):
        return x
    value = v.require_number(fn, name, x, positive=positive)
    return lambda count: value


def require_unit_interval(fn: str, name: str, x, *, closed: bool) -> float:
    """A number in ``[0, 1]`` (``closed``) or ``[0, 1)``, as a Python float."""
    value = v.require_number(fn, name, x)
    if value > 1 or (value == 1 and not closed):
        v.fail(fn, f"{name} must be in [0, 1{']' if closed else ')'}; got {x!r}.")
    return value


def require_curvature_args(fn: str, params, curvature, loss, *, when: str = "", name: str = "ggn_vp") -> None:
    """The extra arguments of an update that moves along the exact quadratic model: ``params`` (the loss is
    evaluated along the step), the GGN's ``curvature`` under the argument ``name`` (``"ggn_vp"``: ``v -> G v``;
    ``"ggn_gram"``: stacked tangents ``-> [v_aᵀ G v_b]``) and ``loss``; ``when`` says which option needs them."""
    what = {"ggn_vp": "v -> G v, the GGN-vector product at params on the batch",
            "ggn_gram": "stacked tangents -> their (k, k) Gram matrix [v_a^T G v_b] under the GGN at params on the batch"}
    for arg, x, why in (("params", params, "the parameters (the loss is evaluated along the step)"),
                        (name, curvature, what[name]),
                        ("loss", loss, "params -> the scalar loss on the batch")):
        if x is None:
            v.fail(fn, f"update needs {arg}=... ({why}){when}; got None.")


def reduction_ratio(J_new, J, predicted) -> jax.Array:
    """``ρ = (J(θ + δ) − J(θ)) / (M(δ) − M(0))``, ``predicted`` the quadratic model's change ``M(δ) − M(0)``;
    ``ρ = 0`` where the model predicts no decrease (``predicted ≥ 0``), NaN where ``J(θ + δ)`` is not finite."""
    return jnp.where(predicted < 0, (J_new - J) / jnp.where(predicted < 0, predicted, 1), 0)


def levenberg_marquardt(lam, rho, *, drop, rise, low, high=None) -> jax.Array:
    """The Levenberg–Marquardt rule: ``λ·drop`` if ``ρ > 3/4``, ``λ·rise`` if ``ρ < 1/4`` or ``ρ`` is NaN (the
    loss along the step was not finite), else ``λ``; clamped to ``[low, high]`` (``high=None``: no ceiling).

    References:
      Moré, "The Levenberg–Marquardt algorithm: implementation and theory" (1978); Martens (2010), §4.1;
      Martens & Grosse (2015), §6.5.
    """
    factor = jnp.where(rho >= 1 / 4, jnp.where(rho > 3 / 4, drop, 1), rise)  # NaN ρ: rise
    new = jnp.maximum(lam * factor, low)
    return (new if high is None else jnp.minimum(new, high)).astype(lam.dtype)


def scalar(x, dtype) -> jax.Array:
    """A scalar (a schedule's value, a loss) as a 0-d array of ``dtype``."""
    return jnp.asarray(x).astype(dtype)


def scale(s, tree):
    """``s · tree``, ``s`` cast to each leaf's dtype (a float64 schedule value does not promote float32 leaves)."""
    return jax.tree.map(lambda x: scalar(s, x.dtype) * x, tree)


def add_scaled(x, s, y):
    """``x + s · y`` leaf by leaf, in ``x``'s dtypes."""
    return jax.tree.map(lambda a, b: a + scalar(s, a.dtype) * b.astype(a.dtype), x, y)


def common_dtype(fn: str, tree):
    """The one floating dtype of ``tree``'s leaves (the dtype of the optimizers' scalar state)."""
    dtypes = {jnp.result_type(x) for x in jax.tree.leaves(tree)}
    if not dtypes:
        v.fail(fn, "params has no arrays; expected a pytree of floating arrays.")
    bad = [d for d in dtypes if not jnp.issubdtype(d, jnp.floating)]
    if bad:
        v.fail(fn, f"params has leaves of dtype {bad[0]}; expected floating arrays.")
    return optax.tree_utils.tree_dtype(tree, "highest")
