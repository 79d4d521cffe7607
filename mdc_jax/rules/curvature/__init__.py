"""Curvature from the closed forms: GGN-vector products, Gram matrices, diagonals and Kronecker factors for the FCNN
(§6.2–6.3) and the RNN (§6.4) of seed ``000_3fed0c34b422d74e.txt``.

One module per model (:mod:`.fcnn`, :mod:`.rnn`) over the loss Hessians' factors (:mod:`.factors`), as
BackPACK assembles every second-order quantity from a few primitives per family: the forward differential,
the closed-form backward applied to a matrix of columns, and the loss Hessian's symmetric factor.
The derivations: ``docs/curvature.md``.
"""

from .fcnn import QUANTITIES as QUANTITIES
from .fcnn import fcnn_ggn_gram as fcnn_ggn_gram
from .fcnn import fcnn_ggn_vp as fcnn_ggn_vp
from .fcnn import fcnn_quantities as fcnn_quantities
from .rnn import RNN_QUANTITIES as RNN_QUANTITIES
from .rnn import rnn_ggn_gram as rnn_ggn_gram
from .rnn import rnn_ggn_vp as rnn_ggn_vp
from .rnn import rnn_quantities as rnn_quantities

__all__ = ["QUANTITIES", "RNN_QUANTITIES", "fcnn_ggn_gram", "fcnn_ggn_vp", "fcnn_quantities", "rnn_ggn_gram",
           "rnn_ggn_vp", "rnn_quantities"]
