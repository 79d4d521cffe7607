"""Every registered rule passes the checks `mdc-jax gradcheck` runs: value and VJP equal to `jax.vjp`
of its reference (float64, 1e-10) and to central finite differences, on random inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from mdc_jax.registry import list_rules
from mdc_jax.testing import check_vjp

SPECS = list_rules()


def test_the_registry_holds_every_family():
    families = {"fcnn_regression", "fcnn_classification", "fcnn_classification_general", "softmax", "sigmoid",
                "rnn", "cross_entropy", "logistic_loss", "multinomial_loss", "identity_logdet"}
    assert families <= {s.name for s in SPECS}
    for spec in SPECS:
        assert spec.seed.startswith(("000_3fed0c34b422d74e.txt", "004_c4a3fcbc5e77e7ce.txt")), spec
        assert spec.reference.__module__.startswith("mdc_jax.reference."), spec


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_registered_rule_matches_its_reference_float64(spec, seed=3):
    """Seed 3: `make test` also runs `mdc-jax gradcheck` on seeds 0–2, so together four problems per rule."""
    args = spec.sample(jax.random.PRNGKey(seed), jnp.dtype("float64"))
    report = check_vjp(spec.rule, spec.reference, args, argnums=spec.argnums, rtol=spec.rtol.get("float64"),
                       fd_rtol=spec.fd_rtol, seed=seed)
    assert report.passed, f"{spec.name} ({spec.seed}):\n{report}"
