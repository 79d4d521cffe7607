"""Thin model definitions composed from the mdc_jax rules, built from an experiment config."""

from .base import Model as Model
from .data import Dataset as Dataset
from .data import load_classification as load_classification
from .data import load_regression as load_regression
from .data import load_text as load_text
from .mlp import accuracy as accuracy
from .mlp import classification_loss as classification_loss
from .mlp import init_mlp as init_mlp
from .mlp import mlp_forward as mlp_forward
from .mlp import regression_loss as regression_loss

_DATASETS = {"mlp_classifier": ("digits", "wine", "iris", "breast_cancer"), "mlp_regressor": ("diabetes",),
             "rnn_charlm": ("python_source",), "logistic": ("breast_cancer",),
             "multinomial": ("wine", "iris", "digits", "breast_cancer")}


def _check_dataset(cfg) -> None:
    from mdc_jax.experiment.config import ConfigError

    allowed = _DATASETS[cfg.model.kind]
    if cfg.data.dataset not in allowed:
        raise ConfigError(f"data.dataset {cfg.data.dataset!r} does not fit model.kind {cfg.model.kind!r}; "
                          f"expected one of {', '.join(allowed)}")


def build_model(cfg) -> Model:
    """The gradient-trained model a config describes, with its data loaded."""
    from .mlp import build_classifier, build_regressor
    from .rnn_lm import build_charlm

    _check_dataset(cfg)
    d = cfg.data
    if cfg.model.kind == "mlp_classifier":
        return build_classifier(cfg, load_classification(d.dataset, d.test_size, d.split_seed))
    if cfg.model.kind == "mlp_regressor":
        return build_regressor(cfg, load_regression(d.dataset, d.test_size, d.split_seed))
    if cfg.model.kind == "rnn_charlm":
        return build_charlm(cfg, load_text(d.max_chars, d.test_size))
    raise ValueError(f"model.kind {cfg.model.kind!r} is fitted by Newton's method; use fit_newton_model.")


def fit_newton_model(cfg):
    """Fits a logistic or multinomial model by Newton/IRLS: (params, metrics, info)."""
    from .logistic import fit_from_config

    _check_dataset(cfg)
    return fit_from_config(cfg)
