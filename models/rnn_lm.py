"""Language models on the §6.4 RNN rule: characters (``rnn_charlm``) and word-level tokens (``rnn_wordlm``).

The char-LM's inputs and targets are one-hot rows over a fixed vocabulary (``mdc_jax_models.data.VOCAB``),
so ``D = K`` (under ``train.dp``, ids, as the word LM's: the per-example clipping takes ``U``'s rows by
index). The word-LM's are token ids over a vocabulary of ``vocab_size`` (16k by default) built from
the training text: ``X`` is ``(τ, N)`` ids (``X_tU`` is rows of ``U``) and the targets are integer labels,
so nothing of size ``τ·N·K`` is an input; with ``model.head: fused`` (its default) the output layer is
:func:`mdc_jax.linear_softmax_cross_entropy`'s blocks, so no ``τ·N × K`` logits exist either.
Training windows of ``seq_len`` tokens start from a zero state; evaluation runs the held-out text as a
few long contiguous streams, carrying the state: bits per character, or perplexity per token.

Under ``train.dp`` (DP-SGD) an example is one training sequence, and the sequences are the
non-overlapping windows ``[jτ, (j+1)τ + 1)`` of the training text (:func:`dp_windows`), so each token is a
target of one example only and ε speaks of every token once; Poisson sampling draws whole windows, and
:func:`mdc_jax.per_example.rnn_clipped_grad` clips each window's gradient. Without it, a batch is
``batch_size`` windows at random offsets.

``model.checkpoint_every`` is the closed-form BPTT's segment length (the backward keeps every ``k``-th
hidden state and recomputes the rest); ``model.head_options`` (word LM, fused head) are the head's
``z_loss``, ``label_smoothing`` and ``softcap`` (the autodiff reference applies them too; it keeps every
state, so ``train.grad: autodiff`` refuses ``checkpoint_every``, as ``train.dp`` does with the fused head).

Both give the second-order optimizers (``optimizer.name: kfac | ggn_cg``) a
:class:`~mdc_jax.experiment.models.Curvature` (:func:`rnn_curvature`) from :mod:`mdc_jax.curvature`'s
closed forms, which take one-hot rows: the word LM only for ``vocab_size ≤`` :data:`MAX_CURVATURE_VOCAB`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdc_jax import RNNParams, curvature, per_example, reference, rnn_forward, rnn_loss, rnn_loss_and_state
from mdc_jax.experiment.config import ConfigError
from mdc_jax.experiment.models import Curvature, Model, ModelOptions, ModelSpec, pick_loss
from mdc_jax.rules import linear_ce
from mdc_jax.rules.linear_ce import HEADS

from . import CONFIGS
from .data import TEXT, decode, encode, load_text, load_words

EVAL_STREAMS = 16
MAX_HIDDEN = 46_340  # hidden_size² ≤ 2**31 - 1 entries in W: beyond this a config is a typo, not a model
MAX_CURVATURE_VOCAB = 4096  # the word LM's curvature: one-hot rows of K tokens and K × K factors (B_V, A_U)
SECOND_ORDER = ("kfac", "ggn_cg")  # the optimizer.name values that need the model's Curvature


@dataclasses.dataclass
class HeadOptionsConfig:
    """``model.head_options``: the fused head's options, as :func:`mdc_jax.rules.linear_ce.head_options` takes them."""

    z_loss: float = 0.0  # z of z·lse² per token, part of the training loss (not of the perplexity)
    label_smoothing: float = 0.0  # α: targets (1 − α)·onehot + α/K in the training loss (not in the perplexity)
    softcap: float | None = None  # c: logits c·tanh(logits/c), part of the model (evaluation and training alike)


