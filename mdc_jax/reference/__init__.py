"""Plain-JAX references: forward passes alone, for `jax.grad` to differentiate.

They exist to check the rules and are never used inside one. ``reference/<family>.py`` mirrors
``rules/<family>.py``: the plain forward (same signature as the rule, without the shape checks),
its random-case builder and sampler, and the family's registry entries with their seed citations.
Importing this package registers mdc-jax's own rules (``mdc-jax rules`` lists them).

The functions are re-exported here, so ``mdc_jax.reference.softmax`` is the softmax *function*
(as it always was); the module of that name is ``sys.modules["mdc_jax.reference.softmax"]``.
"""

from . import bracket as bracket  # registers the bracket rules (seed 000 §2–§4)
from .fcnn import fcnn_classification_loss as fcnn_classification_loss
from .fcnn import fcnn_regression_loss as fcnn_regression_loss
from .identities import bilinear as bilinear
from .identities import det as det
from .identities import gram_quadratic as gram_quadratic
from .identities import inverse as inverse
from .identities import linear as linear
from .identities import logdet as logdet
from .identities import outer_self as outer_self
from .identities import quadratic as quadratic
from .identities import trace as trace
from .identities import trace_inverse_product as trace_inverse_product
from .jacobians import cross_entropy as cross_entropy
from .linear_ce import linear_softmax_cross_entropy as linear_softmax_cross_entropy
from .logistic import logistic_loss as logistic_loss
from .logistic import multinomial_loss as multinomial_loss
from .rnn import rnn_forward as rnn_forward
from .rnn import rnn_loss as rnn_loss
from .rnn import rnn_loss_and_state as rnn_loss_and_state
from .softmax import sigmoid as sigmoid
from .softmax import softmax as softmax

__all__ = [
    "bilinear", "cross_entropy", "det", "fcnn_classification_loss", "fcnn_regression_loss", "gram_quadratic",
    "inverse", "linear", "linear_softmax_cross_entropy", "logdet", "logistic_loss", "multinomial_loss", "outer_self",
    "quadratic", "rnn_forward", "rnn_loss", "rnn_loss_and_state", "sigmoid", "softmax", "trace", "trace_inverse_product",
]
