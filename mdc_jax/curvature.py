"""GGN-vector products, GGN Gram matrices, GGN and Hessian diagonals and Kronecker factors from the closed forms.

The public home of :mod:`mdc_jax.rules.curvature`; ``docs/curvature.md`` derives each quantity in the
seed's notation and compares them with BackPACK.
"""

from .rules.curvature import QUANTITIES as QUANTITIES
from .rules.curvature import RNN_QUANTITIES as RNN_QUANTITIES
from .rules.curvature import fcnn_ggn_gram as fcnn_ggn_gram
from .rules.curvature import fcnn_ggn_vp as fcnn_ggn_vp
from .rules.curvature import fcnn_quantities as fcnn_quantities
from .rules.curvature import rnn_ggn_gram as rnn_ggn_gram
from .rules.curvature import rnn_ggn_vp as rnn_ggn_vp
from .rules.curvature import rnn_quantities as rnn_quantities

__all__ = ["QUANTITIES", "RNN_QUANTITIES", "fcnn_ggn_gram", "fcnn_ggn_vp", "fcnn_quantities", "rnn_ggn_gram",
           "rnn_ggn_vp", "rnn_quantities"]
