"""mdc-jax's example models, composed from the rules; installed as ``mdc_jax_models``.

Each module defines a :class:`mdc_jax.experiment.models.ModelSpec` that the package's
``pyproject.toml`` registers in the ``mdc_jax.models`` entry-point group, exactly as a model of
yours would be registered; `mdc-jax train` finds them by ``model.kind`` and never imports this
package by name.
"""

from pathlib import Path


def _configs_dir() -> Path | None:
    """The shipped example configs: ``configs/`` beside this package in the repository, or the
    copy installed inside it (``mdc_jax_models/configs``) from a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if candidate.is_dir() and any(candidate.glob("*.yaml")):
            return candidate
    return None


CONFIGS = _configs_dir()
