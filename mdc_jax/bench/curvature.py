"""Curvature (``mdc_jax.curvature``): GGN-vector products, GGN diagonals and Kronecker factors against
``jax.value_and_grad``, an autodiff GGN-vector product, their matmul floors and BackPACK.

Each case times, interleaved in one run, float32 on the same CPU:

* ``v&g``: ``jax.value_and_grad`` of mdc-jax's loss (closed-form backward, ``l2 = 0``): the baseline;
* ``ggn_vp``: :func:`mdc_jax.curvature.fcnn_ggn_vp` / ``rnn_ggn_vp``, and the autodiff GGN-vector product
  beside it (``jax.linearize`` of the reference's outputs, ``reference.curvature.fcnn_outputs`` /
  ``reference.rnn.rnn_forward``, the output Hessian by ``jax.jvp(jax.grad)``, ``jax.vjp``);
* each quantity: ``fcnn_quantities`` / ``rnn_quantities`` with that one quantity (loss + gradient +
  quantity, one forward), ``mc_samples = 1`` for the sampled ones;
* each program's **floor**: the matrix products it must do, as plain ``jnp`` matmuls on arrays of the
  right shapes (the forward ``Z_{j−1}W_j``, the backward ``S_jW_jᵀ`` and ``Z_{j−1}ᵀS_j``, the columns'
  backward ``(C·N × d_j)W_jᵀ``, and the quantity's products: ``(Z⊙Z)ᵀ Σ_c S_c⊙S_c`` for a diagonal,
  ``Z_{j−1}ᵀZ_{j−1}`` and ``ŜᵀŜ`` for Kronecker factors, the forward differential for ``ggn_vp``; the RNN's
  in :func:`_rnn_floor`);
* BackPACK (``pip install mdc-jax[bench]`` then ``backpack-for-pytorch --no-deps``) on the same model and
  data: forward and ``backward()`` inside ``with backpack(extension)``.

The table's "closed" column is ours; "autodiff" is the autodiff GGN-vp for ``ggn_vp`` rows,
``jax.grad`` of the reference loss for the ``v&g`` row and ``value_and_grad`` for quantity rows (so
"time ratio" and "temp ratio" are then the quantity's cost over the plain gradient's). The issue's
targets are in each case's ``extra["targets"]``.

The BackPACK models and the conversion of its results to mdc-jax's layout and scale are
:mod:`mdc_jax.bench.backpack_cases`'s (shared with ``tests/test_curvature_peers.py``).
"""

from __future__ import annotations

import random
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from .. import curvature
from ..reference import curvature as curvature_ref
from ..reference import rnn as rnn_ref
from ..reference.fcnn import fcnn_classification_loss as mlp_reference_loss
from ..reference.fcnn import mlp_case
from ..reference.rnn import rnn_case
from ..rules import fcnn, rnn
from .backpack_cases import BACKPACK, Peer, backpack_mlp, backpack_rnn, runners
from .timing import CaseResult, compiled, fmt, interleaved_medians

# ("mlp", label, N, dims, quantities) or ("rnn", label, τ, N, D, H, K, quantities); BackPACK's exact RNN diagonal
# back-propagates τK columns (about 100 GiB at τ = 50, N = 64, H = 256), so the exact case is smaller
SUITES = {
    "full": {"cases": [("mlp", "MLP N=256 784-512-512-10", 256, [784, 512, 512, 10],
                        ("diag_ggn", "kflr", "kfac", "diag_ggn_mc")),
                       ("rnn", "RNN τ=50 N=64 D=H=256 K=64", 50, 64, 256, 256, 64, ("diag_ggn_mc", "kfac")),
                       ("rnn", "RNN τ=10 N=32 D=H=128 K=32", 10, 32, 128, 128, 32, ("diag_ggn", "kflr"))],
             "rounds": 12},
    "small": {"cases": [("mlp", "MLP N=32 32-64-64-10", 32, [32, 64, 64, 10], ("diag_ggn", "kflr", "kfac", "diag_ggn_mc")),
                        ("rnn", "RNN τ=8 N=8 D=H=16 K=8", 8, 8, 16, 16, 8, ("diag_ggn_mc", "kfac")),
                        ("rnn", "RNN τ=4 N=8 D=H=16 K=8", 4, 8, 16, 16, 8, ("diag_ggn", "kflr"))],
              "rounds": 3},
}
SAMPLED = ("diag_ggn_mc", "kfac")
FLOAT32_ONLY = ("the GGN products and quantities accept bfloat16, but no test holds their bfloat16 values to "
                "float32's, and BackPACK is float32")
