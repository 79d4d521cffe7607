"""Per-example gradients, their norms and clipping at the cost of one closed-form backward pass.

The public home of :mod:`mdc_jax.rules.per_example` (the FCNN's and the RNN's); see its modules' docstrings
for the formulas and
``docs/per_example.md`` for the differential-privacy workflow.
"""

from .rules.per_example import QUANTITIES as QUANTITIES
from .rules.per_example import fcnn_clipped_grad as fcnn_clipped_grad
from .rules.per_example import fcnn_quantities as fcnn_quantities
from .rules.per_example import rnn_clipped_grad as rnn_clipped_grad
from .rules.per_example import rnn_quantities as rnn_quantities
from .rules.per_example import use_ghost_norm as use_ghost_norm

__all__ = ["QUANTITIES", "fcnn_clipped_grad", "fcnn_quantities", "rnn_clipped_grad", "rnn_quantities",
           "use_ghost_norm"]
