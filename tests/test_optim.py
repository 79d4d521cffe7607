"""mdc_jax.optim: K-FAC against the explicit damped Kronecker inverse, Gauss–Newton CG against the Newton step.

Small shapes, host-side (NumPy) expectations and one compile per optimizer configuration (each jitted step is
reused across its cases): about 9 s of CPU in all, almost all of it XLA compiling 12 small programs.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from mdc_jax.curvature import fcnn_ggn_gram, fcnn_quantities
from mdc_jax.optim import GGNCGState, KFACState, ggn_cg, kfac
from mdc_jax.optim._kfac import DECAY, quadratic_coefficients

# --------------------------------------------------------------------------------------------
# K-FAC


@functools.cache
def softmax_problem():
    """A one-layer linear-softmax model (no hidden layer): its data ``X, Y``, params, and ``(params, key) ->
    fcnn_quantities(...)`` with the sampled KFAC factors, jitted."""
    rng = np.random.default_rng(0)
    X, Y = jnp.asarray(rng.normal(size=(16, 4))), jnp.asarray(np.eye(3)[rng.integers(0, 3, 16)])
    params = [(jnp.asarray(0.5 * rng.normal(size=(4, 3))), jnp.asarray(0.1 * rng.normal(size=3)))]
    quantities = jax.jit(lambda p, key: fcnn_quantities(p, X, Y, [], quantities=("kfac",), key=key, mc_samples=4))
    return X, Y, params, quantities


@functools.cache
def softmax_layer():
    """The linear-softmax model's params, the gradient and the sampled KFAC factors."""
    _, _, params, quantities = softmax_problem()
    out = quantities(params, jax.random.key(0))
    return params, out["grad"], out["kfac"]


def explicit_preconditioned(factors, grads, lam, inverse):
    """``P g`` for one layer ``((A, B), B_b)`` from dense matrices: ``(A ⊗ B + λI)⁻¹ vec(g_W)`` (eigen) or
    ``((A + π√λI) ⊗ (B + √λ/π I))⁻¹ vec(g_W)`` (factored), and ``(B_b + λI)⁻¹ g_b``."""
    (A, B), Bb = (np.asarray(f) for f in factors[0][0]), np.asarray(factors[0][1])
    gW, gb = (np.asarray(g) for g in grads[0])
    dA, dB = A.shape[0], B.shape[0]
    if inverse == "eigen":
        K = np.kron(A, B) + lam * np.eye(dA * dB)
    else:
        pi = np.sqrt((np.trace(A) / dA) / (np.trace(B) / dB))
        K = np.kron(A + pi * np.sqrt(lam) * np.eye(dA), B + np.sqrt(lam) / pi * np.eye(dB))
    return np.linalg.solve(K, gW.reshape(-1)).reshape(gW.shape), np.linalg.solve(Bb + lam * np.eye(dB), gb)


