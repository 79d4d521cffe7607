"""Closed-form rules, one module per family; each module names its seed sections."""

from .fcnn import fcnn_classification_loss as fcnn_classification_loss
from .fcnn import fcnn_regression_loss as fcnn_regression_loss
from .softmax import sigmoid as sigmoid
from .softmax import softmax as softmax
