"""Experiment configuration: YAML files validated into typed dataclasses.

A config has four sections, ``data``, ``model``, ``optimizer`` and ``train``, plus an optional
``name``. The ``model`` section's keys are those of the model that ``model.kind`` names (each
registered model declares its own, see :mod:`mdc_jax.experiment.models`). Every key is checked:
an unknown key, a wrong type or a missing required field is a
:class:`ConfigError` naming the file and the dotted key. ``--set train.steps=100`` overrides go
through the same checks. Loading uses a ``yaml.SafeLoader`` that also refuses duplicate keys and
integers with a leading zero (YAML 1.1 reads ``010`` as octal 8). YAML 1.1 reads ``1e-3`` as a
*string* (it wants ``1.0e-3``), so numeric strings are accepted where a float is expected; every
float must be finite.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import stat
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .dp import noise_multiplier_problem
from .models import GRADS, ModelOptions, get_model


class ConfigError(ValueError):
    """A configuration problem, naming the file and the dotted key."""


MAX_CONFIG_BYTES = 4 * 2**20  # a config is a few lines; anything larger is not one
MAX_SEED = 2**32 - 1  # jax.random.PRNGKey and scikit-learn's random_state take 32-bit seeds
NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")  # a run name: one path component, never '.' or '..'


class LeadingZeroInt(str):
    """An integer written with a leading zero (``010``): YAML 1.1 reads it as octal, so it is refused."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing duplicate keys; integers with a leading zero become
    :class:`LeadingZeroInt` (refused by the config checks, naming the key)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        f"found duplicate key {_show(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if re.fullmatch(r"[-+]?0[0-9_]+", text):
            return LeadingZeroInt(text)
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
            raise yaml.constructor.ConstructorError(None, None, f"an integer of {len(text)} digits is too large",
                                                    node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _show(value: Any, limit: int = 40) -> str:
    """``repr(value)``, shortened: a value in a message may be thousands of characters long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({len(text)} characters)"


def safe_name(text: str) -> str:
    """``text`` as a run name (see :data:`NAME`): other characters become ``_``, at most 100 of them."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:100]
    return name if NAME.fullmatch(name) and name not in (".", "..") else "run"


@dataclasses.dataclass
class DataConfig:
    dataset: str  # one of the model's datasets (see `mdc-jax models`)
    test_size: float = 0.2
    split_seed: int = 0
    max_chars: int = 400_000  # text datasets: characters of text to read


@dataclasses.dataclass
class OptimizerConfig:
    name: str = "adam"  # sgd | momentum | adam | adamw | kfac | ggn_cg (mdc_jax.optim: the model's Curvature)
    learning_rate: float = 1e-3
    schedule: str = "constant"  # constant | cosine | warmup_cosine | exponential
    warmup_steps: int = 0
    decay_rate: float = 0.1  # exponential: factor reached at the last step
    momentum: float = 0.9  # momentum and kfac
    weight_decay: float = 1e-4  # adamw
    clip_norm: float = 0.0  # 0 disables global-norm clipping
    damping: float = 1e-3  # kfac: λ of (F + λI)⁻¹; ggn_cg: the initial λ of (G + λI)p = −g
    ema: float = 0.95  # kfac: running average of the Kronecker factors
    update_every: int = 10  # kfac: steps between recomputations of the preconditioner
    factors: str = "kfac"  # kfac (sampled B) | kflr (exact B)
    inverse: str = "factored"  # kfac: factored (Tikhonov, π-split) | eigen (exact (A⊗B + λI)⁻¹)
    adaptive: bool = False  # kfac: α, μ from the exact quadratic model, λ by Levenberg–Marquardt (M&G §6.5, §7)
    mc_samples: int = 1  # kfac with factors: kfac: labels sampled per example (the model's Curvature reads it)
    cg_iters: int = 50  # ggn_cg: most CG iterations per step
    cg_tol: float = 1e-4  # ggn_cg: CG stops at ‖r‖ ≤ cg_tol·‖g‖
    adapt_damping: bool = True  # ggn_cg: Levenberg–Marquardt rule on the reduction ratio ρ
    line_search: bool = True  # ggn_cg: backtracking (Armijo) along the CG direction
    structural_damping: float = 0.0  # ggn_cg: μ of (G + λμS), models whose curvature offers "structural"
    min_damping: float = 1.0e-8  # kfac with adaptive, ggn_cg with adapt_damping: the floor of the adapted λ


@dataclasses.dataclass
class DPConfig:
    """``train.dp``: DP-SGD (see :mod:`mdc_jax.experiment.dp`); absent or null trains without it."""

    clip_norm: float  # C: each example's gradient is clipped to this norm
    noise_multiplier: float  # σ: Gaussian noise of standard deviation σ·C on the summed clipped gradients
    delta: float = 1e-5  # δ of the reported (ε, δ)
    accountant: str = "pld"  # pld | rdp (Google's dp-accounting)


@dataclasses.dataclass
class TrainConfig:
    steps: int
    seed: int = 0
    grad: str = "closed"  # closed | autodiff
    batch_size: int = 128
    checkpoint_every: int = 500
    eval_every: int = 250
    log_every: int = 50
    devices: int = 1  # data-parallel devices; 0 = all visible
    tol: float = 1e-8  # Newton models: convergence tolerance on the gradient norm
    dp: DPConfig | None = None  # DP-SGD: Poisson sampling (expected batch_size), clipping, noise, ε at δ


@dataclasses.dataclass
class ExperimentConfig:
    data: DataConfig
    model: ModelOptions  # the registered model's own options class, chosen by model.kind
    train: TrainConfig
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    name: str = ""


SECOND_ORDER = ("kfac", "ggn_cg")  # the optimizers of mdc_jax.optim, served by a model's Curvature
CHOICES = {
    "optimizer.name": ("sgd", "momentum", "adam", "adamw", *SECOND_ORDER),
    "optimizer.schedule": ("constant", "cosine", "warmup_cosine", "exponential"),
    "optimizer.factors": ("kfac", "kflr"),
    "optimizer.inverse": ("factored", "eigen"),
    "train.grad": GRADS,
    "train.dp.accountant": ("pld", "rdp"),
}
POSITIVE = ("train.steps", "train.batch_size", "train.checkpoint_every", "train.eval_every", "train.log_every",
            "train.tol", "optimizer.learning_rate", "optimizer.damping", "optimizer.update_every",
            "optimizer.mc_samples", "optimizer.cg_iters", "optimizer.min_damping", "data.max_chars")
SEEDS = ("train.seed", "data.split_seed")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks (and, for YAML's numeric strings, converts) one value against a type annotation."""
    if isinstance(value, LeadingZeroInt):
        raise ConfigError(f"{where}: {value[:40]} has a leading zero, which YAML 1.1 reads as an octal number; "
                          f"write it without the leading zero (or quote it for a string)")
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: unsupported annotation {tp}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {_show(value)}")
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"{where}: {_show(value)} is out of range; expected an integer of magnitude below 2**63")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {_show(value)}")
        try:
            number = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got the string {_show(value)}") from None
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {_show(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {_show(value)}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {tp}")


def _build(cls, raw: Any, where: str, source: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where or 'the file'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields), key=str)  # YAML keys may be ints too
    if unknown:
        key = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"{source}: unknown key {key!r}; allowed keys in {where or 'the top level'}: "
                          f"{', '.join(sorted(fields))}")
    kwargs = {}
    for name, field in fields.items():
        dotted = f"{where}.{name}" if where else name
        if name not in raw:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: missing required key {dotted!r}")
            continue
        tp = hints[name]
        optional = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
            typing.Union, types.UnionType) else None
        if optional and len(optional) == 1 and dataclasses.is_dataclass(optional[0]):  # an optional section
            kwargs[name] = None if raw[name] is None else _build(optional[0], raw[name], dotted, source)
        elif optional and len(optional) == 1 and raw[name] is None:  # an optional value (`int | None`), null
            kwargs[name] = None
        elif tp is ModelOptions:
            kwargs[name] = _build_model_options(raw[name], dotted, source)
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], dotted, source)
        else:
            try:
                kwargs[name] = _coerce(raw[name], optional[0] if optional and len(optional) == 1 else tp, dotted)
            except ConfigError as err:
                raise ConfigError(f"{source}: {err}") from None
    return cls(**kwargs)


