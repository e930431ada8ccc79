"""Matrix square roots: Newton–Schulz (derivations/06_newton_schulz.md) and eigh
(derivations/07_eig_sqrt.md).

The verification ladder for the two hand-written matrix backprops:
finite differences (non-symmetric cotangents and perturbations), the same
Newton–Schulz iteration unrolled from the library's differentiable ops and
differentiated by the engine, and convergence to the exact gradient.
"""

import pathlib

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions.matrix_sqrt import NewtonSchulzSqrt

import strategies as S
from checks import hessian_vector_products

DERIVATIONS = pathlib.Path(__file__).resolve().parents[1] / "derivations"
NS_ITERS = [1, 2, 3, 5]


def ns(n, eps=0.0):
    """Newton–Schulz with n iterations as a one-argument function (eps = 0 for gradient checks)."""
    return lambda a: F.sqrtm_newton_schulz(a, n, eps=eps)


def exact_sqrt_by_eigh(sigma):
    lam, u = np.linalg.eigh(sigma)
    return (u * np.sqrt(np.maximum(lam, 0))[..., None, :]) @ np.swapaxes(u, -1, -2)


def p_n(a, n):
    """The scalar polynomial p_N that N Newton–Schulz steps apply to each eigenvalue a of A = Σ/t."""
    if n == 1:
        return 0.5 * a * (3 - a)
    z = 0.5 * (3 - a)
    y = a * z
    for _ in range(2, n):
        t = 0.5 * (3 - z * y)
        y, z = y * t, t * z
    return 0.5 * y * (3 - z * y)


def sqrt_frechet_adjoint(sigma, g):
    """Exact gradient of Σ ↦ Σ^{1/2} at a symmetric PD Σ for ANY cotangent g (Daleckii–Krein):
    U (Φ ∘ (Uᵀ g U)) Uᵀ with Φ_ij = 1 / (√λ_i + √λ_j) (derivations/07_eig_sqrt.md, eq. (10))."""
    lam, u = np.linalg.eigh(sigma)
    s = np.sqrt(lam)
    phi = 1.0 / (s[..., :, None] + s[..., None, :])
    ut = np.swapaxes(u, -1, -2)
    return u @ (phi * (ut @ g @ u)) @ ut


def grad_of(fn, a, g):
    t = gs.Tensor(a, requires_grad=True)
    fn(t).backward(g)
    return t.grad.data


