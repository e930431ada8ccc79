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
from gmsop_np.functions import matrix_sqrt
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


def isqrt_cov_as_published(a, n):
    """iSQRT-COV as it is usually written, with a special first and last step, in plain NumPy:
    Z_1 = (3I − A)/2, Y_1 = A Z_1, middle steps, P = ½ Y_{N-1} (3I − Z_{N-1} Y_{N-1}); N = 1: ½ A (3I − A)."""
    three_eye = 3 * np.eye(a.shape[-1])
    if n == 1:
        return 0.5 * (a @ (three_eye - a))
    z = 0.5 * (three_eye - a)
    y = a @ z
    for _ in range(2, n):
        t = 0.5 * (three_eye - z @ y)
        y, z = y @ t, t @ z
    return 0.5 * (y @ (three_eye - z @ y))


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


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_ns_loop_is_bit_for_bit_the_published_isqrt_cov_eqs2to5(n, rng):
    # One loop over eq. (2) that skips the products of eqs. (3)-(4) computes exactly the algorithm
    # with special first and last steps: moving the factor 1/2 into a product is exact in floating point.
    sigma = relu_feature_covariances(rng, batch=3, d=9, length=6)
    t = np.trace(sigma, axis1=1, axis2=2)[:, None, None]
    c = F.sqrtm_newton_schulz(sigma, n, eps=0.0).data
    np.testing.assert_array_equal(c, np.sqrt(t) * isqrt_cov_as_published(sigma / t, n))


@given(S.spd_batches(batch=(1, 2), dim=(2, 5), max_condition=20.0))
def test_ns_stores_the_iterates_indexed_as_in_eq2(sigma):
    # ys[k] = Y_k = p_k(A) (p_0(a) = a), zs[k] = Z_k = p_k(A) A^{-1} (the invariant y = a z),
    # ts[k] = T_k = (3I − Z_{k-1} Y_{k-1}) / 2; None where eqs. (3)-(4) form no matrix (Z_0 = I, Z_N, T_0).
    n = 4
    fn = NewtonSchulzSqrt(n, 0.0)
    fn(gs.Tensor(sigma))
    lam, u = np.linalg.eigh(sigma)
    a = lam / lam.sum(axis=1, keepdims=True)

    def spectral(values):
        return (u * values[:, None, :]) @ np.swapaxes(u, 1, 2)

    scale = np.abs(spectral(np.sqrt(a))).max()
    assert len(fn.ys) == len(fn.zs) == len(fn.ts) == n + 1
    assert fn.zs[0] is None and fn.zs[n] is None and fn.ts[0] is None
    np.testing.assert_allclose(fn.ys[0], spectral(a), atol=1e-12 * scale)
    for k in range(1, n + 1):
        np.testing.assert_allclose(fn.ys[k], spectral(p_n(a, k)), atol=1e-12 * scale)
        y_prev = a if k == 1 else p_n(a, k - 1)
        np.testing.assert_allclose(fn.ts[k], spectral(0.5 * (3 - y_prev**2 / a)), atol=1e-10)
    for k in range(1, n):
        np.testing.assert_allclose(fn.zs[k], spectral(p_n(a, k) / a), atol=1e-10 * np.abs(fn.zs[k]).max())


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
    # Far from exact for few steps (intended: it is what the paper trains with), converging for many.
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


