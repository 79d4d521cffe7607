#!/usr/bin/env bash
# The GPU readiness check, one command: the device, the gradient check and the benchmarks on a GPU.
#
#   OUT=/path/to/results scripts/gpu_check.sh
#
# For a machine image as it is, with no network: Python with jax, its CUDA plugin, optax, chex, PyYAML,
# scikit-learn, matplotlib and torch. Nothing is installed or downloaded: mdc-jax runs from this working tree
# (PYTHONPATH) as `python -m mdc_jax.cli`. Peers that are not importable (Opacus, BackPACK, jax-privacy,
# statsmodels) leave their columns empty, each with a line saying so; torch's FCNN and RNN columns run on
# CUDA when JAX is on a GPU and that torch has CUDA, and are left out otherwise.
#
# Phases, in this order, each under its own wall-clock limit (coreutils `timeout`; a phase cut short is
# reported and the next one runs). The limits sum to 435 s (7 min 15 s), within 8 minutes with nvidia-smi's
# 10 s and the script's own seconds. They are guesses for an H100, never measured on a GPU: on the 2-core
# development CPU the gradient checks took 57 s (float64) and 12 s (float32) and the full float32 bench over
# 50 minutes (BENCHMARKS.md, "GPU"): the bench phases finish only if the GPU runs them far faster.
#
#   device             30 s   jax and plugin versions, jax.devices(), device kind, optional packages
#                             -> device.json
#   gradcheck_float64  120 s  mdc-jax gradcheck --dtype float64 (every rule, 3 seeds) -> gradcheck_float64.json
#   gradcheck_float32  45 s   mdc-jax gradcheck --dtype float32 (every rule, 1 seed)  -> gradcheck_float32.json
#   bench_float32      180 s  mdc-jax bench --suite full --dtype float32                -> bench_full_float32.json
#   bench_bfloat16     60 s   mdc-jax bench --suite full --dtype bfloat16 (the families that support it)
#                             -> bench_full_bfloat16.json
#
# The bench rewrites its JSON after each family ("complete": false until the last), so a bench cut short keeps
# the families it finished; it runs them in GPU_CHECK_ONLY's order, the logistic fits (scikit-learn on the
# host's CPU) last. The gradient check writes its JSON at its end. Everything printed also goes to
# gpu_check.log, and phases.json has each phase's exit status and seconds. The exit status is 0 when every
# phase passed, 1 otherwise (a failure, a timeout, or JAX on the CPU without JAX_PLATFORMS=cpu).
#
# Environment:
#   OUT                 results folder (default: runs/gpu_check-<timestamp>); created if missing
#   PYTHON              the interpreter (default: python3)
#   JAX_PLATFORMS       default cuda, so that a broken CUDA plugin fails loudly instead of falling back to the
#                       CPU; JAX_PLATFORMS=cpu runs the check on the CPU (the test does, at the small size)
#   GPU_CHECK_SUITE     bench suite: full (default) or small
#   GPU_CHECK_ONLY      bench families, in order (default: fcnn linear_ce rnn per_example dp_peers curvature logistic)
#   GPU_CHECK_RULES     gradcheck rules, space-separated (default: every registered rule)
#   GPU_CHECK_SEEDS     gradcheck seeds in float64 (default 3; float32 runs 1)
#   GPU_CHECK_LIMITS    the five limits in seconds, in the order above (default: "30 120 45 180 60")
set -uo pipefail

if [ -n "${OUT:-}" ]; then  # a relative OUT is relative to where the script was started
    mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)" || exit 2
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_PLATFORMS="${JAX_PLATFORMS-cuda}"
SUITE="${GPU_CHECK_SUITE:-full}"
read -r -a ONLY <<< "${GPU_CHECK_ONLY:-fcnn linear_ce rnn per_example dp_peers curvature logistic}"
read -r -a RULES <<< "${GPU_CHECK_RULES:-}"
SEEDS="${GPU_CHECK_SEEDS:-3}"
read -r LIMIT_DEVICE LIMIT_GC64 LIMIT_GC32 LIMIT_F32 LIMIT_BF16 <<< "${GPU_CHECK_LIMITS:-30 120 45 180 60}"
OUT="${OUT:-runs/gpu_check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT" || exit 2
exec 3>&1 4>&2 > >(tee -a "$OUT/gpu_check.log") 2>&1
TEE=$!

RULE_ARGS=()
for rule in ${RULES[@]+"${RULES[@]}"}; do RULE_ARGS+=(--rule "$rule"); done
STATUS=0
PHASES=()