def _rule_problems(m, cfg) -> list[str]:
    """``model.checkpoint_every`` and ``model.head_options`` (where the model has it) against the rest of the config."""
    problems = []
    k, tau = m.checkpoint_every, m.seq_len
    if k is not None and not 0 < k <= tau:
        problems.append(f"model.checkpoint_every must be in [1, model.seq_len = {tau}] (the BPTT segment length), "
                        f"got {k}")
    opts = getattr(m, "head_options", None)
    if opts is not None:
        if m.head != "fused":
            problems.append(f"model.head_options applies to model.head: fused (the options of its blocks); "
                            f"model.head is {m.head!r}")
        try:
            linear_ce.head_options("model.head_options", dataclasses.asdict(opts), name=None)
        except ValueError as err:
            problems.append(str(err))
    if cfg.optimizer.name in SECOND_ORDER:  # the curvature (mdc_jax.curvature) is the plain head's, every state kept
        problems += [f"model.{key} with optimizer.name {cfg.optimizer.name!r}: the model's curvature is the plain "
                     f"head's loss with every hidden state kept; drop model.{key} or use a first-order optimizer"
                     for key in ("checkpoint_every", "head_options") if getattr(m, key, None) is not None]
    if k is not None and cfg.train.dp is not None and m.head == "fused":
        problems.append("model.checkpoint_every with train.dp and model.head: fused: the clipping over segments "
                        "(mdc_jax.per_example.rnn_clipped_grad) materialises each window's gradient, N copies of "
                        "the H × K head; drop model.checkpoint_every, or use model.head: plain")
    if k is not None and cfg.train.grad == "autodiff":
        problems.append("model.checkpoint_every is an option of the closed-form BPTT; train.grad: autodiff "
                        "differentiates the plain reference, which keeps every state: set train.grad: closed or "
                        "drop model.checkpoint_every")
    return problems


def rule_options(m) -> dict:
    """The RNN rules' keyword options from the model section: ``checkpoint_every`` and ``head_options`` (a
    :class:`~mdc_jax.rules.linear_ce.HeadOptions`, or None)."""
    opts = getattr(m, "head_options", None)
    return {"checkpoint_every": m.checkpoint_every,
            "head_options": None if opts is None else linear_ce.head_options("model.head_options",
                                                                             dataclasses.asdict(opts), name=None)}


@dataclasses.dataclass
class CharLMOptions(ModelOptions):
    hidden_size: int = 128  # H
    seq_len: int = 64  # τ of each training window
    head: str = "plain"  # "fused": the output layer by linear_softmax_cross_entropy's blocks
    checkpoint_every: int | None = None  # k: the BPTT keeps every k-th hidden state (None: all); not train.checkpoint_every

    def validate(self, cfg) -> list[str]:
        problems = [f"model.{k} must be > 0, got {getattr(self, k)!r}" for k in ("hidden_size", "seq_len")
                    if not getattr(self, k) > 0]
        if self.head not in HEADS:
            problems.append(f"model.head is {self.head!r}; expected one of {', '.join(HEADS)}")
        problems += _rule_problems(self, cfg)
        if self.hidden_size > MAX_HIDDEN:
            problems.append(f"model.hidden_size {self.hidden_size}: at most {MAX_HIDDEN} (W alone would have "
                            f"hidden_size² entries)")
        train_chars = int(cfg.data.max_chars * (1 - cfg.data.test_size))
        test_chars = cfg.data.max_chars - train_chars
        if not problems and train_chars < self.seq_len + 2:
            problems.append(f"model.seq_len {self.seq_len} needs more text: data.max_chars {cfg.data.max_chars} "
                            f"leaves {train_chars} training characters, fewer than seq_len + 2")
        if not problems and test_chars < EVAL_STREAMS + 1:
            problems.append(f"data.max_chars {cfg.data.max_chars} with data.test_size {cfg.data.test_size} leaves "
                            f"{test_chars} held-out characters; evaluation needs at least {EVAL_STREAMS + 1}")
        return problems


@functools.partial(jax.jit, static_argnums=(1, 2, 3))  # one compilation, not one per eager operation
def init_rnn(key, vocab: int, hidden: int, dtype=jnp.float32) -> RNNParams:
    kW, kU, kV = jax.random.split(key, 3)
    W = jnp.linalg.qr(jax.random.normal(kW, (hidden, hidden), dtype))[0] * 0.9  # orthogonal, stable start
    U = jax.random.normal(kU, (vocab, hidden), dtype) * 0.3
    V = jax.random.normal(kV, (hidden, vocab), dtype) / jnp.sqrt(jnp.asarray(hidden, dtype))
    return RNNParams(W, U, jnp.zeros((hidden,), dtype), V, jnp.zeros((vocab,), dtype))