def test_ns_one_step_backward_is_the_closed_form_eq15(rng):
    # N = 1: the loop's single step, with both skips of eqs. (13)-(14), is the VJP of
    # P = 3/2 A − 1/2 A A: Ā = 3/2 P̄ − 1/2 (P̄ Aᵀ + Aᵀ P̄), for non-symmetric A and P̄.
    a = rng.standard_normal((2, 4, 4)) * 0.3
    a[:, range(4), range(4)] = 0.25  # trace exactly 1, so A = Σ / t is a itself (eq. (1))
    gp = rng.standard_normal(a.shape)
    fn = NewtonSchulzSqrt(1, 0.0)
    fn.forward(a)
    assert np.array_equal(fn.ys[0], a)
    expected = 1.5 * gp - 0.5 * (gp @ np.swapaxes(a, 1, 2) + np.swapaxes(a, 1, 2) @ gp)
    np.testing.assert_allclose(fn._backprop_iterations(gp), expected, rtol=1e-13, atol=1e-13)


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
        (np.ones((2, 0, 0)), ValueError, "d >= 1"),
        (np.ones((2, 3, 3), dtype=np.int64), TypeError, "floating-point"),
    ],
)
def test_bad_shape_or_dtype_is_rejected_always(fn, bad, error, match):
    # Free checks (metadata only): on in every mode.
    with pytest.raises(error, match=match):
        fn(bad)


@pytest.mark.parametrize("fn", [ns(3, eps=1e-8), F.sqrtm_eig], ids=["ns", "eig"])
@pytest.mark.parametrize(
    "bad, match",
    [
        (_with(np.nan, (1, 0, 2)), "NaN or infinite"),
        (_with(np.inf, (0, 1, 1)), "NaN or infinite"),
        (-np.tile(np.eye(3), (2, 1, 1)), r"positive semi-definite .*matrices \[0, 1\]"),
    ],
)
def test_bad_values_are_rejected_in_debug_mode(fn, bad, match):
    # Value checks read the array (a device->host synchronisation on a GPU): debug mode only.
    with gs.debug(), pytest.raises(ValueError, match=match):
        fn(bad)


@pytest.mark.parametrize(
    "bad",
    [_with(np.nan, (1, 0, 2)), _with(np.inf, (1, 1, 1)), _with(-1.0, (1, slice(None), slice(None)))],
    ids=["nan", "inf", "negative-trace"],
)
def test_bad_values_outside_debug_mode_give_nan_without_raising(bad, rng):
    # The training loop's NaN guard catches this at the loss; forward and backward must not raise.
    x = gs.Tensor(bad, requires_grad=True)
    with np.errstate(invalid="ignore", over="ignore"):
        c = F.sqrtm_newton_schulz(x, 3)
        c.backward(rng.standard_normal(c.shape))
    assert np.isnan(c.data[1]).all()
    assert np.isfinite(x.grad.data[0]).all()
    np.testing.assert_allclose(c.data[0], np.sqrt(3) * p_n(1 / 3, 3) * np.eye(3))  # the healthy matrix: eq. (7)


def test_zero_trace_with_eps_zero_is_nan_outside_debug_mode_and_rejected_in_it():
    zero = np.zeros((1, 2, 2))
    with np.errstate(invalid="ignore"):
        assert np.isnan(F.sqrtm_newton_schulz(zero, 3, eps=0.0).data).all()  # 0 / 0
    with gs.debug(), pytest.raises(ValueError, match=r"trace > 0"):
        F.sqrtm_newton_schulz(zero, 3, eps=0.0)
    with gs.debug():
        assert np.all(F.sqrtm_newton_schulz(zero, 3).data == 0)  # the default eps > 0 allows it


def test_only_the_square_root_checks_values_in_debug_mode():
    # triu_vec only gathers: it checks shapes, never values, even in debug mode.
    bad = gs.Tensor(_with(np.nan, (0, 0, 0)))
    with gs.debug():
        assert np.isnan(F.triu_vec(bad).data[0, 0])
        with pytest.raises(ValueError, match="sqrtm_newton_schulz got NaN"):
            F.sqrtm_newton_schulz(bad, 3)