# (what, bound, "<=" | ">="): ours / v&g, ours / autodiff GGN-vp, ours / floor, BackPACK / ours, temp / v&g's
TARGETS = {"ggn_vp": [("vs_vg", 1.5, "<="), ("vs_autodiff", 1.0, "<="), ("vs_floor", 1.25, "<=")],
           "kfac": [("vs_vg", 2.0, "<="), ("vs_floor", 1.25, "<="), ("backpack_speedup", 1.2, ">=")],
           "diag_ggn_mc": [("vs_vg", 2.0, "<="), ("vs_floor", 1.25, "<="), ("backpack_speedup", 1.2, ">=")],
           "diag_ggn": [("vs_floor", 1.25, "<="), ("backpack_speedup", 1.5, ">=")],
           "kflr": [("vs_floor", 1.25, "<="), ("backpack_speedup", 1.5, ">=")]}
TEMP_TARGETS = {"kfac": {"MLP": 1.5, "RNN": 2.0}}  # diag_ggn: K + 1, set per case


# --------------------------------------------------------------------------------------------
# Floors: the matrix products alone, on random arrays of the right shapes


def _normal(key, shape, dtype, scale=1.0):
    return scale * jax.random.normal(key, shape, dtype)


def _column_sum(P):
    """``Σ_c P[c]`` as the product ``1ᵀP``: XLA:CPU reduces the leading axis of ``(10, 256, 512)`` ~15× slower."""
    return (jnp.ones((P.shape[0],), P.dtype) @ P.reshape(P.shape[0], -1)).reshape(P.shape[1:])


def _mlp_floor(dims, N, dtype, *, columns=0, diag=False, kron=False, tangent=False):
    """``(fn, args)``: the forward ``Z_{j−1}W_j``, the gradient's backward (``S_jW_jᵀ``, ``Z_{j−1}ᵀS_j``),
    ``columns`` more columns back-propagated (``(C·N × d_j) W_jᵀ``) with their diagonal
    ``(Z⊙Z)ᵀ Σ_c S_c⊙S_c`` or factors ``Z_{j−1}ᵀZ_{j−1}``, ``ŜᵀŜ``, and (``tangent``) the forward
    differential ``dZ_{j−1}W_j + Z_{j−1}dW_j``."""
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 4 * len(dims) + 4))
    Ws = [_normal(next(keys), (a, b), dtype, a ** -0.5) for a, b in zip(dims[:-1], dims[1:])]
    dWs = [_normal(next(keys), W.shape, dtype) for W in Ws]
    X = _normal(next(keys), (N, dims[0]), dtype)
    S_L = _normal(next(keys), (N, dims[-1]), dtype)
    F_L = _normal(next(keys), (columns * N, dims[-1]), dtype)

    def floor(Ws, dWs, X, S, F):
        Zs, out = [X], []
        for W in Ws:
            Zs.append(Zs[-1] @ W)
        if tangent:
            dZ = Zs[0] @ dWs[0]
            for Z, W, dW in zip(Zs[1:-1], Ws[1:], dWs[1:]):
                dZ = dZ @ W + Z @ dW
            S = S + dZ
        for j in range(len(Ws) - 1, -1, -1):
            Z = Zs[j]
            out.append(Z.T @ S)
            if columns and diag:
                out.append((Z * Z).T @ _column_sum((F * F).reshape(columns, N, -1)))
            if columns and kron:
                out += [Z.T @ Z, F.T @ F]
            if j:
                S = S @ Ws[j].T
                F = F @ Ws[j].T if columns else F
        return out

    return floor, (Ws, dWs, X, S_L, F_L)


