"""Covariance pooling (paper Eq. 5): derivations/05_covariance_pooling.md, eqs. (1)-(4)."""

import pathlib

import numpy as np
import pytest
from hypothesis import given

import gmsop_np as gs
import gmsop_np.functional as F

import strategies as S

DERIVATION = pathlib.Path(__file__).resolve().parents[1] / "derivations" / "05_covariance_pooling.md"


def covariance_by_dense_centring(x):
    """The paper's literal Eq. (5): Σ = Xᵀ Ĵ X with the dense L×L Ĵ = (I − 11ᵀ/L)/L (the oracle)."""
    b, c, h, w = x.shape
    length = h * w
    j_hat = (np.eye(length) - np.ones((length, length)) / length) / length
    out = np.empty((b, c, c))
    for i in range(b):
        rows_are_positions = x[i].reshape(c, length).T  # X ∈ R^{L×d}
        out[i] = rows_are_positions.T @ j_hat @ rows_are_positions
    return out


@given(S.feature_maps(channels=(1, 5), height=(1, 4), width=(1, 4)))
def test_forward_matches_dense_centring_eq2(x):
    np.testing.assert_allclose(F.cov_pool(x).data, covariance_by_dense_centring(x), rtol=1e-12, atol=1e-12)


def test_forward_matches_numpy_cov_biased(rng):
    x = rng.standard_normal((3, 4, 5, 2))
    expected = np.stack([np.cov(x[i].reshape(4, -1), bias=True) for i in range(3)])
    np.testing.assert_allclose(F.cov_pool(x).data, expected, rtol=1e-12, atol=1e-14)


@given(S.feature_maps(channels=(1, 4), height=(1, 3), width=(1, 3)))
def test_backward_finite_differences_eq4(x):
    # check_backward draws a Gaussian (hence non-symmetric) cotangent G for Σ.
    gs.check_backward(F.cov_pool, [x], mode="elementwise")


def test_backward_is_eq4_for_a_non_symmetric_gradient(rng):
    x = rng.standard_normal((2, 3, 2, 3))
    g = rng.standard_normal((2, 3, 3))
    assert np.abs(g - g.transpose(0, 2, 1)).max() > 0.1  # really non-symmetric
    t = gs.Tensor(x, requires_grad=True)
    F.cov_pool(t).backward(g)
    xc = x.reshape(2, 3, 6) - x.reshape(2, 3, 6).mean(axis=2, keepdims=True)
    expected = ((g + g.transpose(0, 2, 1)) @ xc / 6).reshape(x.shape)  # eq. (4)
    np.testing.assert_allclose(t.grad.data, expected, rtol=1e-12, atol=1e-14)
    # A backward that forgets the transpose (2 G X_c / L) is a different, wrong answer.
    assert np.abs(t.grad.data - (2 * g @ xc / 6).reshape(x.shape)).max() > 1e-3


def test_second_derivative_through_the_differentiable_backward(rng):
    # g(x) = (1/L)(U + Uᵀ) X_c is linear in x, so d<V, g(x)>/dx = (1/L) centre((U + Uᵀ) V).
    x = rng.standard_normal((2, 3, 2, 2))
    u, v = rng.standard_normal((2, 3, 3)), rng.standard_normal(x.shape)
    t = gs.Tensor(x, requires_grad=True)
    gs.backward([F.cov_pool(t)], [u], create_graph=True)
    first = t.grad
    t.grad = None
    F.sum(first * gs.Tensor(v)).backward()
    sym_u = u + u.transpose(0, 2, 1)
    w = (sym_u @ v.reshape(2, 3, 4)) / 4
    expected = (w - w.mean(axis=2, keepdims=True)).reshape(x.shape)
    np.testing.assert_allclose(t.grad.data, expected, rtol=1e-12, atol=1e-14)


def test_single_position_gives_zero_covariance():
    x = np.arange(6.0).reshape(2, 3, 1, 1)
    assert np.all(F.cov_pool(x).data == 0)


def test_keeps_dtype_and_does_not_mutate_input(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    before = x.copy()
    t = gs.Tensor(x, requires_grad=True)
    y = F.cov_pool(t)
    assert y.dtype == np.float32
    g = rng.standard_normal(y.shape).astype(np.float32)
    g_before = g.copy()
    y.backward(g)
    assert t.grad.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(g, g_before)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.ones((2, 3, 4), dtype=np.float64), ValueError, r"\(B, C, H, W\)"),
        (np.ones((2, 3, 2, 2), dtype=np.int64), TypeError, "floating-point"),
        (np.ones((2, 3, 0, 2)), ValueError, "at least one spatial position"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(bad, error, match):
    with pytest.raises(error, match=match):
        F.cov_pool(bad)


def test_backend_parity(xp, rng):
    x = rng.standard_normal((2, 3, 3, 2))
    t = gs.Tensor(xp.asarray(x), requires_grad=True)
    y = F.cov_pool(t)
    g = rng.standard_normal(y.shape)
    y.backward(xp.asarray(g))
    np.testing.assert_allclose(gs.to_cpu(y.data), covariance_by_dense_centring(x), atol=1e-12)
    ref = gs.Tensor(x, requires_grad=True)
    F.cov_pool(ref).backward(g)
    np.testing.assert_allclose(gs.to_cpu(t.grad.data), ref.grad.data, atol=1e-12)


def test_derivation_has_the_cited_equations():
    text = DERIVATION.read_text()
    for n in range(1, 7):
        assert f"\\tag{{{n}}}" in text, f"{DERIVATION.name} lacks \\tag{{{n}}}"
