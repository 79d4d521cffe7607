"""A multi-layer perceptron over the FCNN rules (seed 000 §6.2–6.3): classifier and regressor.

``train.grad: closed`` differentiates through the closed-form rules; ``autodiff`` through the
plain reference, so the same model trains either way. Evaluation uses :func:`mdc_jax.fcnn_forward`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp

import mdc_jax
from mdc_jax import per_example, reference
from mdc_jax.experiment.config import ConfigError
from mdc_jax.experiment.models import Model, ModelOptions, ModelSpec, pick_loss
from mdc_jax.rules.linear_ce import HEADS

from . import CONFIGS
from .data import CLASSIFICATION, REGRESSION, load_classification, load_regression, split_problems

MAX_ARRAY = 2**31 - 1  # entries of one weight matrix: beyond this a config is a typo, not a model


@dataclasses.dataclass
class MLPOptions(ModelOptions):
    hidden: list[int] = dataclasses.field(default_factory=list)  # hidden widths d_1 .. d_{L−1}
    activation: str = "tanh"  # every hidden layer's activation (see mdc_jax.list_activations())
    l2: float = 0.0  # λ of the penalty λ/2 Σ W_j·W_j
    head: str = "plain"  # classifier only: "fused" forms the logits block by block (linear_softmax_cross_entropy)

    def validate(self, cfg) -> list[str]:
        problems = []
        if any(h <= 0 for h in self.hidden):
            problems.append(f"model.hidden widths must be > 0, got {self.hidden}")
        elif any(a * b > MAX_ARRAY for a, b in zip([1, *self.hidden], [*self.hidden, 1])):
            problems.append(f"model.hidden {self.hidden}: a weight matrix would have more than 2**31 - 1 entries")
        if self.activation not in mdc_jax.list_activations():
            problems.append(f"model.activation is {self.activation!r}; expected one of "
                            f"{', '.join(mdc_jax.list_activations())}")
        if not self.l2 >= 0:
            problems.append(f"model.l2 must be >= 0, got {self.l2}")
        if self.head not in HEADS:
            problems.append(f"model.head is {self.head!r}; expected one of {', '.join(HEADS)}")
        elif self.head != "plain" and cfg.model.kind != CLASSIFIER.kind:
            problems.append(f"model.head {self.head!r} applies to {CLASSIFIER.kind} (a softmax output) only")
        return problems + split_problems(cfg.data.dataset, cfg.data.test_size)


def init_mlp(key: jax.Array, dims: Sequence[int], dtype=jnp.float32) -> list[tuple[jax.Array, jax.Array]]:
    """Glorot-normal weights and zero biases for widths ``dims[0] → … → dims[-1]``."""
    keys = jax.random.split(key, len(dims) - 1)
    return [(jax.random.normal(k, (m, n), dtype) * jnp.sqrt(2.0 / (m + n)).astype(dtype), jnp.zeros((n,), dtype))
            for k, m, n in zip(keys, dims[:-1], dims[1:], strict=True)]


def classification_loss(params, X, Y, activations: Sequence[str], l2: float = 0.0, grad: str = "closed",
                        head: str = "plain"):
    """Softmax cross-entropy (§6.3); ``grad`` picks the closed-form rule or the autodiff reference, ``head``
    the rule's plain or fused output layer (the reference always forms the logits)."""
    loss = pick_loss(mdc_jax.fcnn_classification_loss, reference.fcnn_classification_loss, grad)
    return loss(params, X, Y, activations, l2, head=head)


def regression_loss(params, X, Y, activations: Sequence[str], l2: float = 0.0, grad: str = "closed"):
    """Mean squared error (§6.2); ``activations`` has one name per layer, the last usually identity."""
    return pick_loss(mdc_jax.fcnn_regression_loss, reference.fcnn_regression_loss, grad)(params, X, Y, activations, l2)


def accuracy(params, X, labels, activations: Sequence[str]) -> jax.Array:
    """Held-out accuracy of a classifier whose hidden layers use ``activations``."""
    logits = mdc_jax.fcnn_forward(params, X, [*activations, "identity"])
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def _batch_sampler(arrays, batch_size, poisson: bool = False):
    """Batches drawn with replacement; with ``poisson`` (``train.dp``, whose steps draw their own
    Poisson batches) the trainer checks ``batch_size`` as the expected batch size instead."""
    n = arrays[0].shape[0]
    if batch_size > n and not poisson:
        raise ConfigError(f"train.batch_size {batch_size} is larger than the training set ({n} samples); "
                          f"batches are drawn with replacement, so at most {n} is meaningful")

    def batch(key):
        idx = jax.random.randint(key, (batch_size,), 0, n, dtype=jnp.int32)
        return tuple(a[idx] for a in arrays)

    return batch


