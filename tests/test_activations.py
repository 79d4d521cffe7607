"""Specification of the activation registry (seed 000 §4.3.1: df = f'(X) ⊙ dX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdc_jax
from mdc_jax.activations import get_activation

BUILTIN = ["identity", "tanh", "sigmoid", "relu", "softplus"]


@pytest.mark.parametrize("name", BUILTIN)
def test_closed_form_derivative_matches_autodiff(name):
    act = get_activation(name)
    # Away from relu's kink; wide range to exercise softplus' -expm1(-Z) for tiny and large Z.
    A = jnp.concatenate([jnp.linspace(-30.0, -0.01, 200), jnp.linspace(0.01, 30.0, 200)]).astype(jnp.float64)
    closed = act.grad_from(A, act.fn(A))
    auto = jax.vmap(jax.grad(act.fn))(A)
    # atol at float64's epsilon: from a rounded Z, 1 ± Z near saturation carries ~1e-16 absolute error
    np.testing.assert_allclose(closed, auto, rtol=1e-12, atol=2e-16)


def test_builtins_take_the_derivative_from_the_output():
    assert all(get_activation(n).from_output for n in BUILTIN)
    assert set(BUILTIN) <= set(mdc_jax.list_activations())


def test_relu_derivative_at_the_kink_is_zero_like_jax_nn_relu():
    act = get_activation("relu")
    assert float(act.grad_from(None, act.fn(jnp.zeros(())))) == float(jax.grad(jax.nn.relu)(0.0)) == 0.0


def test_register_custom_activation_and_errors():
    act = mdc_jax.register_activation("test_cube", lambda a: a**3, lambda a: 3 * a**2, overwrite=True)
    assert get_activation("test_cube") is act and not act.from_output
    with pytest.raises(ValueError, match="'test_cube' is already registered; pass overwrite=True"):
        mdc_jax.register_activation("test_cube", jnp.sin, jnp.cos)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        mdc_jax.register_activation("", jnp.sin, jnp.cos)
    with pytest.raises(ValueError, match="fn and derivative must be callables"):
        mdc_jax.register_activation("test_bad", jnp.sin, 3.0)
    with pytest.raises(ValueError, match=r"^get_activation: name 'gelu' is not a registered activation; registered "
                                         r"activations: .*tanh"):
        get_activation("gelu")
    with pytest.raises(ValueError, match=r"^get_activation: name \['tanh'\] is not a registered activation"):
        get_activation(["tanh"])


@pytest.mark.parametrize("option", ["from_output", "overwrite"])
def test_register_activation_options_must_be_bools(option):
    for value in ("yes", 1, None, np.array(True)):
        with pytest.raises(ValueError, match=rf"^register_activation: {option} must be a bool \(True or False\); got"):
            mdc_jax.register_activation(f"test_flags_{option}", jnp.sin, jnp.cos, **{option: value})
    act = mdc_jax.register_activation(f"test_flags_{option}", jnp.sin, jnp.cos, from_output=np.False_, overwrite=np.True_)
    assert act.from_output is False and get_activation(f"test_flags_{option}") is act