@pytest.mark.parametrize("fn", [F.sqrtm_newton_schulz, F.sqrtm_newton_schulz_unrolled], ids=["ns", "unrolled"])
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_iters=0), ValueError, "num_iters must be >= 1"),
        (dict(num_iters=2.0), TypeError, "num_iters must be an integer"),
        (dict(num_iters=True), TypeError, "num_iters must be an integer"),
        (dict(num_iters=3, eps=-1.0), ValueError, "eps must be a finite number >= 0"),
        (dict(num_iters=3, eps=float("inf")), ValueError, "eps must be a finite number"),
        (dict(num_iters=3, eps="1e-8"), TypeError, "eps must be a number"),
    ],
)
def test_bad_ns_arguments(fn, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(np.eye(2)[None], **kwargs)


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


# ===== eigh of a batch: one batched call, or one call per matrix on a device for d > 32 ===================
class RecordingDeviceModule:
    """A stand-in array module that is not NumPy (like CuPy): NumPy underneath, and it records
    the shape of every eigh call, so a test can see which path ``batched_eigh`` took."""

    def __init__(self):
        self.eigh_calls = []
        self.linalg = self
        self.stack = np.stack

    def eigh(self, a):
        self.eigh_calls.append(a.shape)
        return np.linalg.eigh(a)


def test_batched_eigh_dispatch_is_one_call_except_on_a_device_above_32():
    assert matrix_sqrt.BATCHED_EIGH_MAX_DIM == 32
    device = RecordingDeviceModule()
    assert matrix_sqrt.uses_batched_eigh(np, 128)  # NumPy: LAPACK's syevd per matrix, any d
    assert matrix_sqrt.uses_batched_eigh(device, 32)  # syevjBatched's documented range
    assert not matrix_sqrt.uses_batched_eigh(device, 33)
    assert not matrix_sqrt.uses_batched_eigh(device, 128)


@pytest.mark.parametrize("d, calls", [(32, [(3, 32, 32)]), (33, [(33, 33)] * 3), (128, [(128, 128)] * 3)])
def test_batched_eigh_on_a_device_module_takes_the_documented_path(d, calls, rng):
    sigma = relu_feature_covariances(rng, batch=3, d=d, length=64)
    device = RecordingDeviceModule()
    lam, u = matrix_sqrt.batched_eigh(device, sigma)
    assert device.eigh_calls == calls
    expected_lam, expected_u = np.linalg.eigh(sigma)
    np.testing.assert_array_equal(lam, expected_lam)  # per matrix: the same LAPACK call on the same matrix
    np.testing.assert_array_equal(u, expected_u)


def test_eig_root_and_gradient_are_the_same_on_the_per_matrix_path(rng, monkeypatch):
    # Force the path a GPU takes for d > 32 on NumPy: same root, same gradient as one batched call.
    sigma = np.concatenate(
        [relu_feature_covariances(rng, 2, 40, 64), S.covariance_of_features(rng.standard_normal((1, 40, 90)))]
    )
    g = rng.standard_normal(sigma.shape)
    batched_root, batched_grad = F.sqrtm_eig(sigma).data, grad_of(F.sqrtm_eig, sigma, g)
    monkeypatch.setattr(matrix_sqrt, "uses_batched_eigh", lambda xp, d: False)
    np.testing.assert_allclose(F.sqrtm_eig(sigma).data, batched_root, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grad_of(F.sqrtm_eig, sigma, g), batched_grad, rtol=1e-13, atol=1e-13)
    exact = exact_sqrt_by_eigh(sigma)
    np.testing.assert_allclose(F.sqrtm_eig(sigma).data, exact, atol=1e-12 * np.abs(exact).max())


def test_eig_backend_parity_above_the_batched_solver_limit(xp, rng):
    # d = 40 > 32: on CuPy this is the per-matrix path (cuSOLVER syevd), on NumPy one batched call.
    sigma = S.covariance_of_features(rng.standard_normal((2, 40, 60)))
    g = rng.standard_normal(sigma.shape)
    t = gs.Tensor(xp.asarray(sigma), requires_grad=True)
    c = F.sqrtm_eig(t)
    c.backward(xp.asarray(g))
    np.testing.assert_allclose(gs.to_cpu(c.data), exact_sqrt_by_eigh(sigma), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gs.to_cpu(t.grad.data), grad_of(F.sqrtm_eig, sigma, g), rtol=1e-7, atol=1e-9)


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
