"""Plain-JAX references: forward passes alone, for `jax.grad` to differentiate.

They exist to check the rules and are never used inside one. ``reference/<family>.py`` mirrors
``rules/<family>.py``: the plain forward (same signature as the rule, without the shape checks),
its random-case builder and sampler, and the family's registry entries with their seed citations.
Importing this package registers mdc-jax's own rules (``mdc-jax rules`` lists them).

The forwards are re-exported here by the names of the rules they check. ``mdc_jax.reference.softmax``
is the module (as ``mdc_jax.rules.softmax`` is); the softmax forward is
``mdc_jax.reference.softmax.softmax``. Calling the module, as when the package's ``softmax`` was
the function, still works, with a ``DeprecationWarning`` naming that function.
"""

import types
import warnings

from . import bracket as bracket  # registers the bracket rules (seed 000 §2–§4)
from . import softmax as softmax
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

__all__ = [
    "bilinear", "bracket", "cross_entropy", "det", "fcnn_classification_loss", "fcnn_regression_loss",
    "gram_quadratic", "inverse", "linear", "linear_softmax_cross_entropy", "logdet", "logistic_loss",
    "multinomial_loss", "outer_self", "quadratic", "rnn_forward", "rnn_loss", "rnn_loss_and_state", "sigmoid",
    "softmax", "trace", "trace_inverse_product",
]


class _SoftmaxModule(types.ModuleType):
    """The module ``reference.softmax``, callable as the function that name was before it (deprecated)."""

    def __call__(self, A, axis=-1):
        warnings.warn("mdc_jax.reference.softmax is the module; call mdc_jax.reference.softmax.softmax(A, axis) "
                      "(the old flat name will be removed).", DeprecationWarning, stacklevel=2)
        return self.softmax(A, axis)


softmax.__class__ = _SoftmaxModule
