"""A multi-layer perceptron over the FCNN rules (seed 000 §6.2–6.3): classifier, regressor and a deep
autoencoder.

``train.grad: closed`` differentiates through the closed-form rules; ``autodiff`` through the
plain reference, so the same model trains either way. Evaluation uses :func:`mdc_jax.fcnn_forward`.
Each model's :class:`~mdc_jax.experiment.models.Curvature` (for ``optimizer.name: kfac | ggn_cg``) comes
from :mod:`mdc_jax.curvature`'s closed forms (:func:`fcnn_curvature`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import mdc_jax
from mdc_jax import curvature, per_example, reference
from mdc_jax.experiment.config import ConfigError
from mdc_jax.experiment.models import Curvature, Model, ModelOptions, ModelSpec, pick_loss
from mdc_jax.rules.fcnn import penalty, restructure
from mdc_jax.rules.linear_ce import HEADS

from . import CONFIGS
from .data import CLASSIFICATION, IMAGES, REGRESSION, load_classification, load_images, load_regression, split_problems

MAX_ARRAY = 2**31 - 1  # entries of one weight matrix: beyond this a config is a typo, not a model
SECOND_ORDER = ("kfac", "ggn_cg")  # what fcnn_curvature serves (no hidden-state structural damping)


def _width_problems(hidden: Sequence[int], d_in: int = 1, d_out: int = 1) -> list[str]:
    """Why ``model.hidden`` cannot be the widths between ``d_in`` inputs and ``d_out`` outputs (empty when it can)."""
    if any(h <= 0 for h in hidden):
        return [f"model.hidden widths must be > 0, got {hidden}"]
    if any(a * b > MAX_ARRAY for a, b in zip([d_in, *hidden], [*hidden, d_out])):
        return [f"model.hidden {hidden}: a weight matrix would have more than 2**31 - 1 entries"]
    return []


@dataclasses.dataclass
class MLPOptions(ModelOptions):
    hidden: list[int] = dataclasses.field(default_factory=list)  # hidden widths d_1 .. d_{L−1}
    activation: str = "tanh"  # every hidden layer's activation (see mdc_jax.list_activations())
    l2: float = 0.0  # λ of the penalty λ/2 Σ W_j·W_j
    head: str = "plain"  # classifier only: "fused" forms the logits block by block (linear_softmax_cross_entropy)

    def validate(self, cfg) -> list[str]:
        problems = _width_problems(self.hidden)
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


def fcnn_curvature(activations: Sequence[str], l2: float, task: str, mc_samples: int = 1) -> Curvature:
    """The :class:`~mdc_jax.experiment.models.Curvature` of an FCNN loss with its L2 penalty, batches ``(X, Y)``.

    .. math::

       J(\\theta) = \\frac1N\\sum_i \\ell_i + \\frac\\lambda2\\sum_j W_j\\cdot W_j,\\qquad
       \\nabla J = \\nabla J_{data} + \\lambda[(W_j, 0)],\\qquad
       (G + \\lambda I_W)\\,v = G v + \\lambda[(dW_j, 0)],\\qquad
       v_a^T(G + \\lambda I_W)v_b = v_a^TGv_b + \\lambda\\sum_j dW_j^{(a)}\\cdot dW_j^{(b)}

    (``ℓ_i = ½‖z_{L,i} − y_i‖²`` for regression, ``−ln(z_{L,i})·y_i`` for classification: the scaling of
    :func:`mdc_jax.fcnn_regression_loss` and :func:`mdc_jax.fcnn_classification_loss`, so ``factors``' loss and
    gradient are ``model.loss`` and ``jax.grad(model.loss)``). ``factors`` returns KFLR's (``exact``) or
    KFAC's sampled (``key``, ``mc_samples`` labels per example) ``((A_j, B_j), B_j)`` of the data term only
    (:func:`mdc_jax.curvature.fcnn_quantities`); ``ggn_vp`` is :func:`mdc_jax.curvature.fcnn_ggn_vp` plus the
    penalty's curvature, which falls on the weights (biases are not penalised); ``ggn_gram`` is
    :func:`mdc_jax.curvature.fcnn_ggn_gram` (stacked tangents, no backward) plus the same penalty term. The fused
    head trains the same ``J``: its curvature is this one.

    Args:
      activations: the hidden layers' (classification) or every layer's (regression), as the loss takes them.
      l2: ``λ ≥ 0``.
      task: ``"classification"`` or ``"regression"``.
      mc_samples: KFAC's sampled columns per example (``optimizer.mc_samples``).

    Returns:
      ``Curvature(factors, ggn_vp, ggn_gram)``; ``ggn_vp`` refuses a ``structural`` weight other than 0 (an
      MLP has no hidden states over time).

    References:
      ``000_3fed0c34b422d74e.txt`` §6.2, §6.3.1; Martens & Grosse, KFAC (ICML 2015); Martens, Deep learning via
      Hessian-free optimization (ICML 2010).
    """
    acts = tuple(activations)

    def with_penalty(params, per_layer, weights):  # per_layer + λ·(weights_j, 0), in the structure of params
        return restructure(params, [(t_W + l2 * W, t_b) for (t_W, t_b), (W, _) in zip(per_layer, weights)])

    def factors(params, batch, key, exact: bool):
        name = "kflr" if exact else "kfac"
        q = curvature.fcnn_quantities(params, *batch, acts, task=task, quantities=(name,),
                                      key=None if exact else key, mc_samples=mc_samples)
        return q["loss"] + l2 * penalty(params), with_penalty(params, q["grad"], params), q[name]

    def ggn_vp(params, batch, tangents, structural=0.0):
        if not (isinstance(structural, int | float) and structural == 0):
            raise ValueError(f"ggn_vp: an MLP has no structural damping (curvature {SECOND_ORDER}); "
                             f"structural must be 0, got {structural!r}.")
        Gv = curvature.fcnn_ggn_vp(params, *batch, acts, tangents, task=task)
        return with_penalty(params, Gv, tangents)

    def ggn_gram(params, batch, tangents):
        gram = curvature.fcnn_ggn_gram(params, *batch, acts, tangents, task=task)
        if not l2:
            return gram
        rows = [dW.reshape(dW.shape[0], -1) for dW, _ in tangents]  # each tangent's vec(W_j), stacked
        return gram + l2 * sum(r @ r.T for r in rows)  # + λ Σ_j dW_j^{(a)}·dW_j^{(b)}

    return Curvature(factors, ggn_vp, ggn_gram)


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
                 examples=X.shape[0], gather=lambda idx: (X[idx], Y[idx]), clipped_grad=clipped_grad,
                 curvature=fcnn_curvature(acts, m.l2, "classification", cfg.optimizer.mc_samples))


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

    return _regression_model(cfg, acts, dims, X, Y, evaluate=evaluate, primary="test_r2", report=report,
                             data={"X_train": X, "y_train": Y})


def _regression_model(cfg, acts, dims, X, Y, **metrics) -> Model:
    """An FCNN regression model (seed 000 §6.2) on the training rows ``(X, Y)``: its loss, batches, DP-SGD's
    per-example clipping and its curvature; ``metrics``: the model's ``evaluate``, ``primary``, ``report``, ``data``."""
    m = cfg.model

    def clipped_grad(params, batch, weights, clip_norm):  # DP-SGD (train.dp): seed 000 §6.2, per example
        return per_example.fcnn_clipped_grad(params, *batch, acts, m.l2, task="regression", clip_norm=clip_norm,
                                             weights=weights)

    return Model(init=lambda key: init_mlp(key, dims),
                 loss=lambda p, b: regression_loss(p, *b, acts, m.l2, cfg.train.grad),
                 batch=_batch_sampler((X, Y), cfg.train.batch_size, cfg.train.dp is not None), batch_axes=(0, 0),
                 examples=X.shape[0], gather=lambda idx: (X[idx], Y[idx]), clipped_grad=clipped_grad,
                 curvature=fcnn_curvature(acts, m.l2, "regression", cfg.optimizer.mc_samples), **metrics)


