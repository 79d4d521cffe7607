"""Specification of seed 000's Part I (bracket notation, §2–§5) against jnp.einsum and autodiff."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mdc_jax
import mdc_jax.bracket as bk
from mdc_jax import activations, cli
from mdc_jax.reference import bracket as ref
from mdc_jax.rules import bracket as rules
from mdc_jax.rules.bracket import application, engine
from mdc_jax.testing import count_traces

from .helpers import F64_RTOL, assert_close

DOC = Path(__file__).resolve().parents[1] / "docs" / "bracket.md"
seeds = st.integers(0, 2**31 - 1)


def _outer_grad(x, y):
    """Eq. 36: ∂(xxᵀ)_ij/∂x_p = δ_ip x_j + x_i δ_jp, laid out p i j (eq. 28)."""
    I = jnp.eye(x.shape[0], dtype=x.dtype)
    return I[:, :, None] * x[None, None, :] + x[None, :, None] * I[:, None, :]


outer = bk.Function(lambda x: jnp.outer(x, x), _outer_grad, "outer", rank=1)

# name: (rule, reference, shapes in terms of the sizes n, m, r). Each reference is plain jnp.einsum.
CASES = {
    "otimes": (bk.otimes, ref.otimes, lambda n, m, r: [(n, m), (r,)]),
    "otimes_scalar": (bk.otimes, ref.otimes, lambda n, m, r: [(), (n, m)]),
    "odot_eq4": (lambda A, B: bk.odot(A, B, (1, 2), (3, 2)), lambda A, B: ref.odot(A, B, (1, 2), (3, 2)),
                 lambda n, m, r: [(n, m, r), (r, m, n)]),
    "odot_barred": (lambda A, B: bk.odot(A, B, "~12", "32"), lambda A, B: ref.odot(A, B, (1, 2), (3, 2), (1,)),
                    lambda n, m, r: [(n, m, r), (r, m, n)]),
    "odot_bar_on_the_right": (lambda N, dA: bk.odot(N, dA, "12", "1~2"), lambda N, dA: ref.odot(N, dA, (1, 2), (1, 2), (2,)),
                              lambda n, m, r: [(n, m, m), (n, m)]),
    "odot_hadamard": (bk.odot, lambda A, B: A * B, lambda n, m, r: [(n, m, r), (n, m, r)]),
    "odot_no_positions": (lambda A, B: bk.odot(A, B, (), ()), ref.otimes, lambda n, m, r: [(n,), (m, r)]),
    "dot_matmul": (lambda A, B: bk.dot(A, B, (2,), (1,)), lambda A, B: A @ B, lambda n, m, r: [(n, m), (m, r)]),
    "dot_full": (bk.dot, lambda A, B: jnp.sum(A * B), lambda n, m, r: [(n, m), (n, m)]),
    "odot_k": (lambda A, B: bk.odot_k(A, B, 2), lambda A, B: ref.odot_k(A, B, 2), lambda n, m, r: [(n, m, r), (m, r, n)]),
    "dot_k": (lambda A, B: bk.dot_k(A, B, 2), lambda A, B: ref.dot_k(A, B, 2), lambda n, m, r: [(n, m, r), (m, r, n)]),
    "dot_k0": (lambda A, B: bk.dot_k(A, B, 0), ref.otimes, lambda n, m, r: [(n,), (r, m)]),
    "permute": (lambda A: bk.permute(A, (3, 1, 2)), lambda A: ref.permute(A, (3, 1, 2)), lambda n, m, r: [(n, m, r)]),
    "permute_group": (lambda A: bk.permute(A, "1[23]"), lambda A: ref.permute(A, (1, (2, 3))), lambda n, m, r: [(n, m, m)]),
    "permute_group_barred": (lambda A: bk.permute(A, "~3[24]1"), lambda A: ref.permute(A, (3, (2, 4), 1), (3,)),
                             lambda n, m, r: [(n, m, r, m)]),
    "bracket_eq1": (lambda A, B: bk.bracket("(A_ij B_jm | im)", A=A, B=B), lambda A, B: A @ B,
                    lambda n, m, r: [(n, m), (m, r)]),
    "bracket_eq4": (lambda A, B: bk.bracket("(A_ijk B_lji | ijkl)", A=A, B=B),
                    lambda A, B: ref.bracket("(A_ijk B_lji | ijkl)", A=A, B=B), lambda n, m, r: [(n, m, r), (r, m, n)]),
    "bracket_diagonal_three_way": (lambda A, B, C: bk.bracket("(A_ii B_ij C_ij | j)", A=A, B=B, C=C),
                                   lambda A, B, C: ref.bracket("(A_ii B_ij C_ij | j)", A=A, B=B, C=C),
                                   lambda n, m, r: [(n, n), (n, m), (n, m)]),
    "bracket_one_tensor_twice": (lambda X: bk.bracket("(X_ij X_kj | ik)", X=X), lambda X: X @ X.T,
                                 lambda n, m, r: [(n, m)]),
    "bracket_scalar_factor": (lambda c, A: bk.bracket("(c A_ij | ji)", c=c, A=A), lambda c, A: c * A.T,
                              lambda n, m, r: [(), (n, m)]),
    "bracket_sum": (lambda X: bk.bracket("(X_ij | ij) + (X_ji | ij)", X=X), lambda X: X + X.T, lambda n, m, r: [(n, n)]),
    "apply_softmax_rows": (lambda A: bk.apply(bk.softmax, A, (1,)), lambda A: jax.nn.softmax(A, axis=1),
                           lambda n, m, r: [(n, m)]),
    "apply_softmax_columns": (lambda A: bk.apply(bk.softmax, A, (2,)), lambda A: jax.nn.softmax(A, axis=0).T,
                              lambda n, m, r: [(n, m)]),
    "apply_softmax_rank3": (lambda T: bk.apply(bk.softmax, T, "31"), lambda T: ref.apply(ref.softmax, T, (3, 1)),
                            lambda n, m, r: [(n, m, r)]),
    "apply_softmax_whole": (lambda x: bk.apply(bk.softmax, x, ()), ref.softmax, lambda n, m, r: [(m,)]),
    "apply_tanh": (lambda T: bk.apply(bk.tanh, T, (2,)), lambda T: ref.apply(jnp.tanh, T, (2,)),
                   lambda n, m, r: [(n, m, r)]),
    "apply_exp_all": (lambda T: bk.apply(bk.exp, T, (3, 1, 2)), lambda T: jnp.transpose(jnp.exp(T), (2, 0, 1)),
                      lambda n, m, r: [(n, m, r)]),
    "apply_user_outer": (lambda T: bk.apply(outer, T, (2, 3)), lambda T: ref.apply(lambda x: jnp.outer(x, x), T, (2, 3)),
                         lambda n, m, r: [(n, m, r)]),
}


OPERATORS = tuple(name for name in CASES if not name.startswith(("bracket", "apply")))
TERMS_AND_FUNCTIONS = tuple(name for name in CASES if name.startswith(("bracket", "apply")))
SIZES = pytest.mark.parametrize("sizes", [(2, 3, 4), (0, 1, 2)])  # and degenerate: empty tensors, fused sizes of 1


@functools.cache
def _compiled(names: tuple[str, ...]):
    """One jit: the value and VJP (all arguments) of every case in ``names``, rule and reference."""

    def run(args, cotangents):
        out = {}
        for name in names:
            rule, reference, _ = CASES[name]
            vjp = lambda f: (lambda y, pull: (y, pull(cotangents[name])))(*jax.vjp(f, *args[name]))
            out[name] = (vjp(rule), vjp(reference))
        return out

    return jax.jit(run)


def _check_cases(names, sizes, seed):
    rng = np.random.default_rng(seed)
    args = {name: tuple(jnp.asarray(rng.uniform(-1.5, 1.5, s)) for s in CASES[name][2](*sizes)) for name in names}
    cotangents = {name: jnp.asarray(rng.uniform(-1, 1, jax.eval_shape(CASES[name][1], *args[name]).shape))
                  for name in names}
    for name, ((value, cts), (ref_value, ref_cts)) in _compiled(names)(args, cotangents).items():
        assert value.shape == ref_value.shape, name
        assert_close(value, ref_value, F64_RTOL, f"{name} value")
        assert_close(cts, ref_cts, F64_RTOL, f"{name} cotangents")


@SIZES
@given(seeds)
@settings(max_examples=4)
def test_every_operator_value_and_vjp_match_jnp_einsum_autodiff_float64(sizes, seed):
    _check_cases(OPERATORS, sizes, seed)


@SIZES
@given(seeds)
@settings(max_examples=4)
def test_bracket_and_apply_value_and_vjp_match_jnp_einsum_autodiff_float64(sizes, seed):
    _check_cases(TERMS_AND_FUNCTIONS, sizes, seed)


def test_operators_are_custom_vjp_rules_whose_backward_runs(monkeypatch):
    """Every public function is a custom_vjp call, and jax.grad runs its closed-form backward."""
    calls = []
    for core in (engine.contract, application.apply_rule):  # watched before tracing: a trace keeps the backward it saw
        monkeypatch.setattr(core, "bwd", lambda *a, original=core.bwd: calls.append(1) or original(*a))
    A, B = jnp.ones((7, 5)), jnp.ones((5, 7))  # shapes no other test uses, so nothing is cached yet
    for loss, args in [(lambda A, B: bk.odot(A, B, (2,), (1,)), (A, B)), (lambda A: bk.permute(A, "[~12]"), (A[:5],)),
                       (lambda A, B: bk.bracket("(A_ij B_jk | ik)", A=A, B=B), (A, B)),
                       (lambda A: bk.apply(bk.softmax, A, (1,)), (A,))]:
        assert "custom_vjp_call" in str(jax.make_jaxpr(loss)(*args))
        calls.clear()
        jax.make_jaxpr(jax.grad(lambda *a, loss=loss: jnp.sum(loss(*a))))(*args)
        assert calls, "jax.grad did not call the closed-form backward"


def test_the_rules_never_call_autodiff():
    modules = [importlib.import_module(f"{rules.__name__}.{m.name}") for m in pkgutil.iter_modules(rules.__path__)]
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} >= {"expr", "engine", "operators", "positions", "application"}
    source = "\n".join(inspect.getsource(m) for m in [rules, *modules])
    for call in ("vjp", "grad", "jacrev", "jacfwd", "linearize", "jvp", "hessian", "value_and_grad"):
        assert not re.search(rf"\b{call}\(", source), call


# ---------------------------------------------------------------------------------------------
# §2: the operators' definitions and their algebra


def _rand(rng, *shape):
    return jnp.asarray(rng.uniform(-1, 1, shape))


def test_eq_4_5_and_8_9_the_two_orders_differ_by_a_permutation():
    rng = np.random.default_rng(0)
    A, B = _rand(rng, 2, 3, 4), _rand(rng, 4, 3, 2)
    run = jax.jit(lambda A, B: (bk.odot(A, B, (1, 2), (3, 2)), bk.odot(B, A, (3, 2), (1, 2))))
    AB, BA = run(A, B)
    np.testing.assert_allclose(AB, np.einsum("ijk,lji->ijkl", A, B), rtol=1e-14)  # eq. 4
    np.testing.assert_allclose(BA, np.einsum("lji,ijk->ljik", B, A), rtol=1e-14)  # eq. 5
    # eq. 8–9: A's dimensions in increasing order, then B's free ones: [A_1B_3][A_2B_2]A_3B_1 vs B_1[B_2A_2][B_3A_1]A_3
    assert AB.shape == (2, 3, 4, 4) and BA.shape == (4, 3, 2, 4)
    np.testing.assert_allclose(BA, np.transpose(AB, (3, 1, 0, 2)), rtol=1e-14)
    np.testing.assert_allclose(BA, bk.permute(AB, (4, 2, 1, 3)), rtol=1e-14)  # (· | ijkl) ↦ (· | ljik), eq. 6


def test_eq_6_permutation_and_square_brackets_follow_the_seed():
    rng = np.random.default_rng(1)
    A = _rand(rng, 2, 3, 4)
    np.testing.assert_array_equal(bk.permute(A, (3, 1, 2)), np.transpose(A, (2, 0, 1)))  # result dim t = A's dim p_t
    D = _rand(rng, 2, 3, 4, 3, 2, 2, 3)  # A_{1[247]3[56]} = (A_{i k j k h h k} | i k j h); bars drop i and h
    np.testing.assert_allclose(bk.permute(D, "1[247]3[56]"), np.einsum("ikjkhhk->ikjh", D), rtol=1e-14)
    np.testing.assert_allclose(bk.permute(D, "~1[247]3[5~6]"), np.einsum("ikjkhhk->kj", D), rtol=1e-14)
    np.testing.assert_allclose(bk.permute(D, (1, (2, 4, 7), 3, (5, 6)), bar=(1, 5)), np.einsum("ikjkhhk->kj", D),
                               rtol=1e-14)


def test_section_2_4_associativity_counterexamples():
    rng = np.random.default_rng(2)
    A, B, C = _rand(rng, 3, 3), _rand(rng, 3, 3), _rand(rng, 3, 3)
    d = lambda X, Y: bk.dot(X, Y, (1,), (1,))
    o = lambda X, Y, p: bk.odot(X, Y, (p,), (1,))
    left, right = d(d(A, B), C), d(A, d(B, C))
    np.testing.assert_allclose(left, np.einsum("ij,ik,jl->kl", A, B, C), rtol=1e-13)  # [Ā_1B_1][Ā_2C_1]B_2C_2
    np.testing.assert_allclose(right, np.einsum("ij,mi,ml->jl", A, B, C), rtol=1e-13)  # [B̄_1C_1][Ā_1B_2]A_2C_2
    assert not np.allclose(left, right)
    np.testing.assert_allclose(o(o(A, B, 1), C, 1), o(A, o(B, C, 1), 1), rtol=1e-14)  # [A_1B_1C_1]A_2B_2C_2
    left, right = o(o(A, B, 2), C, 1), o(A, o(B, C, 1), 2)
    np.testing.assert_allclose(left, np.einsum("ij,jk,il->ijkl", A, B, C), rtol=1e-14)  # [A_1C_1][A_2B_1]B_2C_2
    np.testing.assert_allclose(right, np.einsum("ij,jk,jl->ijkl", A, B, C), rtol=1e-14)  # A_1[A_2B_1C_1]B_2C_2
    assert not np.allclose(left, right)


def test_section_2_5_conditions_hold_where_stated_and_fail_where_violated():
    rng = np.random.default_rng(3)
    A, B3, C = _rand(rng, 2, 3), _rand(rng, 3, 4, 2), _rand(rng, 4, 2, 5)
    close = lambda x, y: x.shape == y.shape and np.allclose(x, y, rtol=1e-13)
    # max(k, h) ≤ dim(B) ⟹ (A ⊙_k B) ⊙_h C = A ⊙_k (B ⊙_h C)
    assert close(bk.odot_k(bk.odot_k(A, B3, 1), C, 2), bk.odot_k(A, bk.odot_k(B3, C, 2), 1))
    # k + h ≤ dim(B) ⟹ (A ·_k B) ·_h C = A ·_k (B ·_h C), and the two mixed forms
    assert close(bk.dot_k(bk.dot_k(A, B3, 1), C, 2), bk.dot_k(A, bk.dot_k(B3, C, 2), 1))
    assert close(bk.odot_k(bk.dot_k(A, B3, 1), C, 2), bk.dot_k(A, bk.odot_k(B3, C, 2), 1))
    assert close(bk.dot_k(bk.odot_k(A, B3, 1), C, 2), bk.odot_k(A, bk.dot_k(B3, C, 2), 1))
    # Violated: k + h = 2 > dim(b) = 1. Both sides exist, and differ: (Ab)ᵀC ≠ A(Cᵀb)
    M, b, N = _rand(rng, 3, 3), _rand(rng, 3), _rand(rng, 3, 3)
    assert not close(bk.dot_k(bk.dot_k(M, b, 1), N, 1), bk.dot_k(M, bk.dot_k(b, N, 1), 1))
    assert not close(bk.odot_k(bk.dot_k(M, b, 1), N, 1), bk.dot_k(M, bk.odot_k(b, N, 1), 1))
    # Violated: max(k, h) = 2 > dim(b) = 1: the left side exists, the right one does not make sense
    assert bk.odot_k(bk.odot_k(M, b, 1), N, 2).shape == (3, 3)
    with pytest.raises(ValueError, match=r"odot_k: k=2 does not fit"):
        bk.odot_k(b, N, 2)
    # §2.5's closing identities: U ⊙_d V = U ⊙ V = V ⊙ U, U ·_d V = U · V
    U, V = _rand(rng, 2, 3), _rand(rng, 2, 3)
    assert close(bk.odot_k(U, V, 2), bk.odot(V, U)) and close(bk.dot_k(U, V, 2), bk.dot(U, V))


def test_eq_13_14_the_layouts_of_the_generalized_jacobian_and_gradient():
    rng = np.random.default_rng(4)
    M13, M14, x = _rand(rng, 2, 3, 4, 5, 6), _rand(rng, 5, 6, 2, 3, 4), _rand(rng, 4, 5, 6)
    f13 = lambda x: bk.dot(M13, x, (3, 4, 5), (1, 2, 3))  # df = M^{345·123} dx = M ·_3 dx
    f14 = lambda x: bk.dot(M14, x, (5, 1, 2), (1, 2, 3))  # df = M^{512·123} dx
    J13, J14 = jax.jit(lambda x: (jax.jacrev(f13)(x), jax.jacrev(f14)(x)))(x)
    np.testing.assert_allclose(J13, M13, rtol=1e-14)  # ∂f_ij/∂x_pqr = M_ijpqr
    np.testing.assert_allclose(J14, np.transpose(M14, (2, 3, 4, 0, 1)), rtol=1e-14)  # ∂f_ij/∂x_{p1p2p3} = M_{p2p3ijp1}
    np.testing.assert_allclose(bk.dot_k(M13, x, 3), bk.dot(M13, x, (3, 4, 5), (1, 2, 3)), rtol=1e-14)
    # eq. 28: the generalized gradient puts x's indices first; eq. 29: df = dx ·_< ∇f
    g = bk.gradient("(M_ijpqr x_pqr | ij)", "x")
    assert str(g) == "(M_ijstu | stuij)"
    N = g(M=M13, x=x)
    np.testing.assert_allclose(N, np.transpose(M13, (2, 3, 4, 0, 1)), rtol=1e-14)
    dx = _rand(rng, 4, 5, 6)
    np.testing.assert_allclose(bk.dot_k(dx, N, 3), f13(dx), rtol=1e-13)


def test_bars_on_either_operand_mean_the_same_sum():
    rng = np.random.default_rng(5)
    A, B = _rand(rng, 2, 3), _rand(rng, 3, 2)
    np.testing.assert_allclose(bk.odot(A, B, "~2", "1"), A @ B, rtol=1e-14)  # AB = A^{2̄} ⊙^1 B
    np.testing.assert_allclose(bk.odot(A, B, "2", "~1"), A @ B, rtol=1e-14)
    np.testing.assert_allclose(bk.odot(A, B, (2,), (1,), bar=(2,)), bk.dot_k(A, B, 1), rtol=1e-14)  # = A^{2·1}B = A ·_1 B


# ---------------------------------------------------------------------------------------------
# §4.3: function application, the generalized gradient, eq. 32 and softmax


def test_section_4_3_5_softmax_gradient_and_eq_32_with_its_bar():
    rng = np.random.default_rng(6)
    A, dA = _rand(rng, 4, 3), _rand(rng, 4, 3)

    @jax.jit
    def run(A, dA):
        s = jax.nn.softmax(A[0])
        M = jnp.eye(3) - jnp.outer(s, jnp.ones(3))  # M = I − s1ᵀ
        N = bk.apply_gradient(bk.softmax, A, (1,))  # ∇s¹(A), eq. 31: (4, 3, 3)
        return dict(s=s, nabla=bk.odot_k(s, M.T, 1),  # ∇s = s ⊙_1 Mᵀ
                    jac=jax.jacrev(jax.nn.softmax)(A[0]), N=N,
                    dZ=jax.jvp(lambda A: jax.nn.softmax(A, axis=1), (A,), (dA,))[1],
                    eq32=bk.odot(N, dA, "1~2", "12"),  # eq. 32, positions k+1..n barred
                    eq32_as_in_4_3_5=bk.odot(N, dA, "12", "1~2"),  # the bar on the right, as §4.3.5 writes it
                    eq32_as_printed=bk.odot(N, dA, "12", "12"))  # no bar

    r = run(A, dA)
    s = r["s"]
    np.testing.assert_allclose(r["nabla"], jnp.diag(s) - jnp.outer(s, s), rtol=1e-14, atol=1e-16)  # = diag(s) − ssᵀ
    np.testing.assert_allclose(r["nabla"], r["jac"].T, rtol=1e-13, atol=1e-16)  # eq. 28: ∂s_m/∂a_n
    np.testing.assert_allclose(r["N"][0], r["nabla"], rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(r["eq32"], r["dZ"], rtol=1e-13)
    np.testing.assert_allclose(r["eq32_as_in_4_3_5"], r["dZ"], rtol=1e-13)
    assert r["eq32_as_printed"].shape == (4, 3, 3)  # eq. 32 as printed keeps the subtensors' dimension: not dZ


def test_eq_27_and_32_for_a_user_function_on_a_rank_3_tensor():
    """f = xxᵀ (T_1 → T_2, ∇f from eq. 36) applied over positions P = (3, 1) of X ∈ T_3."""
    rng = np.random.default_rng(7)
    X, dX = _rand(rng, 2, 3, 4), _rand(rng, 2, 3, 4)

    @jax.jit
    def run(X, dX):
        N = bk.apply_gradient(outer, X, (3, 1))  # (4, 2, 3, 3, 3): I_k, J_{n−k}, I_m
        N_tanh = bk.apply_gradient(bk.tanh, X, (2,))  # element-wise: f'(X) times identities
        return (bk.apply(outer, X, (3, 1)),
                jax.jvp(lambda X: ref.apply(lambda x: jnp.outer(x, x), X, (3, 1)), (X,), (dX,))[1],
                bk.odot(N, dX, (1, 2, 3), (3, 1, 2), bar=(3,)),  # eq. 32 with P(−P) = 3 1 2
                jax.jvp(lambda X: ref.apply(jnp.tanh, X, (2,)), (X,), (dX,))[1],
                bk.odot(N_tanh, dX, (1, 2, 3), (2, 1, 3), bar=(2, 3)))

    Z, dZ, eq32, dT, eq32_tanh = run(X, dX)
    np.testing.assert_allclose(Z, np.einsum("kij,klj->jkil", X, X), rtol=1e-14)  # Z_{I_2 I_2'} = f(X_{i·j})
    np.testing.assert_allclose(eq32, dZ, rtol=1e-13)
    np.testing.assert_allclose(eq32_tanh, dT, rtol=1e-13)


def test_apply_rows_and_columns_as_eq_27_defines_them():
    A = jnp.asarray([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    rows, cols = jax.jit(lambda A: (bk.apply(bk.softmax, A, (1,)), bk.apply(bk.softmax, A, (2,))))(A)
    np.testing.assert_allclose(rows, jax.nn.softmax(A, axis=1), rtol=1e-14)  # s¹(A): the rows
    assert cols.shape == (3, 2)  # the columns, returned as rows (eq. 27, not eq. 26)
    np.testing.assert_allclose(cols, jax.nn.softmax(A, axis=0).T, rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# §5: every example with the operators and as a §4.2 gradient

SECTION_5 = {  # name: (expression, wrt, its printed gradient)
    "aᵀx": ("(a_i x_i | )", "x", "(a_p | p)"),
    "xᵀAx": ("(x_i A_ij x_j | )", "x", "(A_pj x_j | p) + (x_i A_ip | p)"),
    "aᵀXb": ("(a_i X_ij b_j | )", "X", "(a_p b_q | pq)"),
    "aᵀXXᵀa": ("(a_i X_ij X_kj a_k | )", "X", "(a_p X_kq a_k | pq) + (a_i X_iq a_p | pq)"),
    "tr(AX⁻¹B)": ("(U_ij X_jk V_kl δ_il | )", "X", "(U_ip V_ql δ_il | pq)"),  # −(U dX V)·I, eq. 34
    "xxᵀ": ("(x_i x_j | ij)", "x", "(δ_ip x_j | pij) + (x_i δ_jp | pij)"),
}


def test_section_5_examples_match_autodiff():
    rng = np.random.default_rng(8)
    a, b, x = _rand(rng, 3), _rand(rng, 4), _rand(rng, 3)
    A, X, A2, B2 = _rand(rng, 3, 3), _rand(rng, 3, 4), _rand(rng, 2, 3), _rand(rng, 3, 2)
    Xs = 3 * jnp.eye(3) + _rand(rng, 3, 3)
    grads = {name: bk.gradient(expr, wrt) for name, (expr, wrt, _) in SECTION_5.items()}
    for name, (_, _, printed) in SECTION_5.items():
        assert str(grads[name]) == printed, name

    @jax.jit
    def run():
        U, V = A2 @ jnp.linalg.inv(Xs), jnp.linalg.inv(Xs) @ B2
        I = jnp.eye(3)
        return {
            "aᵀx": (grads["aᵀx"](a=a, x=x), jax.grad(lambda x: a @ x)(x), bk.dot(a, x), a @ x),  # d(aᵀx) = a·dx, eq. 33
            "xᵀAx": (grads["xᵀAx"](x=x, A=A), jax.grad(lambda x: x @ A @ x)(x)),  # (A + Aᵀ)x
            "aᵀXb": (grads["aᵀXb"](a=a, X=X, b=b), jax.grad(lambda X: a @ X @ b)(X),
                     bk.dot_k(bk.dot_k(a, X, 1), b, 1), a @ X @ b),  # a ·_1 X ·_1 b; ∇ = ab = a ⊗ b = abᵀ
            "aᵀXXᵀa": (grads["aᵀXXᵀa"](a=a, X=X), jax.grad(lambda X: a @ X @ X.T @ a)(X),
                        2 * bk.otimes(a, bk.dot_k(a, X, 1))),  # 2aX_2[X_1ā] = 2(a ⊗ Xᵀa)
            "tr(AX⁻¹B)": (-grads["tr(AX⁻¹B)"](U=U, X=Xs, V=V), jax.grad(lambda X: jnp.trace(A2 @ jnp.linalg.inv(X) @ B2))(Xs),
                          -bk.dot(bk.otimes(U, V), jnp.eye(2), (1, 4), (1, 2))),  # −[Ī_1U_1]U_2V_1[Ī_2V_2] = −UᵀVᵀ
            "xxᵀ": (grads["xxᵀ"](x=x),  # eq. 28 layout p i j; eq. 35 below is laid out i j p
                    jnp.transpose(jax.jacrev(lambda x: jnp.outer(x, x))(x), (2, 0, 1)),
                    bk.permute(bk.permute(bk.otimes(I, x), (1, 3, 2)) + bk.otimes(x, I), (3, 1, 2))),
        }

    r = run()
    for name, (ours, autodiff, *more) in r.items():
        assert_close(ours, autodiff, 1e-12, f"§5 {name}: the §4.2 gradient")
        if more:
            assert_close(more[0], autodiff if len(more) == 1 else more[1], 1e-12, f"§5 {name}: with the operators")
    T35 = np.transpose(r["xxᵀ"][2], (1, 2, 0))  # ((I ⊗ x)_132 + x ⊗ I)[i, j, p], eq. 35
    for i, j, p in np.ndindex(3, 3, 3):  # eq. 36, entry by entry
        expected = 2 * x[i] if i == j == p else x[j] if i == p != j else x[i] if j == p != i else 0.0
        assert T35[i, j, p] == expected, (i, j, p)


# ---------------------------------------------------------------------------------------------
# §4.2 as a symbolic gradient


def _shapes(expr: str, base=(2, 3, 4, 1, 5)) -> dict[str, tuple[int, ...]]:
    """Shapes for an expression's tensors: one size per index, indices on one axis of one tensor tied."""
    names, spec = ref.einsum_of(expr)
    subs = spec.split("->")[0].split(",")
    parent: dict[str, str] = {}
    find = lambda i: i if parent.setdefault(i, i) == i else find(parent[i])
    first: dict[tuple[str, int], str] = {}
    for name, sub in zip(names, subs):
        for axis, i in enumerate(sub):
            parent[find(i)] = find(first.setdefault((name, axis), i))
    roots = sorted({find(i) for sub in subs for i in sub})
    return {name: tuple(base[roots.index(find(i)) % len(base)] for i in sub) for name, sub in zip(names, subs)}


