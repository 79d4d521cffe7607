"""Specification of the MLP models' Curvature (models/mlp.py) and of the mlp_autoencoder model: on tiny configs,
``factors`` gives ``model.loss`` and ``jax.grad(model.loss)`` (L2 penalty included) and KFLR's factors of the data
term, ``ggn_vp`` and ``ggn_gram`` the explicit GGN of ``model.loss`` with the penalty's curvature
(mdc_jax.reference.curvature),
and, on linear models where the GGN is the Hessian, ``jax.hessian(model.loss)`` itself: the loss scaling checked
without the reference's own conventions."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from mdc_jax import curvature
from mdc_jax.experiment.config import ConfigError, config_from_dict
from mdc_jax.experiment.models import get_model
from mdc_jax.reference import curvature as ref
from mdc_jax_models.data import load_classification, load_images
from mdc_jax_models.mlp import autoencoder_activations

from .helpers import F64_RTOL, assert_close

L2 = 0.3  # large enough that a missing or mis-scaled penalty term fails every comparison
TRAIN = {"steps": 1, "batch_size": 5, "seed": 0}
KEY = jax.random.PRNGKey(0)
CLASSIFIER = {"kind": "mlp_classifier", "hidden": [3], "activation": "tanh", "l2": L2}
REGRESSOR = {"kind": "mlp_regressor", "hidden": [4], "activation": "tanh", "l2": L2}
TINY = {  # iris for the classifier: K = 3 classes, a small explicit GGN
    "classifier": ({"dataset": "iris"}, CLASSIFIER),
    "autoencoder": ({"dataset": "digits"}, {"kind": "mlp_autoencoder", "hidden": [3, 2], "l2": L2}),
    "linear classifier": ({"dataset": "iris"}, {**CLASSIFIER, "hidden": []}),
    "linear regressor": ({"dataset": "diabetes"}, {**REGRESSOR, "hidden": []}),
}


def config(data, model):
    return config_from_dict({"data": data, "model": model, "train": TRAIN}, "tiny.yaml")


@functools.cache
def case(name):
    """The config, the built model, its initial parameters and one batch (float64) of ``TINY[name]``."""
    data, model = TINY[name]
    cfg = config(data, model)
    built = get_model(model["kind"]).build(cfg)
    rng = np.random.default_rng(0)  # random parameters of init's shapes (biases too: no zeros to hide an error)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape)), jax.eval_shape(built.init, KEY))
    batch = built.gather(jnp.asarray([3, 1, 4, 1, 5]))  # training examples 3, 1, 4, 1, 5 (one twice)
    return cfg, built, params, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), batch)


def task_of(kind):
    return "classification" if kind == "mlp_classifier" else "regression"


def activations_of(cfg):
    """The activations the reference forward takes: the hidden layers' (classifier) or every layer's."""
    m = cfg.model
    if m.kind == "mlp_autoencoder":
        return autoencoder_activations(m.hidden, m.activations)
    hidden = [m.activation] * len(m.hidden)
    return hidden if m.kind == "mlp_classifier" else [*hidden, "identity"]


def penalty_curvature(params):
    """``λ`` on the weights' diagonal, 0 on the biases': the curvature of ``λ/2 Σ W·W`` as a flat vector."""
    return L2 * ravel_pytree([(jnp.ones_like(W), jnp.zeros_like(b)) for W, b in params])[0]


def tangents(params, seed):
    return ref.as_params(jax.random.normal(jax.random.PRNGKey(seed), ravel_pytree(params)[0].shape, jnp.float64),
                         params)


@pytest.mark.parametrize("name", ["classifier", "autoencoder"])  # the regressor: the linear test below
def test_curvature_is_that_of_the_models_own_loss_penalty_included_float64(name):
    cfg, model, params, batch = case(name)
    acts, task = activations_of(cfg), task_of(cfg.model.kind)

    @jax.jit  # one program: compiling it beats running its many small ops one by one
    def both(params, batch, v, V):
        X, Y = batch
        G = jnp.sum(ref.fcnn_batch_ggn(params, X, Y, acts, task=task), axis=0)  # the data term's
        G_l2 = G + jnp.diag(penalty_curvature(params))
        # the curvature's loss, gradient, KFLR factors, (G + λ I_W) v and [v_aᵀ(G + λ I_W)v_b]; the model's and
        # the reference's
        ours = (*model.curvature.factors(params, batch, jax.random.PRNGKey(1), True),
                model.curvature.ggn_vp(params, batch, v), model.curvature.ggn_gram(params, batch, V))
        return ours, (model.loss(params, batch), jax.grad(model.loss)(params, batch), ref.fcnn_kflr(params, X, G, acts),
                      ref.ggn_vp(G_l2, params, v), ref.ggn_gram(G_l2, V))

    V = jax.tree.map(lambda *xs: jnp.stack(xs), tangents(params, 3), tangents(params, 2))  # k = 2
    ours, expected = both(params, batch, tangents(params, 2), V)
    for what, a, b in zip(["loss", "grads", "KFLR factors (data term)", "(G + λ I_W) v", "Vᵀ(G + λ I_W)V"], ours,
                          expected):
        assert_close(a, b, F64_RTOL, f"{name}: {what}")


def test_the_fused_head_trains_the_loss_its_curvature_describes_float64():
    _, _, params, batch = case("classifier")
    fused = get_model("mlp_classifier").build(config(*TINY["classifier"][:1], {**CLASSIFIER, "head": "fused"}))
    loss, grads, _ = jax.jit(lambda p, b: fused.curvature.factors(p, b, None, True))(params, batch)
    assert_close((loss, grads), jax.jit(jax.value_and_grad(fused.loss))(params, batch), F64_RTOL, "fused head")


@pytest.mark.parametrize("name", ["linear classifier", "linear regressor"])
def test_on_a_linear_model_the_curvature_is_the_hessian_and_gradient_of_model_loss_float64(name):
    _, model, params, batch = case(name)
    theta, unravel = ravel_pytree(params)

    @jax.jit
    def both(params, batch, v):  # the curvature's loss, gradient and G v; autodiff's loss, gradient and H v
        loss, grads, _ = model.curvature.factors(params, batch, None, True)
        H = jax.hessian(lambda th: model.loss(unravel(th), batch))(theta)
        return ((loss, grads, model.curvature.ggn_vp(params, batch, v)),
                (*jax.value_and_grad(model.loss)(params, batch), ref.as_params(H @ ravel_pytree(v)[0], params)))

    ours, expected = both(params, batch, tangents(params, 3))
    for what, a, b in zip(["loss", "grads", "G v = H v"], ours, expected):
        assert_close(a, b, F64_RTOL, f"{name}: {what}")


def test_kfac_factors_are_sampled_from_the_key_and_share_kflrs_input_factors():
    cfg, model, params, batch = case("classifier")
    three = get_model("mlp_classifier").build(config_from_dict(  # optimizer.mc_samples: 3 labels per example
        {"data": TINY["classifier"][0], "model": CLASSIFIER, "train": TRAIN, "optimizer": {"mc_samples": 3}}))

    @jax.jit
    def factors(key):  # KFLR's, then KFAC's from key, again from key, from another key, and with 3 samples
        other = jax.random.fold_in(key, 1)
        return [*(model.curvature.factors(params, batch, k, exact)[2]
                  for k, exact in [(key, True), (key, False), (key, False), (other, False)]),
                three.curvature.factors(params, batch, key, False)[2],
                curvature.fcnn_quantities(params, *batch, activations_of(cfg), quantities=("kfac",), key=key,
                                          mc_samples=3)["kfac"]]

    kflr, kfac, again, other, ours3, expected3 = factors(jax.random.PRNGKey(4))
    assert_close(ours3, expected3, F64_RTOL, "KFAC factors, 3 samples")
    assert_close([A for (A, _), _ in kfac], [A for (A, _), _ in kflr], F64_RTOL, "A_j")
    assert jax.tree.structure(kfac) == jax.tree.structure(kflr)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(kfac), jax.tree.leaves(kflr)))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(kfac), jax.tree.leaves(again)))
    assert not np.allclose(kfac[-1][1], other[-1][1]), "B_L should depend on the sampled labels"


def test_ggn_vp_refuses_structural_damping():
    _, model, params, batch = case("linear regressor")
    with pytest.raises(ValueError, match=r"structural must be 0, got 0\.5"):
        model.curvature.ggn_vp(params, batch, params, structural=0.5)


def test_mlp_specs_offer_kfac_and_ggn_cg():
    for kind in ("mlp_classifier", "mlp_regressor", "mlp_autoencoder"):
        assert get_model(kind).curvature == ("kfac", "ggn_cg")


# ---------------------------------------------------------------------------------------------
# mlp_autoencoder: data, activations, options, evaluation


def test_autoencoder_data_is_the_classifiers_split_of_the_digits_pixels_over_16():
    images, digits = load_images("digits", 0.2, 0), load_classification("digits", 0.2, 0)
    assert images.X_train.shape == digits.X_train.shape and images.X_test.shape == digits.X_test.shape
    assert images.X_train.min() == 0.0 and images.X_train.max() == 1.0
    assert np.array_equal(images.X_train * 16, np.round(images.X_train * 16))  # 0..16 intensities, scaled


def test_autoencoder_default_activations_are_logistic_with_a_linear_code_layer():
    assert autoencoder_activations([256, 128, 32, 128, 256]) == ["sigmoid", "sigmoid", "identity", "sigmoid",
                                                                 "sigmoid", "identity"]
    assert autoencoder_activations([8, 4, 4, 8]) == ["sigmoid", "identity", "sigmoid", "sigmoid", "identity"]
    assert autoencoder_activations([8, 4], ["tanh", "relu"]) == ["tanh", "relu", "identity"]


@pytest.mark.parametrize("change, message", [
    ({"hidden": [8, 4, 8], "activations": ["sigmoid"]},
     r"model\.activations has length 1; model\.hidden \[8, 4, 8\] has 3 layers: give one activation per"),
    ({"hidden": [8, 4, 8], "activations": ["sigmoid", "softmax", "sigmoid"]},
     r"model\.activations\[1\] is 'softmax'; expected one of .*sigmoid"),
    ({"hidden": [8, 0]}, r"model\.hidden widths must be > 0, got \[8, 0\]"),
    ({"l2": -1.0}, r"model\.l2 must be >= 0, got -1\.0"),
    ({"activation": "tanh"}, r"unknown key 'model\.activation'"),
])
def test_autoencoder_options_are_checked_at_load(change, message):
    with pytest.raises(ConfigError, match=message):
        config({"dataset": "digits"}, {"kind": "mlp_autoencoder", **change})


def test_autoencoder_takes_the_digits_images_only():
    with pytest.raises(ConfigError, match=r"data\.dataset 'wine' does not fit model\.kind 'mlp_autoencoder'"):
        config({"dataset": "wine"}, {"kind": "mlp_autoencoder"})


def test_autoencoder_evaluates_the_mean_summed_squared_reconstruction_error():
    cfg, model, params, _ = case("autoencoder")
    zero = jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), params)  # every image reconstructed as 0
    images = load_images("digits", cfg.data.test_size, cfg.data.split_seed)
    metrics = model.evaluate(zero)
    assert set(metrics) == {"train_error", "test_error"} and model.primary == "train_error"
    assert metrics["train_error"] == pytest.approx(np.mean(np.sum(images.X_train**2, axis=1)), rel=1e-6)
    assert metrics["test_error"] == pytest.approx(np.mean(np.sum(images.X_test**2, axis=1)), rel=1e-6)
    report = model.report(zero)  # PCA at the code width (2): better than zero, worse than perfect
    assert 0 < report["pca_train_error"] < metrics["train_error"] and 0 < report["pca_test_error"]


def test_autoencoder_dp_clipping_without_a_bite_is_the_plain_gradient_float64():
    _, model, params, batch = case("autoencoder")
    weights = jnp.ones(batch[0].shape[0], jnp.float64)
    clipped = jax.jit(lambda p, b: model.clipped_grad(p, b, weights, 1e9))(params, batch)
    assert_close(clipped, jax.jit(jax.value_and_grad(model.loss))(params, batch), F64_RTOL, "clip norm 1e9")
