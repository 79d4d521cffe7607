"""Logistic regression: the closed-form Hessian and the Newton solver against their baselines.

Two kinds of case (seed 004 §3.2):

* ``logistic_hessian`` (eq. 3.14, ``Xᵀdiag(π(1−π))X + λI`` with the upper block triangle only)
  against ``jax.hessian`` of the reference loss, float32. ``closed_ms`` / ``autodiff_ms`` as usual.
* ``fit_logistic_newton`` (compiled, timed after compilation, on NumPy input as a user calls it)
  against scikit-learn's ``LogisticRegression(solver="newton-cholesky")`` on the same float64 data,
  same ``C = 1/λ`` and ``tol``. Here ``autodiff_ms`` holds **scikit-learn's** time (the baseline);
  ``extra`` says so and records the coefficients' agreement and both iteration counts.

float64 needs ``jax.config.update("jax_enable_x64", True)`` at process start (the bench runner does
it); the fit case refuses to run without it rather than silently measure float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..reference import logistic as reference
from ..rules.logistic import _GRAM_BLOCK, logistic_hessian
from ..solvers import fit_logistic_newton
from ..testing import rel_err
from .timing import CaseResult, compiled, interleaved_medians

# (kind, n, d); the sizes, and a seconds-long pair for suite="small".
SUITES = {
    "full": [("hessian", 20_000, 2_000), ("fit", 100_000, 200)],
    "small": [("hessian", 2_000, 300), ("fit", 5_000, 20)],
}
ROUNDS = {"full": 5, "small": 7}
L2 = 1.0
TOL = 1e-8


def hessian_flops(n: int, d: int, block: int = _GRAM_BLOCK) -> float:
    """FLOPs of the closed form: z = Xθ, the scaling diag(w)X, and the upper block triangle."""
    gram = sum(2 * n * min(d, lo + block) * (min(d, lo + block) - lo) for lo in range(0, d, block))
    return 2 * n * d + n * d + gram


def _data(key, n, d, dtype):
    kx, kt, ky = jax.random.split(key, 3)
    X = jax.random.normal(kx, (n, d), jnp.float64)
    theta = jax.random.normal(kt, (d,), jnp.float64) / np.sqrt(d)
    y = jax.random.bernoulli(ky, jax.nn.sigmoid(X @ theta)).astype(jnp.float64)
    return X.astype(dtype), (0.1 * theta).astype(dtype), y.astype(dtype)


def _hessian_case(n, d, rounds):
    X, theta, y = _data(jax.random.PRNGKey(0), n, d, jnp.float32)
    l2 = jnp.float32(L2)
    run_closed, temp_closed = compiled(logistic_hessian, theta, X, y, l2)
    run_auto, temp_auto = compiled(jax.hessian(reference.logistic_loss), theta, X, y, l2)
    H, H_ref = np.asarray(run_closed(), np.float64), np.asarray(run_auto(), np.float64)
    rel = rel_err(H, H_ref)
    ms = interleaved_medians({"closed": run_closed, "autodiff": run_auto}, rounds=rounds, warmup=1)
    return CaseResult(f"logistic_hessian n={n} d={d} f32 vs jax.hessian", ms["closed"], ms["autodiff"],
                      temp_closed, temp_auto, flops=hessian_flops(n, d),
                      extra={"max_rel_err_vs_jax_hessian": rel, "speedup": ms["autodiff"] / ms["closed"]})


def _fit_case(n, d, rounds):
    if not jax.config.jax_enable_x64:
        raise RuntimeError("the Newton-vs-scikit-learn case is float64: enable jax_enable_x64 at process start.")
    from sklearn.linear_model import LogisticRegression

    X, _, y = _data(jax.random.PRNGKey(1), n, d, jnp.float64)
    X, y = np.asarray(X), np.asarray(y).astype(np.int64)
    sk = LogisticRegression(C=1 / L2, solver="newton-cholesky", tol=TOL, max_iter=100)
    ours = lambda: fit_logistic_newton(X, y, l2=L2, tol=TOL, max_iter=100)
    mixed = lambda: fit_logistic_newton(X, y, l2=L2, tol=TOL, max_iter=100, hessian_dtype="float32")
    fits = {"ours": ours(), "mixed": mixed()}  # compiles
    sk.fit(X, y)
    ms = interleaved_medians({"ours": ours, "mixed": mixed, "sklearn": lambda: sk.fit(X, y)}, rounds=rounds, warmup=1)
    results = []
    for key, label in [("ours", "f64"), ("mixed", "f64, float32 Hessian")]:
        fit = fits[key]
        rel = rel_err(fit.coef, sk.coef_[0])
        results.append(CaseResult(
            f"fit_logistic_newton n={n} d={d} {label} vs sklearn newton-cholesky (autodiff_ms = sklearn)",
            ms[key], ms["sklearn"],
            extra={"baseline": "sklearn LogisticRegression(solver='newton-cholesky'), in autodiff_ms",
                   "coef_max_rel_diff": rel, "n_iter": fit.n_iter, "sklearn_n_iter": int(sk.n_iter_[0]),
                   "converged": fit.converged, "tol": TOL, "C": 1 / L2,
                   "speedup_vs_sklearn": ms["sklearn"] / ms[key]}))
    return results


def run_cases(suite: str = "full", rounds: int | None = None) -> list[CaseResult]:
    """Runs the suite's cases ("full": the issue's sizes; "small": seconds) and returns them."""
    if suite not in SUITES:
        raise ValueError(f"run_cases: suite must be one of {sorted(SUITES)}; got {suite!r}.")
    rounds = ROUNDS[suite] if rounds is None else rounds
    cases = {"hessian": lambda n, d, r: [_hessian_case(n, d, r)], "fit": _fit_case}
    return [result for kind, n, d in SUITES[suite] for result in cases[kind](n, d, rounds)]
