"""Seed 000's Part I made executable: the bracket-notation operators, their differentials (§4.2) and
function application with its generalized gradient (§4.3), as rules with closed-form VJPs.

Seed: ``000_3fed0c34b422d74e.txt`` §2.1–§2.5 (eq. 1–9), §3 (eq. 12–14), §4.2, §4.3 (eq. 16–32).
Positions are 1-based, as in the seed. One module per job:

* :mod:`.expr`: the explicit form ``(A_ijk B_lji | ijkl)`` (§2.1, eq. 1): terms, sums, parser, printer;
* :mod:`.engine`: evaluation by ``jnp.einsum``, the VJP by §4.2's one-term-per-occurrence rule, and
  the same rule as a symbolic :class:`Gradient`;
* :mod:`.operators`: ``⊗``, ``⊙`` with bars, ``·``, ``⊙_k``, ``·_k``, ``A_P`` (§2.2, §2.5), each one term;
* :mod:`.positions`: positions as the operators take them (``(2, 3)``, ``"~2 3"``, ``"1[23]"``), checked;
* :mod:`.application`: ``f^P(X)`` and ``∇f^P(X)`` (§4.3), softmax and the element-wise functions.

Seed slips (``jax.grad`` is the arbiter; tests show the corrected forms):

* eq. 32 prints ``∇f^P(X)^{1…n} ⊙^{P(−P)} dX`` without the bar over ``(k+1)…n``; unbarred, the result
  would keep the ``n − k`` dimensions of the subtensors. §4.3.5 applies it with the bar.
* §4.3.5 writes ``∇s^1(A)^{12} ⊙^{1\\bar 2} dA``, the bar on the right operand; §2.2 puts bars on the
  left (``A^{\\bar P Q} ⊙^{RS} B``). Both mean the fused dimension is summed, and a ``~`` in either
  position string is accepted here.
* The text copy of the seed prints the dot operator's ``·`` as a comma (``A^{1,1}B``, ``M^{345,123}dx``).

The public names are re-exported by :mod:`mdc_jax.bracket`.
"""

from .application import Elementwise as Elementwise
from .application import Function as Function
from .application import apply as apply
from .application import apply_gradient as apply_gradient
from .application import exp as exp
from .application import log as log
from .application import sigmoid as sigmoid
from .application import softmax as softmax
from .application import tanh as tanh
from .engine import Gradient as Gradient
from .engine import bracket as bracket
from .engine import differentiate as differentiate
from .engine import gradient as gradient
from .expr import DELTA as DELTA
from .expr import ONES as ONES
from .expr import Expr as Expr
from .expr import Factor as Factor
from .expr import Term as Term
from .expr import parse as parse
from .operators import dot as dot
from .operators import dot_k as dot_k
from .operators import odot as odot
from .operators import odot_k as odot_k
from .operators import odot_term as odot_term
from .operators import otimes as otimes
from .operators import otimes_term as otimes_term
from .operators import permute as permute
from .operators import permute_term as permute_term

__all__ = ["DELTA", "ONES", "Elementwise", "Expr", "Factor", "Function", "Gradient", "Term", "apply", "apply_gradient",
           "bracket", "differentiate", "dot", "dot_k", "exp", "gradient", "log", "odot", "odot_k", "odot_term",
           "otimes", "otimes_term", "parse", "permute", "permute_term", "sigmoid", "softmax", "tanh"]
