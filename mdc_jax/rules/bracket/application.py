"""Function application (seed 000 §4.3): ``f^P(X)`` and its generalized gradient, as a rule whose VJP is
eq. 32 transposed. For ``f : T_{n−k} → T_m`` and positions ``P = p_1…p_k`` of ``X ∈ T_n``::

    f^P(X)_{I_k I_m} = f(X_{I_k^P ·})_{I_m}                            eq. 27
    ∇f(X)_{I_n I_m}  = ∂f(X)_{I_m} / ∂X_{I_n}                          eq. 28, generalized gradient
    ∇f^P(X)          = (∇f)^P(X)                                        eq. 31
    df^P(X; dX)      = ∇f^P(X)^{1…k \\overline{(k+1)…n}} ⊙^{P(−P)} dX     eq. 32, bar restored

so ``X̄_{P(−P)} = ∇f^P(X)^{1…k \\overline{(n+1)…(n+m)}} ⊙^{1…(k+m)} G``. Element-wise ``f`` (§4.3.1):
``df = f'(X) ⊙ dX`` (eq. 17); such an f is an :class:`~mdc_jax.activations.Activation`, the type the
activations of the rules have (``tanh`` and ``sigmoid`` here are the registered ones; :class:`Elementwise`
is the subclass whose ``f'`` takes ``(x, f(x))``). Softmax (§4.3.5): ``∇s = diag(s) − ssᵀ``.

(Named ``application``, not ``apply``: the package re-exports the function :func:`apply`.)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ... import _validation as v
from ...activations import Activation, get_activation
from ..softmax import log_softmax, softmax_grad
from .engine import einsum_term
from .expr import DELTA, Factor, Term, letters
from .operators import odot_term
from .positions import subtensor_positions, tensor_shape


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


class Elementwise(Activation):
    """``f : ℝ → ℝ`` applied element-wise (§4.3.1, eq. 16), with ``df = f'(X) ⊙ dX`` (eq. 17).

    An :class:`~mdc_jax.activations.Activation` (the one type for an element-wise function and its
    derivative, which :func:`apply` and the FCNN/RNN rules take alike) whose derivative sees both the
    input and the output: ``derivative(x, y) = f'(x)`` with ``y = f(x)`` (use whichever is cheaper). The
    backward takes ``y`` from the forward's residual, so ``f`` is evaluated once.

    Attributes:
      fn: ``X ↦ f(X)``, element-wise.
      derivative: ``(x, y) ↦ f'(x)`` element-wise, with ``y = f(x)``.
      name: for messages.
    """

    __slots__ = ()

    def __new__(cls, fn: Callable, derivative: Callable, name: str = "f"):
        return super().__new__(cls, name, fn, derivative, False)

    def grad_from(self, A: jax.Array, Z: jax.Array) -> jax.Array:
        """``f'(A)`` from the input ``A`` and the output ``Z = f(A)``: ``derivative(A, Z)``."""
        return self.derivative(A, Z)

    def __eq__(self, other):  # a tuple's equality would equate it with an Activation of the same fields
        return type(other) is type(self) and tuple.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((type(self), tuple(self)))

    def __repr__(self):
        return f"Elementwise(fn={self.fn!r}, derivative={self.derivative!r}, name={self.name!r})"


def _softmax_vector(a):
    return a if a.shape[-1] == 0 else jnp.exp(log_softmax(a, axis=-1))  # an empty vector's softmax is empty


def _softmax_grad(a, s):
    return softmax_grad(s)  # §4.3.5: ∇s = s ⊙_1 (I − 1sᵀ) = diag(s) − ssᵀ


softmax = Function(_softmax_vector, _softmax_grad, "softmax", rank=1)
exp = Activation("exp", jnp.exp, lambda Z: Z, from_output=True)  # exp' = exp
log = Activation("log", jnp.log, lambda X: 1 / X, from_output=False)
tanh = get_activation("tanh")  # f' = (1 − Z)(1 + Z), activations.tanh_derivative
sigmoid = get_activation("sigmoid")  # f' = Z(1 − Z), activations.sigmoid_derivative


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
    Z = f.fn(Xt) if isinstance(f, Activation) else _over_leading(f.fn, len(P))(Xt)
    return Xt, Z


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def apply_rule(f, P, X):
    """``f^P(X)`` for checked 0-based positions ``P``; its VJP is eq. 32 transposed (module docstring)."""
    return _subtensors(f, P, X)[1]


def _apply_fwd(f, P, X):
    Xt, Z = _subtensors(f, P, X)
    return Z, (Xt, Z)  # residuals: the subtensors and f's outputs, from which ∇f (or f') is formed


def _apply_bwd(f, P, res, G):
    Xt, Z = res
    k, n = len(P), Xt.ndim
    if isinstance(f, Activation):
        Xbar_t = f.grad_from(Xt, Z) * G  # eq. 17: ∇f is diagonal, eq. 32 reduces to f'(X) ⊙ dX
    else:
        N = _over_leading(f.grad, k)(Xt, Z)  # ∇f^P(X) = (∇f)^P(X), eq. 31: I_k, then J_{n−k}, then I_m
        m = N.ndim - n
        lead, out = tuple(range(1, k + 1)), tuple(range(n + 1, n + m + 1))
        # eq. 32 transposed: X̄_{P(−P)} = ∇f^P(X)^{1…k \bar{(n+1)…(n+m)}} ⊙^{1…(k+m)} G
        term = odot_term(N.ndim, G.ndim, lead + out, tuple(range(1, k + m + 1)), set(out))
        Xbar_t = einsum_term(term, {"A": N, "B": G}, {}, G.dtype)
    return (v.cast_like(jnp.transpose(Xbar_t, np.argsort(_order(P, n))), Xt),)


