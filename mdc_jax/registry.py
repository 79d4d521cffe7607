"""The rule registry: every closed-form rule with its seed reference, reference, sampler, tolerances.

`mdc-jax rules` lists it; `mdc-jax gradcheck` checks every entry with :func:`mdc_jax.testing.check_vjp`.
Users can :func:`register_rule` their own entries and run the same CLI on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax


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
    """

    name: str
    seed: str
    rule: Callable
    reference: Callable
    sample: Callable[[jax.Array, object], Sequence]
    argnums: tuple[int, ...] | None = None
    rtol: dict = dataclasses.field(default_factory=dict)
    fd_rtol: float | None = None

    @property
    def reference_name(self) -> str:
        return f"{getattr(self.reference, '__module__', '?')}.{getattr(self.reference, '__name__', '?')}"


_RULES: dict[str, RuleSpec] = {}


def register_rule(spec: RuleSpec, *, overwrite: bool = False) -> RuleSpec:
    if spec.name in _RULES and not overwrite:
        raise ValueError(f"register_rule: {spec.name!r} is already registered; pass overwrite=True to replace it.")
    _RULES[spec.name] = spec
    return spec


def unregister_rule(name: str) -> None:
    _RULES.pop(name, None)


def get_rule(name: str) -> RuleSpec:
    _load_catalog()
    if name not in _RULES:
        raise ValueError(f"unknown rule {name!r}; registered rules: {', '.join(sorted(_RULES))}.")
    return _RULES[name]


def list_rules() -> list[RuleSpec]:
    _load_catalog()
    return [_RULES[k] for k in sorted(_RULES)]


def _load_catalog() -> None:
    from . import catalog  # noqa: F401  (registers mdc-jax's own rules on first import)