def _check_gradient(expr: str, wrt: str, seed: int, vjps: bool = True) -> None:
    shapes = _shapes(expr)
    rng = np.random.default_rng(seed)
    tensors = {n: jnp.asarray(rng.uniform(-1, 1, s)) for n, s in shapes.items()}
    g = bk.gradient(expr, wrt)
    names = sorted(tensors)  # the order jit gives a dict's leaves

    @jax.jit
    def run(tensors, u):
        ours = g(**tensors)
        f = lambda X: ref.bracket(expr, **{**tensors, wrt: X})
        J = jax.jacrev(f)(tensors[wrt])
        r = J.ndim - tensors[wrt].ndim
        J = jnp.transpose(J, (*range(r, J.ndim), *range(r)))  # eq. 28: wrt's indices first
        if not vjps:
            return ours, J, ()
        rule = lambda *xs: bk.bracket(expr, **dict(zip(names, xs)))
        plain = lambda *xs: ref.bracket(expr, **dict(zip(names, xs)))
        return ours, J, [jax.vjp(h, *[tensors[n] for n in names])[1](u) for h in (rule, plain)]

    out_shape = jax.eval_shape(lambda t: ref.bracket(expr, **t), tensors).shape
    ours, J, pulled = run(tensors, jnp.asarray(rng.uniform(-1, 1, out_shape)))
    assert_close(ours, J, F64_RTOL, f"∇_{wrt} {expr} = {g}")
    if vjps:  # the custom_vjp of bracket(expr) for every tensor, against jax.vjp of jnp.einsum
        assert_close(pulled[0], pulled[1], F64_RTOL, f"VJP of {expr}")
    assert len(g.expr.terms) == sum(f.name == wrt for t in g.of.terms for f in t.factors)  # one term per occurrence


