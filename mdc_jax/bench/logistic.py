"""Logistic regression: the closed-form Hessians and the Newton solvers against their peers (issue 14).

Kinds of case (seed 004 §3.2–3.3), all in the main table with ``closed_ms`` = ours:

* ``hessian``: :func:`~mdc_jax.rules.logistic.logistic_hessian` (eq. 3.14, the upper block triangle
  only) against ``jax.hessian`` of the reference loss, float32; ``autodiff_ms`` is ``jax.hessian``.
* ``multinomial_hessian``: :func:`~mdc_jax.rules.logistic.multinomial_hessian` against
  ``jax.hessian`` of the reference multinomial loss, float32.
* ``binary_fit``: :func:`~mdc_jax.solvers.fit_logistic_newton` (float64, ``l2 = 1``) on NumPy input
  as NumPy allocates it, on the same data as a JAX array, and with a float32 Hessian, against
  scikit-learn's ``LogisticRegression(solver="newton-cholesky", C=1)``, all interleaved.
  ``autodiff_ms`` holds **scikit-learn's** time. The NumPy-input row also carries the time of each
  part of a Newton step (``step_*_ms``), jitted apart on the fit's data.
* ``statsmodels_fit``: the unpenalised fit (``l2 = 0``) against statsmodels' ``Logit(...).fit(
  method="newton")`` (``autodiff_ms``) and scikit-learn's ``C=inf`` newton-cholesky (``extra``).
* ``multinomial_fit``: :func:`~mdc_jax.solvers.fit_multinomial_newton` against scikit-learn's
  multinomial newton-cholesky (``autodiff_ms``) and lbfgs (``extra``).

Every fit uses ``tol = 1e-8``; agreement is measured on the coefficients (binary) or on the
predicted probabilities (multinomial). :func:`format_details` prints the figures per kind.

float64 needs ``jax.config.update("jax_enable_x64", True)`` at process start (the bench runner does
it); the fit cases refuse to run without it rather than silently measure float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..kernels import gram_sizes, softmax_rows
from ..reference import logistic as reference
from ..rules.logistic import logistic_hessian, multinomial_hessian
from ..solvers import fit_logistic_newton, fit_multinomial_newton, predict_proba_multinomial
from ..solvers.ingest import fit_input
from ..solvers.newton import newton_step
from ..solvers.objectives import binary_objective
from ..testing import rel_err
from .timing import CaseResult, compiled, fmt, interleaved_medians, skipped

# (kind, sizes, rounds): the sizes, and seconds-long ones of every kind for suite="small".
SUITES = {
    "full": [("hessian", {"n": 20_000, "d": 2_000}, 5),
             ("multinomial_hessian", {"n": 5_000, "d": 200, "k": 10}, 5),
             ("binary_fit", {"n": 100_000, "d": 200, "statsmodels": True}, 5),
             ("binary_fit", {"n": 1_000_000, "d": 50}, 3),  # a fit reads 400 MB: fewer rounds
             ("binary_fit", {"n": 20_000, "d": 1_000}, 5),
             ("multinomial_fit", {"n": 100_000, "d": 50, "k": 10}, 5)],
    "small": [("hessian", {"n": 2_000, "d": 300}, 7),
              ("multinomial_hessian", {"n": 500, "d": 20, "k": 4}, 7),
              ("binary_fit", {"n": 5_000, "d": 20, "statsmodels": True}, 7),
              ("multinomial_fit", {"n": 5_000, "d": 10, "k": 4}, 7)],
}
# why `mdc-jax bench --dtype bfloat16` skips this family (families that run in bfloat16 list it in their DTYPES)
FLOAT32_ONLY = ("its fits are float64 against scikit-learn and statsmodels (the solvers compute bfloat16 input in "
                "float32) and its Hessians float32 against jax.hessian: no bfloat16 case")
L2 = 1.0  # scikit-learn's C = 1/L2
TOL = 1e-8
MAX_ITER = 100
LBFGS_MAX_ITER = 10_000  # enough for lbfgs to meet tol = 1e-8
SK_NEWTON = "sklearn LogisticRegression(solver='newton-cholesky')"


def _rows_done(n: int, rows: int) -> int:
    """Rows that :func:`~mdc_jax.kernels.row_chunk_sum` multiplies: ``⌈n/rows⌉`` chunks of
    ``rows`` (the last one moved back over rows already counted, which get zero weight)."""
    rows = min(rows, n)
    return -(-n // rows) * rows


def hessian_flops(n: int, d: int) -> float:
    """FLOPs of :func:`logistic_hessian` with :func:`~mdc_jax.kernels.weighted_gram`'s default sizes: ``z = Xθ``, the
    scaling ``diag(w) X`` and the upper block triangle of ``Xᵀ diag(w) X``, chunk by chunk."""
    rows, block = gram_sizes(n, d)
    upper = sum(2 * min(d, lo + block) * (min(d, lo + block) - lo) for lo in range(0, d, block))
    return 2 * n * d + _rows_done(n, rows) * (d + upper)


def multinomial_hessian_flops(n: int, d: int, k: int) -> float:
    """FLOPs of :func:`multinomial_hessian`: the logits ``XΘ``, and per row of each chunk the ``k``
    blocks ``diag(π_a) x`` and, for class block ``b``, ``b + 2`` scaled rows and Gram products."""
    rows = softmax_rows(n, d, k)
    pairs = k * (k + 3) // 2  # Σ_b (b + 2)
    return 2 * n * d * k + _rows_done(n, rows) * (k * d + pairs * d * (2 * d + 1))


def _require_x64():
    if not jax.config.jax_enable_x64:
        raise RuntimeError("the logistic fit cases are float64: enable jax_enable_x64 at process start.")


def _binary_data(n, d, seed=0):
    """NumPy float64 ``X ~ N(0, 1)``, ``θ ~ N(0, 1)/√d`` and int labels ``y ~ Bernoulli(σ(Xθ))``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    theta = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ theta)))).astype(np.int64)
    return X, theta, y


