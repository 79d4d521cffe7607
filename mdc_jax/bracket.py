"""Seed 000's Part I, executable: the bracket-notation operators, ``f^P`` and §4.2's symbolic gradient.

Positions are 1-based, as in the seed. The rules (forwards, closed-form VJPs, the parser) live in the
package ``mdc_jax.rules.bracket``, one module per job; ``docs/bracket.md`` walks through §2–§5 with
runnable examples. ``Elementwise`` is a subclass of :class:`mdc_jax.Activation`, the one element-wise type.
"""

from .rules.bracket import Elementwise as Elementwise
from .rules.bracket import Expr as Expr
from .rules.bracket import Factor as Factor
from .rules.bracket import Function as Function
from .rules.bracket import Gradient as Gradient
from .rules.bracket import Term as Term
from .rules.bracket import apply as apply
from .rules.bracket import apply_gradient as apply_gradient
from .rules.bracket import bracket as bracket
from .rules.bracket import dot as dot
from .rules.bracket import dot_k as dot_k
from .rules.bracket import exp as exp
from .rules.bracket import gradient as gradient
from .rules.bracket import log as log
from .rules.bracket import odot as odot
from .rules.bracket import odot_k as odot_k
from .rules.bracket import otimes as otimes
from .rules.bracket import parse as parse
from .rules.bracket import permute as permute
from .rules.bracket import sigmoid as sigmoid
from .rules.bracket import softmax as softmax
from .rules.bracket import tanh as tanh

__all__ = ["Elementwise", "Expr", "Factor", "Function", "Gradient", "Term", "apply", "apply_gradient", "bracket",
           "dot", "dot_k", "exp", "gradient", "log", "odot", "odot_k", "otimes", "parse", "permute", "sigmoid",
           "softmax", "tanh"]