def rnn_curvature(dense, scale: float, mc_samples: int = 1) -> Curvature:
    """The :class:`~mdc_jax.experiment.models.Curvature` of a §6.4 RNN model whose loss is ``scale · J`` on
    ``(X, Y) = dense(batch)`` (one-hot inputs ``(τ, N, D)``, label rows ``(τ, N, K)``, zero rows where no
    label is given) from a zero initial state, ``J`` as in :func:`mdc_jax.rnn_loss`.

    .. math::

       \\mathcal L = sJ,\\qquad \\nabla\\mathcal L = s\\nabla J,\\qquad
       G_{\\mathcal L} \\approx A\\otimes sB,\\qquad (G_{\\mathcal L} + wS_{\\mathcal L})\\,v = s\\,(G + wS)\\,v

    ``factors``: :func:`mdc_jax.curvature.rnn_quantities`' loss, gradient and KFLR (``exact``) or KFAC
    (``mc_samples`` labels sampled per output row from ``key``) factors, ``B`` scaled by ``s`` (``A`` is a mean
    of inputs).
    ``ggn_vp``: :func:`mdc_jax.curvature.rnn_ggn_vp`, with structural damping; ``S`` is scaled as the loss is
    (a loss per token, ``s = 1/τ``, gets the states' Gauss–Newton matrix per state), so a structural weight
    means the same whatever ``s``. ``ggn_gram``: :func:`mdc_jax.curvature.rnn_ggn_gram`'s ``[v_aᵀ G v_b]`` of stacked
    tangents (the forward differential alone), times ``s``. No L2 penalty. A fused head trains the same ``J``: its
    curvature is this one.

    Args:
      dense: ``batch -> (X, Y)`` as floating one-hot rows (jittable).
      scale: ``s``, the model's loss over ``J`` (``1/τ`` per token, 1 per sequence).
      mc_samples: KFAC's sampled columns per output row (``optimizer.mc_samples``).

    Returns:
      ``Curvature(factors, ggn_vp, ggn_gram)``.

    References:
      ``000_3fed0c34b422d74e.txt`` §6.4; Martens, Ba & Johnson, "Kronecker-factored curvature approximations
      for recurrent neural networks", ICLR 2018; Martens & Sutskever, "Learning recurrent neural networks with
      Hessian-free optimization", ICML 2011.
    """

    def zeros(params, X):
        return jnp.zeros((X.shape[1], params.W.shape[0]), X.dtype)

    def dense_like(params, batch):  # in the parameters' dtype (the one-hot rows are exact in any)
        return tuple(a.astype(params.W.dtype) for a in dense(batch))

    def factors(params, batch, key, exact: bool):
        name = "kflr" if exact else "kfac"
        X, Y = dense_like(params, batch)
        q = curvature.rnn_quantities(params, zeros(params, X), X, Y, quantities=(name,), key=None if exact else key,
                                     mc_samples=mc_samples)
        scaled = RNNParams(*((f[0], scale * f[1]) if isinstance(f, tuple) else scale * f for f in q[name]))
        return scale * q["loss"], jax.tree.map(lambda g: scale * g, q["grad"]), scaled

    def ggn_vp(params, batch, tangents, structural=0.0):
        X, Y = dense_like(params, batch)
        Gv = curvature.rnn_ggn_vp(params, zeros(params, X), X, Y, tangents, structural=structural)
        return jax.tree.map(lambda g: scale * g, Gv)

    def ggn_gram(params, batch, tangents):
        X, Y = dense_like(params, batch)
        return scale * curvature.rnn_ggn_gram(params, zeros(params, X), X, Y, tangents)

    return Curvature(factors, ggn_vp, ggn_gram)


def _windows(ids, starts, length):
    return ids[starts[:, None] + jnp.arange(length, dtype=starts.dtype)[None, :]]  # (N, length)


def time_major(ids):
    """``(N, τ + 1)`` windows of ids -> token ids and next-token labels, ``(τ, N)`` each."""
    return ids[:, :-1].T, ids[:, 1:].T


