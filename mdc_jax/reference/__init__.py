"""Plain-JAX references: forward passes alone, for `jax.grad` to differentiate.

They exist to check the rules and are never used inside one. One module per rule family, mirroring
`mdc_jax.rules`; each function takes the same arguments as its rule, without the shape checks.
"""

from .fcnn import fcnn_classification_loss as fcnn_classification_loss
from .fcnn import fcnn_regression_loss as fcnn_regression_loss
from .fcnn import sigmoid as sigmoid
from .fcnn import softmax as softmax
from .rnn import rnn_forward as rnn_forward
from .rnn import rnn_loss as rnn_loss
from .rnn import rnn_loss_and_state as rnn_loss_and_state