# ===== Newton–Schulz: forward ==========================================================================
@given(S.spd_batches(dim=(2, 6), max_condition=50.0))
def test_ns_many_iterations_is_the_exact_root_scipy(sigma):
    c = F.sqrtm_newton_schulz(sigma, 25, eps=0.0).data
    for i in range(len(sigma)):
        expected = scipy.linalg.sqrtm(sigma[i]).real
        np.testing.assert_allclose(c[i], expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@given(sigma=S.covariance_batches(dim=(2, 6), positions=(2, 8)))
def test_ns_is_p_n_on_the_eigenvalues_eqs1to6(n, sigma):
    # Exact for every N: C = √t U diag(p_N(λ / t)) Uᵀ.
    lam, u = np.linalg.eigh(sigma)
    t = np.trace(sigma, axis1=1, axis2=2)[:, None]
    expected = (u * (np.sqrt(t) * p_n(lam / t, n))[:, None, :]) @ np.swapaxes(u, 1, 2)
    c = F.sqrtm_newton_schulz(sigma, n, eps=0.0).data
    np.testing.assert_allclose(c, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())


def test_p_n_closed_forms_for_one_and_two_steps():
    a = np.linspace(0, 1, 11)
    np.testing.assert_allclose(p_n(a, 1), 1.5 * a - 0.5 * a**2)
    y1 = a * (3 - a) / 2
    z1 = (3 - a) / 2
    np.testing.assert_allclose(p_n(a, 2), 0.5 * y1 * (3 - z1 * y1))
    assert np.all(np.abs(p_n(a[1:], 30) - np.sqrt(a[1:])) < 1e-12)  # p_N(a) -> √a on (0, 1]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_p_n_is_sqrt_a_times_sqrt_of_h_iterated_eq7(n):
    # eq. (7): p_N(a) = √(a · h^N(a)) with h(e) = e (3 − e)² / 4, e_0 = a.
    a = np.linspace(0, 1, 101)
    e = a.copy()
    for _ in range(n):
        e = e * (3 - e) ** 2 / 4
    np.testing.assert_allclose(p_n(a, n), np.sqrt(a * e), rtol=1e-12, atol=1e-15)
    # eq. (8): e_k increases towards 1 (so p_N(a) <= √a: NS under-estimates the root)
    assert np.all(p_n(a, n) <= np.sqrt(a) + 1e-15)


def relu_feature_covariances(rng, batch=4, d=128, length=64):
    """Covariances of random ReLU feature maps: d = 128 channels, L = 64 positions (rank 63)."""
    return S.covariance_of_features(np.maximum(rng.standard_normal((batch, d, length)), 0.0))


@pytest.mark.report
def test_ns_error_table_d128_relu_features():
    """Relative Frobenius error ||NS_N − Σ^{1/2}|| / ||Σ^{1/2}|| (the table in 06_newton_schulz.md)."""
    sigma = relu_feature_covariances(np.random.default_rng(2018))
    exact = exact_sqrt_by_eigh(sigma)
    print("\nNS error vs exact root, d=128, L=64, ReLU features (mean / min / max over 4 matrices)")
    errors = {}
    for n in (3, 5, 10, 20):
        c = F.sqrtm_newton_schulz(sigma, n, eps=0.0).data
        err = np.linalg.norm(c - exact, axis=(1, 2)) / np.linalg.norm(exact, axis=(1, 2))
        errors[n] = err.mean()
        print(f"N = {n:2d}: {err.mean():.3g}  ({err.min():.3g} - {err.max():.3g})")
    # Far from exact for few steps (intended, SPEC §1), converging for many.
    assert 0.4 < errors[3] < 0.7
    assert 0.15 < errors[5] < 0.35
    assert errors[10] < 1e-2
    assert errors[20] < 1e-6
    assert errors[3] > errors[5] > errors[10] > errors[20]


def test_ns_batched_equals_one_by_one(rng):
    sigma = relu_feature_covariances(rng, batch=3, d=7, length=5)
    together = F.sqrtm_newton_schulz(sigma, 4).data
    alone = np.concatenate([F.sqrtm_newton_schulz(sigma[i : i + 1], 4).data for i in range(3)])
    np.testing.assert_allclose(together, alone, rtol=1e-13, atol=1e-15)


def test_ns_keeps_float32_and_does_not_mutate(rng):
    sigma = relu_feature_covariances(rng, batch=2, d=5, length=4).astype(np.float32)
    before = sigma.copy()
    t = gs.Tensor(sigma, requires_grad=True)
    c = F.sqrtm_newton_schulz(t, 5)
    g = rng.standard_normal(c.shape).astype(np.float32)
    c.backward(g)
    assert c.dtype == np.float32 and t.grad.dtype == np.float32
    np.testing.assert_array_equal(sigma, before)
    np.testing.assert_allclose(c.data, F.sqrtm_newton_schulz(sigma.astype(np.float64), 5).data, rtol=1e-4, atol=1e-5)


# ===== Newton–Schulz: backward ==========================================================================
@pytest.mark.parametrize("n", NS_ITERS)
@given(sigma=S.spd_batches(batch=(1, 2), dim=(2, 5)))
def test_ns_backward_finite_differences_spd_eq10to16(n, sigma):
    gs.check_backward(ns(n), [sigma], mode="elementwise")


@pytest.mark.parametrize("n", NS_ITERS)
@given(sigma=S.covariance_batches(batch=(1, 2), dim=(6, 6), positions=(4, 4)))
def test_ns_backward_finite_differences_rank_deficient_covariance(n, sigma):
    # d = 6 channels, L = 4 positions: rank 3, the small analogue of d = 128, L = 64.
    gs.check_backward(ns(n), [sigma], mode="elementwise")


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_ns_backward_agrees_with_autodiff_of_the_unrolled_iteration(n, rng):
    sigma = np.concatenate(
        [relu_feature_covariances(rng, 2, 8, 5), S.covariance_of_features(rng.standard_normal((1, 8, 12)))]
    )
    g = rng.standard_normal(sigma.shape)  # non-symmetric cotangent
    np.testing.assert_allclose(
        F.sqrtm_newton_schulz(sigma, n, eps=0.0).data,
        F.sqrtm_newton_schulz_unrolled(sigma, n, eps=0.0).data,
        rtol=1e-12,
        atol=1e-14,
    )
    hand = grad_of(ns(n), sigma, g)
    engine = grad_of(lambda a: F.sqrtm_newton_schulz_unrolled(a, n, eps=0.0), sigma, g)
    np.testing.assert_allclose(hand, engine, rtol=1e-10, atol=1e-10 * np.abs(engine).max())


@given(S.spd_batches(dim=(2, 6), max_condition=20.0), st.integers(0, 2**31 - 1))
def test_ns_gradient_converges_to_the_exact_gradient(sigma, seed):
    g = np.random.default_rng(seed).standard_normal(sigma.shape)  # non-symmetric
    g_ns = grad_of(ns(30), sigma, g)
    exact = sqrt_frechet_adjoint(sigma, g)
    scale = np.abs(exact).max()
    np.testing.assert_allclose(g_ns, exact, atol=1e-9 * scale)
    # The eig-based gradient is the symmetric part (eigh sees only symmetric perturbations).
    g_eig = grad_of(F.sqrtm_eig, sigma, g)
    np.testing.assert_allclose(0.5 * (g_ns + np.swapaxes(g_ns, 1, 2)), g_eig, atol=1e-9 * scale)


class TransposedTraceStep(NewtonSchulzSqrt):
    """The known trap (one public reference): Ā transposed before the pre-normalisation step."""

    def _backprop_pre_normalisation(self, ga, gt):
        return super()._backprop_pre_normalisation(ga.swapaxes(-1, -2), gt)


def test_transposed_trace_step_trap_fails_the_non_symmetric_check_eq16(rng):
    sigma = relu_feature_covariances(rng, batch=2, d=4, length=6)
    correct = ns(3)
    trap = lambda a: TransposedTraceStep(3, 0.0)(a)  # noqa: E731
    g = rng.standard_normal(sigma.shape)
    assert np.abs(g - np.swapaxes(g, 1, 2)).max() > 0.1  # the cotangent is non-symmetric
    g_correct, g_trap = grad_of(correct, sigma, g), grad_of(trap, sigma, g)
    assert np.abs(g_correct - g_trap).max() > 1e-3 * np.abs(g_correct).max()
    # Finite differences (non-symmetric perturbations) side with the un-transposed form ...
    gs.check_backward(correct, [sigma], mode="elementwise")
    with pytest.raises(gs.GradientCheckError):
        gs.check_backward(trap, [sigma], mode="elementwise")
    # ... while a symmetric cotangent cannot tell them apart (why tests must use non-symmetric ones),
    g_sym = g + np.swapaxes(g, 1, 2)
    np.testing.assert_allclose(grad_of(trap, sigma, g_sym), grad_of(correct, sigma, g_sym), rtol=1e-12)
    # and neither can the full chain through cov_pool, whose backward symmetrises (G + Gᵀ).
    x = rng.standard_normal((2, 4, 2, 3))
    gv = rng.standard_normal((2, 10))
    chain_correct = grad_of(lambda t: F.triu_vec(correct(F.cov_pool(t))), x, gv)
    chain_trap = grad_of(lambda t: F.triu_vec(trap(F.cov_pool(t))), x, gv)
    np.testing.assert_allclose(chain_trap, chain_correct, rtol=1e-10, atol=1e-12)


def test_ns_backward_is_not_differentiable_twice(rng):
    sigma = gs.Tensor(relu_feature_covariances(rng, 1, 3, 4), requires_grad=True)
    c = F.sqrtm_newton_schulz(sigma, 3)
    with pytest.raises(RuntimeError, match="create_graph"):
        gs.backward([c], [np.ones(c.shape)], create_graph=True)


# ===== zero trace and bad input =========================================================================
@pytest.mark.parametrize("n", [1, 2, 5])
def test_zero_trace_gives_zeros_not_nan_forward_and_backward(n, rng):
    sigma = np.zeros((3, 4, 4))
    sigma[1] = relu_feature_covariances(rng, 1, 4, 6)[0]
    t = gs.Tensor(sigma, requires_grad=True)
    c = F.sqrtm_newton_schulz(t, n)  # default eps > 0
    c.backward(rng.standard_normal(c.shape))
    assert np.all(c.data[[0, 2]] == 0) and np.all(np.isfinite(c.data))
    assert np.all(np.isfinite(t.grad.data))
    # Through the whole head: an all-zero feature map gets a zero (finite) gradient.
    x = gs.Tensor(np.zeros((2, 3, 2, 2)), requires_grad=True)
    v = F.triu_vec(F.sqrtm_newton_schulz(F.cov_pool(x), n))
    v.backward(rng.standard_normal(v.shape))
    assert np.all(v.data == 0) and np.all(x.grad.data == 0)


def _with(value, where):
    a = np.tile(np.eye(3), (2, 1, 1))
    a[where] = value
    return a


@pytest.mark.parametrize("fn", [ns(3, eps=1e-8), F.sqrtm_eig], ids=["ns", "eig"])
@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.eye(3), ValueError, r"\(B, d, d\)"),  # not batched
        (np.ones((2, 3, 4)), ValueError, r"\(B, d, d\)"),  # not square
        (np.ones((2, 3, 3), dtype=np.int64), TypeError, "floating-point"),
        (_with(np.nan, (1, 0, 2)), ValueError, "NaN or Inf"),
        (_with(np.inf, (0, 1, 1)), ValueError, "NaN or Inf"),
        (-np.tile(np.eye(3), (2, 1, 1)), ValueError, "negative trace"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(fn, bad, error, match):
    with pytest.raises(error, match=match):
        fn(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_iters=0), "num_iters"),
        (dict(num_iters=2.0), "num_iters"),
        (dict(num_iters=3, eps=-1.0), "eps"),
        (dict(num_iters=3, eps=0.0), "zero trace"),
    ],
)
def test_bad_ns_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.sqrtm_newton_schulz(np.zeros((1, 2, 2)), **kwargs)


