"""Matrix identities with closed-form VJPs (seed 000 §4.4, §5 eq. 33–36): ``aᵀx``, ``xᵀAx``, ``|X|``, ``X⁻¹``, ...

The public home of :mod:`mdc_jax.rules.identities` (a re-export only); see its docstring for the
table of gradients.
"""

from .rules.identities import bilinear as bilinear
from .rules.identities import det as det
from .rules.identities import gram_quadratic as gram_quadratic
from .rules.identities import inverse as inverse
from .rules.identities import linear as linear
from .rules.identities import logdet as logdet
from .rules.identities import outer_self as outer_self
from .rules.identities import quadratic as quadratic
from .rules.identities import trace as trace
from .rules.identities import trace_inverse_product as trace_inverse_product

__all__ = ["bilinear", "det", "gram_quadratic", "inverse", "linear", "logdet", "outer_self", "quadratic", "trace",
           "trace_inverse_product"]
