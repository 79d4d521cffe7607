"""Element-wise activations with closed-form derivatives.

Seed: ``000_3fed0c34b422d74e.txt`` §4.3.1: for an element-wise f, ``df = f'(X) ⊙ dX``. The FCNN and
RNN rules use ``S_j = ∇_{Z_j}J ⊙ f'_j(A_j)`` (§6.2), so every activation carries its f'.
:class:`Activation` is the one type for an element-wise function and its derivative: the rules'
activations (by name, from the registry) and ``mdc_jax.bracket``'s element-wise functions for
``apply`` (``bracket.tanh`` and ``bracket.sigmoid`` are the registered ones) alike.

Where f' is cheaper, or as exact, from the output ``Z = f(A)`` the derivative is written in terms of
``Z`` (``from_output=True``): the rules then keep only ``Z_j`` as a residual, not ``A_j``.

    tanh:      f' = 1 − Z², computed as (1 − Z)(1 + Z): no cancellation as |Z| → 1
    sigmoid:   f' = Z ⊙ (1 − Z)
    relu:      f' = [Z > 0]         (0 at the kink, as ``jax.nn.relu``)
    softplus:  f' = σ(A) = 1 − e^{−Z}, computed as ``-expm1(-Z)`` (exact, and accurate for Z → 0)
    identity:  f' = 1

The second derivatives (``mdc_jax.curvature``'s ``diag_hessian`` needs them), from the output too:

    tanh:      f'' = −2Z(1 − Z²)        sigmoid:  f'' = Z(1 − Z)(1 − 2Z)
    softplus:  f'' = σ(A)(1 − σ(A)) = (1 − e^{−Z}) e^{−Z}
    relu, identity: f'' = 0 (relu's almost everywhere, as autodiff gives): :func:`no_curvature`
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _validation as v


class Activation(NamedTuple):
    """An element-wise function f and its derivative: an activation of the rules, or an f for
    ``mdc_jax.bracket.apply`` (``bracket.Elementwise(fn, derivative)`` is the subclass whose derivative
    takes ``(x, f(x))``; it overrides :meth:`grad_from`).

    Attributes:
      name: the registry key (for an unregistered one, as ``bracket.exp``: its name in messages).
      fn: ``A -> Z``, element-wise.
      derivative: ``f'`` evaluated element-wise; its argument is ``Z`` when ``from_output`` is
        true, else ``A``.
      from_output: whether ``derivative`` takes the output ``Z = f(A)`` instead of the input.
      second_derivative: ``f''`` element-wise, from the same argument as ``derivative``; ``None``
        where it is not known (then ``diag_hessian`` refuses the activation). :func:`no_curvature`
        marks a piecewise-linear ``f`` (``f'' = 0``), whose curvature terms are skipped.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    derivative: Callable[[jax.Array], jax.Array]
    from_output: bool
    second_derivative: Callable[[jax.Array], jax.Array] | None = None

    def grad_from(self, A: jax.Array | None, Z: jax.Array) -> jax.Array:
        """f'(A), from whichever of ``A`` or ``Z`` this activation needs."""
        return self.derivative(Z if self.from_output else A)

    def second_from(self, A: jax.Array | None, Z: jax.Array) -> jax.Array:
        """f''(A), from whichever of ``A`` or ``Z`` this activation needs (``second_derivative`` must be set)."""
        return self.second_derivative(Z if self.from_output else A)

    @property
    def curved(self) -> bool:
        """Whether ``f''`` may be non-zero: false for :func:`no_curvature` (identity, relu)."""
        return self.second_derivative is not no_curvature


_REGISTRY: dict[str, Activation] = {}


