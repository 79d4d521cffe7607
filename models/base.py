"""What the trainer needs from a gradient-trained model, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Model(NamedTuple):
    """A model built from a config.

    Attributes:
      init: ``key -> params``.
      loss: ``(params, batch) -> scalar``; differentiated by the closed-form rule or by autodiff,
        as the config's ``train.grad`` says.
      batch: ``key -> batch``: a random training batch, drawn on device (jittable), so a step's
        batch is a pure function of the run's key and the step number: resumes are exact.
      batch_axes: a pytree like the batch giving each leaf's sample axis (for data parallelism).
      evaluate: ``params -> {metric: value}`` on the held-out split.
      primary: the name of the headline metric in ``evaluate``'s result.
      report: ``params -> dict``: extra end-of-run figures (baselines, samples), JSON-serialisable.
    """

    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any], jax.Array]
    batch: Callable[[jax.Array], Any]
    batch_axes: Any
    evaluate: Callable[[Any], dict]
    primary: str
    report: Callable[[Any], dict]


GRADS = ("closed", "autodiff")


def pick_loss(closed: Callable, autodiff: Callable, grad: str) -> Callable:
    """The closed-form rule or the plain reference (differentiated by autodiff), by ``train.grad``."""
    if grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS}; got {grad!r}.")
    return closed if grad == "closed" else autodiff