# ===== exact square root through eigh ===================================================================
@given(S.spd_batches(dim=(1, 6)))
def test_eig_forward_matches_scipy_eq3(sigma):
    c = F.sqrtm_eig(sigma).data
    for i in range(len(sigma)):
        np.testing.assert_allclose(c[i], scipy.linalg.sqrtm(sigma[i]).real, rtol=1e-9, atol=1e-11 * np.abs(c[i]).max())


@given(S.spd_batches(batch=(1, 2), dim=(1, 5)))
def test_eig_backward_finite_differences_spd_eq4to9(sigma):
    gs.check_backward(F.sqrtm_eig, [sigma], mode="elementwise")


@given(S.covariance_batches(batch=(1, 2), dim=(2, 4), positions=(12, 16)))
def test_eig_backward_finite_differences_full_rank_covariance(sigma):
    # eig needs L > d: at a zero eigenvalue √λ has no derivative (rank-deficient input is
    # covered by Newton–Schulz, a polynomial, above).
    gs.check_backward(F.sqrtm_eig, [sigma], mode="elementwise")


def test_eig_backward_with_repeated_eigenvalues_uses_the_limit_eq8(rng):
    q, _ = np.linalg.qr(rng.standard_normal((2, 4, 4)))
    sigma = (q * np.array([2.0, 2.0, 2.0, 5.0])) @ np.swapaxes(q, 1, 2)  # a triple eigenvalue
    g = rng.standard_normal(sigma.shape)
    got = grad_of(F.sqrtm_eig, sigma, g)
    assert np.all(np.isfinite(got))
    exact = sqrt_frechet_adjoint(sigma, 0.5 * (g + np.swapaxes(g, 1, 2)))
    np.testing.assert_allclose(got, exact, atol=1e-12 * np.abs(exact).max())
    gs.check_backward(F.sqrtm_eig, [sigma], mode="elementwise")  # √ is smooth there (PD)