def _multinomial_data(n, d, k, seed=0):
    """NumPy float64 ``X ~ N(0, 1)``, ``T ~ 2 N(0, 1)/√d`` (``d × k``) and labels drawn from ``softmax(XT)``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    T = rng.standard_normal((d, k)) * 2 / np.sqrt(d)
    A = X @ T
    P = np.exp(A - A.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    labels = np.minimum((rng.random((n, 1)) > np.cumsum(P, axis=1)).sum(axis=1), k - 1)
    return X, T, labels


def _hessian_vs_jax(name, kind, rule, ref_loss, args, flops, rounds):
    """One closed-form Hessian rule against ``jax.hessian`` of its reference loss, on float32 ``args``."""
    run_closed, temp_closed = compiled(rule, *args)
    run_auto, temp_auto = compiled(jax.hessian(ref_loss), *args)
    rel = rel_err(np.asarray(run_closed(), np.float64), np.asarray(run_auto(), np.float64))
    ms = interleaved_medians({"closed": run_closed, "autodiff": run_auto}, rounds=rounds, warmup=1)
    return [CaseResult(name, ms["closed"], ms["autodiff"], temp_closed, temp_auto, flops=flops,
                       extra={"kind": kind, "max_rel_err_vs_jax_hessian": rel,
                              "speedup": ms["autodiff"] / ms["closed"], "rounds": rounds}, dtype="float32")]


def _hessian_case(n, d, rounds):
    X, theta, y = _binary_data(n, d)
    X, theta, y = (jnp.asarray(a, jnp.float32) for a in (X, 0.1 * theta, y))
    return _hessian_vs_jax(f"logistic_hessian n={n} d={d} f32 vs jax.hessian", "hessian", logistic_hessian,
                           reference.logistic_loss, (theta, X, y, jnp.float32(L2)), hessian_flops(n, d), rounds)


def _multinomial_hessian_case(n, d, k, rounds):
    X, T, labels = _multinomial_data(n, d, k)
    args = (jnp.asarray(T, jnp.float32), jnp.asarray(X, jnp.float32), jax.nn.one_hot(labels, k, dtype=jnp.float32),
            jnp.float32(L2))
    return _hessian_vs_jax(f"multinomial_hessian n={n} d={d} k={k} f32 vs jax.hessian", "multinomial_hessian",
                           multinomial_hessian, reference.multinomial_loss, args, multinomial_hessian_flops(n, d, k),
                           rounds)


def _binary_w(fit):
    return np.append(np.asarray(fit.coef), np.asarray(fit.intercept))


def _sklearn_w(est):
    return np.append(est.coef_[0], est.intercept_[0])


def _binary_steps(X, Xj, y, fit, total_ms, rounds):
    """The parts of one Newton step of the float64 fit, each jitted apart as the solver computes it,
    on the fit's data at its solution (ms), and the rest of the fit's time. The solver forms the
    Hessian together with the gradient (one pass over X) at the start and after every step that is
    surely not the last, and the gradient alone after the last step, so for a fit of ``n_iter`` steps::

        overhead = total − input − n_iter·(Gram with gradient + Cholesky + line search) − gradient

    ``gram`` (the Hessian alone) is reported beside it for reference.
    """
    yj = jnp.asarray(y, Xj.dtype)
    w = jnp.append(fit.coef, fit.intercept)
    z = Xj @ fit.coef + fit.intercept
    objective = lambda X, y: binary_objective(X, y, L2, True, X.dtype.name)  # the solver's, on [X 1]

    def gram(X, y, w, z):  # the solver's hess: [X 1]ᵀdiag(π(1 − π))[X 1] and the ridge
        return objective(X, y).hess(w, z)

    def gradient(X, y, w, z):
        return objective(X, y).grad(w, z)

    def line_search(X, y, w, z, p):  # the ray Xp and the objective at t = 1
        obj = objective(X, y)
        return obj.value(w + p, obj.move(z, obj.ray(w, z, p), 1.0))

    def gram_gradient(X, y, w, z):  # the solver's grad_hess: both from one pass over X
        return objective(X, y).grad_hess(w, z)

    args = (Xj, yj, w, z)
    run = {"gram": compiled(gram, *args)[0], "gradient": compiled(gradient, *args)[0],
           "gram_gradient": compiled(gram_gradient, *args)[0]}
    H, g = run["gram"](), run["gradient"]()
    run["cholesky"] = compiled(newton_step, g, H)[0]
    run["line_search"] = compiled(line_search, *args, run["cholesky"]()[0])[0]
    run["input"] = lambda: fit_input("fit_logistic_newton", X)
    ms = interleaved_medians(run, rounds=rounds, warmup=1)
    it = fit.n_iter
    overhead = total_ms - ms["input"] - it * (ms["gram_gradient"] + ms["cholesky"] + ms["line_search"]) - ms["gradient"]
    return {**{f"step_{key}_ms": ms[key] for key in _STEP_PARTS if key != "overhead"}, "step_overhead_ms": overhead}


_STEP_PARTS = ("input", "gram", "gradient", "gram_gradient", "cholesky", "line_search", "overhead")


_BINARY_VARIANTS = {"numpy": "f64 NumPy input", "jax": "f64 JAX input", "float32_hessian": "f64 float32 Hessian"}


def _binary_fit_cases(n, d, rounds, statsmodels=False):
    _require_x64()
    from sklearn.linear_model import LogisticRegression

    X, _, y = _binary_data(n, d)
    Xj = jnp.asarray(X)  # the same data as a JAX array, made outside the timing
    ours = lambda X, **kw: fit_logistic_newton(X, y, l2=L2, tol=TOL, max_iter=MAX_ITER, **kw)
    runs = {"numpy": lambda: ours(X), "jax": lambda: ours(Xj), "float32_hessian": lambda: ours(X, hessian_dtype="float32")}
    fits = {key: run() for key, run in runs.items()}  # compiles
    sk = LogisticRegression(C=1 / L2, solver="newton-cholesky", tol=TOL, max_iter=MAX_ITER).fit(X, y)
    ms = interleaved_medians({**runs, "sklearn": lambda: sk.fit(X, y)}, rounds=rounds, warmup=1)
    steps = _binary_steps(X, Xj, y, fits["numpy"], ms["numpy"], max(rounds, 7))
    results = []
    for key, label in _BINARY_VARIANTS.items():
        fit = fits[key]
        extra = {"kind": "binary_fit", "baseline": f"{SK_NEWTON}, in autodiff_ms", "variant": key, "n": n, "d": d,
                 "coef_max_rel_diff_vs_sklearn": rel_err(_binary_w(fit), _sklearn_w(sk)),
                 "n_iter": fit.n_iter, "sklearn_n_iter": int(sk.n_iter_[0]), "converged": fit.converged,
                 "ours_vs_sklearn": ms[key] / ms["sklearn"], "rounds": rounds, "tol": TOL, "C": 1 / L2}
        if key == "numpy":
            extra.update(numpy_input_aligned=X.ctypes.data % 64 == 0, **steps)
        results.append(CaseResult(f"fit_logistic_newton n={n} d={d} {label} vs sklearn newton-cholesky "
                                  f"(autodiff_ms = sklearn)", ms[key], ms["sklearn"], extra=extra, dtype="float64"))
    if statsmodels:
        results += _statsmodels_case(X, y, rounds)
    return results


def _statsmodels_case(X, y, rounds):
    """The unpenalised fit (statsmodels' Logit has no penalty) against statsmodels and scikit-learn."""
    try:
        from statsmodels.discrete.discrete_model import Logit
    except ImportError as err:
        skipped("statsmodels", f"it is not importable ({err}); no statsmodels row (pip install mdc-jax[bench]).")
        return []
    from sklearn.linear_model import LogisticRegression

    n, d = X.shape
    Xc = np.column_stack([X, np.ones(n)])  # statsmodels' intercept is a column of X: made by the user, untimed
    sk = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=TOL, max_iter=MAX_ITER)
    runs = {"ours": lambda: fit_logistic_newton(X, y, l2=0.0, tol=TOL, max_iter=MAX_ITER),
            "sklearn": lambda: sk.fit(X, y),
            "statsmodels": lambda: Logit(y, Xc).fit(method="newton", tol=TOL, maxiter=MAX_ITER, disp=0)}
    out = {key: run() for key, run in runs.items()}  # compiles
    ms = interleaved_medians(runs, rounds=rounds, warmup=1)
    w = {"ours": _binary_w(out["ours"]), "sklearn": _sklearn_w(sk), "statsmodels": np.asarray(out["statsmodels"].params)}
    extra = {"kind": "statsmodels_fit", "l2": 0.0, "rounds": rounds, "tol": TOL,
             "baseline": "statsmodels Logit(y, [X 1]).fit(method='newton'), in autodiff_ms; [X 1] made before the timing",
             "sklearn_ms": ms["sklearn"], "ours_vs_statsmodels": ms["ours"] / ms["statsmodels"],
             "ours_vs_sklearn": ms["ours"] / ms["sklearn"],
             "n_iter": out["ours"].n_iter, "sklearn_n_iter": int(sk.n_iter_[0]),
             "statsmodels_n_iter": int(out["statsmodels"].mle_retvals["iterations"]),
             "coef_max_rel_diff_vs_statsmodels": rel_err(w["ours"], w["statsmodels"]),
             "coef_max_rel_diff_vs_sklearn": rel_err(w["ours"], w["sklearn"]),
             "sklearn_vs_statsmodels_coef_max_rel_diff": rel_err(w["sklearn"], w["statsmodels"])}
    return [CaseResult(f"fit_logistic_newton n={n} d={d} f64 l2=0 vs statsmodels Logit newton "
                       f"(autodiff_ms = statsmodels)", ms["ours"], ms["statsmodels"], extra=extra, dtype="float64")]


