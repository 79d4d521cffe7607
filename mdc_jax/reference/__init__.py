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
from .logistic import cross_entropy as cross_entropy
from .logistic import logistic_loss as logistic_loss
from .logistic import multinomial_loss as multinomial_loss