def test_eig_clamps_tiny_negative_eigenvalues_eq2(rng):
    q, _ = np.linalg.qr(rng.standard_normal((1, 4, 4)))
    lam = np.array([-1e-14, 0.5, 1.0, 3.0])
    sigma = (q * lam) @ np.swapaxes(q, 1, 2)
    c = F.sqrtm_eig(sigma).data
    expected = (q * np.sqrt(np.maximum(lam, 0))) @ np.swapaxes(q, 1, 2)
    np.testing.assert_allclose(c, expected, atol=1e-7)  # √(1e-14) = 1e-7 is the scale of the change
    # rank-deficient covariances: finite gradient, zero where both eigenvalues are 0 (eq. (9))
    cov = relu_feature_covariances(rng, 2, 6, 3)
    assert np.all(np.isfinite(grad_of(F.sqrtm_eig, cov, rng.standard_normal(cov.shape))))


def test_eig_gradient_is_symmetric_and_keeps_float32(rng):
    sigma = relu_feature_covariances(rng, 2, 4, 9).astype(np.float32)
    g = grad_of(F.sqrtm_eig, sigma, rng.standard_normal(sigma.shape).astype(np.float32))
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, np.swapaxes(g, 1, 2), atol=1e-5 * np.abs(g).max())


# ===== backends and derivations ===========================================================================
@pytest.mark.parametrize("fn", [ns(1), ns(5), F.sqrtm_eig], ids=["ns1", "ns5", "eig"])
def test_backend_parity(xp, fn, rng):
    sigma = relu_feature_covariances(rng, 2, 5, 8)
    g = rng.standard_normal(sigma.shape)
    t = gs.Tensor(xp.asarray(sigma), requires_grad=True)
    c = fn(t)
    c.backward(xp.asarray(g))
    np.testing.assert_allclose(gs.to_cpu(c.data), fn(sigma).data, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gs.to_cpu(t.grad.data), grad_of(fn, sigma, g), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name, tags", [("06_newton_schulz.md", range(1, 17)), ("07_eig_sqrt.md", range(1, 11))])
def test_derivations_have_the_cited_equations(name, tags):
    text = (DERIVATIONS / name).read_text()
    for n in tags:
        assert f"\\tag{{{n}}}" in text, f"{name} lacks \\tag{{{n}}}"


def test_unrolled_ns_supports_second_order_gradients(rng):
    """The autodiff reference keeps a differentiable graph: a Hessian-vector product of
    s(a) = <G, NS(a)> equals central differences of its gradient (the kernel-style
    NS refuses create_graph)."""
    sigma = S.covariance_of_features(rng.standard_normal((1, 4, 9)))
    g, v = rng.standard_normal(sigma.shape), rng.standard_normal(sigma.shape)
    hvp, numeric = hessian_vector_products(
        lambda a: F.sum(F.sqrtm_newton_schulz_unrolled(a, 3, eps=0.0) * gs.Tensor(g)), sigma, v
    )
    np.testing.assert_allclose(hvp, numeric, rtol=1e-6, atol=1e-8 * np.abs(numeric).max())
    with pytest.raises(RuntimeError, match="not differentiable"):
        F.sum(F.sqrtm_newton_schulz(gs.Tensor(sigma, requires_grad=True), 3)).backward(create_graph=True)
