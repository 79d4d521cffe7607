"""Thin model definitions composed from the mdc_jax rules."""

from .data import Dataset as Dataset
from .data import load_classification as load_classification
from .mlp import accuracy as accuracy
from .mlp import classification_loss as classification_loss
from .mlp import init_mlp as init_mlp
from .mlp import mlp_forward as mlp_forward