def dp_windows(ids, tau: int):
    """``(examples, gather)`` of DP-SGD: the non-overlapping windows ``[jτ, (j+1)τ + 1)`` of ``ids`` (inputs
    ``jτ .. (j+1)τ − 1``, targets one further), so each token is the target of one window only; ``gather(j)``
    gives windows ``j`` as ``(N, τ + 1)`` ids."""
    return (len(ids) - 1) // tau, lambda j: _windows(ids, j * tau, tau + 1)


def _clipped_grad(tau: int, **options):
    """``Model.clipped_grad`` of an LM whose loss is ``J/τ`` (a loss per token), by
    :func:`mdc_jax.per_example.rnn_clipped_grad` with ``options`` (head, checkpoint_every, head_options)."""

    def clipped_grad(params, b, weights, clip_norm):  # DP-SGD (train.dp): seed 000 §6.4, per window
        # The loss is J/τ, so example i's gradient is g_i/τ: clip g_i at τC and divide by τ.
        X, Y = b
        Z0 = jnp.zeros((X.shape[1], params.W.shape[0]), params.W.dtype)
        J, grads = per_example.rnn_clipped_grad(params, Z0, X, Y, clip_norm=clip_norm * tau, weights=weights,
                                                **options)
        return J / tau, jax.tree.map(lambda g: g / tau, grads)

    return clipped_grad


def one_hot_time_major(ids, vocab):
    return jax.nn.one_hot(ids.T, vocab, dtype=jnp.float32)  # (τ, N, vocab)


def bits_per_char(params, ids: np.ndarray, vocab: int) -> float:
    """Held-out bits per character: the text as ``EVAL_STREAMS`` contiguous streams, state carried."""
    length = (len(ids) - 1) // EVAL_STREAMS
    streams = np.stack([ids[i * length:(i + 1) * length + 1] for i in range(EVAL_STREAMS)])
    X = one_hot_time_major(jnp.asarray(streams[:, :-1]), vocab)
    targets = jnp.asarray(streams[:, 1:].T)
    _, O = jax.jit(rnn_forward)(params, jnp.zeros((EVAL_STREAMS, params.W.shape[0]), jnp.float32), X)
    logp = jax.nn.log_softmax(O, axis=-1)
    nll = -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
    return float(nll / jnp.log(2.0))


def sample_text(params, prompt: str, length: int, key, temperature: float = 0.7) -> str:
    """Continues ``prompt`` by sampling ``length`` characters."""
    vocab = params.V.shape[1]
    Z = jnp.zeros((1, params.W.shape[0]), jnp.float32)
    Z, O = jax.jit(rnn_forward)(params, Z, one_hot_time_major(jnp.asarray(encode(prompt))[None, :], vocab))

    def step(carry, k):
        Z, logits = carry
        nxt = jax.random.categorical(k, logits / temperature)
        Z, O = rnn_forward(params, Z, jax.nn.one_hot(nxt[None, :], vocab, dtype=jnp.float32)[:, :, :])
        return (Z, O[-1]), nxt[0]

    _, out = jax.lax.scan(step, (Z, O[-1]), jax.random.split(key, length))
    return prompt + decode(np.asarray(out))


