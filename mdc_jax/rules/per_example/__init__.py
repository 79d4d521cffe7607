"""Per-example gradients, their norms and clipping from the closed-form backward's own arrays: the FCNN
(:mod:`.fcnn`, §6.2–6.3.1), the RNN (:mod:`.rnn`, §6.4) and the fused head's blocks (:mod:`.head`)."""

from ._clip import QUANTITIES as QUANTITIES
from .fcnn import fcnn_clipped_grad as fcnn_clipped_grad
from .fcnn import fcnn_quantities as fcnn_quantities
from .rnn import rnn_clipped_grad as rnn_clipped_grad
from .rnn import rnn_quantities as rnn_quantities
from .rnn import use_ghost_norm as use_ghost_norm

__all__ = ["QUANTITIES", "fcnn_clipped_grad", "fcnn_quantities", "rnn_clipped_grad", "rnn_quantities", "use_ghost_norm"]
