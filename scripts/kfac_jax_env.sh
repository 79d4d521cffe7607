#!/usr/bin/env bash
# The peer's environment for scripts/compare_kfac_jax.py: kfac-jax 0.0.8 beside mdc-jax, on one JAX.
#
# kfac-jax 0.0.8 does not run on jax 0.10 (its layer-tag graph matcher fails with "too many values to
# unpack" in tag_graph_matcher.eval_jaxpr_eqn); it runs on jax 0.9.0. So both libraries are installed
# in a separate venv with jax and jaxlib held at 0.9.0 by a pip constraints file (nothing installed
# afterwards may move them), and mdc-jax comes from this working tree (editable, without its
# dependencies; the train extra's packages are installed alongside).
#
# Usage: scripts/kfac_jax_env.sh [VENV_DIR]     (default /work/kfacjax-venv; PYTHON picks the interpreter)
# Then:  VENV_DIR/bin/python scripts/compare_kfac_jax.py --out results/kfac_jax
# Running it again reuses the venv and only installs what is missing (pip is idempotent).
set -euo pipefail

VENV_DIR="${1:-/work/kfacjax-venv}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
JAX_VERSION=0.9.0

if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV_DIR"
fi
PIP=("$VENV_DIR/bin/python" -m pip)

# The pins that every install below respects: a package that wants a newer JAX fails loudly instead of
# upgrading it (optax, chex, distrax and tfp-nightly, which kfac-jax pulls in, accept jax 0.9.0).
CONSTRAINTS="$VENV_DIR/jax-pins.txt"
cat > "$CONSTRAINTS" <<EOF
jax==$JAX_VERSION
jaxlib==$JAX_VERSION
kfac-jax==0.0.8
EOF

"${PIP[@]}" install -q -c "$CONSTRAINTS" "jax==$JAX_VERSION" "jaxlib==$JAX_VERSION"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "kfac-jax==0.0.8" optax
# mdc-jax from the working tree; the train extra's packages (optax above) and what the fcnn tests import.
"${PIP[@]}" install -q -c "$CONSTRAINTS" --no-deps -e "$REPO"
"${PIP[@]}" install -q -c "$CONSTRAINTS" "PyYAML>=6" "matplotlib>=3.7" "scikit-learn>=1.3" "dp-accounting>=0.4" \
    "pytest>=8" "pytest-xdist>=3.5" "hypothesis>=6.100" "chex>=0.1.86"

"${PIP[@]}" check
"$VENV_DIR/bin/python" - <<EOF
import jax, jaxlib, kfac_jax, optax, mdc_jax
assert jax.__version__ == "$JAX_VERSION" and jaxlib.__version__ == "$JAX_VERSION", (jax.__version__, jaxlib.__version__)
print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, kfac-jax {kfac_jax.__version__}, optax {optax.__version__}, "
      f"mdc_jax from {mdc_jax.__file__}")
EOF