def build_charlm(cfg) -> Model:
    """The char-LM of ``rnn_charlm.yaml`` on the standard library's source text."""
    data = load_text(cfg.data.max_chars, cfg.data.test_size)
    if len(data.train) < cfg.model.seq_len + 2 or len(data.test) < EVAL_STREAMS + 1:
        raise ConfigError(f"the standard library's source gave {len(data.train)} training and {len(data.test)} "
                          f"held-out characters; model.seq_len {cfg.model.seq_len} needs {cfg.model.seq_len + 2} "
                          f"and evaluation {EVAL_STREAMS + 1}")
    m = cfg.model
    vocab, tau, n = len(data.vocab), m.seq_len, cfg.train.batch_size
    train = jnp.asarray(data.train)
    loss_fn = pick_loss(rnn_loss, reference.rnn_loss, cfg.train.grad)
    options = rule_options(m)
    offsets = len(data.train) - tau - 1  # a batch's windows start at random positions below this
    examples, dp_gather = dp_windows(train, tau)  # DP-SGD's examples: the non-overlapping windows

    def one_hot(ids):  # (N, τ + 1) ids -> one-hot inputs and targets, (τ, N, K) each (as rnn_curvature takes them)
        return one_hot_time_major(ids[:, :-1], vocab), one_hot_time_major(ids[:, 1:], vocab)

    def batch(key):
        return one_hot(_windows(train, jax.random.randint(key, (n,), 0, offsets, dtype=jnp.int32), tau + 1))

    def loss(params, b):  # per character: J / τ
        X, Y = b
        Z0 = jnp.zeros((X.shape[1], params.W.shape[0]), params.W.dtype)
        return loss_fn(params, Z0, X, Y, head=m.head, **options) / X.shape[0]

    def report(params):
        key = jax.random.PRNGKey(cfg.train.seed)
        return {"sample": sample_text(params, "def ", 300, key)}

    return Model(init=lambda key: init_rnn(key, vocab, m.hidden_size), loss=loss, batch=batch,
                 batch_axes=(1, 1), evaluate=lambda p: {"test_bits_per_char": bits_per_char(p, data.test, vocab)},
                 primary="test_bits_per_char", report=report, examples=examples,
                 gather=lambda j: time_major(dp_gather(j)), clipped_grad=_clipped_grad(tau, head=m.head, **options),
                 curvature=rnn_curvature(lambda b: b, 1 / tau, cfg.optimizer.mc_samples))


CHARLM = ModelSpec("rnn_charlm", CharLMOptions, TEXT, build=build_charlm, configs=CONFIGS,
                   curvature=("kfac", "ggn_cg", "structural"),
                   description="character-level tanh RNN, closed-form BPTT (seed 000 §6.4)")


# --------------------------------------------------------------------------------------------
# Word-level tokens


@dataclasses.dataclass
class WordLMOptions(ModelOptions):
    vocab_size: int = 16384  # K: <unk> and the most frequent training tokens; U holds one row per token
    hidden_size: int = 256  # H
    seq_len: int = 32  # τ of each training window
    head: str = "fused"
    eval_chunk: int = 256  # steps per evaluation call (the state is carried between calls)
    checkpoint_every: int | None = None  # k: the BPTT keeps every k-th hidden state (None: all); not train.checkpoint_every
    head_options: HeadOptionsConfig | None = None  # the fused head's z_loss, label_smoothing, softcap

    def validate(self, cfg) -> list[str]:
        problems = [f"model.{k} must be > 0, got {getattr(self, k)!r}" for k in ("hidden_size", "seq_len", "eval_chunk")
                    if not getattr(self, k) > 0]
        if not self.vocab_size >= 2:
            problems.append(f"model.vocab_size must be >= 2 (<unk> and one token), got {self.vocab_size!r}")
        if self.head not in HEADS:
            problems.append(f"model.head is {self.head!r}; expected one of {', '.join(HEADS)}")
        problems += _rule_problems(self, cfg)
        for name, size in (("hidden_size", self.hidden_size), ("vocab_size", self.vocab_size)):
            if size * max(self.hidden_size, 1) > 2**31 - 1:
                problems.append(f"model.{name} {size}: a weight matrix would have more than 2**31 - 1 entries")
        if cfg.optimizer.name in SECOND_ORDER and self.vocab_size > MAX_CURVATURE_VOCAB:
            problems.append(f"model.vocab_size {self.vocab_size}: optimizer.name {cfg.optimizer.name!r} needs the "
                            f"curvature through one-hot tokens, for at most {MAX_CURVATURE_VOCAB} tokens (K × K "
                            f"factors); set model.vocab_size <= {MAX_CURVATURE_VOCAB} or a first-order optimizer")
        return problems


_loss_and_state = jax.jit(rnn_loss_and_state, static_argnames=("head", "head_options"))  # once per shape, across evals