GRADIENT_CASES = [
    ("(a_i X_ij X_kj a_k | )", "X"),  # §5, two occurrences
    ("(X_ij C_jk | ik)", "X"),  # an index of X in the result: δ
    ("(X_ij X_jk X_ki | )", "X"),  # tr(X³): three occurrences
    ("(A_ijk X_jl X_lm X_km | iml)", "X"),  # three occurrences, a rank-3 result
    ("(X_ijk B_kl | lji)", "X"),  # rank-3 result, permuted
    ("(X_ii | )", "X"),  # a diagonal: δ between X's own indices
    ("(X_iij | ji)", "X"),  # a diagonal and result indices
    ("(X_ij | i)", "X"),  # an index of X nowhere else: 1
    ("(x_i x_j x_k | ijk)", "x"),  # x ⊗ x ⊗ x
    ("(c X_ij | ji)", "c"),  # a scalar tensor
]


@pytest.mark.parametrize(("expr", "wrt"), GRADIENT_CASES)
def test_gradient_matches_jacrev_of_jnp_einsum(expr, wrt):
    _check_gradient(expr, wrt, seed=len(expr), vjps=False)  # the VJPs: the random expressions below


@st.composite
def expressions(draw):
    """A random product with X (rank 1–3) one to three times, up to two other tensors, a result of rank 0–3."""
    letters = st.sampled_from("ijklm")
    rank = draw(st.integers(1, 3))
    factors = [("X", draw(st.lists(letters, min_size=rank, max_size=rank))) for _ in range(draw(st.integers(1, 3)))]
    for name in "AB"[: draw(st.integers(0, 2))]:
        r = draw(st.integers(0, 3))
        factors.append((name, draw(st.lists(letters, min_size=r, max_size=r))))
    factors = draw(st.permutations(factors))
    used = sorted({i for _, idx in factors for i in idx})
    result = draw(st.lists(st.sampled_from(used), unique=True, max_size=3))
    body = " ".join(f"{n}_{''.join(idx)}" if idx else n for n, idx in factors)
    return f"({body} | {''.join(result)})"