def _build_model_options(raw: Any, where: str, source: str) -> ModelOptions:
    """The model section, checked against the options class of the model that ``kind`` names."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(raw).__name__}")
    if "kind" not in raw:
        raise ConfigError(f"{source}: missing required key '{where}.kind'")
    kind = raw["kind"]
    if not isinstance(kind, str):
        raise ConfigError(f"{source}: {where}.kind: expected a string, got {type(kind).__name__} {kind!r}")
    try:
        spec = get_model(kind)
    except ValueError as err:
        raise ConfigError(f"{source}: {where}.kind: {err}") from None
    return _build(spec.options, raw, where, source)


def _check_values(cfg: ExperimentConfig, source: str) -> None:
    spec = get_model(cfg.model.kind)
    if cfg.data.dataset not in spec.datasets:
        raise ConfigError(f"{source}: data.dataset {cfg.data.dataset!r} does not fit model.kind {spec.kind!r}; "
                          f"expected one of {', '.join(spec.datasets)}")
    problems = cfg.model.validate(cfg)
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}")
    for dotted, allowed in CHOICES.items():
        value = cfg
        for part in dotted.split("."):
            value = getattr(value, part) if value is not None else None
        if value is not None and value not in allowed:
            raise ConfigError(f"{source}: {dotted} is {value!r}; expected one of {', '.join(allowed)}")
    for dotted in POSITIVE:
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if not value > 0:
            raise ConfigError(f"{source}: {dotted} must be > 0, got {value!r}")
    for dotted in SEEDS:
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if not 0 <= value <= MAX_SEED:
            raise ConfigError(f"{source}: {dotted} must be in [0, 2**32 - 1], got {value}")
    if cfg.name and (not NAME.fullmatch(cfg.name) or cfg.name in (".", "..")):
        raise ConfigError(f"{source}: name {_show(cfg.name)}: expected a plain name of at most 100 characters "
                          f"from A-Z a-z 0-9 . _ - (not '.' or '..')")
    if not 0 < cfg.data.test_size < 1:
        raise ConfigError(f"{source}: data.test_size must be in (0, 1), got {cfg.data.test_size}")
    o = cfg.optimizer
    if o.warmup_steps < 0:
        raise ConfigError(f"{source}: optimizer.warmup_steps must be >= 0, got {o.warmup_steps}")
    if o.schedule == "warmup_cosine" and not o.warmup_steps < cfg.train.steps:
        raise ConfigError(f"{source}: optimizer.warmup_steps ({o.warmup_steps}) must be < train.steps "
                          f"({cfg.train.steps}) for the warmup_cosine schedule: the cosine decay needs steps after it")
    if not 0 < o.decay_rate:
        raise ConfigError(f"{source}: optimizer.decay_rate must be > 0, got {o.decay_rate}")
    for key in ("clip_norm", "weight_decay", "momentum", "cg_tol", "structural_damping"):
        if not getattr(o, key) >= 0:
            raise ConfigError(f"{source}: optimizer.{key} must be >= 0, got {getattr(o, key)}")
    if not 0 <= o.ema < 1:
        raise ConfigError(f"{source}: optimizer.ema must be in [0, 1), got {o.ema}")
    if o.name in SECOND_ORDER:
        _check_second_order(cfg, spec, source)
    dp = cfg.train.dp
    if dp is not None and spec.fit is not None:
        raise ConfigError(f"{source}: train.dp: model.kind {spec.kind!r} is fitted by a solver, not by gradient "
                          f"steps; DP-SGD applies to gradient-trained models")
    if dp is not None:
        if not dp.clip_norm > 0:
            raise ConfigError(f"{source}: train.dp.clip_norm must be > 0, got {dp.clip_norm}")
        if not dp.noise_multiplier >= 0:
            raise ConfigError(f"{source}: train.dp.noise_multiplier must be >= 0 (0: clipping without noise, "
                              f"no privacy), got {dp.noise_multiplier}")
        if problem := noise_multiplier_problem(dp.noise_multiplier, dp.accountant):
            raise ConfigError(f"{source}: {problem}")
        if not 0 < dp.delta < 1:
            raise ConfigError(f"{source}: train.dp.delta must be in (0, 1), got {dp.delta}")
    if cfg.train.devices < 0:
        raise ConfigError(f"{source}: train.devices must be >= 0 (0 = all devices), got {cfg.train.devices}")


def _check_second_order(cfg: ExperimentConfig, spec, source: str) -> None:
    """``optimizer.name: kfac | ggn_cg`` needs a gradient-trained model whose Curvature serves it, and no DP."""
    o = cfg.optimizer
    if o.damping < o.min_damping:
        raise ConfigError(f"{source}: optimizer.damping {o.damping} is below optimizer.min_damping {o.min_damping}, "
                          f"the floor of the adapted damping; expected damping >= min_damping")
    if spec.fit is not None:
        raise ConfigError(f"{source}: optimizer.name {o.name!r}: model.kind {spec.kind!r} is fitted by a solver "
                          f"(Newton), not by optimizer steps; use a gradient-trained model")
    if o.name not in spec.curvature:
        offers = f"its curvature serves {', '.join(spec.curvature)}" if spec.curvature else "it has no curvature"
        raise ConfigError(f"{source}: optimizer.name {o.name!r}: model.kind {spec.kind!r} cannot serve it ({offers}); "
                          f"expected a model whose ModelSpec.curvature lists {o.name!r}, or an optimizer among "
                          f"sgd, momentum, adam, adamw")
    if o.name == "kfac" and o.adaptive and "ggn_cg" not in spec.curvature:
        raise ConfigError(f"{source}: optimizer.adaptive with optimizer.name 'kfac': model.kind {spec.kind!r} has no "
                          f"GGN-vector product for the quadratic model (its ModelSpec.curvature lacks 'ggn_cg'); "
                          f"expected false")
    if o.name == "ggn_cg" and o.structural_damping > 0 and "structural" not in spec.curvature:
        raise ConfigError(f"{source}: optimizer.structural_damping {o.structural_damping}: model.kind {spec.kind!r} "
                          f"has no structural damping (its ModelSpec.curvature lacks 'structural'); expected 0")
    if cfg.train.dp is not None:
        raise ConfigError(f"{source}: train.dp with optimizer.name {o.name!r}: the curvature would see the private "
                          f"examples unclipped and unnoised; DP-SGD trains with sgd, momentum, adam or adamw")


def yaml_error_line(err: Exception) -> str:
    """PyYAML's multi-line report as one line: what is wrong and where (1-based line and column)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err).splitlines()[0]
    if isinstance(err, yaml.constructor.ConstructorError) and "constructor for the tag" in str(problem):
        problem = f"{problem} (only plain YAML is read: python/... tags are refused)"
    return f"not valid YAML: {where}{problem}"