def _multinomial_fit_case(n, d, k, rounds):
    _require_x64()
    from sklearn.linear_model import LogisticRegression

    X, _, labels = _multinomial_data(n, d, k)
    newton = LogisticRegression(C=1 / L2, solver="newton-cholesky", tol=TOL, max_iter=MAX_ITER)
    lbfgs = LogisticRegression(C=1 / L2, solver="lbfgs", tol=TOL, max_iter=LBFGS_MAX_ITER)
    runs = {"ours": lambda: fit_multinomial_newton(X, labels, l2=L2, tol=TOL, max_iter=MAX_ITER),
            "sklearn": lambda: newton.fit(X, labels), "lbfgs": lambda: lbfgs.fit(X, labels)}
    fit = {key: run() for key, run in runs.items()}["ours"]  # compiles
    ms = interleaved_medians(runs, rounds=rounds, warmup=1)
    P = np.asarray(predict_proba_multinomial(fit, X))
    extra = {"kind": "multinomial_fit", "baseline": f"{SK_NEWTON} (multinomial), in autodiff_ms",
             "lbfgs_ms": ms["lbfgs"], "ours_vs_sklearn": ms["ours"] / ms["sklearn"],
             "ours_vs_lbfgs": ms["ours"] / ms["lbfgs"],
             "n_iter": fit.n_iter, "converged": fit.converged, "sklearn_n_iter": int(newton.n_iter_[0]),
             "lbfgs_n_iter": int(lbfgs.n_iter_[0]),
             "proba_max_abs_diff_vs_sklearn": float(np.max(np.abs(P - newton.predict_proba(X)))),
             "proba_max_abs_diff_vs_lbfgs": float(np.max(np.abs(P - lbfgs.predict_proba(X)))),
             "rounds": rounds, "tol": TOL, "C": 1 / L2}
    return [CaseResult(f"fit_multinomial_newton n={n} d={d} k={k} f64 vs sklearn newton-cholesky "
                       f"(autodiff_ms = sklearn)", ms["ours"], ms["sklearn"], extra=extra, dtype="float64")]


