"""PyTorch autograd counterparts of the FCNN and RNN benchmark cases (optional: ``pip install mdc-jax[bench]``).

Each builder takes the JAX case's arrays and returns a zero-argument callable that runs forward
and ``backward()`` once, so it can be interleaved with the JAX programs in ``interleaved_medians``.
The FCNN and RNN run where JAX runs (the CPU, or CUDA when JAX is on a GPU), in the case's dtype;
Opacus and BackPACK (:mod:`mdc_jax.bench.backpack_cases`) on the CPU only. A builder returns ``None``,
after a line on stderr saying why, when torch (or the peer) is not importable or cannot run on JAX's device.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np

from .timing import skipped


def _torch():
    import os

    # torch's OpenMP threads otherwise spin after each op and slow the XLA run interleaved next
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError as err:
        skipped("the PyTorch columns", f"torch is not importable ({err}).")
        return None
    return torch


def device(torch) -> str | None:
    """Where the FCNN and RNN torch runs go: JAX's device kind, so that a torch column compares like with like;
    None where this torch cannot run there."""
    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu"
    if backend == "gpu" and torch.cuda.is_available():
        return "cuda"
    skipped("the PyTorch columns", f"JAX runs on {backend} and this torch ({torch.__version__}) has no CUDA device.")
    return None


def cpu_only(peer: str) -> bool:
    """True where JAX runs on the CPU; otherwise a line saying that ``peer`` (which runs on the CPU here) is
    not timed against JAX on another device."""
    if jax.default_backend() == "cpu":
        return True
    skipped(peer, f"it runs on the CPU in this bench and JAX runs on {jax.default_backend()}.")
    return False


def _leaf(torch, a, grad=True, where="cpu"):
    """A torch copy of ``a`` on ``where``, in ``a``'s dtype (bfloat16 goes through float32: NumPy has none)."""
    x = np.asarray(a)
    t = torch.tensor(x.astype(np.float32)).to(torch.bfloat16) if x.dtype.name == "bfloat16" else torch.tensor(x)
    return t.to(where).requires_grad_(grad)


def _synchronize(torch, where):
    if where == "cuda":
        torch.cuda.synchronize()


def fcnn_classification(params, X, Y, activations, l2):
    torch = _torch()
    where = None if torch is None else device(torch)
    if where is None:
        return None
    acts = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda a: a,
            "softplus": torch.nn.functional.softplus}
    Ws = [(_leaf(torch, W, where=where), _leaf(torch, b, where=where)) for W, b in params]
    Xt, Yt = _leaf(torch, X, False, where), _leaf(torch, Y, False, where)
    n = Xt.shape[0]

    def run():
        for W, b in Ws:
            W.grad = b.grad = None
        Z = Xt
        for (W, b), name in zip(Ws[:-1], activations):
            Z = acts[name](torch.addmm(b, Z, W))
        W, b = Ws[-1]
        logp = torch.log_softmax(torch.addmm(b, Z, W), dim=-1)
        loss = -(Yt * logp).sum() / n + 0.5 * l2 * sum((W * W).sum() for W, _ in Ws)
        loss.backward()
        _synchronize(torch, where)

    return run


def rnn(params, Z0, X, Y):
    torch = _torch()
    where = None if torch is None else device(torch)
    if where is None:
        return None
    W, U, b, V, c = (_leaf(torch, p, where=where) for p in params)
    Z0t, Xt, Yt = _leaf(torch, Z0, False, where), _leaf(torch, X, False, where), _leaf(torch, Y, False, where)
    n = Xt.shape[1]

    def run():
        for p in (W, U, b, V, c):
            p.grad = None
        Z, loss = Z0t, 0.0
        for t in range(Xt.shape[0]):
            Z = torch.tanh(torch.addmm(b, Z, W) + Xt[t] @ U)
            loss = loss - (Yt[t] * torch.log_softmax(torch.addmm(c, Z, V), dim=-1)).sum() / n
        loss.backward()
        _synchronize(torch, where)

    return run


def configure_threads() -> None:
    """Let torch use every core, as XLA does."""
    torch = _torch()
    if torch is not None:
        import os

        torch.set_num_threads(os.cpu_count() or 1)


def opacus_ghost_step(params, X, Y, activations, clip_norm, noise_multiplier):
    """Opacus's ghost-clipping DP-SGD step on the same MLP (a float32 classifier), and a plain
    PyTorch SGD step beside it: ``{"opacus": run, "torch_plain": run}``, or None without Opacus."""
    torch = _torch()
    if torch is None or not cpu_only("Opacus"):
        return None
    try:
        from opacus.grad_sample import GradSampleModuleFastGradientClipping
        from opacus.optimizers import DPOptimizerFastGradientClipping
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
    except ImportError as err:
        skipped("Opacus", f"it is not importable ({err}); its columns stay empty (pip install mdc-jax[bench]).")
        return None
    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}

    def mlp():
        layers = []
        for j, (W, b) in enumerate(params):
            lin = torch.nn.Linear(*np.asarray(W).shape)
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(np.asarray(W).T))
                lin.bias.copy_(torch.tensor(np.asarray(b)))
            layers.append(lin)
            if j < len(activations):
                layers.append(acts[activations[j]]())
        return torch.nn.Sequential(*layers)

    Xt = torch.tensor(np.asarray(X))
    labels = torch.tensor(np.asarray(Y).argmax(axis=1))
    n = Xt.shape[0]
    model = GradSampleModuleFastGradientClipping(mlp(), max_grad_norm=clip_norm, use_ghost_clipping=True,
                                                 loss_reduction="mean")
    optimizer = DPOptimizerFastGradientClipping(torch.optim.SGD(model.parameters(), lr=0.1),
                                                noise_multiplier=noise_multiplier, max_grad_norm=clip_norm,
                                                expected_batch_size=n, loss_reduction="mean")
    criterion = DPLossFastGradientClipping(model, optimizer, torch.nn.CrossEntropyLoss(reduction="mean"),
                                           loss_reduction="mean")
    plain_model = mlp()
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.1)
    return {"opacus": _sgd_step(optimizer, criterion, model, Xt, labels),
            "torch_plain": _sgd_step(plain_opt, torch.nn.CrossEntropyLoss(), plain_model, Xt, labels)}