@given(expressions(), seeds)
@settings(max_examples=6)
def test_gradient_of_random_expressions_matches_jacrev(expr, seed):
    _check_gradient(expr, "X", seed)


def test_gradient_prints_the_issue_examples_and_evaluates_with_bracket():
    rng = np.random.default_rng(9)
    a, X, C = _rand(rng, 3), _rand(rng, 3, 4), _rand(rng, 4, 2)
    g = bk.gradient("(a_i X_ij X_kj a_k | )", "X")
    assert len(g.expr.terms) == 2
    assert_close(bk.bracket(str(g), a=a, X=X), 2 * jnp.outer(a, a) @ X, 1e-13, "2aaᵀX from the printed form")
    g = bk.gradient("(X_ij C_jk | ik)", "X")
    assert str(g) == "(δ_ip C_qk | pqik)" and g.indices == ("p", "q")
    assert g.equation(ascii=True) == "grad_X (X_ij C_jk | ik) = (delta_ip C_qk | pqik)"
    expected = np.einsum("ip,qk->pqik", np.eye(3), C)
    assert_close(g(X=X, C=C), expected, 1e-14, "δ_ip C_qk")
    assert_close(bk.bracket(str(g), sizes={"p": 3}, C=C), expected, 1e-14, "the printed form with sizes")
    assert_close(bk.bracket(g.to_string(ascii=True), sizes={"i": 3}, C=C), expected, 1e-14, "ASCII spelling")
    h = bk.gradient(bk.gradient("(x_i A_ij x_j | )", "x"), "x")  # a second derivative: A + Aᵀ
    A = _rand(rng, 3, 3)
    assert_close(h(x=a, A=A), A + A.T, 1e-14, "∇²(xᵀAx)")


