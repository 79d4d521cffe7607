"""The temporal order problem (Hochreiter & Schmidhuber 1997, experiment 6a) on the §6.4 RNN rule.

A sequence of ``T`` one-hot symbols over ``{a, b, c, d, X, Y, B, E}``: ``B`` at ``t = 0``, ``E`` at ``t = T − 1``,
two relevant symbols, each ``X`` or ``Y``, at random positions ``t_1 ∈ [T/10, T/5]`` and ``t_2 ∈ [T/2, 3T/5]``
(integer parts: ``[10, 20]`` and ``[50, 60]`` for ``T = 100``, the original's), and distractors drawn
uniformly from ``a``–``d`` everywhere else. The class is the relevant symbols' order, ``XX``, ``XY``, ``YX``
or ``YY``, given only at the last step: the label rows of the other steps are zero, so the loss
:func:`mdc_jax.rnn_loss` is the mean cross-entropy of the last output over the ``N`` sequences,
``J = −(1/N) Σ_i ln s¹(o_{T,i})·y_i``. The information must be carried over ``T/2`` steps of distractors: the
long-range problem Martens & Sutskever (2011) solved with Hessian-free optimization and structural damping.

Procedural: each step's batch is drawn on device from the step's key (:func:`sequences`); the held-out
``model.test_sequences`` sequences come from ``data.split_seed``. ``evaluate`` reports the held-out accuracy
(headline) and loss. The model's :class:`~mdc_jax.experiment.models.Curvature` is the char LM's
(:func:`mdc_jax_models.rnn_lm.rnn_curvature`, scale 1: the loss is per sequence), structural damping included.

Initialisation (``init_*`` options), after Martens & Sutskever's sparse initialisation: each hidden unit has
``init_connections`` nonzero incoming recurrent weights drawn from ``N(0, 1)``, and ``W`` is rescaled to
spectral radius ``init_radius`` (1.1: slightly beyond the edge of stability, so the state neither forgets
the relevant symbols at once nor, through ``tanh``, explodes); ``U ~ N(0, input_scale²)`` with ``input_scale``
0.1 (at 1.0 the inputs saturate ``tanh``: swapping X and Y at ``t2`` moved ``Z_T`` by 0.03% at T = 50,
H = 100, against 26% at 0.1, and every optimizer stayed at chance), ``V ~ N(0, 1/H)``, zero biases.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from mdc_jax import RNNParams, reference, rnn_forward, rnn_loss
from mdc_jax.experiment.models import Model, ModelOptions, ModelSpec, pick_loss

from . import CONFIGS
from .rnn_lm import MAX_HIDDEN, rnn_curvature

DATASET = "temporal_order"
SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")  # one-hot columns; a–d are the distractors
CLASSES = ("XX", "XY", "YX", "YY")  # 2·[first is Y] + [second is Y]
_X, _B, _E = SYMBOLS.index("X"), SYMBOLS.index("B"), SYMBOLS.index("E")
MIN_SEQ_LEN = 10  # the shortest T whose two windows [T/10, T/5] and [T/2, 3T/5] miss B and E and each other


def windows(T: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The relevant symbols' positions (inclusive), ``[⌊T/10⌋, ⌊T/5⌋]`` and ``[⌊T/2⌋, ⌊3T/5⌋]``."""
    return (T // 10, T // 5), (T // 2, 3 * T // 5)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def sequences(key, n: int, T: int, dtype=jnp.float32):
    """``n`` sequences of length ``T`` drawn from ``key`` (jittable): ``(X, Y)``, time-major one-hot inputs
    ``(T, n, 8)`` over :data:`SYMBOLS` and label rows ``(T, n, 4)`` over :data:`CLASSES`, zero but at
    ``t = T − 1``. Compiled once per ``(n, T, dtype)``."""
    # One draw of random bits (one threefry, quick to compile) gives every choice, each by a modulus m: exactly
    # uniform for m = 4, within m·2⁻³² of it for a window of m ≤ T/10 + 1 positions.
    bits = jax.random.bits(key, (n, T + 3))
    (lo1, hi1), (lo2, hi2) = windows(T)
    ids = (bits[:, :T] % 4).astype(jnp.int32)  # distractors a–d
    ids = ids.at[:, 0].set(_B).at[:, T - 1].set(_E)
    rows = jnp.arange(n)
    t1 = lo1 + (bits[:, T] % (hi1 - lo1 + 1)).astype(jnp.int32)
    t2 = lo2 + (bits[:, T + 1] % (hi2 - lo2 + 1)).astype(jnp.int32)
    labels = (bits[:, T + 2] % 4).astype(jnp.int32)  # 2·[first is Y] + [second is Y]: the class
    ids = ids.at[rows, t1].set(_X + labels // 2).at[rows, t2].set(_X + labels % 2)
    X = jax.nn.one_hot(ids.T, len(SYMBOLS), dtype=dtype)
    Y = jnp.zeros((T, n, len(CLASSES)), dtype).at[T - 1].set(jax.nn.one_hot(labels, len(CLASSES), dtype=dtype))
    return X, Y


@dataclasses.dataclass
class TemporalOrderOptions(ModelOptions):
    seq_len: int = 50  # T
    hidden_size: int = 100  # H
    init_radius: float = 1.1  # spectral radius of W at initialisation
    init_connections: int = 15  # nonzero incoming recurrent weights per hidden unit (sparse initialisation)
    input_scale: float = 0.1  # standard deviation of U's entries at initialisation (1.0 saturates tanh: the task is lost)
    test_sequences: int = 2000  # held-out sequences, drawn from data.split_seed

    def validate(self, cfg) -> list[str]:
        problems = [f"model.{k} must be > 0, got {getattr(self, k)!r}"
                    for k in ("hidden_size", "init_connections", "test_sequences") if not getattr(self, k) > 0]
        if self.seq_len < MIN_SEQ_LEN:
            problems.append(f"model.seq_len must be >= {MIN_SEQ_LEN} (B, E and the two windows [T/10, T/5], "
                            f"[T/2, 3T/5] apart), got {self.seq_len}")
        if not (math.isfinite(self.init_radius) and self.init_radius > 0):
            problems.append(f"model.init_radius must be a finite number > 0, got {self.init_radius}")
        if not self.input_scale >= 0:
            problems.append(f"model.input_scale must be >= 0, got {self.input_scale}")
        if self.hidden_size > MAX_HIDDEN:
            problems.append(f"model.hidden_size {self.hidden_size}: at most {MAX_HIDDEN} (W alone would have "
                            f"hidden_size² entries)")
        defaults = {f.name: f.default for f in dataclasses.fields(cfg.data)}
        for key in ("test_size", "max_chars"):  # the held-out set is model.test_sequences, from data.split_seed
            if getattr(cfg.data, key) != defaults[key]:
                problems.append(f"data.{key} does not apply to data.dataset {DATASET!r} (procedural: the held-out "
                                f"set is model.test_sequences sequences drawn from data.split_seed); leave it out")
        return problems


@functools.partial(jax.jit, static_argnums=(1, 2))
def _draw_init(key, H: int, connections: int):
    """``W`` sparse (``connections`` ``N(0, 1)`` entries per column, i.e. per unit's inputs, the rest 0),
    ``U`` and ``V`` from ``N(0, 1)``, float32, all from one draw (one threefry, quick to compile)."""
    D = len(SYMBOLS)
    N = jax.random.normal(key, (2 * H + D + len(CLASSES), H), jnp.float32)
    keep = jnp.argsort(N[H:2 * H], axis=0) < connections  # i.i.d. rows: a random permutation per column
    return jnp.where(keep, N[:H], 0), N[2 * H:2 * H + D], N[2 * H + D:].T


def init_params(key, m: TemporalOrderOptions) -> RNNParams:
    """Sparse ``W`` at spectral radius ``m.init_radius`` (module docstring), float32; eager (NumPy's
    eigenvalues give the radius)."""
    H = m.hidden_size
    W, U, V = _draw_init(key, H, min(m.init_connections, H))
    radius = np.max(np.abs(np.linalg.eigvals(np.asarray(W, np.float64))))
    W = W * np.float32(m.init_radius / radius) if radius > 0 else W
    return RNNParams(W, U * np.float32(m.input_scale), jnp.zeros(H, jnp.float32), V * np.float32(1 / math.sqrt(H)),
                     jnp.zeros(len(CLASSES), jnp.float32))


@jax.jit
def _scores(params, X, Y):
    """The accuracy and mean cross-entropy of the last step's class (one forward, compiled once per shape)."""
    logp = jax.nn.log_softmax(rnn_forward(params, jnp.zeros((X.shape[1], params.W.shape[0]), X.dtype), X)[1][-1])
    return jnp.mean(jnp.argmax(logp, axis=-1) == jnp.argmax(Y[-1], axis=-1)), -jnp.mean(jnp.sum(Y[-1] * logp, axis=-1))


def build(cfg) -> Model:
    """The temporal order problem of ``temporal_order_*.yaml``."""
    m, n = cfg.model, cfg.train.batch_size
    loss_fn = pick_loss(rnn_loss, reference.rnn_loss, cfg.train.grad)
    test = sequences(jax.random.PRNGKey(cfg.data.split_seed), m.test_sequences, m.seq_len)

    def zeros(params, X):
        return jnp.zeros((X.shape[1], params.W.shape[0]), X.dtype)

    def loss(params, b):  # J: the mean cross-entropy of the last step's class over the sequences
        X, Y = b
        return loss_fn(params, zeros(params, X), X, Y)

    def evaluate(params):
        accuracy, test_loss = _scores(params, *test)
        return {"test_accuracy": float(accuracy), "test_loss": float(test_loss)}

    return Model(init=lambda key: init_params(key, m), loss=loss, batch=lambda key: sequences(key, n, m.seq_len),
                 batch_axes=(1, 1), evaluate=evaluate, primary="test_accuracy",
                 report=lambda params: {"chance_accuracy": 1 / len(CLASSES), "chance_loss": math.log(len(CLASSES))},
                 curvature=rnn_curvature(lambda b: b, 1.0, cfg.optimizer.mc_samples))


TEMPORAL_ORDER = ModelSpec("rnn_temporal_order", TemporalOrderOptions, (DATASET,), build=build, configs=CONFIGS,
                           curvature=("kfac", "ggn_cg", "structural"),
                           description="temporal order problem (Hochreiter & Schmidhuber 1997, 6a), tanh RNN "
                                       "(seed 000 §6.4)")