def _sgd_step(optimizer, criterion, model, X, labels):
    """A zero-argument callable: one optimiser step on ``criterion(model(X), labels)``, returning the loss."""

    def step():
        optimizer.zero_grad()
        loss = criterion(model(X), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def opacus_dprnn(params, Z0, X, labels, clip_norm, noise_multiplier, lr: float = 0.1):
    """Opacus's DP-SGD step on mdc-jax's §6.4 RNN as a char-RNN: ``DPRNN`` (tanh) and a ``Linear`` head with
    mdc-jax's weights, per-example gradients through ``GradSampleModule``'s hooks, ``DPOptimizer`` (flat
    clipping at ``clip_norm``, Gaussian noise ``noise_multiplier · clip_norm`` on the sum, then ÷N, SGD).

    ``X`` ``(τ, N, D)`` is time-major (``batch_first=False`` throughout), ``labels`` ``(τ, N)`` the target ids;
    the loss is ``Σ_t Σ_i CE / N`` = mdc-jax's ``J`` with ``loss_reduction="mean"`` (Opacus multiplies the
    backprops by ``N``, so each per-example gradient is that of ``ℓ_i``). DPRNN has two biases,
    ``b_ih + b_hh``: ``b_ih`` is mdc-jax's ``b`` and ``b_hh`` is zero and frozen, so that it adds nothing
    to the model nor to ``‖g_i‖``. ``weight_ih = Uᵀ``, ``weight_hh = Wᵀ``, head ``weight = Vᵀ``, ``bias = c``.

    Returns ``{"opacus": step, "torch_plain": step, "clipped_grad": fn}`` (zero-argument callables: the DP
    step; the same model's plain SGD step without hooks; the DP step's clipped mean gradient without
    noise, ``(W, U, b, V, c)`` as NumPy in mdc-jax's layout, which leaves the weights unchanged), or None
    without torch or Opacus.
    """
    torch = _torch()
    if torch is None or not cpu_only("Opacus"):
        return None
    try:
        from opacus import GradSampleModule
        from opacus.layers import DPRNN
        from opacus.optimizers import DPOptimizer
    except ImportError as err:
        skipped("Opacus", f"it is not importable ({err}); its columns stay empty (pip install mdc-jax[bench]).")
        return None
    # the inputs do not require gradients, so torch warns that full backward hooks fire on outputs only
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    W, U, b, V, c = (torch.tensor(np.asarray(p)) for p in params)
    Xt, h0 = torch.tensor(np.asarray(X)), torch.tensor(np.asarray(Z0))[None]
    yt = torch.tensor(np.asarray(labels)).reshape(-1)
    n, k = Xt.shape[1], V.shape[1]

    class CharRNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = DPRNN(U.shape[0], W.shape[0], nonlinearity="tanh", batch_first=False)
            self.head = torch.nn.Linear(*V.shape)
            cell = self.rnn.l0
            with torch.no_grad():
                for p, value in ((cell.hh.weight, W.T), (cell.ih.weight, U.T), (cell.ih.bias, b),
                                 (cell.hh.bias, torch.zeros_like(b)), (self.head.weight, V.T), (self.head.bias, c)):
                    p.copy_(value)
            cell.hh.bias.requires_grad_(False)

        def forward(self, x, h):
            return self.head(self.rnn(x, h)[0])

    def loss_of(model):
        return torch.nn.functional.cross_entropy(model(Xt, h0).reshape(-1, k), yt, reduction="sum") / n

    def trainable(model):
        return [p for p in model.parameters() if p.requires_grad]

    model = GradSampleModule(CharRNN(), batch_first=False, loss_reduction="mean")
    optimizer = DPOptimizer(torch.optim.SGD(trainable(model), lr=lr), noise_multiplier=noise_multiplier,
                            max_grad_norm=clip_norm, expected_batch_size=n, loss_reduction="mean")
    plain = CharRNN()
    plain_opt = torch.optim.SGD(trainable(plain), lr=lr)

    def step(model, optimizer):
        def run():
            optimizer.zero_grad()
            loss = loss_of(model)
            loss.backward()
            optimizer.step()
            return loss.detach()

        return run

    def clipped_grad():
        optimizer.zero_grad()
        loss_of(model).backward()
        sigma, optimizer.noise_multiplier = optimizer.noise_multiplier, 0.0
        try:
            optimizer.pre_step()  # clip, accumulate, (no) noise, ÷N: the gradient optimizer.step() would apply
        finally:
            optimizer.noise_multiplier = sigma
        cell, head = model._module.rnn.l0, model._module.head
        grads = (cell.hh.weight.grad.T, cell.ih.weight.grad.T, cell.ih.bias.grad, head.weight.grad.T, head.bias.grad)
        out = tuple(g.detach().numpy().copy() for g in grads)
        optimizer.zero_grad()
        return out

    return {"opacus": step(model, optimizer), "torch_plain": step(plain, plain_opt), "clipped_grad": clipped_grad}