def perplexity(params, ids: np.ndarray, head: str, chunk: int, softcap: float | None = None) -> float:
    """Held-out perplexity ``exp(mean −ln p(token))`` of the text as ``EVAL_STREAMS`` contiguous streams, the
    state carried from one call of ``chunk`` steps to the next (``<unk>`` counts as a token). The plain NLL
    of the model's distribution: its ``softcap`` (part of the model) applies, no ``z_loss`` or smoothing."""
    length = (len(ids) - 1) // EVAL_STREAMS
    streams = np.stack([ids[i * length:(i + 1) * length + 1] for i in range(EVAL_STREAMS)])
    X, T = jnp.asarray(streams[:, :-1].T), jnp.asarray(streams[:, 1:].T)  # (length, streams), time-major
    Z, total = jnp.zeros((EVAL_STREAMS, params.W.shape[0]), params.W.dtype), 0.0
    capped = None if softcap is None else linear_ce.head_options("perplexity", {"softcap": softcap})
    for t0 in range(0, length, chunk):
        # J = Σ_t (1/N) Σ_i −ln p
        J, Z = _loss_and_state(params, Z, X[t0:t0 + chunk], T[t0:t0 + chunk], head=head, head_options=capped)
        total += float(J) * EVAL_STREAMS
    return float(np.exp(total / (length * EVAL_STREAMS)))


def build_wordlm(cfg) -> Model:
    """The word-level LM of ``rnn_wordlm_stdlib.yaml``: token ids into the §6.4 RNN, a fused output head."""
    m = cfg.model
    data = load_words(cfg.data.max_chars, cfg.data.test_size, m.vocab_size)
    vocab, tau, n = len(data.vocab), m.seq_len, cfg.train.batch_size
    if len(data.train) < tau + 2 or len(data.test) < EVAL_STREAMS + 1:
        raise ConfigError(f"the standard library's source gave {len(data.train)} training and {len(data.test)} "
                          f"held-out tokens; model.seq_len {tau} needs {tau + 2} and evaluation {EVAL_STREAMS + 1}")
    train = jnp.asarray(data.train)
    loss_fn = pick_loss(rnn_loss, reference.rnn_loss, cfg.train.grad)
    options = rule_options(m)
    offsets = len(data.train) - tau - 1  # a batch's windows start at random positions below this
    examples, dp_gather = dp_windows(train, tau)  # DP-SGD's examples: the non-overlapping windows
    softcap = None if m.head_options is None else m.head_options.softcap

    def batch(key):
        return time_major(_windows(train, jax.random.randint(key, (n,), 0, offsets, dtype=jnp.int32), tau + 1))

    def loss(params, b):  # per token: J / τ
        X, Y = b
        Z0 = jnp.zeros((X.shape[1], params.W.shape[0]), params.W.dtype)
        return loss_fn(params, Z0, X, Y, head=m.head, **options) / X.shape[0]

    def report(params):
        # A baseline: the training split's token frequencies (add-one smoothed) as the prediction, context-free.
        p = (np.bincount(data.train, minlength=vocab) + 1.0) / (len(data.train) + vocab)
        return {"vocab_size": vocab, "train_tokens": len(data.train), "test_tokens": len(data.test),
                "test_unknown_rate": float(np.mean(data.test == 0)),
                "unigram_test_perplexity": float(np.exp(-np.mean(np.log(p[data.test]))))}

    def dense(b):  # token ids and labels as the one-hot rows they stand for (the curvature's inputs)
        return tuple(jax.nn.one_hot(ids, vocab, dtype=jnp.float32) for ids in b)  # (τ, N, K) each

    return Model(init=lambda key: init_rnn(key, vocab, m.hidden_size), loss=loss, batch=batch, batch_axes=(1, 1),
                 evaluate=lambda p: {"test_perplexity": perplexity(p, data.test, m.head, m.eval_chunk, softcap)},
                 primary="test_perplexity", report=report, examples=examples,
                 gather=lambda j: time_major(dp_gather(j)), clipped_grad=_clipped_grad(tau, head=m.head, **options),
                 curvature=rnn_curvature(dense, 1 / tau, cfg.optimizer.mc_samples) if vocab <= MAX_CURVATURE_VOCAB else None)


WORDLM = ModelSpec("rnn_wordlm", WordLMOptions, TEXT, build=build_wordlm, configs=CONFIGS,
                   curvature=("kfac", "ggn_cg", "structural"),
                   description="word-level tanh RNN LM, 16k vocabulary, fused softmax head (seed 000 §6.4, §6.3.1)")