def build_classifier(cfg) -> Model:
    """An MLP classifier (seed 000 §6.3) on a bundled classification set."""
    d, m = cfg.data, cfg.model
    data = load_classification(d.dataset, d.test_size, d.split_seed)
    acts = [m.activation] * len(m.hidden)
    dims = [data.X_train.shape[1], *m.hidden, data.num_classes]
    X, Y = jnp.asarray(data.X_train, jnp.float32), jax.nn.one_hot(data.y_train, data.num_classes, dtype=jnp.float32)
    X_test, y_test = jnp.asarray(data.X_test, jnp.float32), jnp.asarray(data.y_test)

    def evaluate(params):
        return {"test_accuracy": float(accuracy(params, X_test, y_test, acts)),
                "train_accuracy": float(accuracy(params, X, jnp.asarray(data.y_train), acts))}

    def clipped_grad(params, batch, weights, clip_norm):  # DP-SGD (train.dp): seed 000 §6.3.1, per example
        return per_example.fcnn_clipped_grad(params, *batch, acts, m.l2, task="classification", clip_norm=clip_norm,
                                             weights=weights)

    return Model(init=lambda key: init_mlp(key, dims),
                 loss=lambda p, b: classification_loss(p, *b, acts, m.l2, cfg.train.grad, m.head),
                 batch=_batch_sampler((X, Y), cfg.train.batch_size, cfg.train.dp is not None), batch_axes=(0, 0),
                 evaluate=evaluate, primary="test_accuracy", report=lambda p: {}, data={"X_train": X},
                 examples=X.shape[0], gather=lambda idx: (X[idx], Y[idx]), clipped_grad=clipped_grad)


def build_regressor(cfg) -> Model:
    """An MLP regressor (seed 000 §6.2) with R² and RMSE on the held-out split and scikit-learn's
    default ``Ridge()`` as the baseline."""
    d, m = cfg.data, cfg.model
    data = load_regression(d.dataset, d.test_size, d.split_seed)
    acts = [m.activation] * len(m.hidden) + ["identity"]
    dims = [data.X_train.shape[1], *m.hidden, 1]
    X, Y = jnp.asarray(data.X_train, jnp.float32), jnp.asarray(data.y_train, jnp.float32)[:, None]
    X_test = jnp.asarray(data.X_test, jnp.float32)

    def evaluate(params):
        resid = jnp.asarray(data.y_test) - mdc_jax.fcnn_forward(params, X_test, acts)[:, 0]
        r2 = 1 - float(jnp.sum(resid**2)) / float(jnp.sum((data.y_test - data.y_test.mean()) ** 2))
        return {"test_r2": r2, "test_rmse": float(jnp.sqrt(jnp.mean(resid**2))) * data.y_std}

    def report(params):
        from sklearn.linear_model import Ridge

        ridge = Ridge().fit(data.X_train, data.y_train)
        return {"sklearn_ridge_test_r2": float(ridge.score(data.X_test, data.y_test))}

    def clipped_grad(params, batch, weights, clip_norm):  # DP-SGD (train.dp): seed 000 §6.2, per example
        return per_example.fcnn_clipped_grad(params, *batch, acts, m.l2, task="regression", clip_norm=clip_norm,
                                             weights=weights)

    return Model(init=lambda key: init_mlp(key, dims),
                 loss=lambda p, b: regression_loss(p, *b, acts, m.l2, cfg.train.grad),
                 batch=_batch_sampler((X, Y), cfg.train.batch_size, cfg.train.dp is not None), batch_axes=(0, 0),
                 evaluate=evaluate, primary="test_r2", report=report, data={"X_train": X, "y_train": Y},
                 examples=X.shape[0], gather=lambda idx: (X[idx], Y[idx]), clipped_grad=clipped_grad)


CLASSIFIER = ModelSpec("mlp_classifier", MLPOptions, CLASSIFICATION, build=build_classifier, configs=CONFIGS,
                       description="MLP, softmax cross-entropy (seed 000 §6.3)")
REGRESSOR = ModelSpec("mlp_regressor", MLPOptions, REGRESSION, build=build_regressor, configs=CONFIGS,
                      description="MLP, mean squared error + L2 (seed 000 §6.2)")