def test_parser_reads_braces_primes_sums_and_scalars():
    e = bk.parse("(A_{i j} B_{j'k} c | ik) + (delta_ij A_jl 1_l D_j'k | ik)")
    assert str(e) == "(A_ij B_j'k c | ik) + (δ_ij A_jl 1_l D_j'k | ik)"
    assert e.names == ("A", "B", "c", "D")
    rng = np.random.default_rng(10)
    A, B, c, D = _rand(rng, 2, 2), _rand(rng, 3, 4), _rand(rng), _rand(rng, 3, 4)
    expected = np.einsum("ij,lk->ik", A, B) * c + np.einsum("il,jk->ik", A, D)
    assert_close(bk.bracket(e, A=A, B=B, c=c, D=D), expected, 1e-14, "braces, primes, δ, 1, a scalar")


# ---------------------------------------------------------------------------------------------
# Transformations


def test_jit_vmap_and_second_derivatives():
    rng = np.random.default_rng(11)
    As, B, x = _rand(rng, 5, 2, 3, 4), _rand(rng, 4, 3, 2), _rand(rng, 3)
    A = _rand(rng, 3, 3)
    cube_diag = lambda permute: lambda A: jnp.sum(permute(A) ** 3)
    tanh_outer = lambda tanh: lambda x: jnp.sum(tanh(jnp.outer(x, x)) ** 2)
    run = jax.jit(lambda As, B, x: (
        (jax.vmap(lambda A: bk.odot(A, B, (1, 2), (3, 2), bar=(2,)))(As), jnp.einsum("bijk,lji->bikl", As, B)),
        (jax.vmap(lambda A: bk.apply(bk.softmax, A, (3, 1)))(As), jax.nn.softmax(jnp.transpose(As, (0, 3, 1, 2)), axis=-1)),
        (jax.vmap(jax.grad(cube_diag(lambda A: bk.permute(A, "3[12]"))))(As[:, :, :2]),
         jax.vmap(jax.grad(cube_diag(lambda A: jnp.einsum("iij->ji", A))))(As[:, :, :2])),
        (jax.hessian(lambda x: bk.bracket("(x_i A_ij x_j | )", x=x, A=A))(x), A + A.T),  # forward-over-reverse
        (jax.jacrev(jax.grad(tanh_outer(lambda Z: bk.apply(bk.tanh, Z, (2,)))))(x),  # reverse-over-reverse
         jax.jacrev(jax.grad(tanh_outer(lambda Z: jnp.tanh(Z).T)))(x)),
    ))
    for what, (ours, expected) in zip(["vmap(odot)", "vmap(apply)", "vmap(grad(permute))", "hessian", "jacrev(grad)"],
                                      run(As, B, x)):
        assert_close(ours, expected, 1e-12, what)