apply_rule.defvjp(_apply_fwd, _apply_bwd)
_apply_jit = jax.jit(apply_rule, static_argnums=(0, 1))


@functools.lru_cache(maxsize=256)  # eval_shape traces f: once per function and subtensor shape, not per call
def _output_shapes(f: Function, sub: jax.ShapeDtypeStruct) -> tuple[tuple[int, ...], tuple[int, ...]]:
    y = jax.eval_shape(f.fn, sub)
    return y.shape, jax.eval_shape(f.grad, sub, y).shape


def _checked(fn: str, f, X, p) -> tuple[int, ...]:
    """The 0-based positions ``P`` of ``f^P(X)``, after checking ``f``, ``X``, ``p`` and ``∇f``'s shape."""
    if not isinstance(f, Function | Activation):
        v.fail(fn, f"f must be a Function (fn with its generalized gradient ∇f, eq. 28) or an element-wise "
                   f"Activation (fn with f'; Elementwise(fn, derivative) builds one), e.g. mdc_jax.bracket.softmax; "
                   f"got {f!r}. Wrap your own: Function(fn, grad).")
    shape = tensor_shape(fn, "X", X)
    P = subtensor_positions(fn, p, shape)
    free = tuple(a for a in range(1, len(shape) + 1) if a not in P)
    if isinstance(f, Function):
        if f.rank is not None and len(free) != f.rank:
            v.fail(fn, f"{f.name} maps T_{f.rank} subtensors, so p must leave {f.rank} of X's positions free; X has "
                       f"shape {shape} and p={p!r} leaves {len(free)} {free}.")
        sub = jax.ShapeDtypeStruct(tuple(shape[a - 1] for a in free), jnp.result_type(X))
        y_shape, g_shape = _output_shapes(f, sub)
        if g_shape != sub.shape + y_shape:
            v.fail(fn, f"{f.name}.grad returned shape {g_shape} for a subtensor of shape {sub.shape} and f's output of "
                       f"shape {y_shape}; the generalized gradient of eq. 28 has shape {sub.shape + y_shape} (the "
                       f"subtensor's dimensions, then the output's).")
    return tuple(a - 1 for a in P)


def apply(f: Function | Activation, X: jax.Array, p) -> jax.Array:
    """``f^P(X)``: ``f`` applied to the subtensors ``X_{I_k^P ·}``, the result indexed ``I_k I_m`` (eq. 27).

    .. math::

       f^P(X)_{I_k I_m} = f(X_{I_k^P \\cdot})_{I_m},\\qquad
       df^P(X; dX) = \\nabla f^P(X)^{1\\dots k\\,\\overline{(k+1)\\dots n}} \\odot^{P(-P)} dX \\quad\\text{(eq. 32)}

    The subtensors fix X's positions ``P`` (in that order) and keep the others in increasing order;
    the result's first dimensions are ``P``'s, in the order given: ``apply(softmax, A, (1,))`` is the
    row-wise softmax ``s¹(A)`` of §4.3.5, ``apply(softmax, A, (2,))`` the softmax of A's columns,
    returned as rows. The VJP is eq. 32 transposed, with ``∇f`` in closed form (``f.grad``, or
    ``f'`` for an element-wise f, eq. 17); eq. 32 as printed lacks the bar (package docstring).

    Args:
      f: :data:`softmax`, an element-wise function (:data:`exp`, :data:`log`, :data:`tanh`,
        :data:`sigmoid`, any :class:`~mdc_jax.activations.Activation`, or one built by
        :func:`Elementwise`), or your own :class:`Function`.
      X: ``T_n``, floating.
      p: the positions ``P`` that index the subtensors (ints, or a digit string such as ``"31"``).

    Returns:
      ``f^P(X)``, of shape ``X.shape[P] + f(subtensor).shape``.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.3.1 (eq. 16–17), §4.3.4 (eq. 27–32), §4.3.5.
    """
    return _apply_jit(f, _checked("apply", f, X, p), X)


def apply_gradient(f: Function | Activation, X: jax.Array, p) -> jax.Array:
    """``∇f^P(X) = (∇f)^P(X)`` (eq. 31): the generalized gradient of every subtensor, stacked.

    Laid out ``I_k J_{n−k} I_m``: the subtensor's position ``I_k``, the subtensor's own dimensions,
    then f's output. For §4.3.5's ``s¹(A)`` it is ``diag(s_i) − s_i s_iᵀ`` for every row ``i``; with
    it, eq. 32 (bar restored) is ``odot(apply_gradient(f, X, P), dX, range(1, n + 1), P(−P),
    bar=range(k + 1, n + 1))``. For an element-wise f, ``f'(X)`` times identities.

    References:
      ``000_3fed0c34b422d74e.txt`` §4.3.4, eq. 28 and 31.
    """
    return _apply_gradient(f, _checked("apply_gradient", f, X, p), X)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply_gradient(f, P, X):
    Xt, Z = _subtensors(f, P, X)
    if isinstance(f, Function):
        return _over_leading(f.grad, len(P))(Xt, Z)
    k, n = len(P), Xt.ndim  # ∇f(x)_{J I} = f'(x_J) δ_{J=I} on each subtensor
    K, J, I = letters(k), letters(n - k, k), letters(n - k, n)
    deltas = tuple(Factor(DELTA, (j, i)) for j, i in zip(J, I))
    term = Term((Factor("D", (*K, *J)), *deltas), (*K, *J, *I))
    D = f.grad_from(Xt, Z)
    return einsum_term(term, {"D": D}, {**dict(zip(K + J, D.shape)), **dict(zip(I, D.shape[k:]))}, D.dtype)
