"""Binary and multinomial logistic regression fitted by Newton/IRLS (seed 004 §3.2–3.3).

The fit is :func:`mdc_jax.solvers.fit_logistic_newton` / ``fit_multinomial_newton``, one compiled
solve on the closed-form gradient and Hessian (``train.grad: closed``) or on ``jax.grad`` and
``jax.hessian`` of the reference (``train.grad: autodiff``), in float64. scikit-learn's ``LogisticRegression``
with the same penalty (``C = 1/l2``) is reported beside it as the baseline.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdc_jax.experiment.models import Fit, ModelOptions, ModelSpec
from mdc_jax.solvers import fit_logistic_newton, fit_multinomial_newton, predict_proba_logistic, predict_proba_multinomial

from . import CONFIGS
from .data import BINARY, CLASSIFICATION, load_classification, split_problems


@dataclasses.dataclass
class NewtonOptions(ModelOptions):
    l2: float = 1.0  # the ridge λ = 1/C
    fit_intercept: bool = True

    def validate(self, cfg) -> list[str]:
        problems = [] if self.l2 >= 0 else [f"model.l2 must be >= 0, got {self.l2}"]
        return problems + split_problems(cfg.data.dataset, cfg.data.test_size)


def fit_from_config(cfg, binary: bool) -> Fit:
    """The Newton fit of a ``logistic`` or ``multinomial`` config, with scikit-learn's as the baseline."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("Newton fits run in float64: enable jax_enable_x64 at process start "
                           "(`mdc-jax train` does this for logistic and multinomial configs).")
    from sklearn.linear_model import LogisticRegression

    d = cfg.data
    data = load_classification(d.dataset, d.test_size, d.split_seed)
    if binary and data.num_classes != 2:
        raise ValueError(f"model.kind 'logistic' needs two classes; {d.dataset} has {data.num_classes}.")
    fit_fn = fit_logistic_newton if binary else fit_multinomial_newton
    fit = fit_fn(data.X_train, data.y_train, l2=cfg.model.l2, fit_intercept=cfg.model.fit_intercept,
                 tol=cfg.train.tol, max_iter=cfg.train.steps, derivatives=cfg.train.grad)
    if binary:
        pred = np.asarray(predict_proba_logistic(fit, data.X_test)) > 0.5
    else:
        pred = np.argmax(np.asarray(predict_proba_multinomial(fit, data.X_test)), axis=1)
    penalty = {"C": 1.0 / cfg.model.l2} if cfg.model.l2 > 0 else {"penalty": None}
    sk = LogisticRegression(**penalty, fit_intercept=cfg.model.fit_intercept, tol=cfg.train.tol,
                            max_iter=1000, solver="newton-cholesky" if binary else "lbfgs")
    sk.fit(data.X_train, data.y_train)
    metrics = {"test_accuracy": float(np.mean(pred == data.y_test)),
               "sklearn_test_accuracy": float(sk.score(data.X_test, data.y_test))}
    info = {"iterations": int(fit.n_iter), "converged": bool(fit.converged), "grad_norm": float(fit.grad_norm)}
    params = {"coef": jnp.asarray(fit.coef), "intercept": jnp.asarray(fit.intercept)}
    return Fit(params, metrics, info, primary="test_accuracy")


LOGISTIC = ModelSpec("logistic", NewtonOptions, BINARY, fit=functools.partial(fit_from_config, binary=True),
                     float64=True, configs=CONFIGS,
                     description="binary logistic regression, Newton/IRLS (seed 004 §3.2)")
MULTINOMIAL = ModelSpec("multinomial", NewtonOptions, CLASSIFICATION, fit=functools.partial(fit_from_config, binary=False),
                        float64=True,
                        configs=CONFIGS, description="multinomial logistic regression, Newton (seed 004 §3.3)")