def test_one_elementwise_type_serves_the_activations_and_apply():
    """Issue 20: an element-wise function and its derivative is one type, activations.Activation: the
    bracket's built-ins are Activations (tanh and sigmoid the registered ones, their f' written once),
    Elementwise(fn, derivative) builds one, and a registered activation applies as it is."""
    assert bk.tanh is activations.get_activation("tanh") and bk.sigmoid is activations.get_activation("sigmoid")
    assert bk.tanh.derivative is activations.tanh_derivative and bk.sigmoid.derivative is activations.sigmoid_derivative
    assert all(isinstance(f, activations.Activation) for f in (bk.exp, bk.log, bk.tanh, bk.sigmoid))
    cube = bk.Elementwise(lambda x: x**3, lambda x, y: 3 * x**2, "cube")  # the docs' spelling: derivative(x, y)
    assert isinstance(cube, activations.Activation) and cube.name == "cube"
    softplus = activations.get_activation("softplus")
    rng = np.random.default_rng(13)
    X, G = _rand(rng, 2, 3, 4), _rand(rng, 4, 2, 3)

    @jax.jit
    def run(X, G):
        pull = lambda f, X: jax.vjp(f, X)[1](G)[0]
        return [(f(X), pull(f, X), ref(X), pull(ref, X)) for f, ref in [
            (lambda X: bk.apply(cube, X, "3"), lambda X: jnp.transpose(X**3, (2, 0, 1))),
            (lambda X: bk.apply(softplus, X, "3"), lambda X: jnp.transpose(jax.nn.softplus(X), (2, 0, 1))),
            (lambda X: bk.apply(bk.log, X**2 + 1, "3"), lambda X: jnp.transpose(jnp.log(X**2 + 1), (2, 0, 1))),
            (lambda X: bk.apply(bk.exp, X, "3"), lambda X: jnp.transpose(jnp.exp(X), (2, 0, 1)))]]

    for what, (value, ct, ref_value, ref_ct) in zip(["Elementwise", "softplus", "log", "exp"], run(X, G)):
        assert_close(value, ref_value, F64_RTOL, f"{what} value")
        assert_close(ct, ref_ct, F64_RTOL, f"{what} VJP")