# --------------------------------------------------------------------------------------------
# The deep autoencoder (Hinton & Salakhutdinov 2006; Martens 2010's benchmark), on the digits images

CODE_ACTIVATION, UNIT_ACTIVATION = "identity", "sigmoid"  # the linear code layer; logistic units elsewhere


@dataclasses.dataclass
class AutoencoderOptions(ModelOptions):
    hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 128, 32, 128, 256])  # d_1 .. d_{L−1}
    activations: list[str] = dataclasses.field(default_factory=list)  # one per hidden layer; [] = the classic
    l2: float = 0.0  # λ of the penalty λ/2 Σ W_j·W_j

    def validate(self, cfg) -> list[str]:
        problems = _width_problems(self.hidden, 64, 64)  # digits: 64 pixels in and out
        if self.activations and len(self.activations) != len(self.hidden):
            problems.append(f"model.activations has length {len(self.activations)}; model.hidden {self.hidden} has "
                            f"{len(self.hidden)} layers: give one activation per hidden layer, or none for "
                            f"{UNIT_ACTIVATION} everywhere but {CODE_ACTIVATION} at the narrowest (code) layer")
        for j, name in enumerate(self.activations):
            if name not in mdc_jax.list_activations():
                problems.append(f"model.activations[{j}] is {name!r}; expected one of "
                                f"{', '.join(mdc_jax.list_activations())}")
        if not self.l2 >= 0:
            problems.append(f"model.l2 must be >= 0, got {self.l2}")
        return problems + split_problems(cfg.data.dataset, cfg.data.test_size)