def parse_override(text: str, flag: str = "--set") -> tuple[str, Any]:
    """``"train.steps=100"`` → ``("train.steps", 100)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"{flag} {_show(text)}: expected KEY=VALUE, e.g. train.steps=100")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"{flag} {_show(text)}: the key before '=' is empty")
    try:
        return key.strip(), yaml.load(value, Loader=_Loader) if value.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"{flag} {_show(text)}: the value of {key.strip()} is {yaml_error_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{flag} {key.strip()}: the value is nested too deeply") from None


def apply_overrides(raw: dict, overrides: list[tuple[str, Any]], source: str) -> dict:
    raw = copy.deepcopy(raw)  # nested sections (train.dp) too: the caller's dict is left as it was
    for key, value in overrides:
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            if node.get(part) is None:  # an absent or null optional section, such as train.dp
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: --set {key}: {part!r} is not a section")
        node[parts[-1]] = value
    return raw


def config_from_dict(raw: dict, source: str = "<config>", overrides: list[tuple[str, Any]] = ()) -> ExperimentConfig:
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must be a mapping with sections data, model, optimizer, train; "
                          f"got a YAML {type(raw).__name__}")
    cfg = _build(ExperimentConfig, apply_overrides(raw, list(overrides), source), "", source)
    _check_values(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Loads and validates a YAML config; ``overrides`` are ``KEY=VALUE`` strings."""
    path = Path(path)
    cfg = config_from_dict(read_yaml(path), str(path), [parse_override(o) for o in overrides])
    if not cfg.name:
        cfg.name = safe_name(path.stem)
    return cfg


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content (safe loading, duplicate keys and leading-zero integers refused); every
    failure a one-line :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        mode, size = (st := path.stat()).st_mode, st.st_size
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{path}: is a directory; expected a YAML config file")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{path}: is not a regular file; expected a YAML config file")
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: is {size} bytes; a config file is at most {MAX_CONFIG_BYTES // 2**20} MiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config: {err}") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {yaml_error_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None


def config_to_dict(cfg: ExperimentConfig) -> dict:
    return dataclasses.asdict(cfg)
