"""The rule registry: every closed-form rule with its seed reference, reference, sampler, tolerances.

`mdc-jax rules` lists it; `mdc-jax gradcheck` checks every entry with :func:`mdc_jax.testing.check_vjp`.
mdc-jax's own entries live beside their references (``mdc_jax/reference/<family>.py``) and are
registered when ``mdc_jax`` is imported. Yours join them in one of two ways:

* call :func:`register_rule` before running the checks (e.g. in a ``conftest.py``);
* or, so that the ``mdc-jax gradcheck`` command sees them, name them in your package's entry-point
  group ``mdc_jax.rules``: the entry point's object is a :class:`RuleSpec`, a list of them, or a
  module that calls :func:`register_rule` when imported::

      [project.entry-points."mdc_jax.rules"]
      my_rules = "my_package.rules:SPECS"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax

from ._plugins import Registry

RULES_GROUP = "mdc_jax.rules"


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """One registered rule.

    Attributes:
      name: unique key, e.g. ``"fcnn_classification"``.
      seed: ``"<seed file> §<section> eq. <numbers>"``: where the closed form comes from.
      rule: the closed-form function (a ``jax.custom_vjp``).
      reference: the plain-JAX function with the same signature.
      sample: ``(key, dtype) -> args``: random valid inputs (shapes and values drawn from ``key``).
      argnums: the arguments whose cotangents are checked (``None``: every floating argument).
      rtol: per-dtype tolerance overrides, e.g. ``{"float32": 1e-3}``.
      fd_rtol: finite-difference tolerance override.
      reference_name: how reports name the reference (default: its module and name).
    """

    name: str
    seed: str
    rule: Callable
    reference: Callable
    sample: Callable[[jax.Array, object], Sequence]
    argnums: tuple[int, ...] | None = None
    rtol: dict = dataclasses.field(default_factory=dict)
    fd_rtol: float | None = None
    reference_name: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"RuleSpec: name must be a non-empty string; got {self.name!r}.")
        for field in ("rule", "reference", "sample"):
            if not callable(getattr(self, field)):
                raise ValueError(f"RuleSpec {self.name!r}: {field} must be callable; got {getattr(self, field)!r}.")
        if self.reference_name is None:
            name = f"{getattr(self.reference, '__module__', '?')}.{getattr(self.reference, '__qualname__', '?')}"
            object.__setattr__(self, "reference_name", name)


_REGISTRY = Registry(RuleSpec, lambda spec: spec.name, RULES_GROUP, "rule", "rules", "register_rule")


def register_rule(spec: RuleSpec, *, overwrite: bool = False) -> RuleSpec:
    """Adds ``spec`` to the registry; refuses a name already taken unless ``overwrite``."""
    return _REGISTRY.register(spec, overwrite=overwrite)


def unregister_rule(name: str) -> None:
    _REGISTRY.unregister(name)


def get_rule(name: str) -> RuleSpec:
    """The entry called ``name``; a ``ValueError`` listing the registered names otherwise."""
    return _REGISTRY.get(name)


def list_rules() -> list[RuleSpec]:
    """Every registered rule (with those of the ``mdc_jax.rules`` entry points), sorted by name."""
    return _REGISTRY.list()
