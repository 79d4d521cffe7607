"""The benchmark harness produces the fields users and BENCHMARKS.md rely on (no timing asserted)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from mdc_jax.bench import backpack_cases, curvature, dp_peers, fcnn, linear_ce, logistic, main, rnn, timing, torch_cases
from mdc_jax.reference.fcnn import mlp_case

FIELDS = {"name", "closed_ms", "autodiff_ms", "ratio", "closed_temp_bytes", "autodiff_temp_bytes"}


def test_small_cases_report_every_field():
    results = fcnn.run_cases("small", rounds=3) + rnn.run_cases("small", rounds=3)
    for r in results:
        d = r.as_dict()
        assert FIELDS <= set(d) and d["closed_ms"] > 0 and d["autodiff_ms"] > 0
        assert d["closed_temp_bytes"] is not None and d["autodiff_temp_bytes"] is not None
    table = timing.format_table(results, matmul=100.0).splitlines()
    assert table[0].startswith("| case |") and len(table) == 2 + len(results)


def test_interleaved_medians_runs_every_callable_each_round():
    calls = {"a": 0, "b": 0}
    ms = timing.interleaved_medians({k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls},
                                     rounds=5, warmup=1)
    assert calls == {"a": 6, "b": 6} and set(ms) == {"a", "b"}


def test_bench_cli_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--suite", "small", "--only", "rnn", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["matmul_gflops"] > 0 and FIELDS <= set(data["cases"][0])


def test_per_example_bench_reports_clipped_vs_plain_and_vmap(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--suite", "small", "--only", "per_example", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| per_example clip MLP N=64 64-128-10 |" in table and "clipped / plain" in table
    extra = json.loads(out.read_text())["cases"][0]["extra"]
    assert {"plain_ms", "clipped_vs_plain", "vmap_vs_clipped", "temp_vs_plain", "dp_step_ms"} <= set(extra)


def test_linear_ce_bench_reports_fused_vs_autodiff_and_optax(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(linear_ce.SUITES, "small", [("linear_ce N=64 d=16 K=300", 64, 16, 300, 3, 1)])
    out = tmp_path / "bench.json"
    assert main(["--suite", "small", "--only", "linear_ce", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| linear_ce N=64 d=16 K=300 | 3 |" in table and "fused / optax" in table
    case = json.loads(out.read_text())["cases"][0]
    assert FIELDS <= set(case) and case["closed_temp_bytes"] is not None and case["autodiff_temp_bytes"]
    extra = case["extra"]
    assert {"optax_ms", "optax_temp_bytes", "fused_vs_autodiff", "fused_vs_optax", "time_target_met",
            "temp_target_met"} <= set(extra) and extra["optax_ms"] > 0
    # the three programs compute the same loss and gradients w.r.t. (Z, W, b)
    assert extra["fused_rel_err_vs_autodiff"] < 1e-5 and extra["optax_rel_err_vs_autodiff"] < 1e-5


def test_logistic_bench_reports_every_kind_and_agrees_with_its_peers():
    results = logistic.run_cases("small", rounds=2)
    by_kind = {}
    for r in results:
        assert FIELDS <= set(r.as_dict()) and r.closed_ms > 0 and r.autodiff_ms > 0
        by_kind.setdefault(r.extra["kind"], []).append(r)
    has_statsmodels = importlib.util.find_spec("statsmodels") is not None
    assert {k: len(v) for k, v in by_kind.items()} == {
        "hessian": 1, "multinomial_hessian": 1, "binary_fit": 3, "multinomial_fit": 1,
        **({"statsmodels_fit": 1} if has_statsmodels else {})}
    for r in by_kind["hessian"] + by_kind["multinomial_hessian"]:  # float32 against jax.hessian
        assert r.extra["max_rel_err_vs_jax_hessian"] < 1e-4 and r.closed_temp_bytes is not None and r.flops > 0
    for r in by_kind["binary_fit"]:  # NumPy input, JAX input, float32 Hessian: all at sklearn's solution
        e = r.extra
        assert e["converged"] and e["n_iter"] >= 1 and e["sklearn_n_iter"] >= 1 and "sklearn" in e["baseline"]
        assert e["coef_max_rel_diff_vs_sklearn"] < 1e-6 and e["ours_vs_sklearn"] == r.ratio
    steps = by_kind["binary_fit"][0].extra
    assert all(steps[f"step_{key}_ms"] > 0 for key in ("input", "gram", "cholesky", "gradient", "line_search"))
    assert "step_overhead_ms" in steps
    if has_statsmodels:
        e = by_kind["statsmodels_fit"][0].extra
        assert e["sklearn_ms"] > 0 and e["statsmodels_n_iter"] >= 1
        assert max(e["coef_max_rel_diff_vs_sklearn"], e["coef_max_rel_diff_vs_statsmodels"],
                   e["sklearn_vs_statsmodels_coef_max_rel_diff"]) < 1e-6
    e = by_kind["multinomial_fit"][0].extra
    assert e["converged"] and e["lbfgs_ms"] > 0 and e["lbfgs_n_iter"] < logistic.LBFGS_MAX_ITER
    assert e["proba_max_abs_diff_vs_sklearn"] < 1e-6 and e["proba_max_abs_diff_vs_lbfgs"] < 1e-5
    tables = logistic.format_details(results)
    for header in ("| Hessian |", "| binary fit, l2=1 (C=1) |", "| Newton step parts (ms), NumPy input |",
                   "| multinomial fit, l2=1 (C=1) |"):
        assert header in tables
    assert ("| unpenalised fit (l2=0, C=inf) |" in tables) == has_statsmodels


def test_curvature_bench_reports_floors_targets_and_backpack(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(curvature.SUITES, "small", {"cases": [("mlp", "MLP N=8 6-5-3", 8, [6, 5, 3], ("kfac",))],
                                                    "rounds": 1})
    out = tmp_path / "bench.json"
    assert main(["--suite", "small", "--only", "curvature", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| curvature kfac MLP N=8 6-5-3 |" in table and "/ floor" in table
    cases = {c["extra"]["program"]: c for c in json.loads(out.read_text())["cases"]}
    assert set(cases) == {"v&g", "ggn_vp", "kfac"} and all(FIELDS <= set(c) for c in cases.values())
    assert cases["ggn_vp"]["extra"]["rel_err_vs_autodiff"] < 1e-5  # float32: the closed form is the autodiff GGN-vp
    e = cases["kfac"]["extra"]
    assert {"vg_ms", "vs_vg", "floor_ms", "vs_floor", "temp_vs_vg", "targets"} <= set(e)
    has_backpack = importlib.util.find_spec("backpack") is not None  # a BackPACK target only where it ran
    assert {t["what"] for t in e["targets"]} == {"vs_vg", "vs_floor", "temp_vs_vg"} | ({"backpack_speedup"} if has_backpack
                                                                                      else set())
    if has_backpack:
        assert e["backpack_ms"] > 0 and e["backpack_speedup"] > 0


def test_bfloat16_runs_the_families_that_support_it_and_names_the_others(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(fcnn.SUITES, "small", [("fcnn_cls N=8 6-5-3 tanh", 8, [6, 5, 3], "tanh")])
    out = tmp_path / "bench.json"
    assert main(["--suite", "small", "--dtype", "bfloat16", "--only", "fcnn", "logistic", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "| fcnn_cls N=8 6-5-3 tanh bf16 |" in captured.out and "logistic: skipped in bfloat16" in captured.err
    data = json.loads(out.read_text())
    assert data["dtype"] == "bfloat16" and data["complete"] and "dtype bfloat16" in data["header"]
    assert data["skipped_families"] == {"logistic": logistic.FLOAT32_ONLY}
    assert [c["dtype"] for c in data["cases"]] == ["bfloat16"]
    with pytest.raises(ValueError, match="fcnn bench: dtype must be one of float32, bfloat16"):
        fcnn.run_cases("small", dtype="float16")


def test_missing_peers_leave_their_columns_empty_with_a_line(monkeypatch, capsys):
    """The GPU image has neither Opacus, BackPACK, jax-privacy nor statsmodels: each peer is None, said once."""
    hidden = ("opacus", "backpack", "jax_privacy", "statsmodels")
    for name in [m for m in sys.modules if m.split(".")[0] in hidden] + list(hidden):
        monkeypatch.setitem(sys.modules, name, None)  # `import name` (and of its submodules) raises ImportError
    monkeypatch.setattr(timing, "_SKIPPED", set())
    params, X, Y = mlp_case(0, 4, [3, 2], jnp.float32)
    assert torch_cases.opacus_ghost_step(params, X, Y, [], 1.0, 1.0) is None
    assert torch_cases.opacus_dprnn(None, None, None, None, 1.0, 1.0) is None
    assert backpack_cases.backpack_mlp(params, X, Y, []) is None and backpack_cases.runners(None, ("kfac",)) == {}
    assert dp_peers.jax_privacy_clipped_grad(1.0, 4) is None
    assert logistic._statsmodels_case(np.zeros((4, 2)), np.array([0, 1, 0, 1]), 1) == []
    err = capsys.readouterr().err
    torch_found = importlib.util.find_spec("torch") is not None  # without torch, one line for its columns
    peers = ["jax-privacy", "statsmodels", *(["Opacus", "BackPACK"] if torch_found else ["the PyTorch columns"])]
    for peer in peers:
        assert err.count(f"mdc-jax bench: skipping {peer}: ") == 1, err


def test_gpu_check_script_runs_every_phase_on_the_cpu_at_the_small_size(tmp_path):
    """scripts/gpu_check.sh as the GPU machine runs it, on the CPU, at its smallest size, with the packages the GPU
    image lacks (and torch) hidden: every phase passes, prints the device and writes its JSON."""
    shim = tmp_path / "hidden"
    for name in ("torch", "opacus", "backpack", "jax_privacy", "statsmodels"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text(f"raise ImportError('{name} hidden by tests/test_bench.py')\n")
    out = tmp_path / "out"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable, "OUT": str(out), "PYTHONPATH": str(shim),
           "GPU_CHECK_SUITE": "small", "GPU_CHECK_ONLY": "fcnn", "GPU_CHECK_RULES": "softmax", "GPU_CHECK_SEEDS": "1"}
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "on cpu: jax.devices() = [CpuDevice(id=0)]; device_kind 'cpu'" in proc.stdout
    assert "skipping the PyTorch columns: torch is not importable" in proc.stdout
    assert [p["verdict"] for p in json.loads((out / "phases.json").read_text())] == ["ok"] * 5
    assert json.loads((out / "device.json").read_text())["backend"] == "cpu"
    for dtype in ("float64", "float32"):
        rows = json.loads((out / f"gradcheck_{dtype}.json").read_text())
        assert [(r["rule"], r["dtype"], r["passed"]) for r in rows] == [("softmax", dtype, True)]
    for dtype in ("float32", "bfloat16"):
        bench = json.loads((out / f"bench_small_{dtype}.json").read_text())
        assert bench["complete"] and len(bench["cases"]) == 2 and {c["dtype"] for c in bench["cases"]} == {dtype}
    assert "=== gpu_check: every phase passed" in (out / "gpu_check.log").read_text()