phase() {  # phase NAME LIMIT COMMAND...: runs COMMAND under LIMIT seconds, records how it ended
    local name=$1 limit=$2 start=$SECONDS rc verdict
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    timeout -k 10 "$limit" "$@"
    rc=$?
    case $rc in
        0) verdict=ok ;;
        124 | 137) verdict="timed out" ;;
        *) verdict="failed (exit $rc)" ;;
    esac
    [ "$rc" -eq 0 ] || STATUS=1
    echo "=== $name: $verdict after $((SECONDS - start)) s"
    PHASES+=("{\"phase\": \"$name\", \"exit\": $rc, \"verdict\": \"$verdict\", \"seconds\": $((SECONDS - start)), \"limit\": $limit}")
}

echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), OUT=$OUT, suite $SUITE, JAX_PLATFORMS=$JAX_PLATFORMS"
command -v nvidia-smi > /dev/null && timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

phase device "$LIMIT_DEVICE" "$PY" - "$OUT/device.json" <<'EOF'
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
optional = ("optax", "chex", "yaml", "sklearn", "matplotlib", "torch", "opacus", "backpack", "jax_privacy",
            "statsmodels", "dp_accounting", "einops", "unfoldNd")
info = {"python": sys.version.split()[0], "machine": platform.machine(), "jax": jax.__version__,
        "jax_distributions": {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()
                              if (d.metadata["Name"] or "").lower().startswith("jax")},
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS"),
        "found": {name: importlib.util.find_spec(name) is not None for name in optional}}  # found, not imported
try:
    import torch

    info["torch"] = {"version": torch.__version__, "cuda": torch.cuda.is_available()}
except ImportError as err:
    info["torch"] = f"not importable: {err}"
try:
    devices = jax.devices()
    info.update(backend=jax.default_backend(), devices=[str(d) for d in devices], platform=devices[0].platform,
                device_kind=devices[0].device_kind)
    print(f"jax {jax.__version__} on {info['backend']}: jax.devices() = {devices}; device_kind {info['device_kind']!r}")
    x = jnp.arange(4.0)  # float64 and bfloat16 both run on the device
    info["float64_ok"] = bool(x.dtype == jnp.float64 and float(jnp.dot(x, x)) == 14.0)
    info["bfloat16_ok"] = float(jnp.dot(x.astype(jnp.bfloat16), x.astype(jnp.bfloat16))) == 14.0
except Exception as err:  # no backend for JAX_PLATFORMS: say so, and keep what was found
    info["error"] = f"{type(err).__name__}: {err}"
    print(f"jax {jax.__version__}: no device for JAX_PLATFORMS={info['JAX_PLATFORMS']!r}: {info['error']} "
          f"(jax distributions found: {info['jax_distributions']})")
print(json.dumps(info, indent=2), flush=True)
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=2)
if "error" in info:
    sys.exit(1)
if info["backend"] == "cpu" and os.environ.get("JAX_PLATFORMS") != "cpu":
    sys.exit("gpu_check: JAX runs on the CPU, not a GPU (set JAX_PLATFORMS=cpu to check on the CPU on purpose).")
EOF

phase gradcheck_float64 "$LIMIT_GC64" "$PY" -m mdc_jax.cli gradcheck --dtype float64 --seeds "$SEEDS" ${RULE_ARGS[@]+"${RULE_ARGS[@]}"} \
    --json "$OUT/gradcheck_float64.json"
phase gradcheck_float32 "$LIMIT_GC32" "$PY" -m mdc_jax.cli gradcheck --dtype float32 --seeds 1 ${RULE_ARGS[@]+"${RULE_ARGS[@]}"} \
    --json "$OUT/gradcheck_float32.json"
for dtype in float32 bfloat16; do
    limit=$LIMIT_F32
    [ "$dtype" = bfloat16 ] && limit=$LIMIT_BF16
    phase "bench_$dtype" "$limit" "$PY" -m mdc_jax.cli bench --suite "$SUITE" --dtype "$dtype" --only "${ONLY[@]}" \
        --json "$OUT/bench_${SUITE}_$dtype.json"
done

(IFS=,; echo "[${PHASES[*]}]") > "$OUT/phases.json"
echo "=== gpu_check: $([ "$STATUS" -eq 0 ] && echo 'every phase passed' || echo 'a phase failed or timed out'); results in $OUT"
ls -l "$OUT"
exec 1>&3 2>&4 3>&- 4>&-  # tee reads to the end of the log before the script exits
wait "$TEE" 2> /dev/null
exit "$STATUS"
