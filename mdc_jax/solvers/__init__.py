"""Newton's method (IRLS) for ridge-penalised logistic regression, on the closed-form rules.

Seed: ``004_c4a3fcbc5e77e7ce.txt`` §3.2, which motivates the Hessian by IRLS, and §3.3. Samples are
rows. :func:`fit_logistic_newton` and :func:`fit_multinomial_newton` equal scikit-learn's
``LogisticRegression(C=1/l2, solver="newton-cholesky")``; what one step costs, and why, is in
``docs/newton.md``. The package's modules, one job each:

* :mod:`~mdc_jax.solvers.newton`: the damped Newton loop (Cholesky, Armijo line search, scikit-learn's
  convergence test), for any objective that supplies its derivatives;
* :mod:`~mdc_jax.solvers.objectives`: the binary and multinomial objectives, built on
  :mod:`mdc_jax.rules.logistic` and :mod:`mdc_jax.kernels`, and the autodiff baseline;
* :mod:`~mdc_jax.solvers.ingest`: the host-side checks and the zero-copy ingestion of NumPy input;
* :mod:`~mdc_jax.solvers.logistic`: the public fits and predictions.
"""

from .logistic import fit_logistic_newton as fit_logistic_newton
from .logistic import fit_multinomial_newton as fit_multinomial_newton
from .logistic import predict_proba_logistic as predict_proba_logistic
from .logistic import predict_proba_multinomial as predict_proba_multinomial
from .newton import NewtonResult as NewtonResult
from .newton import SingularHessianError as SingularHessianError

__all__ = [
    "NewtonResult",
    "SingularHessianError",
    "fit_logistic_newton",
    "fit_multinomial_newton",
    "predict_proba_logistic",
    "predict_proba_multinomial",
]
