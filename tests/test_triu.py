"""Upper-triangular vectorisation: derivations/05_covariance_pooling.md, eqs. (5)-(6)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions.basic import GetItemGrad

import strategies as S


def triu_by_loops(a):
    """Oracle: row-major walk over i <= j."""
    b, d, _ = a.shape
    return np.array([[a[k, i, j] for i in range(d) for j in range(i, d)] for k in range(b)])


@st.composite
def square_batches(draw, batch=(1, 3), dim=(1, 5)):
    b, d = draw(st.integers(*batch)), draw(st.integers(*dim))
    return draw(S.arrays((b, d, d)))


@given(square_batches())
def test_forward_is_row_major_upper_triangle_eq5(a):
    v = F.triu_vec(a).data
    d = a.shape[1]
    assert v.shape == (a.shape[0], d * (d + 1) // 2)
    np.testing.assert_array_equal(v, triu_by_loops(a))


def test_order_and_length_for_d128():
    a = np.arange(128 * 128, dtype=np.float64).reshape(1, 128, 128)
    v = F.triu_vec(a).data
    assert v.shape == (1, 8256)
    # row-major: first row 0..127, then (1,1), (1,2), ...; last entry is (127, 127)
    np.testing.assert_array_equal(v[0, :129], np.r_[np.arange(128), 128 + 1])
    assert v[0, -1] == 128 * 128 - 1


@given(square_batches())
def test_backward_finite_differences_eq6(a):
    gs.check_backward(F.triu_vec, [a], mode="elementwise")


def test_backward_scatters_into_zeros_eq6(rng):
    a = gs.Tensor(rng.standard_normal((2, 4, 4)), requires_grad=True)
    gv = rng.standard_normal((2, 10))
    F.triu_vec(a).backward(gv)
    rows, cols = np.triu_indices(4)
    np.testing.assert_array_equal(a.grad.data[:, rows, cols], gv)
    np.testing.assert_array_equal(np.tril(a.grad.data, -1), 0)  # lower triangle: exactly 0
    # the upstream gradient of SR-SOP is therefore NOT symmetric
    assert np.abs(a.grad.data - a.grad.data.transpose(0, 2, 1)).max() > 0


def test_adjoint_identity_and_its_own_gradient(rng):
    """triu_vec is a gather with unique indices: its adjoint assigns into zeros (eq. (6))."""
    a, v = rng.standard_normal((3, 5, 5)), rng.standard_normal((3, 15))
    x = gs.Tensor(a.copy(), requires_grad=True)
    F.triu_vec(x).backward(v)  # x.grad = T*(v)
    assert abs(np.vdot(F.triu_vec(a).data, v) - np.vdot(a, x.grad.data)) < 1e-12
    rows, cols = np.triu_indices(5)
    expected = np.zeros((3, 5, 5))
    expected[:, rows, cols] = v
    np.testing.assert_array_equal(x.grad.data, expected)
    adjoint = GetItemGrad((slice(None), rows, cols), (3, 5, 5), unique=True)
    gs.check_backward(lambda t: adjoint(t), [v])  # the adjoint's VJP is triu_vec again


def test_keeps_dtype_and_does_not_mutate(rng):
    a = rng.standard_normal((2, 3, 3)).astype(np.float32)
    before = a.copy()
    t = gs.Tensor(a, requires_grad=True)
    y = F.triu_vec(t)
    y.data[...] = 0  # the output is a copy, not a view of a
    np.testing.assert_array_equal(a, before)
    assert y.dtype == np.float32


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.ones((3, 3)), ValueError),
        (np.ones((2, 3, 4)), ValueError),
        (np.ones((2, 3, 3), dtype=np.int32), TypeError),
    ],
)
def test_bad_input(bad, error):
    with pytest.raises(error, match="triu_vec"):
        F.triu_vec(bad)


def test_backend_parity(xp, rng):
    a = rng.standard_normal((2, 4, 4))
    t = gs.Tensor(xp.asarray(a), requires_grad=True)
    y = F.triu_vec(t)
    gv = rng.standard_normal(y.shape)
    y.backward(xp.asarray(gv))
    np.testing.assert_array_equal(gs.to_cpu(y.data), triu_by_loops(a))
    ref = gs.Tensor(a, requires_grad=True)
    F.triu_vec(ref).backward(gv)
    np.testing.assert_array_equal(gs.to_cpu(t.grad.data), ref.grad.data)
