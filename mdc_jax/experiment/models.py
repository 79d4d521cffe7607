"""The model registry of `mdc-jax train`: what a model is, and how the harness finds one by name.

A config's ``model.kind`` names a :class:`ModelSpec`. mdc-jax's own models (``models/`` in the
repository, installed as ``mdc_jax_models``) and yours register the same way, through the
entry-point group ``mdc_jax.models`` of the package that defines them::

    # your pyproject.toml
    [project.entry-points."mdc_jax.models"]
    my_mlp = "my_package.models:MY_MLP"          # a ModelSpec

or, without packaging, by calling :func:`register_model` before :func:`mdc_jax.experiment.trainer.train`.
The harness never imports a model module by name: nothing in ``mdc_jax`` depends on ``models/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax

from .._plugins import Registry

MODELS_GROUP = "mdc_jax.models"
GRADS = ("closed", "autodiff")
CURVATURE = ("kfac", "ggn_cg", "structural")  # what a ModelSpec's Curvature can serve (see ModelSpec.curvature)


class Curvature(NamedTuple):
    """A model's curvature, from the closed forms (:mod:`mdc_jax.curvature`), for :mod:`mdc_jax.optim`.

    Each describes the model's own training loss ``model.loss(params, batch)`` on ``batch`` (its scaling
    included: a loss per token divides by ``τ``).

    Attributes:
      factors: ``(params, batch, key, exact) -> (loss, grads, factors)``: the loss and its gradient (the
        penalty included, as ``jax.grad`` of ``model.loss`` gives them) and the Kronecker factors of the GGN
        of the loss *without* its L2 penalty, from the same forward: a pytree with ``params`` as a prefix,
        each weight matrix mapped to ``(A, B)`` (its GGN block ``≈ kron(A, B)`` in row-major ``vec``) and
        each vector to its block ``B``, as :func:`mdc_jax.curvature.fcnn_quantities` and
        :func:`~mdc_jax.curvature.rnn_quantities` return them. ``exact``: KFLR's exact ``B`` (``True``) or
        KFAC's sampled one (``False``, from ``key``).
      ggn_vp: ``(params, batch, tangents, structural=0.0) -> G v``: the exact GGN-vector product of the loss,
        its L2 penalty's curvature included; with ``structural = w > 0`` (models listing ``"structural"``
        in :attr:`ModelSpec.curvature` only) ``(G + w S) v``, ``S`` the Gauss–Newton matrix of the hidden
        states (Martens & Sutskever's structural damping).
      ggn_gram: ``(params, batch, tangents) -> (k, k)``, optional: the Gram matrix ``[v_aᵀ G v_b]`` of ``k``
        tangents stacked on a leading axis (each leaf ``(k, *param.shape)``) under the same ``G`` as ``ggn_vp``
        (the L2 penalty's curvature included, ``+ l2 Σ_W v_a(W)·v_b(W)``; no structural damping), from the
        forward differentials alone (:func:`mdc_jax.curvature.fcnn_ggn_gram`, :func:`~mdc_jax.curvature.rnn_ggn_gram`).
        Adaptive K-FAC's ``α``, ``μ`` need only this quadratic form; ``None``: the trainer forms it from ``k``
        products of ``ggn_vp`` (a backward each).
    """

    factors: Callable[..., tuple]
    ggn_vp: Callable[..., Any]
    ggn_gram: Callable[..., Any] | None = None


class Model(NamedTuple):
    """A gradient-trained model built from a config: what the training loop needs, and nothing more.

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
      data: the concrete training arrays by name (``{"X_train": X, "Y_train": Y}``), optional. The
        trainer checks them once, before the first step, and refuses NaN or inf with a message
        naming the array, the row and the column: the rules themselves stay traceable under ``jit``
        and do not look at values.
      examples: the number of training examples, for DP-SGD (``train.dp``): Poisson sampling draws
        each of them with probability ``batch_size / examples`` and the accountant needs that rate. An
        example is the privacy unit, so no two may share data (the language models' examples are the
        non-overlapping windows of their text, whatever windows ``batch`` takes).
      gather: ``indices -> batch``: the training examples at ``indices`` (jittable), for DP-SGD.
      curvature: what the second-order optimizers (``optimizer.name: kfac | ggn_cg``, :mod:`mdc_jax.optim`)
        need from the model, a :class:`Curvature`; ``None`` for a model that cannot give it.
      clipped_grad: ``(params, batch, weights, clip_norm) -> (loss, grads)`` with
        ``grads = (1/B) Σ_i w_i min(1, C/‖g_i‖) g_i + ∇penalty`` over the batch's ``B`` examples
        (``g_i``: example i's own gradient; see :mod:`mdc_jax.per_example`), for DP-SGD with
        ``train.grad: closed``. With ``train.grad: autodiff`` the trainer clips ``jax.vmap(jax.grad)``
        of ``loss`` instead, so a model needs only ``examples`` and ``gather`` for that.
    """

    init: Callable[[jax.Array], Any]
    loss: Callable[[Any, Any], jax.Array]
    batch: Callable[[jax.Array], Any]
    batch_axes: Any
    evaluate: Callable[[Any], dict]
    primary: str
    report: Callable[[Any], dict]
    data: Mapping[str, Any] | None = None
    examples: int | None = None
    gather: Callable[[jax.Array], Any] | None = None
    clipped_grad: Callable[..., tuple] | None = None
    curvature: Curvature | None = None


class Fit(NamedTuple):
    """The result of a model fitted by a solver (Newton/IRLS) rather than by gradient steps.

    Attributes:
      params: a pytree of arrays, saved as ``final.npz``.
      metrics: held-out metrics; ``primary`` names the headline one.
      info: solver figures (iterations, convergence), JSON-serialisable.
      primary: the name of the headline metric.
    """

    params: Any
    metrics: dict
    info: dict
    primary: str = "test_accuracy"


@dataclasses.dataclass
class ModelOptions:
    """The ``model:`` section of a config. A model subclasses it with its own typed keys (with
    defaults); the config loader checks every key against the subclass's fields."""

    kind: str

    def validate(self, cfg) -> list[str]:
        """Problems with the values, as ``"model.<key> ..."`` messages (empty when valid).

        ``cfg`` is the whole config, for checks across sections (a sequence length against the
        text the data section reads, say); they run when the config is loaded, before training.
        """
        return []


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model `mdc-jax train` can build by ``model.kind``.

    Attributes:
      kind: the name configs use.
      options: the :class:`ModelOptions` subclass holding the ``model:`` section's keys.
      datasets: the ``data.dataset`` names the model accepts.
      build: ``cfg -> Model``, for models trained by gradient steps (optax, ``train.steps`` steps).
      fit: ``cfg -> Fit``, for models fitted by a solver (``train.steps`` is its iteration cap).
        Exactly one of ``build`` and ``fit`` is given.
      float64: the model runs in float64; the CLI turns on ``jax_enable_x64`` for it.
      curvature: what its :class:`Curvature` offers, any of ``"kfac"`` (``factors``), ``"ggn_cg"``
        (``ggn_vp``) and ``"structural"`` (``ggn_vp``'s structural damping): a config asking for a
        second-order optimizer the model cannot serve is refused at load, naming the key.
      configs: a folder of example configs shipped with the model (``mdc-jax train NAME`` finds them).
      description: one line for ``mdc-jax models``.
    """

    kind: str
    options: type[ModelOptions]
    datasets: tuple[str, ...]
    build: Callable[[Any], Model] | None = None
    fit: Callable[[Any], Fit] | None = None
    float64: bool = False
    curvature: tuple[str, ...] = ()
    configs: Path | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"ModelSpec: kind must be a non-empty string; got {self.kind!r}.")
        if not (isinstance(self.options, type) and issubclass(self.options, ModelOptions)
                and dataclasses.is_dataclass(self.options)):
            raise ValueError(f"ModelSpec {self.kind!r}: options must be a dataclass subclassing ModelOptions; "
                             f"got {self.options!r}.")
        if (self.build is None) == (self.fit is None):
            raise ValueError(f"ModelSpec {self.kind!r}: give exactly one of build (gradient-trained) and fit (solver).")
        if isinstance(self.curvature, str) or not set(self.curvature) <= set(CURVATURE):
            raise ValueError(f"ModelSpec {self.kind!r}: curvature must be a tuple of {CURVATURE}; got {self.curvature!r}.")
        if isinstance(self.datasets, str) or not self.datasets:
            raise ValueError(f"ModelSpec {self.kind!r}: datasets must be a non-empty tuple of names; got {self.datasets!r}.")


_REGISTRY = Registry(ModelSpec, lambda spec: spec.kind, MODELS_GROUP, "model kind", "kinds", "register_model")


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Makes ``spec`` available to configs as ``model.kind: <spec.kind>``."""
    _REGISTRY.list()  # the entry points first, so that a taken kind is refused
    return _REGISTRY.register(spec, overwrite=overwrite)


def unregister_model(kind: str) -> None:
    _REGISTRY.unregister(kind)


def get_model(kind: str) -> ModelSpec:
    """The model registered as ``kind``; a ``ValueError`` listing the registered kinds otherwise."""
    return _REGISTRY.get(kind)


def list_models() -> list[ModelSpec]:
    """Every registered model (with those of the ``mdc_jax.models`` entry points), sorted by kind."""
    return _REGISTRY.list()


def find_config(name: str | Path) -> Path:
    """A config path as given, or the example config of that name shipped with a registered model.

    ``find_config("fcnn_classification_digits")`` finds ``configs/fcnn_classification_digits.yaml``
    whether mdc-jax runs from its repository or from an installed wheel.
    """
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path  # a path with a folder is the user's file, never replaced by a shipped one
    stem = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    for spec in list_models():
        if spec.configs is not None and (Path(spec.configs) / stem).is_file():
            return Path(spec.configs) / stem
    return path  # the loader reports it as missing


def pick_loss(closed: Callable, autodiff: Callable, grad: str) -> Callable:
    """The closed-form rule or the plain reference (differentiated by autodiff), by ``train.grad``."""
    if grad not in GRADS:
        raise ValueError(f"grad must be one of {GRADS}; got {grad!r}.")
    return closed if grad == "closed" else autodiff