@pytest.mark.parametrize("inverse", ["eigen", "factored"])
def test_kfac_on_a_linear_softmax_layer_equals_the_explicit_damped_kronecker_inverse(inverse):
    params, grads, factors = softmax_layer()
    lam = 1e-2
    opt = kfac(0.5, damping=lam, inverse=inverse)
    updates, state = jax.jit(opt.update)(grads, opt.init(params), params, factors=factors)
    W, b = explicit_preconditioned(factors, grads, lam, inverse)
    np.testing.assert_allclose(updates[0][0], -0.5 * W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(updates[0][1], -0.5 * b, rtol=1e-9, atol=1e-12)
    assert isinstance(state, KFACState) and int(state.count) == 1
    chex.assert_trees_all_close(state.factors, factors, rtol=0)  # the first step takes them as they are


def random_layer(seed, d_in=3, d_out=2):
    """Random SPD factors ``((A, B), B_b)`` and a gradient for one layer ``[(W, b)]``."""
    rng = np.random.default_rng(seed)
    spd = lambda d: (lambda M: jnp.asarray(M @ M.T / d + 0.1 * np.eye(d)))(rng.normal(size=(d, d)))
    factors = [((spd(d_in), spd(d_out)), spd(d_out))]
    grads = [(jnp.asarray(rng.normal(size=(d_in, d_out))), jnp.asarray(rng.normal(size=d_out)))]
    return factors, grads


def test_kfac_averages_the_factors_and_recomputes_the_preconditioner_every_update_every_steps():
    lam, ema = 0.1, 0.5
    (F1, g1), (F2, g2), (F3, g3) = (random_layer(seed) for seed in (1, 2, 3))
    opt = kfac(1.0, damping=lam, ema=ema, update_every=2, inverse="eigen")
    step = jax.jit(opt.update)
    state = opt.init(g1)
    u1, state = step(g1, state, factors=F1)
    u2, state = step(g2, state, factors=F2)  # count 1: the averages move, P stays that of F1
    average = jax.tree.map(lambda a, b: ema * np.asarray(a) + (1 - ema) * np.asarray(b), F1, F2)
    chex.assert_trees_all_close(state.factors, average, rtol=1e-12)
    u3, state = step(g3, state, factors=F3)  # count 2: P from the new averages
    average = jax.tree.map(lambda a, b: ema * a + (1 - ema) * b, average, F3)
    for u, F, g in ((u1, F1, g1), (u2, F1, g2), (u3, average, g3)):
        expected = explicit_preconditioned(F, g, lam, "eigen")
        np.testing.assert_allclose(u[0][0], -expected[0], rtol=1e-9)
        np.testing.assert_allclose(u[0][1], -expected[1], rtol=1e-9)


@pytest.mark.parametrize("inverse", ["eigen", "factored"])
def test_kfac_momentum_and_schedules(inverse):
    """v = μv + Pg, Δθ = −η(t)v; the damping schedule's λ(t) at every step (eigen) or when P is formed (factored)."""
    F, g1 = random_layer(4)
    g2 = random_layer(5)[1]
    lr, damping, mu = optax.linear_schedule(1.0, 0.5, 4), optax.linear_schedule(0.1, 0.3, 2), 0.9
    opt = kfac(lr, damping=damping, momentum=mu, update_every=10, inverse=inverse)
    step = jax.jit(opt.update)
    state = opt.init(g1)
    _, state = step(g1, state, factors=F)
    u2, state = step(g2, state, factors=F)
    lam2 = 0.2 if inverse == "eigen" else 0.1  # λ(1); factored: the inverses formed at count 0, with λ(0)
    v = [mu * a + b for a, b in zip(explicit_preconditioned(F, g1, 0.1, inverse), explicit_preconditioned(F, g2, lam2, inverse))]
    np.testing.assert_allclose(u2[0][0], -lr(1) * v[0], rtol=1e-6)  # the schedules compute in float32
    np.testing.assert_allclose(u2[0][1], -lr(1) * v[1], rtol=1e-6)
    chex.assert_trees_all_close(state.velocity, [tuple(v)], rtol=1e-6)


def test_kfac_keeps_float32_state_and_compiles_once():
    F, g = random_layer(6)  # float64 factors (x64 is on) for float32 parameters: cast
    params = {"layer": tuple(np.asarray(x, np.float32) for x in g[0])}
    grads, factors = params, {"layer": F[0]}
    opt = kfac(1e-2, damping=1e-3, update_every=2, momentum=0.5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state):
        return opt.update(grads, state, params, factors=factors)

    state0 = state = opt.init(params)
    for _ in range(3):  # across a recomputation of P (count 2)
        updates, state = step(state)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
        chex.assert_trees_all_equal_shapes_and_dtypes(updates, params)
    assert int(state.count) == 3 and jax.tree.leaves(state.factors)[0].dtype == jnp.float32


def test_kfac_inside_optax_chain_sees_the_clipped_gradient():
    params, grads, factors = softmax_layer()
    big = jax.tree.map(lambda g: 100 * np.asarray(g), grads)
    chained = optax.chain(optax.clip_by_global_norm(1.0), kfac(0.1, damping=1e-2))
    updates, _ = jax.jit(chained.update)(big, chained.init(params), params, factors=factors)
    clipped = jax.tree.map(lambda g: g / np.linalg.norm(flat(big)), big)
    W, b = explicit_preconditioned(factors, clipped, 1e-2, "factored")
    chex.assert_trees_all_close(updates, [(-0.1 * W, -0.1 * b)], rtol=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    ({"damping": 0.0}, "damping must be a finite number > 0; got 0.0"),
    ({"damping": -1e-3}, "damping"),
    ({"ema": 1.0}, r"ema must be in \[0, 1\); got 1.0"),
    ({"ema": -0.1}, "ema"),
    ({"update_every": 0}, "update_every must be an int >= 1; got 0"),
    ({"momentum": -0.5}, "momentum"),
    ({"inverse": "cholesky"}, r"inverse must be one of \('factored', 'eigen'\); got 'cholesky'"),
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"adaptive": "yes"}, "adaptive must be a bool"),
    ({"adaptive": True, "adapt_every": 0}, "adapt_every must be an int >= 1; got 0"),
    ({"adaptive": True, "min_damping": 0.0}, "min_damping must be a finite number > 0; got 0.0"),
    ({"adaptive": True, "max_damping": 1e-9}, r"max_damping must be >= min_damping \(1e-08\); got 1e-09"),
    ({"adaptive": True, "damping": optax.constant_schedule(1.0)}, "damping must be a number with adaptive=True"),
])
def test_kfac_refuses_bad_options_by_name(kwargs, match):
    with pytest.raises(ValueError, match=f"kfac: {match}"):
        kfac(**kwargs)


