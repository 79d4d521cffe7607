"""The char-RNN's clipped DP gradient against its peers (issue 23): jax-privacy 2.0 and Opacus 1.6's DPRNN.

The bench family :mod:`mdc_jax.bench.dp_peers` runs everywhere (a peer that is not installed leaves its
columns None) and checks its peers' clipped gradients where they are installed; the comparisons at a
clipping norm that clips some sequences and not others (the median per-sequence norm) are marked ``peers``
and skipped where jax-privacy, torch or Opacus is not installed (``make bench`` installs them).
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdc_jax.bench import dp_peers, main, torch_cases
from mdc_jax.per_example import rnn_clipped_grad, rnn_quantities

HAS = {name: importlib.util.find_spec(name) is not None for name in ("jax_privacy", "torch", "opacus")}
HAS["opacus"] = HAS["opacus"] and HAS["torch"]
SHAPE = (4, 3, 8, 5)  # τ, N, H, K: the small suite's


def test_small_suite_reports_every_peer_column_or_none(tmp_path, capsys, monkeypatch):
    (case,) = dp_peers.run_cases("small", rounds=1)
    e = case.extra
    assert case.closed_ms > 0 and case.autodiff_ms > 0 and case.closed_temp_bytes is not None
    for peer in ("jax_privacy", "opacus"):
        for key in (f"{peer}_ms", f"max_rel_diff_vs_{peer}", f"{peer}_vs_mdc", f"{peer}_vs_mdc_target_met"):
            assert (e[key] is not None) == HAS[peer], key
        if HAS[peer]:  # the bench's own case, C = 1 (every sequence clipped), float32: the 1e-5
            assert e[f"max_rel_diff_vs_{peer}"] < 1e-5, peer
    table = dp_peers.format_details([case]).splitlines()
    assert "Opacus / mdc-jax (≥ 5)" in table[0] and len(table) == 3 and table[2].startswith("| dp_peers DP step char-RNN")
    monkeypatch.setattr(dp_peers, "run_cases", lambda suite: [case])  # the CLI's family, on the case just run
    assert main(["--suite", "small", "--only", "dp_peers", "--json", str(tmp_path / "b.json")]) == 0
    assert "| mdc-jax DP step ms |" in capsys.readouterr().out


def _case_and_clip(dtype):
    """``char_rnn_case(1, *SHAPE)`` and its median per-sequence norm (some sequences clipped, some not)."""
    params, Z0, X, Y, ids = dp_peers.char_rnn_case(1, *SHAPE, dtype)
    norms = np.asarray(jax.jit(lambda *a: rnn_quantities(*a, quantities=("grad_norm",))["grad_norm"])(params, Z0, X, Y))
    clip = float(np.median(norms))
    assert (norms > clip).any() and (norms < clip).any()
    return (params, Z0, X, Y), ids, clip


@pytest.mark.peers
@pytest.mark.skipif(not HAS["jax_privacy"], reason="jax-privacy is not installed")
def test_jax_privacy_clipped_grad_is_rnn_clipped_grad_float64():
    args, _, clip = _case_and_clip(jnp.float64)
    loss, ours = jax.jit(lambda *a: rnn_clipped_grad(*a, clip_norm=clip))(*args)
    their_loss, theirs = jax.jit(dp_peers.jax_privacy_clipped_grad(clip, SHAPE[1]))(*args)
    assert abs(float(loss - their_loss)) < 1e-12
    assert dp_peers.max_diffs(ours, theirs)[1] < 1e-10


@pytest.mark.peers
@pytest.mark.skipif(not HAS["opacus"], reason="torch or Opacus is not installed")
def test_opacus_dprnn_clipped_grad_is_rnn_clipped_grad_float32():
    # float32 on both sides (torch's CPU kernels, XLA's): < 1e-6 relative observed here and at the full case
    # (τ = 50, N = 64, H = 256, K = 64); Opacus's factor C/(‖g_i‖ + 1e-6) differs from ours by 1e-6/‖g_i‖
    args, ids, clip = _case_and_clip(jnp.float32)
    _, ours = jax.jit(lambda *a: rnn_clipped_grad(*a, clip_norm=clip))(*args)
    theirs = torch_cases.opacus_dprnn(*args[:3], ids[1:], clip, noise_multiplier=1.0)["clipped_grad"]()
    assert dp_peers.max_diffs(ours, theirs)[1] < 1e-5
