"""A multi-layer perceptron over the FCNN rules (seed 000 §6.2–6.3).

``grad="closed"`` differentiates through the closed-form rules; ``grad="autodiff"`` through the
plain reference, so the same model trains either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

import mdc_jax
from mdc_jax import reference
from mdc_jax.activations import get_activation

from .base import Model, pick_loss

def init_mlp(key: jax.Array, dims: Sequence[int], dtype=jnp.float32) -> list[tuple[jax.Array, jax.Array]]:
    """Glorot-normal weights and zero biases for widths ``dims[0] → … → dims[-1]``."""
    keys = jax.random.split(key, len(dims) - 1)
    return [(jax.random.normal(k, (m, n), dtype) * jnp.sqrt(2.0 / (m + n)).astype(dtype), jnp.zeros((n,), dtype))
            for k, m, n in zip(keys, dims[:-1], dims[1:])]


def mlp_forward(params, X, activations: Sequence[str]) -> jax.Array:
    """The logits ``A_L``: hidden layers use ``activations``, the last layer is linear."""
    Z = X
    for (W, b), name in zip(params[:-1], activations):
        Z = get_activation(name).fn(Z @ W + b[None, :])
    W, b = params[-1]
    return Z @ W + b[None, :]


def classification_loss(params, X, Y, activations: Sequence[str], l2: float = 0.0, grad: str = "closed"):
    """Softmax cross-entropy (§6.3); ``grad`` picks the closed-form rule or the autodiff reference."""
    loss = pick_loss(mdc_jax.fcnn_classification_loss, reference.fcnn_classification_loss, grad)
    return loss(params, X, Y, activations, l2)


def regression_loss(params, X, Y, activations: Sequence[str], l2: float = 0.0, grad: str = "closed"):
    """Mean squared error (§6.2); ``activations`` has one name per layer, the last usually identity."""
    return pick_loss(mdc_jax.fcnn_regression_loss, reference.fcnn_regression_loss, grad)(params, X, Y, activations, l2)


def accuracy(params, X, labels, activations: Sequence[str]) -> jax.Array:
    return jnp.mean(jnp.argmax(mlp_forward(params, X, activations), axis=-1) == labels)


def _batch_sampler(arrays, batch_size):
    n = arrays[0].shape[0]

    def batch(key):
        idx = jax.random.randint(key, (batch_size,), 0, n, dtype=jnp.int32)
        return tuple(a[idx] for a in arrays)

    return batch


def build_classifier(cfg, data) -> Model:
    """An MLP classifier on a :class:`models.data.Dataset` (seed 000 §6.3)."""
    acts = [cfg.model.activation] * len(cfg.model.hidden)
    dims = [data.X_train.shape[1], *cfg.model.hidden, data.num_classes]
    X, Y = jnp.asarray(data.X_train, jnp.float32), jax.nn.one_hot(data.y_train, data.num_classes, dtype=jnp.float32)
    X_test, y_test = jnp.asarray(data.X_test, jnp.float32), jnp.asarray(data.y_test)

    def evaluate(params):
        return {"test_accuracy": float(accuracy(params, X_test, y_test, acts)),
                "train_accuracy": float(accuracy(params, X, jnp.asarray(data.y_train), acts))}

    return Model(init=lambda key: init_mlp(key, dims),
                 loss=lambda p, b: classification_loss(p, *b, acts, cfg.model.l2, cfg.train.grad),
                 batch=_batch_sampler((X, Y), cfg.train.batch_size), batch_axes=(0, 0),
                 evaluate=evaluate, primary="test_accuracy", report=lambda p: {})


def build_regressor(cfg, data) -> Model:
    """An MLP regressor on a :class:`models.data.RegressionDataset` (seed 000 §6.2), with R² and RMSE
    on the held-out split and scikit-learn's default ``Ridge()`` as the baseline."""
    acts = [cfg.model.activation] * len(cfg.model.hidden) + ["identity"]
    dims = [data.X_train.shape[1], *cfg.model.hidden, 1]
    X, Y = jnp.asarray(data.X_train, jnp.float32), jnp.asarray(data.y_train, jnp.float32)[:, None]
    X_test = jnp.asarray(data.X_test, jnp.float32)

    def predict(params, X):
        Z = X
        for (W, b), name in zip(params, acts):
            Z = get_activation(name).fn(Z @ W + b[None, :])
        return Z[:, 0]

    def evaluate(params):
        pred = predict(params, X_test)
        resid = jnp.asarray(data.y_test) - pred
        r2 = 1 - float(jnp.sum(resid**2)) / float(jnp.sum((data.y_test - data.y_test.mean()) ** 2))
        return {"test_r2": r2, "test_rmse": float(jnp.sqrt(jnp.mean(resid**2))) * data.y_std}

    def report(params):
        from sklearn.linear_model import Ridge

        ridge = Ridge().fit(data.X_train, data.y_train)
        return {"sklearn_ridge_test_r2": float(ridge.score(data.X_test, data.y_test))}

    return Model(init=lambda key: init_mlp(key, dims),
                 loss=lambda p, b: regression_loss(p, *b, acts, cfg.model.l2, cfg.train.grad),
                 batch=_batch_sampler((X, Y), cfg.train.batch_size), batch_axes=(0, 0),
                 evaluate=evaluate, primary="test_r2", report=report)