def test_kfac_refuses_factors_that_do_not_match_their_parameters_by_path():
    params, grads, factors = softmax_layer()
    opt = kfac()
    state = opt.init(params)
    (A, B), Bb = factors[0]
    with pytest.raises(ValueError, match="update needs factors="):
        opt.update(grads, state, params)
    with pytest.raises(ValueError, match=r"factors\[0\]\[0\] \(A\) has shape \(3, 3\); expected \(4, 4\)"):
        opt.update(grads, state, params, factors=[((B, B), Bb)])
    with pytest.raises(ValueError, match=r"factors\[0\]\[1\] must be an array"):
        opt.update(grads, state, params, factors=[((A, B), (A, B))])
    with pytest.raises(ValueError, match=r"factors\[0\]\[0\] must be a pair \(A, B\)"):
        opt.update(grads, state, params, factors=[(A, Bb)])
    with pytest.raises(ValueError, match="factors must have the structure of params as a prefix"):
        opt.update(grads, state, params, factors=factors + factors)
    with pytest.raises(ValueError, match=r"params\['w'\] has shape \(2, 2, 2\); kfac preconditions weight matrices"):
        opt.init({"w": jnp.zeros((2, 2, 2))})


# --------------------------------------------------------------------------------------------
# Adaptive K-FAC (Martens & Grosse 2015, §6.5, §7): α, μ from the exact quadratic model, λ by Levenberg–Marquardt


def softmax_loss_and_ggn(params, X, Y):
    """On the host: the linear-softmax loss ``J = −(1/N) Σ yᵀ log softmax(xW + b)`` and its explicit GGN
    ``G = (1/N) Σ J_iᵀ(diag p_i − p_ipᵢᵀ)J_i``, ``J_i = [x_iᵀ ⊗ I, I]`` (row-major ``vec W``, then ``b``)."""
    (W, b), = params
    X, Y, W, b = (np.asarray(x) for x in (X, Y, W, b))
    O = X @ W + b
    logp = O - O.max(1, keepdims=True) - np.log(np.exp(O - O.max(1, keepdims=True)).sum(1, keepdims=True))
    P = np.exp(logp)
    Js = [np.concatenate([np.kron(x[None, :], np.eye(3)), np.eye(3)], axis=1) for x in X]
    G = sum(J.T @ (np.diag(p) - np.outer(p, p)) @ J for J, p in zip(Js, P)) / len(X)
    return -np.sum(logp * Y) / len(X), G


@functools.cache
def adaptive_softmax_run():
    """Three steps of adaptive K-FAC (ema 0, P formed at every step, λ adapted at counts 1 and 3) on the
    linear-softmax layer: per step, (params, grad, factors, loss, updates, state before, state after)."""
    X, Y, params, quantities = softmax_problem()
    opt = kfac(damping=0.05, ema=0.0, update_every=1, adaptive=True, adapt_every=2)
    loss = lambda p: -jnp.sum(jax.nn.log_softmax(X @ p[0][0] + p[0][1][None, :]) * Y) / X.shape[0]
    update = jax.jit(lambda g, s, p, factors, value: opt.update(
        g, s, p, factors=factors, ggn_gram=lambda V: fcnn_ggn_gram(p, X, Y, [], V), loss=loss, value=value))
    steps, state = [], opt.init(params)
    for t in range(3):
        out = quantities(params, jax.random.key(t))
        updates, new = update(out["grad"], state, params, out["kfac"], out["loss"])
        steps.append((params, out["grad"], out["kfac"], float(out["loss"]), updates, state, new))
        params, state = optax.apply_updates(params, updates), new
    return steps