_CASES = {"hessian": _hessian_case, "multinomial_hessian": _multinomial_hessian_case,
          "binary_fit": _binary_fit_cases, "multinomial_fit": _multinomial_fit_case}


def run_cases(suite: str = "full", rounds: int | None = None) -> list[CaseResult]:
    """Runs the suite's cases ("full": the issue's sizes; "small": seconds); ``rounds`` overrides
    each case's number of timed rounds."""
    if suite not in SUITES:
        raise ValueError(f"run_cases: suite must be one of {sorted(SUITES)}; got {suite!r}.")
    return [result for kind, sizes, r in SUITES[suite] for result in _CASES[kind](**sizes, rounds=rounds or r)]


def _table(header: list[str], rows: list[list[str]]) -> str:
    line = lambda cells: "| " + " | ".join(cells) + " |"
    return "\n".join([line(header), "|---|" + "---:|" * (len(header) - 1), *map(line, rows)])


def format_details(results: list[CaseResult]) -> str:
    """One table per kind: Hessians vs jax.hessian, binary fits vs scikit-learn (with each Newton
    step's parts), the unpenalised fit vs statsmodels, multinomial fits vs scikit-learn."""
    f, e = fmt, lambda x: fmt(x, ".1e")
    mib = lambda b: "-" if b is None else f"{b / 2**20:.1f}"
    kind = lambda k: [r for r in results if r.extra.get("kind") == k]
    tables = []
    hessians = kind("hessian") + kind("multinomial_hessian")
    if hessians:
        tables.append(_table(
            ["Hessian", "closed ms", "jax.hessian ms", "speedup", "closed temp MiB", "jax.hessian temp MiB",
             "max rel err", "closed GFLOP/s"],
            [[r.name, f(r.closed_ms), f(r.autodiff_ms), f(r.extra["speedup"], ".1f"), mib(r.closed_temp_bytes),
              mib(r.autodiff_temp_bytes), e(r.extra["max_rel_err_vs_jax_hessian"]), f(r.closed_gflops, ".1f")]
             for r in hessians]))
    binary = kind("binary_fit")
    if binary:
        tables.append(_table(
            ["binary fit, l2=1 (C=1)", "rounds", "ours ms", "sklearn ms", "ours / sklearn", "n_iter ours / sklearn",
             "coef max rel diff"],
            [[r.name, str(r.extra["rounds"]), f(r.closed_ms), f(r.autodiff_ms), f(r.ratio),
              f"{r.extra['n_iter']} / {r.extra['sklearn_n_iter']}", e(r.extra["coef_max_rel_diff_vs_sklearn"])]
             for r in binary]))
        steps = [r for r in binary if "step_gram_ms" in r.extra]
        tables.append(_table(  # the parts of the NumPy-input rows' fits
            ["Newton step parts (ms), NumPy input", "fit", "n_iter", "input", "Gram", "gradient",
             "Gram with gradient (one pass)", "Cholesky", "ray + line search", "overhead"],
            [[f"fit_logistic_newton n={r.extra['n']} d={r.extra['d']}", f(r.closed_ms), str(r.extra["n_iter"])]
             + [f(r.extra[f"step_{key}_ms"]) for key in _STEP_PARTS] for r in steps]))
    sm = kind("statsmodels_fit")
    if sm:
        tables.append(_table(
            ["unpenalised fit (l2=0, C=inf)", "ours ms", "sklearn ms", "statsmodels ms", "ours / sklearn",
             "ours / statsmodels", "n_iter ours / sklearn / statsmodels", "coef rel diff ours–sk", "ours–sm", "sk–sm"],
            [[r.name, f(r.closed_ms), f(r.extra["sklearn_ms"]), f(r.autodiff_ms), f(r.extra["ours_vs_sklearn"]),
              f(r.ratio), f"{r.extra['n_iter']} / {r.extra['sklearn_n_iter']} / {r.extra['statsmodels_n_iter']}",
              e(r.extra["coef_max_rel_diff_vs_sklearn"]), e(r.extra["coef_max_rel_diff_vs_statsmodels"]),
              e(r.extra["sklearn_vs_statsmodels_coef_max_rel_diff"])] for r in sm]))
    multi = kind("multinomial_fit")
    if multi:
        tables.append(_table(
            ["multinomial fit, l2=1 (C=1)", "ours ms", "sklearn newton ms", "sklearn lbfgs ms", "ours / newton",
             "ours / lbfgs", "n_iter ours / newton / lbfgs", "max abs Δp vs newton", "vs lbfgs"],
            [[r.name, f(r.closed_ms), f(r.autodiff_ms), f(r.extra["lbfgs_ms"]), f(r.ratio), f(r.extra["ours_vs_lbfgs"]),
              f"{r.extra['n_iter']} / {r.extra['sklearn_n_iter']} / {r.extra['lbfgs_n_iter']}",
              e(r.extra["proba_max_abs_diff_vs_sklearn"]), e(r.extra["proba_max_abs_diff_vs_lbfgs"])] for r in multi]))
    return "\n\n".join(tables)
