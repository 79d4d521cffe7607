"""mdc-jax: closed-form backpropagation from matrix differential calculus, as jax.custom_vjp rules.

Every rule's backward pass is the closed-form result of a seed paper (see each module's
docstring); `mdc_jax.reference` holds plain-JAX forwards that `jax.grad` differentiates to
check them.

How a family is exported (one way for all): its code lives in ``mdc_jax/rules/<family>.py`` (or a
package of that name); its public names are re-exported flat here, one ``from ... import x as x``
a line and listed in ``__all__``. A family with many names, some of which would clash here, gets a
public namespace module instead, which is a re-export only: :mod:`mdc_jax.identities`,
:mod:`mdc_jax.per_example`, :mod:`mdc_jax.curvature`, :mod:`mdc_jax.bracket`. ``tests/test_architecture.py`` holds both to it.
"""

from . import bracket as bracket
from . import curvature as curvature
from . import identities as identities
from . import per_example as per_example
from . import reference as reference  # also registers mdc-jax's rules (see mdc_jax.registry)
from .activations import Activation as Activation
from .activations import get_activation as get_activation
from .activations import list_activations as list_activations
from .activations import register_activation as register_activation
from .rules.fcnn import fcnn_classification_loss as fcnn_classification_loss
from .rules.fcnn import fcnn_forward as fcnn_forward
from .rules.fcnn import fcnn_regression_loss as fcnn_regression_loss
from .rules.jacobians import cross_entropy as cross_entropy
from .rules.jacobians import sigmoid_jacobian as sigmoid_jacobian
from .rules.jacobians import softmax_jacobian as softmax_jacobian
from .rules.linear_ce import linear_softmax_cross_entropy as linear_softmax_cross_entropy
from .rules.logistic import logistic_gradient as logistic_gradient
from .rules.logistic import logistic_hessian as logistic_hessian
from .rules.logistic import logistic_loss as logistic_loss
from .rules.logistic import multinomial_gradient as multinomial_gradient
from .rules.logistic import multinomial_hessian as multinomial_hessian
from .rules.logistic import multinomial_loss as multinomial_loss
from .rules.rnn import RNNParams as RNNParams
from .rules.rnn import rnn_forward as rnn_forward
from .rules.rnn import rnn_loss as rnn_loss
from .rules.rnn import rnn_loss_and_state as rnn_loss_and_state
from .rules.rnn import rnn_truncated_bptt_grads as rnn_truncated_bptt_grads
from .rules.softmax import sigmoid as sigmoid
from .rules.softmax import softmax as softmax
from .solvers import NewtonResult as NewtonResult
from .solvers import SingularHessianError as SingularHessianError
from .solvers import fit_logistic_newton as fit_logistic_newton
from .solvers import fit_multinomial_newton as fit_multinomial_newton
from .solvers import predict_proba_logistic as predict_proba_logistic
from .solvers import predict_proba_multinomial as predict_proba_multinomial

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "NewtonResult",
    "RNNParams",
    "SingularHessianError",
    "bracket",
    "cross_entropy",
    "curvature",
    "fcnn_classification_loss",
    "fcnn_forward",
    "fcnn_regression_loss",
    "fit_logistic_newton",
    "fit_multinomial_newton",
    "get_activation",
    "identities",
    "linear_softmax_cross_entropy",
    "list_activations",
    "logistic_gradient",
    "logistic_hessian",
    "logistic_loss",
    "multinomial_gradient",
    "multinomial_hessian",
    "multinomial_loss",
    "per_example",
    "predict_proba_logistic",
    "predict_proba_multinomial",
    "reference",
    "register_activation",
    "rnn_forward",
    "rnn_loss",
    "rnn_loss_and_state",
    "rnn_truncated_bptt_grads",
    "sigmoid",
    "sigmoid_jacobian",
    "softmax",
    "softmax_jacobian",
]