def test_adaptive_kfac_takes_the_explicit_minimiser_of_the_damped_quadratic_model_on_delta_and_the_last_update():
    """δ = αΔ + μδ₀, (α, μ) = −Â⁻¹b with Â = [Δ, δ₀]ᵀ(G + λI)[Δ, δ₀], b = [Δ, δ₀]ᵀg: at the first step (δ₀ = 0)
    α alone; ρ and λ's move at the counts 1, 3 (adapt_every 2)."""
    X, Y, _, _ = softmax_problem()
    omega = DECAY**2
    for t, (params, grads, factors, loss, updates, before, after) in enumerate(adaptive_softmax_run()):
        J, G = softmax_loss_and_ggn(params, X, Y)
        lam = float(before.damping)
        Delta = -np.concatenate([np.ravel(x) for x in explicit_preconditioned(factors, grads, lam, "factored")])
        d0, g = flat(before.velocity), flat(grads)
        V = np.stack([Delta, d0], axis=1)
        A, b = V.T @ (G + lam * np.eye(15)) @ V, V.T @ g
        w = np.array([-b[0] / A[0, 0], 0.0]) if t == 0 else -np.linalg.solve(A, b)
        delta = V @ w
        np.testing.assert_allclose(flat(updates), delta, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose([after.alpha, after.mu], w, rtol=1e-8)
        chex.assert_trees_all_close(after.velocity, updates, rtol=0)  # δ₀ of the next step
        assert J == pytest.approx(loss, rel=1e-12)
        if t % 2 == 0:  # counts 0, 2: λ and ρ kept
            assert float(after.damping) == lam and (np.isnan(after.rho) if t == 0 else after.rho == before.rho)
            continue
        predicted = g @ delta + delta @ (G + lam * np.eye(15)) @ delta / 2
        rho = (softmax_loss_and_ggn(optax.apply_updates(params, updates), X, Y)[0] - loss) / predicted
        np.testing.assert_allclose(after.rho, rho, rtol=1e-7)
        expected = lam * omega if rho > 3 / 4 else lam / omega if rho < 1 / 4 else lam
        np.testing.assert_allclose(after.damping, expected, rtol=1e-12)
    assert after.mu != 0 and after.alpha > 0


def test_adaptive_kfac_levenberg_marquardt_rule_in_float32_inside_optax_chain_compiling_once():
    """On a quadratic J with Hessian H, the curvature handed over as cH makes the first (α-only) step's
    ρ = 2 − 1/c (λ ≈ 0): λ·ω above 3/4, λ/ω below 1/4 (and for a NaN loss), kept between; clamped to
    [min_damping, max_damping]. float32 parameters keep a float32 state of fixed shapes: one compile."""
    params64, loss64, grads64, H, _, _ = least_squares()
    f32 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float32), tree)
    f64 = lambda tree: jax.tree.map(lambda x: x.astype(jnp.float64), tree)
    params, grads, loss = f32(params64), f32(grads64), lambda p: loss64(f64(p)).astype(jnp.float32)
    factors = f32({"W": (jnp.eye(3), jnp.eye(2)), "b": jnp.eye(2)})
    opt = optax.chain(optax.clip_by_global_norm(100.0),  # far above ‖g‖: the gradient as it is
                      kfac(damping=1e-7, adaptive=True, adapt_every=1, min_damping=1e-8, max_damping=1.05e-7))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, c, shift):
        ggn_gram = lambda V: c * gram_of(H, f64(V)).astype(jnp.float32)
        updates, state = opt.update(grads, state, params, factors=factors, ggn_gram=ggn_gram,
                                    loss=lambda p: loss(p) + shift)
        return optax.apply_updates(params, updates), state

    state0 = opt.init(params)
    for c, shift, lam in ((1.0, 0.0, 1e-7 * DECAY), (0.7, 0.0, 1e-7), (0.5, 0.0, 1.05e-7), (0.3, 0.0, 1.05e-7),
                          (1.0, np.nan, 1.05e-7)):
        _, state = step(params, state0, c, shift)
        kstate = state[1]
        if np.isnan(shift):
            assert np.isnan(kstate.rho)
        else:
            np.testing.assert_allclose(kstate.rho, 2 - 1 / c, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(kstate.damping, lam, rtol=1e-6)  # 1e-7/ω clamped at max_damping
        assert float(kstate.mu) == 0.0 and float(kstate.alpha) > 0
    _, state = step(params, (state0[0], state0[1]._replace(damping=jnp.float32(1.02e-8))), 1.0, 0.0)
    np.testing.assert_allclose(state[1].damping, 1e-8, rtol=1e-6)  # ω·1.02e-8 clamped at min_damping
    state = state0
    for _ in range(3):  # three steps of one gradient (the shapes matter here)
        params, state = step(params, state, 1.0, 0.0)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
    assert state[1].damping.dtype == jnp.float32 and int(state[1].count) == 3
    assert float(state[1].mu) == 0 and float(state[1].alpha) > 0  # δ₀ ∥ Δ (one g, P ∝ I): Δ alone


def test_adaptive_kfac_falls_back_to_delta_alone_then_to_no_move_on_a_singular_system():
    solve = jax.jit(quadratic_coefficients)
    A, b = np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([-1.0, 0.5])
    np.testing.assert_allclose(solve(A, b), -np.linalg.solve(A, b))
    for A in ([[2.0, 4.0], [4.0, 8.0]], [[2.0, 0.0], [0.0, 0.0]], [[2.0, 3.0], [3.0, 1.0]], [[2.0, np.nan], [np.nan, 1.0]]):
        np.testing.assert_allclose(solve(np.asarray(A), b), [0.5, 0.0])  # δ₀ ∥ Δ, δ₀ = 0, indefinite, not finite
    np.testing.assert_array_equal(solve(np.zeros((2, 2)), b), [0.0, 0.0])


def test_adaptive_kfac_update_names_what_it_is_missing():
    params, loss, grads, H, hvp, _ = least_squares()
    factors = {"W": (jnp.eye(3), jnp.eye(2)), "b": jnp.eye(2)}
    gram = functools.partial(gram_of, H)
    opt = kfac(adaptive=True)
    state = opt.init(params)
    for kwargs, name in (({"loss": loss}, "ggn_gram"), ({"ggn_gram": gram}, "loss")):
        with pytest.raises(ValueError, match=f"kfac: update needs {name}=.* with adaptive=True; got None"):
            opt.update(grads, state, params, factors=factors, **kwargs)
    with pytest.raises(ValueError, match=r"kfac: update needs ggn_gram=.* with adaptive=True \(not ggn_vp: "):
        opt.update(grads, state, params, factors=factors, ggn_vp=hvp, loss=loss)
    with pytest.raises(ValueError, match="kfac: update needs params="):
        opt.update(grads, state, factors=factors, ggn_gram=gram, loss=loss)
    with pytest.raises(ValueError, match=r"kfac: ggn_gram\(tangents\) has shape \(\); expected \(2, 2\)"):
        jax.eval_shape(lambda: opt.update(grads, state, params, factors=factors, ggn_gram=lambda V: jnp.sum(gram(V)),
                                          loss=loss))  # traced, not run: the check is on shapes


# --------------------------------------------------------------------------------------------
# Gauss–Newton CG on linear least squares: J(θ) = ‖X W + 1bᵀ − Y‖² / (2N), whose GGN is its Hessian


def flat(tree) -> np.ndarray:
    """A pytree's leaves raveled and concatenated on the host, in ``ravel_pytree``'s order."""
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


@functools.cache
def least_squares():
    """params, the loss, its gradient, its explicit Hessian H (in ``ravel_pytree``'s order: vec(W) row-major,
    then b), ``v -> H v`` and the least-squares solution (where one Newton step lands)."""
    rng = np.random.default_rng(7)
    X, Y, W = rng.normal(size=(20, 3)), rng.normal(size=(20, 2)), rng.normal(size=(3, 2))
    params = {"W": jnp.asarray(W), "b": jnp.zeros(2)}
    loss = lambda p: jnp.sum((jnp.asarray(X) @ p["W"] + p["b"][None, :] - jnp.asarray(Y)) ** 2) / (2 * X.shape[0])
    X1 = np.concatenate([X, np.ones((20, 1))], axis=1)  # [W; bᵀ] is Θ: ravel_pytree's order is vec(Θ), row-major
    grads = X1.T @ (X1 @ np.concatenate([W, np.zeros((1, 2))]) - Y) / X.shape[0]
    H = np.kron(X1.T @ X1 / X.shape[0], np.eye(2))
    unravel = ravel_pytree(params)[1]
    hvp = lambda v: unravel(jnp.asarray(H) @ ravel_pytree(v)[0])
    solution = np.linalg.lstsq(X1, Y, rcond=None)[0]
    return params, loss, unravel(jnp.asarray(grads.reshape(-1))), H, hvp, {"W": solution[:3], "b": solution[3]}


def gram_of(H, V) -> jax.Array:
    """``[v_aᵀ H v_b]`` for tangents ``V`` stacked on a leading axis, from the explicit ``H``."""
    M = jax.vmap(lambda t: ravel_pytree(t)[0])(V)
    return M @ jnp.asarray(H) @ M.T


def test_ggn_cg_takes_the_newton_step_on_a_strictly_convex_quadratic():
    params, loss, grads, H, hvp, solution = least_squares()
    opt = ggn_cg(1.0, damping=1e-10, min_damping=1e-12, cg_iters=20, cg_tol=1e-12, adapt_damping=False)
    update = jax.jit(lambda g, s, p: opt.update(g, s, p, ggn_vp=hvp, loss=loss, value=loss(p)))
    updates, state = update(grads, opt.init(params), params)
    newton = -np.linalg.solve(H, flat(grads))
    np.testing.assert_allclose(flat(updates), newton, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(flat(params) + flat(updates), flat(solution), rtol=1e-8, atol=1e-10)
    assert isinstance(state, GGNCGState)
    assert 1 <= int(state.cg_steps) <= 8 and float(state.step_size) == 1.0 and float(state.damping) == 1e-10
    np.testing.assert_allclose(state.rho, 1.0, rtol=1e-6)  # the quadratic model is the loss
    chex.assert_trees_all_close(state.direction, updates)


def test_ggn_cg_levenberg_marquardt_rule_and_line_search():
    """With the curvature scaled by c the step is p = −(cH)⁻¹g: ρ = 2 − 1/c, and the loss rises along p
    for c < 1/2; the line search takes the first α ∈ {1, 0.8, ...} with J(θ+αp) ≤ J(θ) + 10⁻²αgᵀp (α ≤ 2c·0.99)."""
    params, loss, grads, H, hvp, _ = least_squares()
    opt = ggn_cg(1.0, damping=1e-8, min_damping=1e-9, cg_iters=20, cg_tol=1e-12)

    @jax.jit
    def step(state, c):
        return opt.update(grads, state, params, ggn_vp=lambda v: jax.tree.map(lambda x: c * x, hvp(v)), loss=loss)

    state0 = opt.init(params)
    for c, factor, alpha in ((1.0, 2 / 3, 1.0), (0.7, 1.0, 1.0), (0.5, 3 / 2, 0.8), (0.3, 3 / 2, 0.8**3), (0.1, 3 / 2, 0.0)):
        updates, state = step(state0, c)
        np.testing.assert_allclose(state.rho, 2 - 1 / c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.damping, 1e-8 * factor, rtol=1e-12)
        np.testing.assert_allclose(state.step_size, alpha, rtol=1e-12)
        np.testing.assert_allclose(flat(updates), alpha * flat(state.direction), rtol=1e-12)
    d = flat(state.direction)  # c = 0.1: the full step raises the loss (a quadratic: by gᵀp + ½pᵀHp)
    assert flat(grads) @ d + d @ H @ d / 2 > 0
    _, state = step(state0._replace(damping=jnp.asarray(1.2e-9)), 1.0)
    np.testing.assert_allclose(state.damping, 1e-9, rtol=1e-12)  # 2/3 · 1.2e-9 clamped at min_damping


def test_ggn_cg_starts_cg_from_the_previous_direction():
    """warm_start = 1 from the solution: no CG step is needed; from zero one CG step does not reach it."""
    params, loss, grads, H, hvp, _ = least_squares()
    opt = ggn_cg(1.0, damping=1e-3, cg_iters=1, cg_tol=1e-6, warm_start=1.0, adapt_damping=False)
    step = jax.jit(lambda g, s, p: opt.update(g, s, p, ggn_vp=hvp, loss=loss))
    solution = -np.linalg.solve(H + 1e-3 * np.eye(8), flat(grads))
    unravel = ravel_pytree(params)[1]
    for start, steps, reached in ((solution, 0, True), (np.zeros(8), 1, False)):
        _, state = step(grads, opt.init(params)._replace(direction=unravel(jnp.asarray(start))), params)
        assert int(state.cg_steps) == steps
        assert np.allclose(flat(state.direction), solution, rtol=1e-8) == reached


def test_ggn_cg_structural_damping_and_the_full_step_without_line_search():
    """With μ > 0 the system is (G + λμS + λI)p = −g (here S = I); without the line search α = 1."""
    params, loss, grads, H, hvp, _ = least_squares()
    ggn_vp = lambda v, structural=0.0: jax.tree.map(lambda a, b: a + structural * b, hvp(v), v)
    opt = ggn_cg(0.5, damping=0.1, structural_damping=0.5, cg_tol=1e-12, adapt_damping=False, line_search=False)
    updates, state = jax.jit(lambda g, s, p: opt.update(g, s, p, ggn_vp=ggn_vp, loss=loss))(grads, opt.init(params), params)
    expected = -np.linalg.solve(H + 0.1 * 1.5 * np.eye(8), flat(grads))
    np.testing.assert_allclose(flat(state.direction), expected, rtol=1e-8)
    assert float(state.step_size) == 1.0
    np.testing.assert_allclose(flat(updates), 0.5 * expected, rtol=1e-8)


def test_ggn_cg_keeps_float32_state_and_compiles_once_inside_optax_chain():
    params64, loss64, _, _, hvp64, _ = least_squares()
    params = jax.tree.map(lambda x: x.astype(jnp.float32), params64)
    loss = lambda p: loss64(jax.tree.map(lambda x: x.astype(jnp.float64), p)).astype(jnp.float32)
    hvp = lambda v: jax.tree.map(lambda x: x.astype(jnp.float32), hvp64(jax.tree.map(lambda x: x.astype(jnp.float64), v)))
    opt = optax.chain(optax.clip_by_global_norm(1.0), ggn_cg(1.0, damping=1e-2, cg_iters=5))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        grads = jax.tree.map(lambda x: (2 * x).astype(jnp.float32), params)  # any gradient: the shapes matter here
        updates, state = opt.update(grads, state, params, ggn_vp=hvp, loss=loss)
        return optax.apply_updates(params, updates), state

    state0 = state = opt.init(params)
    for _ in range(3):
        params, state = step(params, state)
        chex.assert_trees_all_equal_shapes_and_dtypes(state, state0)
    assert state[1].damping.dtype == jnp.float32 and int(state[1].count) == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"damping": 0.0}, "damping must be a finite number > 0; got 0.0"),
    ({"cg_iters": 0}, "cg_iters must be an int >= 1; got 0"),
    ({"cg_tol": -1e-4}, "cg_tol must be a finite number >= 0"),
    ({"warm_start": 1.5}, r"warm_start must be in \[0, 1\]; got 1.5"),
    ({"structural_damping": -0.1}, "structural_damping"),
    ({"min_damping": 0.0}, "min_damping must be a finite number > 0"),
    ({"adapt_damping": "yes"}, "adapt_damping must be a bool"),
    ({"learning_rate": -1.0}, "learning_rate"),
])
def test_ggn_cg_refuses_bad_options_by_name(kwargs, match):
    with pytest.raises(ValueError, match=f"ggn_cg: {match}"):
        ggn_cg(**kwargs)


def test_ggn_cg_update_names_what_it_is_missing():
    params, loss, grads, _, hvp, _ = least_squares()
    opt = ggn_cg()
    state = opt.init(params)
    for kwargs, name in (({"loss": loss}, "ggn_vp"), ({"ggn_vp": hvp}, "loss")):
        with pytest.raises(ValueError, match=f"ggn_cg: update needs {name}="):
            opt.update(grads, state, params, **kwargs)
    with pytest.raises(ValueError, match="ggn_cg: update needs params="):
        opt.update(grads, state, ggn_vp=hvp, loss=loss)