def register_activation(
    name: str,
    fn: Callable[[jax.Array], jax.Array],
    derivative: Callable[[jax.Array], jax.Array],
    *,
    from_output: bool = False,
    overwrite: bool = False,
    second_derivative: Callable[[jax.Array], jax.Array] | None = None,
) -> Activation:
    """Registers an element-wise activation for use by name in the rules.

    Args:
      name: the name used in ``activations=[...]``.
      fn: element-wise ``f``.
      derivative: element-wise ``f'``, a closed form (not ``jax.grad``).
      from_output: true when ``derivative`` is written in terms of ``Z = f(A)`` (like tanh's
        ``1 − Z²``); the rules then save only ``Z`` for the backward pass. A bool (or ``np.bool_``).
      overwrite: allow replacing an existing name. A bool (or ``np.bool_``).
      second_derivative: element-wise ``f''`` in closed form, from the same argument as ``derivative``
        (optional: only ``mdc_jax.curvature``'s ``diag_hessian`` needs it; pass :func:`no_curvature`
        for a piecewise-linear ``f``).

    Returns:
      The registered :class:`Activation`.

    Example:
      >>> import jax.numpy as jnp
      >>> register_activation("square", lambda a: a * a, lambda a: 2 * a)  # doctest: +ELLIPSIS
      Activation(name='square', ...)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_activation: name must be a non-empty string; got {name!r}.")
    if not callable(fn) or not callable(derivative):
        raise ValueError(
            f"register_activation: fn and derivative must be callables; got {type(fn).__name__} "
            f"and {type(derivative).__name__}."
        )
    if second_derivative is not None and not callable(second_derivative):
        raise ValueError(f"register_activation: second_derivative must be a callable or None; got "
                         f"{type(second_derivative).__name__}.")
    from_output = v.require_bool("register_activation", "from_output", from_output)
    overwrite = v.require_bool("register_activation", "overwrite", overwrite)
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"register_activation: {name!r} is already registered; pass overwrite=True to replace it."
        )
    act = Activation(name, fn, derivative, from_output, second_derivative)
    _REGISTRY[name] = act
    return act


def get_activation(name: str) -> Activation:
    """Looks up a registered activation, with an error that lists the known names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"get_activation: name {name!r} is not a registered activation; registered activations: "
                         f"{known}.") from None


def list_activations() -> list[str]:
    """The registered activation names, sorted."""
    return sorted(_REGISTRY)


def tanh_derivative(Z: jax.Array) -> jax.Array:
    """``tanh'(A) = 1 − Z²`` from ``Z = tanh(A)``, as ``(1 − Z)(1 + Z)``: no cancellation as ``|Z| → 1``.
    The one place this formula is written (the tanh activation, the RNN's BPTT step, the bracket's tanh)."""
    return (1 - Z) * (1 + Z)


def sigmoid_derivative(Z: jax.Array) -> jax.Array:
    """``σ'(A) = σ(A)(1 − σ(A))`` from ``Z = σ(A)`` (seed 004 eq. 2.4): the sigmoid activation, the
    sigmoid rule and the bracket's sigmoid."""
    return Z * (1 - Z)


def no_curvature(Z: jax.Array) -> jax.Array:
    """``f'' = 0``: the second derivative of a piecewise-linear activation (identity, relu), by which the
    curvature code knows to skip its terms."""
    return jnp.zeros_like(Z)


register_activation("identity", lambda a: a, jnp.ones_like, from_output=True, second_derivative=no_curvature)
register_activation("tanh", jnp.tanh, tanh_derivative, from_output=True,
                    second_derivative=lambda z: -2 * z * tanh_derivative(z))
register_activation("sigmoid", jax.nn.sigmoid, sigmoid_derivative, from_output=True,
                    second_derivative=lambda z: sigmoid_derivative(z) * (1 - 2 * z))
register_activation("relu", jax.nn.relu, lambda z: (z > 0).astype(z.dtype), from_output=True,
                    second_derivative=no_curvature)
register_activation("softplus", jax.nn.softplus, lambda z: -jnp.expm1(-z), from_output=True,
                    second_derivative=lambda z: -jnp.expm1(-z) * jnp.exp(-z))
