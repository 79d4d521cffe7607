"""The benchmark harness produces the fields users and BENCHMARKS.md rely on (no timing asserted)."""

import json

from mdc_jax.bench import fcnn, linear_ce, main, rnn, timing

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