def autoencoder_activations(hidden: Sequence[int], activations: Sequence[str] = ()) -> list[str]:
    """Every layer's activation: ``activations`` (one per hidden layer) or, when empty, the classic deep
    autoencoder's logistic units with a linear code layer (the narrowest, the first of equals), and a
    linear output layer (squared error on pixels)."""
    if not activations:
        code = list(hidden).index(min(hidden)) if hidden else -1
        activations = [CODE_ACTIVATION if j == code else UNIT_ACTIVATION for j in range(len(hidden))]
    return [*activations, "identity"]


@functools.partial(jax.jit, static_argnames="activations")
def reconstruction_error(params, X, activations: tuple[str, ...]) -> jax.Array:
    """``(1/N) Σ_i ‖x̂_i − x_i‖²``: the summed squared error over an image's pixels, averaged over images
    (twice the data term of the training loss, whose ``ℓ_i`` is ``½‖x̂_i − x_i‖²``)."""
    R = mdc_jax.fcnn_forward(params, X, list(activations)) - X
    return jnp.mean(jnp.sum(R * R, axis=1))


def pca_errors(X_train, X_test, k: int) -> tuple[float, float]:
    """:func:`reconstruction_error` of the best rank-``k`` affine reconstruction of the training images (PCA
    on the centred training set; the linear autoencoder's optimum), on both splits: the baseline of Hinton
    & Salakhutdinov (2006)."""
    mean = X_train.mean(axis=0)
    V = np.linalg.svd(X_train - mean, full_matrices=False)[2][:k].T  # top-k principal directions, (D, k)
    err = lambda X: float(np.mean(np.sum(((X - mean) @ V @ V.T + mean - X) ** 2, axis=1)))
    return err(X_train), err(X_test)


def build_autoencoder(cfg) -> Model:
    """A deep autoencoder (FCNN regression, seed 000 §6.2, with ``Y = X``) on the digits images in ``[0, 1]``.

    ``evaluate`` gives ``train_error`` and ``test_error``: :func:`reconstruction_error`, the summed squared
    error over the 64 pixels averaged over the split's images (the training loss's data term is half of it,
    on a batch); ``train_error`` is the headline (the issue's measure: training error against steps and time).
    ``report`` adds PCA's errors at the code width (the narrowest hidden layer)."""
    d, m = cfg.data, cfg.model
    data = load_images(d.dataset, d.test_size, d.split_seed)
    acts = tuple(autoencoder_activations(m.hidden, m.activations))
    X, X_test = jnp.asarray(data.X_train, jnp.float32), jnp.asarray(data.X_test, jnp.float32)
    dims = [X.shape[1], *m.hidden, X.shape[1]]

    def evaluate(params):
        return {"train_error": float(reconstruction_error(params, X, acts)),
                "test_error": float(reconstruction_error(params, X_test, acts))}

    def report(params):
        train, test = pca_errors(data.X_train, data.X_test, min(m.hidden, default=X.shape[1]))
        return {"pca_train_error": train, "pca_test_error": test}

    return _regression_model(cfg, acts, dims, X, X, evaluate=evaluate, primary="train_error", report=report,
                             data={"X_train": X})


CLASSIFIER = ModelSpec("mlp_classifier", MLPOptions, CLASSIFICATION, build=build_classifier, curvature=SECOND_ORDER,
                       configs=CONFIGS, description="MLP, softmax cross-entropy (seed 000 §6.3)")
REGRESSOR = ModelSpec("mlp_regressor", MLPOptions, REGRESSION, build=build_regressor, curvature=SECOND_ORDER,
                      configs=CONFIGS, description="MLP, mean squared error + L2 (seed 000 §6.2)")
AUTOENCODER = ModelSpec("mlp_autoencoder", AutoencoderOptions, IMAGES, build=build_autoencoder,
                        curvature=SECOND_ORDER, configs=CONFIGS,
                        description="deep autoencoder on digits images, squared error + L2 (seed 000 §6.2)")