def _rnn_floor(tau, N, D, H, K, dtype, *, columns=0, exact=False, diag=False, kron=False, tangent=False):
    """As :func:`_mlp_floor` for the RNN: the recursion ``Z_{t−1}W`` (scan), the batched ``X U`` and ``Z V``,
    BPTT's ``R Wᵀ`` (scan) and the batched gradient products, then either ``columns`` sampled columns (each over
    all times) or, ``exact``, ``K`` columns per output time back-propagated from that time down (the triangle,
    ``τ(τ+1)K/2`` column-steps). A shared weight's diagonal squares sums over time: for sampled columns the
    per-example ``Σ_t a_t s_tᵀ`` (``N`` matmuls ``(d × τ)(τ × H)``), for the exact ones the Gram form
    ``Σ_{t,u} a_t a_u M[t,u]``, ``M[t,u] = Σ_col s_t ⊙ s_u`` (``(d × Nτ²)(Nτ² × H)``); Kronecker factors are
    sums of squares over time (``(d × τN)(τN × e)``)."""
    ks = iter(jax.random.split(jax.random.PRNGKey(0), 12))
    W, dW = _normal(next(ks), (H, H), dtype, 0.5 * H ** -0.5), _normal(next(ks), (H, H), dtype)
    U, dU = _normal(next(ks), (D, H), dtype, D ** -0.5), _normal(next(ks), (D, H), dtype)
    V, dV = _normal(next(ks), (H, K), dtype, H ** -0.5), _normal(next(ks), (H, K), dtype)
    X, G = _normal(next(ks), (tau, N, D), dtype), _normal(next(ks), (tau, N, K), dtype)
    F = _normal(next(ks), (max(columns, 1), tau, N, K), dtype)
    Fe = _normal(next(ks), (K, tau, N, K), dtype)
    bmm = lambda A, B: jnp.einsum("tnd,tne->de", A, B)  # Σ_t A_tᵀB_t: one (d × τN)(τN × e) matmul

    def bptt(W, R0, HV):  # R_t = R_{t+1}Wᵀ + HV_t, returned for every t
        return jax.lax.scan(lambda R, HV_t: ((R @ W.T + HV_t),) * 2, R0, HV, reverse=True)[1]

    def per_example_sq(A, S):  # Σ_{m,n} (Σ_t a_{t,n} s_{m,t,n}ᵀ)⊙², one example at a time: (d × τ)(τ × Me)
        def one(acc, xs):  # (XLA:CPU runs this scan several times faster than the batched einsum "tnd,mtne->de")
            a, s = xs
            g = (a.T @ jnp.moveaxis(s, 0, 1).reshape(tau, -1)).reshape(a.shape[1], s.shape[0], -1)
            return acc + jnp.sum(g * g, axis=1), None

        init = jnp.zeros((A.shape[-1], S.shape[-1]), A.dtype)
        return jax.lax.scan(one, init, (jnp.swapaxes(A, 0, 1), jnp.moveaxis(S, 2, 0)))[0]

    def gram_diag(A, Mg):  # Σ_{n,t,u} a_{t,n} a_{u,n} M[n,t,u]: one (d × Nτ²)(Nτ² × H) matmul
        return jnp.einsum("ntud,ntuh->dh", jnp.einsum("tnd,und->ntud", A, A), Mg)

    def inputs_gram(Zs, Zp, X):  # A_W, A_U and A_V = A_W − Z_0ᵀZ_0 + Z_τᵀZ_τ: two (d × τN)(τN × d) matmuls
        A_W = bmm(Zp, Zp)
        return A_W, bmm(X, X), A_W - Zp[0].T @ Zp[0] + Zs[-1].T @ Zs[-1]

    def floor(W, U, V, dW, dU, dV, X, G, F, Fe):
        XU = X @ U
        Zs = jax.lax.scan(lambda Z, XU_t: ((Z @ W + XU_t),) * 2, jnp.zeros_like(XU[0]), XU)[1]
        Zp = jnp.concatenate([jnp.zeros_like(Zs[:1]), Zs[:-1]])
        O, out = Zs @ V, []
        if tangent:
            dA = Zp @ dW + X @ dU
            dZ = jax.lax.scan(lambda dZ, dA_t: ((dZ @ W + dA_t),) * 2, jnp.zeros_like(dA[0]), dA)[1]
            G = G + dZ @ V + Zs @ dV
        S = bptt(W, jnp.zeros_like(Zs[0]), G @ V.T)
        out += [O, bmm(Zp, S), bmm(X, S), bmm(Zs, G)]
        if columns:
            Sc = jax.vmap(lambda F_m: bptt(W, jnp.zeros_like(Zs[0]), F_m @ V.T))(F)  # (M, τ, N, H)
            if diag:
                out += [per_example_sq(Zp, Sc), per_example_sq(X, Sc), per_example_sq(Zs, F)]
            if kron:
                out += [*inputs_gram(Zs, Zp, X), jnp.einsum("mtnd,mtne->de", Sc, Sc), jnp.einsum("mtnk,mtnl->kl", F, F)]
        if exact:
            Rs, R = [None] * tau, None
            for t in range(tau - 1, -1, -1):  # R_t: the columns of output times τ−1, ..., t at A_t, (τ−t)K of them
                new = Fe[:, t] @ V.T
                Rs[t] = R = new if R is None else jnp.concatenate([R @ W.T, new])
            if diag:  # M[t,u] (t ≤ u): the columns live at u are the first (τ−u)K of R_t
                Mg = [[None] * tau for _ in range(tau)]
                for t in range(tau):
                    for u in range(t, tau):
                        Mg[t][u] = Mg[u][t] = _column_sum(Rs[t][: (tau - u) * K] * Rs[u])
                Mg = jnp.stack([jnp.stack(row, axis=1) for row in Mg], axis=1)  # (N, τ, τ, H)
                out += [gram_diag(Zp, Mg), gram_diag(X, Mg), bmm(Zs * Zs, _column_sum(Fe * Fe))]
            if kron:
                out += [sum(R.reshape(-1, H).T @ R.reshape(-1, H) for R in Rs), *inputs_gram(Zs, Zp, X),
                        jnp.einsum("ctnk,ctnl->kl", Fe, Fe)]
        return out

    return floor, (W, U, V, dW, dU, dV, X, G, F, Fe)