def test_elementwise_is_a_type_whose_derivative_takes_x_and_f_of_x():
    """Issue 20 review: ``Elementwise`` is again a type (a subclass of activations.Activation), its
    ``derivative(x, y)`` takes ``y = f(x)`` as documented, and the backward of ``apply`` takes ``y`` from
    the forward's residual: ``f`` appears once in the gradient's program (it was evaluated twice)."""
    e2 = bk.Elementwise(lambda x: jnp.exp(2 * x), lambda x, y: 2 * y, "e2")
    assert isinstance(e2, bk.Elementwise) and isinstance(e2, activations.Activation)
    assert not isinstance(bk.tanh, bk.Elementwise) and e2.name == "e2" and not e2.from_output
    x = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    assert_close(e2.derivative(x, e2.fn(x)), 2 * jnp.exp(2 * x), F64_RTOL, "derivative(x, y)")
    assert_close(e2.grad_from(x, e2.fn(x)), 2 * jnp.exp(2 * x), F64_RTOL, "grad_from(A, Z)")
    assert e2 != activations.Activation("e2", e2.fn, e2.derivative, False)  # no jit cache shared with an Activation
    loss = lambda X: jnp.sum(bk.apply(e2, X, (2,)))
    assert_close(jax.grad(loss)(x), 2 * jnp.exp(2 * x), F64_RTOL, "jax.grad through apply")
    assert str(jax.make_jaxpr(jax.grad(loss))(x)).count(" exp ") == 1  # f(x) once: the backward reuses it
    # a user's Elementwise also serves the FCNN rules (f' from (A, Z))
    cube = bk.Elementwise(lambda x: x**3, lambda x, y: 3 * x**2, "cube")
    X, W, b = x.T, jnp.ones((2, 2)) / 4, jnp.zeros(2)  # N = 3: J = ‖(XW)³‖² / 6
    grad = jax.grad(lambda W: mdc_jax.fcnn_regression_loss([(W, b)], X, jnp.zeros((3, 2)), [cube]))(W)
    assert_close(grad, X.T @ ((X @ W) ** 3 * 3 * (X @ W) ** 2) / 3, F64_RTOL, "FCNN with an Elementwise")


def test_evaluating_again_with_new_values_traces_nothing():
    """Issue 20: one compiled program per sum of terms and shapes (the specs static), per f and
    positions for apply and apply_gradient; a second call with new values of the same shapes traces
    nothing, the check of a Function's ∇f shape (jax.eval_shape) included."""
    rng = np.random.default_rng(14)

    def calls(A, B):  # shapes (6, 11) and (11, 4): this test's own, so the first call compiles
        g = bk.gradient("(A_ij B_jk | ik)", "A")
        return [bk.bracket("(A_ij B_jk | ik) + (A_ij B_jl | il)", A=A, B=B), bk.parse("(A_ij B_jk | ik)")(A=A, B=B),
                bk.odot(A, B, (2,), (1,)), bk.dot_k(A, B, 1), bk.permute(A, "~21"), g(A=A, B=B),
                bk.apply(bk.softmax, A, (1,)), bk.apply_gradient(bk.softmax, A, (2,)), bk.apply(bk.tanh, A, (2,)),
                bk.apply_gradient(bk.tanh, A, (1,)), bk.apply(outer, B, (2,))]

    with count_traces() as first:
        calls(_rand(rng, 6, 11), _rand(rng, 11, 4))
    assert first["sum_terms"] >= 5 and first["apply_rule"] >= 3 and first["_apply_gradient"] >= 2, dict(first)
    with count_traces() as again:
        for _ in range(2):
            calls(_rand(rng, 6, 11), _rand(rng, 11, 4))
    assert again.total == 0, dict(again)


# ---------------------------------------------------------------------------------------------
# Bad input


