"""The main job: an FCNN classifier on scikit-learn's digits, trained with the closed-form gradient.

Steps: (1) check the closed-form gradient against ``jax.grad`` of the reference on a real batch, in
float64; (2) train in float32 with optax Adam; (3) report held-out accuracy; (4) time one gradient
evaluation, closed form vs autodiff, interleaved (ratio of medians).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mdc_jax.bench._timing import interleaved_medians

from .data import load_classification
from .mlp import accuracy, classification_loss, init_mlp


def _max_rel_err(a, b) -> float:
    errs = [float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) or 1.0))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return max(errs)


def run_digits_demo(hidden: tuple[int, ...] = (128, 64), activation: str = "tanh", steps: int = 1500,
                    batch_size: int = 128, learning_rate: float = 3e-3, l2: float = 1e-4, seed: int = 0,
                    log: Callable[[str], None] = print) -> dict:
    """Runs the demo and returns its figures (accuracy, gradient check error, timings)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("run_digits_demo needs jax_enable_x64 for its float64 gradient check; "
                           "enable it at process start (the `mdc-jax demo` command does).")
    data = load_classification("digits", seed=seed)
    k = data.num_classes
    acts = [activation] * len(hidden)
    dims = [data.X_train.shape[1], *hidden, k]
    log(f"digits: {len(data.X_train)} train / {len(data.X_test)} test samples, network {'-'.join(map(str, dims))} "
        f"({activation}), softmax cross-entropy, l2={l2}")

    key = jax.random.PRNGKey(seed)
    params = init_mlp(key, dims, jnp.float32)
    X_train = jnp.asarray(data.X_train, jnp.float32)
    Y_train = jax.nn.one_hot(data.y_train, k, dtype=jnp.float32)

    # (1) Closed form vs autodiff on a real batch, float64.
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    X64, Y64 = X_train[:256].astype(jnp.float64), Y_train[:256].astype(jnp.float64)
    grads = {g: jax.jit(jax.grad(classification_loss, argnums=(0, 1)), static_argnums=(3, 5))(
        p64, X64, Y64, tuple(acts), l2, g) for g in ("closed", "autodiff")}
    err = _max_rel_err(grads["closed"], grads["autodiff"])
    log(f"gradient check (float64, batch of 256): max relative error closed vs jax.grad = {err:.2e} "
        f"[{'ok' if err <= 1e-10 else 'FAIL'}]")

    # (2) Train with the closed-form gradient.
    opt = optax.adam(learning_rate)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, X, Y):
        loss, g = jax.value_and_grad(classification_loss)(params, X, Y, acts, l2, "closed")
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    n = len(X_train)
    t0 = time.perf_counter()
    perm, pos = rng.permutation(n), 0
    for i in range(1, steps + 1):
        if pos + batch_size > n:
            perm, pos = rng.permutation(n), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        params, opt_state, loss = step(params, opt_state, X_train[idx], Y_train[idx])
        if i % 250 == 0 or i == steps:
            log(f"step {i:5d}  loss {float(loss):.4f}")
    train_s = time.perf_counter() - t0

    # (3) Held-out accuracy.
    test_acc = float(accuracy(params, jnp.asarray(data.X_test, jnp.float32), jnp.asarray(data.y_test), acts))
    log(f"test accuracy: {100 * test_acc:.2f}%  (training: {steps} steps in {train_s:.1f} s)")

    # (4) One gradient evaluation, closed form vs autodiff, interleaved.
    Xb, Yb = X_train[:batch_size], Y_train[:batch_size]
    fns = {}
    for g in ("closed", "autodiff"):
        f = jax.jit(jax.grad(lambda p, X, Y, g=g: classification_loss(p, X, Y, acts, l2, g)))
        fns[g] = (lambda f=f: f(params, Xb, Yb))
    ms = interleaved_medians(fns, rounds=200)
    log(f"time per gradient (batch {batch_size}, median of interleaved runs): closed {1e3 * ms['closed']:.1f} µs, "
        f"autodiff {1e3 * ms['autodiff']:.1f} µs, ratio {ms['closed'] / ms['autodiff']:.2f}")
    return {"test_accuracy": test_acc, "grad_check_max_rel_err": err, "closed_ms": ms["closed"],
            "autodiff_ms": ms["autodiff"], "train_seconds": train_s}