# --------------------------------------------------------------------------------------------
# Cases


def _autodiff_ggn_vp(outputs, loss_of_outputs):
    """The autodiff GGN-vector product: ``jax.linearize`` of the outputs, the output Hessian by
    ``jax.jvp(jax.grad)``, ``jax.vjp`` back to the parameters."""

    def ggn_vp(p, v):
        O, jvp = jax.linearize(outputs, p)
        HdO = jax.jvp(jax.grad(loss_of_outputs), (O,), (jvp(v),))[1]
        return jax.vjp(outputs, p)[1](HdO)[0]

    return ggn_vp


def _ce_of_logits(Y, N):
    return lambda O: -jnp.sum(Y * jax.nn.log_softmax(O, axis=-1)) / N


def _tangents(params):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


def _rel_err(a, b) -> float:
    a, b = (np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)]) for t in (a, b))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _medians(fns: dict, rounds: int, blocks: int = 3) -> dict:
    """:func:`interleaved_medians` in ``blocks`` blocks of rounds, each in its own random order, then the median of
    the blocks' medians: a fixed rotation gives every program the same predecessor in every round (a torch run, a
    large program), and ~20 programs make that bias worth removing."""
    order, per = list(fns), {name: [] for name in fns}
    rng = random.Random(0)
    for b in range(blocks):
        rng.shuffle(order)
        ms = interleaved_medians({name: fns[name] for name in order}, rounds=-(-rounds // blocks), warmup=1 if b else 2)
        for name, t in ms.items():
            per[name].append(t)
    return {name: statistics.median(ts) for name, ts in per.items()}


def _measure(programs: dict, floors: dict, peer: Peer | None, peer_quantities, rounds: int):
    """Compile ``programs`` (name → (fn, args)) and ``floors``, time them all interleaved with BackPACK's
    runs of ``peer_quantities``: (ms, temp bytes, relative errors of ``ggn_vp`` against the autodiff GGN-vp
    and of each exact quantity against BackPACK's)."""
    timed, temps = runners(peer, peer_quantities), {}
    for name, (fn, args) in {**programs, **{f"floor:{k}": f for k, f in floors.items()}}.items():
        timed[name], temps[name] = compiled(fn, *args)
    ms = _medians(timed, rounds)
    errs = {"ggn_vp": _rel_err(timed["ggn_vp"](), timed["ad_ggn_vp"]())}
    for q in peer_quantities if peer is not None else ():
        if q not in SAMPLED:
            timed[f"backpack:{q}"]()
            errs[q] = _rel_err(timed[q]()[q], peer.values(BACKPACK[q][1]))
    return ms, temps, errs


def _rows(label, model, K, measured, quantities) -> list[CaseResult]:
    """One CaseResult per program: ``ggn_vp`` (vs the autodiff GGN-vp), ``v&g`` (vs the reference's
    ``jax.grad``) and each quantity (vs ``value_and_grad``), with floors, BackPACK and the targets."""
    ms, temps, errs = measured
    vg, t_vg = ms["vg"], temps["vg"]
    rows = [CaseResult(f"curvature v&g {label}", vg, ms["ref_vg"], t_vg, temps["ref_vg"],
                       extra={"program": "v&g", "model": model, "floor_ms": ms["floor:vg"], "autodiff_ms": ms["ref_vg"],
                              "vs_autodiff": vg / ms["ref_vg"], "vs_floor": vg / ms["floor:vg"],
                              "torch_ms": ms.get("torch_plain")})]
    for q in ("ggn_vp", *quantities):
        e = {"program": q, "model": model, "vg_ms": vg, "vs_vg": ms[q] / vg, "floor_ms": ms[f"floor:{q}"],
             "vs_floor": ms[q] / ms[f"floor:{q}"], "temp_vs_vg": temps[q] / t_vg if t_vg else None}
        if q == "ggn_vp":
            e.update(autodiff_ms=ms["ad_ggn_vp"], vs_autodiff=ms[q] / ms["ad_ggn_vp"], rel_err_vs_autodiff=errs[q])
        if q in errs and q != "ggn_vp":
            e["rel_err_vs_backpack"] = errs[q]
        if f"backpack:{q}" in ms:
            e.update(backpack_ms=ms[f"backpack:{q}"], backpack_speedup=ms[f"backpack:{q}"] / ms[q])
        e["targets"] = [{"what": what, "value": e[what], "bound": bound, "op": op,
                         "met": e[what] <= bound if op == "<=" else e[what] >= bound}
                        for what, bound, op in TARGETS[q] if e.get(what) is not None]  # no BackPACK: no target
        temp_bound = K + 1 if q == "diag_ggn" else TEMP_TARGETS.get(q, {}).get(model)
        if temp_bound is not None and e["temp_vs_vg"] is not None:
            e["targets"].append({"what": "temp_vs_vg", "value": e["temp_vs_vg"], "bound": temp_bound, "op": "<=",
                                 "met": e["temp_vs_vg"] <= temp_bound})
        base, t_base = (ms["ad_ggn_vp"], temps["ad_ggn_vp"]) if q == "ggn_vp" else (vg, t_vg)
        rows.append(CaseResult(f"curvature {q} {label}", ms[q], base, temps[q], t_base, extra=e))
    return rows


def _mlp_case(label, N, dims, quantities, rounds):
    params, X, Y = mlp_case(0, N, dims, jnp.float32)
    acts, key, K = ["tanh"] * (len(dims) - 2), jax.random.PRNGKey(0), dims[-1]
    vg = jax.value_and_grad(lambda p, X, Y: fcnn.fcnn_classification_loss(p, X, Y, acts))
    ref_vg = jax.value_and_grad(lambda p, X, Y: mlp_reference_loss(p, X, Y, acts))
    ggn_vp = lambda p, v, X, Y: curvature.fcnn_ggn_vp(p, X, Y, acts, v)
    ad = lambda p, v, X, Y: _autodiff_ggn_vp(lambda p: curvature_ref.fcnn_outputs(p, X, acts), _ce_of_logits(Y, N))(p, v)
    v = _tangents(params)
    programs = {"vg": (vg, (params, X, Y)), "ref_vg": (ref_vg, (params, X, Y)), "ggn_vp": (ggn_vp, (params, v, X, Y)),
                "ad_ggn_vp": (ad, (params, v, X, Y))}
    for q in quantities:
        kw = {"key": key} if q in SAMPLED else {}
        programs[q] = ((lambda p, X, Y, q=q, kw=kw: curvature.fcnn_quantities(p, X, Y, acts, quantities=(q,), **kw)),
                       (params, X, Y))
    cols = {"diag_ggn": K, "kflr": K, "kfac": 1, "diag_ggn_mc": 1}
    floors = {"vg": _mlp_floor(dims, N, jnp.float32), "ggn_vp": _mlp_floor(dims, N, jnp.float32, tangent=True),
              **{q: _mlp_floor(dims, N, jnp.float32, columns=cols[q], diag=q.startswith("diag"), kron=q.startswith("kf"))
                 for q in quantities}}
    return _rows(label, "MLP", K, _measure(programs, floors, backpack_mlp(params, X, Y, acts), quantities, rounds), quantities)


def _rnn_case(label, tau, N, D, H, K, quantities, rounds):
    params, Z0, X, Y = rnn_case(0, tau, N, D, H, K, jnp.float32)
    Z0, key = jnp.zeros_like(Z0), jax.random.PRNGKey(0)  # BackPACK's RNN starts from a zero state
    vg = jax.value_and_grad(rnn.rnn_loss)
    ggn_vp = lambda p, v, Z0, X, Y: curvature.rnn_ggn_vp(p, Z0, X, Y, v)
    ad = lambda p, v, Z0, X, Y: _autodiff_ggn_vp(lambda p: rnn_ref.rnn_forward(p, Z0, X)[1], _ce_of_logits(Y, N))(p, v)
    v, data = _tangents(params), (Z0, X, Y)
    programs = {"vg": (vg, (params, *data)), "ref_vg": (jax.value_and_grad(rnn_ref.rnn_loss), (params, *data)),
                "ggn_vp": (ggn_vp, (params, v, *data)), "ad_ggn_vp": (ad, (params, v, *data))}
    for q in quantities:
        kw = {"key": key} if q in SAMPLED else {}
        programs[q] = ((lambda p, Z0, X, Y, q=q, kw=kw: curvature.rnn_quantities(p, Z0, X, Y, quantities=(q,), **kw)),
                       (params, *data))
    shape = (tau, N, D, H, K, jnp.float32)
    floors = {"vg": _rnn_floor(*shape), "ggn_vp": _rnn_floor(*shape, tangent=True),
              **{q: _rnn_floor(*shape, columns=1 if q in SAMPLED else 0, exact=q not in SAMPLED,
                               diag=q.startswith("diag"), kron=q.startswith("kf")) for q in quantities}}
    peer_qs = [q for q in quantities if q in ("diag_ggn", "diag_ggn_mc")]  # BackPACK has no RNN KFLR/KFAC
    return _rows(label, "RNN", K, _measure(programs, floors, backpack_rnn(params, X, Y), peer_qs, rounds), quantities)


def run_cases(suite: str = "full", rounds: int | None = None) -> list[CaseResult]:
    cases = {"mlp": _mlp_case, "rnn": _rnn_case}
    return [row for kind, *case in SUITES[suite]["cases"]
            for row in cases[kind](*case, rounds or SUITES[suite]["rounds"])]


def _targets(e) -> str:
    cells = []
    for t in e.get("targets", []):
        cells.append(f"{t['what']} {fmt(t['value'])} {t['op']} {t['bound']:g} {'✓' if t['met'] else '✗'}")
    return "; ".join(cells) or "-"


def format_details(results: list[CaseResult]) -> str:
    """The curvature table: each program against ``value_and_grad``, autodiff (the autodiff GGN-vp for
    ``ggn_vp``, ``jax.value_and_grad`` of the reference loss for ``v&g``), its matmul floor and BackPACK, the
    relative difference of its result from BackPACK's (exact quantities) or the autodiff GGN-vp's, its XLA
    temp memory against the gradient's, and the issue's targets (✓ met, ✗ missed)."""
    lines = ["| case | ms | v&g ms | / v&g | autodiff ms | / autodiff | floor ms | / floor | BackPACK ms "
             "| BackPACK / ours | rel. diff | temp / v&g | targets |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        e = r.extra
        lines.append(f"| {r.name} | {fmt(r.closed_ms)} | {fmt(e.get('vg_ms'))} | {fmt(e.get('vs_vg'))} | "
                     f"{fmt(e.get('autodiff_ms'))} | {fmt(e.get('vs_autodiff'))} | {fmt(e.get('floor_ms'))} | "
                     f"{fmt(e.get('vs_floor'))} | {fmt(e.get('backpack_ms'))} | {fmt(e.get('backpack_speedup'))} | "
                     f"{fmt(e.get('rel_err_vs_backpack', e.get('rel_err_vs_autodiff')), '.0e')} | "
                     f"{fmt(e.get('temp_vs_vg'))} | {_targets(e)} |")
    return "\n".join(lines)
