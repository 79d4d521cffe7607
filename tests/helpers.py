"""Comparison helpers shared by the test modules: mdc-jax's own (`mdc_jax.testing`), re-exported,
and the random-case builders of `mdc_jax.reference`."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mdc_jax.reference._sampling import numpy_rng, probability_rows, uniform
from mdc_jax.testing import DEFAULT_RTOL, assert_close, rel_err

F64_RTOL = DEFAULT_RTOL["float64"]
F32_RTOL = DEFAULT_RTOL["float32"]

__all__ = ["F32_RTOL", "F64_RTOL", "assert_close", "assert_runs_through_custom_rule", "numpy_rng",
           "probability_rows", "rel_err", "uniform"]


def assert_runs_through_custom_rule(core, loss, args, monkeypatch) -> None:
    """``loss`` is a custom_vjp call to ``core``, and ``jax.grad`` invokes ``core``'s backward."""
    jaxpr = str(jax.make_jaxpr(loss)(*args))
    assert "custom_vjp_call" in jaxpr and f"name={core.fun.__name__}" in jaxpr
    calls, original = [], core.bwd
    monkeypatch.setattr(core, "bwd", lambda *a: calls.append(1) or original(*a))
    jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(loss(*a))))(*args)
    assert calls, "jax.grad did not call the closed-form backward"
