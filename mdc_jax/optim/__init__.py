"""Second-order training on the closed-form curvature, as optax transformations.

Both take the model's curvature through optax's extra arguments of ``update`` (so they compose with
``optax.chain``); neither differentiates anything itself:

* :func:`kfac`: K-FAC (Martens & Grosse 2015) on the Kronecker factors of :func:`mdc_jax.curvature.fcnn_quantities`
  and :func:`~mdc_jax.curvature.rnn_quantities` (``update(grads, state, params, *, factors)``);
* :func:`ggn_cg`: truncated Gauss–Newton / Hessian-free (Martens 2010; Martens & Sutskever 2011) on the exact
  GGN-vector products of :func:`mdc_jax.curvature.fcnn_ggn_vp` and :func:`~mdc_jax.curvature.rnn_ggn_vp`
  (``update(grads, state, params, *, ggn_vp, loss, value=None)``).

The package's modules: ``_blocks`` (the Kronecker-block algebra), ``_kfac``, ``_ggn_cg`` (with its CG) and
``_common`` (the options' checks, schedules, per-leaf scaling).
"""

from ._ggn_cg import GGNCGState as GGNCGState
from ._ggn_cg import ggn_cg as ggn_cg
from ._kfac import KFACState as KFACState
from ._kfac import kfac as kfac

__all__ = ["GGNCGState", "KFACState", "ggn_cg", "kfac"]
