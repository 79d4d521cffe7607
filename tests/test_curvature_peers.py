"""mdc_jax.curvature against BackPACK 1.7 (its peer in PyTorch) on the same model, weights and data, float64.

Run where the ``bench`` extra and BackPACK are installed (``make bench``); skipped elsewhere. The models and
the conversion to mdc-jax's layout and scale are :mod:`mdc_jax.bench.backpack_cases`'s (``backpack_mlp``,
``backpack_rnn``, ``Peer.values``): ``weight = W.T``; cross-entropy ``reduction="mean"`` is mdc-jax's loss
(factor 1); ``MSELoss(reduction="sum")`` is ``2N`` times it; the RNN's mean over ``τ·N`` rows is ``1/τ``
times it; BackPACK's ``[G, A]`` is our ``(A, B)``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytestmark = pytest.mark.peers
torch = pytest.importorskip("torch")
pytest.importorskip("backpack")

from backpack import extensions  # noqa: E402

from mdc_jax import curvature  # noqa: E402
from mdc_jax.bench.backpack_cases import BACKPACK, backpack_mlp, backpack_rnn  # noqa: E402
from mdc_jax.reference.fcnn import mlp_case  # noqa: E402
from mdc_jax.reference.rnn import rnn_case  # noqa: E402

TOL = 1e-10
M = 1000  # sampled columns: enough for the Monte-Carlo estimates to be within a few % of the exact ones
EXACT = ("diag_ggn", "batch_diag_ggn", "kflr", "diag_hessian")
SAMPLED = {"diag_ggn_mc": "diag_ggn", "kfac": "kflr"}  # each Monte-Carlo quantity and what it estimates


def _jit(fn, **static):
    """``fn`` with its static arguments bound, jitted: one compilation instead of many eager dispatches."""
    return jax.jit(functools.partial(fn, **static))


def _backpack(peer, quantities, mc_samples=None):
    """One forward and ``backward()`` with every extension of ``quantities``: (loss, {name: values})."""
    options = {} if mc_samples is None else {"mc_samples": mc_samples}
    exts = [getattr(extensions, BACKPACK[q][0])(**options) for q in quantities]
    loss = peer.step(*exts)().item() * peer.scale
    return loss, {"grad": peer.values("grad"), **{q: peer.values(BACKPACK[q][1]) for q in quantities}}


def _max_abs_diff(ours, theirs):
    a, b = jax.tree.leaves(ours), jax.tree.leaves(theirs)
    assert len(a) == len(b) and all(np.shape(x) == np.shape(y) for x, y in zip(a, b))
    return max(float(np.max(np.abs(np.asarray(x) - y), initial=0.0)) for x, y in zip(a, b))


def _rel_err(estimate, exact):
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)]) for t in (estimate, exact))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _assert_agree(peer, ours, exact, sampled):
    """Exact quantities equal BackPACK's (and the loss and gradient); sampled ones are not comparable
    sample by sample (different random labels), so ours and BackPACK's, with ``M`` samples each, must both
    be within 10% of the exact quantity they estimate (a scale slip misses by 50% or more)."""
    loss, theirs = _backpack(peer, exact)
    assert abs(float(ours["loss"]) - loss) < TOL
    diffs = {name: _max_abs_diff(ours[name], value) for name, value in theirs.items()}
    assert max(diffs.values()) < TOL, diffs
    torch.manual_seed(0)
    theirs = _backpack(peer, sampled, mc_samples=M)[1]
    for name in sampled:
        errs = _rel_err(ours[name], ours[SAMPLED[name]]), _rel_err(theirs[name], ours[SAMPLED[name]])
        assert max(errs) < 0.1, (name, errs)


def test_mlp_classification_matches_backpack_float64():
    acts = ["tanh", "sigmoid"]
    params, X, Y = mlp_case(0, 6, [5, 7, 6, 4], jnp.float64)
    ours = _jit(curvature.fcnn_quantities, activations=acts, quantities=EXACT + tuple(SAMPLED), mc_samples=M)(
        params, X, Y, key=jax.random.PRNGKey(0))
    _assert_agree(backpack_mlp(params, X, Y, acts), ours, EXACT, tuple(SAMPLED))


def test_mlp_regression_matches_backpack_over_2n_float64():
    """``MSELoss(reduction="sum")`` is ``2N J``; a curved last activation adds its own ``f''`` term to the
    Hessian's diagonal."""
    acts = ["tanh", "sigmoid"]
    params, X, Y = mlp_case(1, 5, [3, 6, 4], jnp.float64, task="regression")
    ours = _jit(curvature.fcnn_quantities, activations=acts, task="regression", quantities=EXACT + tuple(SAMPLED),
                mc_samples=M)(params, X, Y, key=jax.random.PRNGKey(1))
    _assert_agree(backpack_mlp(params, X, Y, acts, task="regression"), ours, EXACT, tuple(SAMPLED))


def test_rnn_matches_backpack_times_tau_float64():
    """BackPACK's RNN: ``batch_first``, zero initial state, ``b = b_ih``, ``b_hh = 0``, the mean over ``τ·N``
    rows. Its ``diag_ggn_mc`` samples one label per row, as ours does."""
    params, Z0, X, Y = rnn_case(0, 4, 3, 2, 5, 3, jnp.float64)
    ours = _jit(curvature.rnn_quantities, quantities=("diag_ggn", "batch_diag_ggn", "diag_ggn_mc"), mc_samples=M)(
        params, jnp.zeros_like(Z0), X, Y, key=jax.random.PRNGKey(2))
    peer = backpack_rnn(params, X, Y)
    _assert_agree(peer, ours, ("diag_ggn", "batch_diag_ggn"), ("diag_ggn_mc",))
    cell = peer.model[0]  # b_hh = 0 enters as b does: BackPACK's diagonal is the same for both biases
    np.testing.assert_array_equal(cell.bias_hh_l0.diag_ggn_mc.numpy(), cell.bias_ih_l0.diag_ggn_mc.numpy())


def test_backpack_has_no_kronecker_factors_for_the_rnn():
    """The gap the RNN's ``kflr``/``kfac`` fill: BackPACK's KFLR/KFAC refuse the RNN model."""
    params, _, X, Y = rnn_case(0, 3, 2, 2, 3, 2, jnp.float64)
    peer = backpack_rnn(params, X, Y)
    for ext in (extensions.KFLR(), extensions.KFAC()):
        with pytest.raises(NotImplementedError):
            peer.step(ext)()
