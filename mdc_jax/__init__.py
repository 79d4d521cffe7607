"""mdc-jax: closed-form backpropagation from matrix differential calculus, as jax.custom_vjp rules.

Every rule's backward pass is the closed-form result of a seed paper (see each module's
docstring); `mdc_jax.reference` holds plain-JAX forwards that `jax.grad` differentiates to
check them.
"""

from . import reference as reference
from .activations import Activation as Activation
from .activations import get_activation as get_activation
from .activations import list_activations as list_activations
from .activations import register_activation as register_activation
from .rules.fcnn import fcnn_classification_loss as fcnn_classification_loss
from .rules.fcnn import fcnn_regression_loss as fcnn_regression_loss
from .rules.rnn import RNNParams as RNNParams
from .rules.rnn import rnn_forward as rnn_forward
from .rules.rnn import rnn_loss as rnn_loss
from .rules.rnn import rnn_loss_and_state as rnn_loss_and_state
from .rules.rnn import rnn_truncated_bptt_grads as rnn_truncated_bptt_grads
from .rules.softmax import sigmoid as sigmoid
from .rules.softmax import softmax as softmax

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "fcnn_classification_loss",
    "fcnn_regression_loss",
    "get_activation",
    "list_activations",
    "reference",
    "register_activation",
    "RNNParams",
    "rnn_forward",
    "rnn_loss",
    "rnn_loss_and_state",
    "rnn_truncated_bptt_grads",
    "sigmoid",
    "softmax",
]