BAD = [
    (lambda: bk.odot(jnp.ones((2, 3, 4)), jnp.ones((3,)), (4,), (1,)),
     r"odot: p=\(4,\) has position 4, out of range for A of shape \(2, 3, 4\) \(positions are 1-based: 1..3\)"),
    (lambda: bk.odot(jnp.ones((3, 3)), jnp.ones((3, 3)), (1, 1), (1, 2)), r"odot: p=\(1, 1\) repeats position 1"),
    (lambda: bk.odot(jnp.ones((2, 3)), jnp.ones((3, 2)), (2,), (1,), bar=(1,)),
     r"odot: bar=\(1,\) must be a subset of p=\(2,\).*A has shape \(2, 3\)"),
    (lambda: bk.odot(jnp.ones((2, 3)), jnp.ones((4, 2)), (2,), (1,)),
     r"odot: A's position 2 \(size 3; A has shape \(2, 3\)\) is fused with B's position 1 \(size 4; B has shape \(4, 2\)\)"),
    (lambda: bk.odot(jnp.ones((2, 3)), jnp.ones((3, 2)), (2,), (1, 2)), r"odot: p=\(2,\) and q=\(1, 2\) must have the same"),
    (lambda: bk.odot(jnp.ones((2, 3)), jnp.ones(3)), r"odot: with p and q omitted .* shapes \(2, 3\) and \(3,\)"),
    (lambda: bk.dot(jnp.ones((2, 3)), jnp.ones((3, 2)), "2[", "1"), r"dot: cannot read p='2\[' at '\['"),
    (lambda: bk.dot_k(jnp.ones((2, 3)), jnp.ones(3), 2),
     r"dot_k: k=2 does not fit: .*A \(shape \(2, 3\), rank 2\) .*B \(shape \(3,\), rank 1\); k must be <= 1"),
    (lambda: bk.odot_k(jnp.ones(3), jnp.ones(3), -1), r"odot_k: k must be an int >= 0; got -1"),
    (lambda: bk.permute(jnp.ones((2, 3, 4)), (1, 2)), r"permute: p=\(1, 2\) misses position\(s\) \(3,\) of A of shape"),
    (lambda: bk.permute(jnp.ones((2, 3, 4)), "1[23]"), r"permute: the square-bracket group \[2, 3\] .* sizes \(3, 4\)"),
    (lambda: bk.permute(jnp.ones((2, 3, 3)), "1[~2~3]"), r"permute: bar marks \[2, 3\], all in the group \[2, 3\]"),
    (lambda: bk.permute(jnp.ones((2, 3)), (2, 1), bar=(3,)), r"permute: bar=\(3,\) has position 3, not in p"),
    (lambda: bk.bracket("(A_ij B_jk | ik)", A=jnp.ones((2, 3))), r"bracket: tensor B of \(A_ij B_jk \| ik\) is missing"),
    (lambda: bk.bracket("(A_ij | ij)", A=jnp.ones((2, 3)), C=jnp.ones(2)), r"bracket: tensor C was passed but"),
    (lambda: bk.bracket("(A_ijk | ij)", A=jnp.ones((2, 3))), r"bracket: A has shape \(2, 3\) \(rank 2\) but .* writes A_ijk"),
    (lambda: bk.bracket("(A_ij B_jk | ik)", A=jnp.ones((2, 3)), B=jnp.ones((4, 2))),
     r"bracket: index j is used inconsistently .* size 3 in A_ij \(A has shape \(2, 3\)\) but 4 in B_jk"),
    (lambda: bk.bracket("(A_ij | iz)", A=jnp.ones((2, 3))), r"bracket: index z right of '\|' .* appears in no factor"),
    (lambda: bk.bracket("(A_ij | ii)", A=jnp.ones((2, 2))), r"bracket: index i appears 2 times right of '\|'"),
    (lambda: bk.bracket("(A_ij A_i | ij)", A=jnp.ones((2, 2))), r"bracket: A is used with 2 indices \(A_ij\) and with 1"),
    (lambda: bk.bracket("(A_i2 | )", A=jnp.ones((2, 2))), r"bracket: cannot read the indices '2'|cannot read the indices 'i2'"),
    (lambda: bk.bracket("(A_ij B_jk | ik", A=jnp.ones((2, 2))), r"bracket: cannot read .* expected a term"),
    (lambda: bk.bracket("(δ_ip C_qk | pqik)", C=jnp.ones((2, 2))), r"the size of index i .* is not determined"),
    (lambda: bk.bracket("(A_ij | ij)", sizes={"z": 2}, A=jnp.ones((2, 2))), r"bracket: sizes names index 'z', which"),
    (lambda: bk.bracket("(A_ij | ij) + (A_ji | ij)", A=jnp.ones((2, 3))),
     r"bracket: the terms of .* have different shapes: \(2, 3\) \(\(A_ij \| ij\)\) and \(3, 2\)"),
    (lambda: bk.bracket("(A_ij | i) + (A_ij | ij)", A=jnp.ones((2, 3))), r"bracket: the terms of .* different ranks"),
    (lambda: bk.gradient("(a_i X_ij | j)", "X")(a=jnp.ones(3), X=jnp.ones(3)),
     r"Gradient: X has shape \(3,\) but \(a_i X_ij \| j\) gives it 2 indices"),
    (lambda: bk.gradient("(a_i X_ij | j)", "X")(a=jnp.ones(3)), r"Gradient: tensor X of .* is missing; got \['a'\]"),
    (lambda: bk.gradient("(a_i X_ij | j)", "Y"), r"gradient: wrt='Y' is not a tensor of \(a_i X_ij \| j\); its tensors are a, X"),
    (lambda: bk.apply(bk.softmax, jnp.ones((2, 3, 4)), (1,)),
     r"apply: softmax maps T_1 subtensors, .* X has shape \(2, 3, 4\) and p=\(1,\) leaves 2 \(2, 3\)"),
    (lambda: bk.apply(jax.nn.softmax, jnp.ones((2, 3)), (1,)), r"apply: f must be a Function"),
    (lambda: bk.apply(bk.Function(jnp.tanh, lambda x, y: x, "mytanh"), jnp.ones((2, 3)), (1,)),
     r"apply: mytanh.grad returned shape \(3,\) .* has shape \(3, 3\)"),
    (lambda: bk.otimes(jnp.ones(2, jnp.int32), jnp.ones(2)), r"otimes: A has dtype int32"),
    (lambda: bk.bracket("(A_ij | ij)", A=[[1.0]]), r"bracket: A must be an array"),
]


@pytest.mark.parametrize(("call", "match"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_raises_naming_the_argument_shapes_and_positions(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_gradient_needing_more_than_52_indices_is_refused_by_name():
    """Issue 20, defect 5: the parser refuses a term of more than 52 indices (einsum's labels); the
    gradient's construction, which adds X's fresh indices, raised a bare IndexError on evaluation."""
    names = "ijklmnopqrstuvwxyzabcdefghIJKLMNOPQRSTUVWXYZABCDEFGH"
    expr = f"(X_{names[:3]} A_{names[3:50]} | {names[:3]})"  # 50 indices; X's three are in the result: 3 δ's
    assert len(bk.parse(expr).terms[0].indices) == 50
    with pytest.raises(ValueError, match=r"^gradient: ∇_X \(X_ijk A_lmn.*\) needs 53 distinct indices in its term "
                                         r".*; at most 52 are supported"):
        bk.gradient(expr, "X")
    assert len(bk.gradient(expr, "A").expr.terms[0].indices) == 50  # A's indices are summed: renamed, none added
    diagonal = f"(X_ii A_{names[1:]} | )"  # 52 indices; ∇_X of the diagonal X_ii keeps a δ_pq: 53
    with pytest.raises(ValueError, match=r"^gradient: ∇_X .* needs 53 distinct indices"):
        bk.gradient(diagonal, "X")
    with pytest.raises(ValueError, match=r"^bracket: the VJP of .* for X, .* needs 53 distinct indices; at most 52"):
        jax.make_jaxpr(jax.grad(lambda X: bk.bracket(diagonal, X=X, A=jnp.ones((1,) * 51))))(jnp.ones((1, 1)))


def test_bad_input_raises_under_jit_too():
    with pytest.raises(ValueError, match=r"odot: A's position 2 \(size 3"):
        jax.jit(lambda A, B: bk.odot(A, B, (2,), (1,)))(jnp.ones((2, 3)), jnp.ones((4, 2)))


# ---------------------------------------------------------------------------------------------
# The command line and the docs page


def test_cli_prints_the_gradient_expression(capsys):
    assert cli.main(["bracket", "(a_i X_ij b_j | )", "--wrt", "X"]) == 0
    assert capsys.readouterr().out == "∇_X (a_i X_ij b_j | ) = (a_p b_q | pq)\n"
    assert cli.main(["bracket", "(X_ij C_jk | ik)", "--ascii"]) == 0
    assert capsys.readouterr().out.splitlines() == ["grad_X (X_ij C_jk | ik) = (delta_ip C_qk | pqik)",
                                                    "grad_C (X_ij C_jk | ik) = (X_ip delta_kq | pqik)"]


@pytest.mark.parametrize(("argv", "message"), [
    (["bracket", "(a_i X_ij b_j | )", "--wrt", "Y"], "mdc-jax bracket: gradient: wrt='Y' is not a tensor"),
    (["bracket", "(a_i X_ij b_j | z)"], "mdc-jax bracket: parse: index z right of '|'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_docs_bracket_page_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
