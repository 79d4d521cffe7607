"""BackPACK (PyTorch), the curvature peer, on mdc-jax's models and data: ``mdc-jax bench``'s BackPACK columns
and ``tests/test_curvature_peers.py``'s models (optional: ``pip install mdc-jax[bench]``, then
``pip install --no-deps backpack-for-pytorch``).

:func:`backpack_mlp` and :func:`backpack_rnn` build the BackPACK-extended torch model with mdc-jax's weights;
:meth:`Peer.values` returns BackPACK's results in mdc-jax's layout and scale: ``W = weight.T``; classification
(``CrossEntropyLoss(reduction="mean")``) ×1; regression (``MSELoss(reduction="sum")``, ``2N J``) ×1/(2N); the RNN
(``CrossEntropyLoss(reduction="mean")`` over the ``τ·N`` rows, ``J/τ``) ×τ; BackPACK's ``[G, A]`` is ``(A, B)``.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import numpy as np

from ..rules.rnn import RNNParams
from . import torch_cases
from .timing import skipped

# BackPACK's extension and savefield for each quantity
BACKPACK = {"diag_ggn": ("DiagGGNExact", "diag_ggn_exact"), "diag_ggn_mc": ("DiagGGNMC", "diag_ggn_mc"),
            "batch_diag_ggn": ("BatchDiagGGNExact", "diag_ggn_exact_batch"), "kflr": ("KFLR", "kflr"),
            "kfac": ("KFAC", "kfac"), "diag_hessian": ("DiagHessian", "diag_h")}


def _backpack():
    """``(torch, backpack)``, or None (after a line saying why) where either is not importable or JAX is not on
    the CPU."""
    torch_cases.configure_threads()  # torch imported the way the other torch columns import it
    if not torch_cases.cpu_only("BackPACK"):
        return None
    try:
        import backpack
        import torch
    except ImportError as err:  # BackPACK, or einops / unfoldNd, which it imports
        skipped("BackPACK", f"it is not importable ({err}); its columns stay empty (pip install mdc-jax[bench], "
                            "then pip install --no-deps backpack-for-pytorch).")
        return None
    # the inputs do not require gradients, so torch warns that full backward hooks fire on outputs only
    warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
    return torch, backpack


@dataclasses.dataclass
class Peer:
    """A BackPACK-extended torch model and loss on mdc-jax's data; ``layout`` holds its parameters in the
    structure of mdc-jax's ``params``, and ``scale`` converts: ours = ``scale`` × BackPACK's."""

    model: object
    lossfunc: object
    inputs: object
    targets: object
    layout: object
    scale: float

    def step(self, *extensions):
        """A zero-argument callable: forward, loss, ``backward()`` inside ``with backpack(*extensions)``."""
        from backpack import backpack

        def run():
            self.model.zero_grad()
            loss = self.lossfunc(self.model(self.inputs), self.targets)
            with backpack(*extensions):
                loss.backward()
            return loss.detach()

        return run

    def values(self, savefield: str):
        """BackPACK's ``param.<savefield>`` (``"grad"`` too) in mdc-jax's layout and scale, as NumPy."""
        s = self.scale

        def convert(p):
            value = getattr(p, savefield)
            if savefield in ("kflr", "kfac"):  # [G, A] for a weight, [G] for a bias: ours (A, B), B
                return (value[1].numpy(), s * value[0].numpy()) if len(value) == 2 else s * value[0].numpy()
            x = value.detach().numpy()
            return s * (np.swapaxes(x, -1, -2) if p.ndim == 2 else x)  # weight (out, in) → W (in, out)

        return jax.tree.map(convert, self.layout)


def _tensor(torch, a):
    return torch.tensor(np.asarray(a))  # a copy: JAX's NumPy views are read-only


def _linear(torch, W, b):
    lin = torch.nn.Linear(*W.shape, dtype=_tensor(torch, W).dtype)
    with torch.no_grad():
        lin.weight.copy_(_tensor(torch, W).T)
        lin.bias.copy_(_tensor(torch, b))
    return lin


def backpack_mlp(params, X, Y, activations, task: str = "classification") -> Peer | None:
    """``nn.Sequential(Linear, act, ..., Linear[, act])`` with mdc-jax's weights (``weight = W.T``):
    ``CrossEntropyLoss(reduction="mean")`` on ``argmax Y`` (one-hot ``Y``, scale 1), or
    ``MSELoss(reduction="sum")`` on ``Y`` (regression, scale ``1/(2N)``). None without BackPACK."""
    found = _backpack()
    if found is None:
        return None
    torch, backpack = found
    acts = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU, "identity": torch.nn.Identity}
    layers = []
    for j, (W, b) in enumerate(params):
        layers.append(_linear(torch, W, b))
        if j < len(activations):
            layers.append(acts[activations[j]]())
    model = backpack.extend(torch.nn.Sequential(*layers))
    layout = [(m.weight, m.bias) for m in model if isinstance(m, torch.nn.Linear)]
    inputs, N = _tensor(torch, X), X.shape[0]
    if task == "classification":
        return Peer(model, backpack.extend(torch.nn.CrossEntropyLoss(reduction="mean")), inputs,
                    _tensor(torch, np.asarray(Y).argmax(axis=-1)), layout, 1.0)
    return Peer(model, backpack.extend(torch.nn.MSELoss(reduction="sum")), inputs, _tensor(torch, Y), layout, 1.0 / (2 * N))


def backpack_rnn(params, X, Y) -> Peer | None:
    """``nn.RNN(nonlinearity="tanh", batch_first=True)`` with ``weight_hh = Wᵀ``, ``weight_ih = Uᵀ``,
    ``b_ih = b``, ``b_hh = 0``, a zero initial state, then a ``Linear`` head (``Vᵀ``, ``c``) and
    ``CrossEntropyLoss(reduction="mean")`` over the ``τ·N`` rows: scale ``τ``. ``X`` time-major
    ``(τ, N, D)`` as mdc-jax takes it (BackPACK's is ``(N, τ, D)``), one-hot ``Y`` ``(τ, N, K)``.
    None without BackPACK."""
    found = _backpack()
    if found is None:
        return None
    torch, backpack = found
    from backpack.custom_module.permute import Permute
    from backpack.custom_module.reduce_tuple import ReduceTuple

    W, U, b = (_tensor(torch, p) for p in params[:3])
    cell = torch.nn.RNN(*U.shape, nonlinearity="tanh", batch_first=True, dtype=W.dtype)
    with torch.no_grad():
        cell.weight_hh_l0.copy_(W.T)
        cell.weight_ih_l0.copy_(U.T)
        cell.bias_ih_l0.copy_(b)
        cell.bias_hh_l0.zero_()
    head = _linear(torch, params[3], params[4])
    model = backpack.extend(torch.nn.Sequential(cell, ReduceTuple(index=0), head, Permute(0, 2, 1)))  # (N, K, τ)
    layout = RNNParams(cell.weight_hh_l0, cell.weight_ih_l0, cell.bias_ih_l0, head.weight, head.bias)
    inputs = _tensor(torch, np.swapaxes(np.asarray(X), 0, 1))
    targets = _tensor(torch, np.asarray(Y).argmax(axis=-1).T)  # (N, τ)
    tau = X.shape[0]
    return Peer(model, backpack.extend(torch.nn.CrossEntropyLoss(reduction="mean")), inputs, targets, layout, float(tau))


def runners(peer: Peer | None, quantities) -> dict:
    """Zero-argument callables to interleave with JAX programs: ``torch_plain`` (forward and backward alone)
    and ``backpack:<quantity>`` for each of ``quantities``; none without BackPACK."""
    if peer is None:
        return {}
    from backpack import extensions

    runners = {"torch_plain": peer.step()}
    for q in quantities:
        runners[f"backpack:{q}"] = peer.step(getattr(extensions, BACKPACK[q][0])())
    return runners
