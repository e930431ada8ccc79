"""Core ops: forward vs NumPy, float64 gradient checks (Hypothesis, random cotangent),
broadcasting, second-order gradients and backend parity."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gmsop_np as gs
import gmsop_np.functional as F

from checks import hessian_vector_products
from strategies import (
    arrays,
    away_from_zero,
    broadcastable_pair,
    distinct_arrays,
    positive_arrays,
    shapes,
)

BINARY = {
    "add": (F.add, np.add),
    "sub": (F.sub, np.subtract),
    "mul": (F.mul, np.multiply),
    "div": (F.div, np.divide),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_ops_broadcast_eq5(name, data):
    """Forward equals NumPy and broadcast gradients are summed back (01_autodiff eq. (5))."""
    op, reference = BINARY[name]
    shape_a, shape_b = data.draw(broadcastable_pair())
    if data.draw(st.booleans()):
        shape_a, shape_b = shape_b, shape_a
    a = data.draw(arrays(shape_a))
    b = data.draw(positive_arrays(shape_b)) if name == "div" else data.draw(arrays(shape_b))
    np.testing.assert_array_equal(op(gs.Tensor(a), gs.Tensor(b)).data, reference(a, b))
    gs.check_backward(op, [a, b])


@given(x=shapes(max_dims=3).flatmap(arrays))
def test_neg_and_exp(x):
    np.testing.assert_array_equal(F.neg(gs.Tensor(x)).data, -x)
    np.testing.assert_allclose(F.exp(gs.Tensor(x)).data, np.exp(x))
    gs.check_backward(F.neg, [x])
    gs.check_backward(F.exp, [x])


@given(x=shapes(max_dims=3).flatmap(positive_arrays))
def test_log_sqrt_and_pow(x):
    np.testing.assert_allclose(F.log(gs.Tensor(x)).data, np.log(x))
    np.testing.assert_allclose(F.sqrt(gs.Tensor(x)).data, np.sqrt(x))
    np.testing.assert_allclose(F.pow(gs.Tensor(x), 2.5).data, x**2.5)
    gs.check_backward(F.log, [x])
    gs.check_backward(F.sqrt, [x])
    gs.check_backward(lambda t: t**2.5, [x])
    gs.check_backward(lambda t: t**-1, [x])


@given(x=shapes(max_dims=3).flatmap(away_from_zero))
def test_abs_away_from_kink(x):
    np.testing.assert_array_equal(F.abs(gs.Tensor(x)).data, np.abs(x))
    gs.check_backward(F.abs, [x])


@given(data=st.data())
def test_matmul_batched_with_broadcast_batch_dims(data):
    m, k, n = (data.draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = data.draw(broadcastable_pair(max_dims=2, max_side=3))
    a = data.draw(arrays(batch_a + (m, k)))
    b = data.draw(arrays(batch_b + (k, n)))
    np.testing.assert_allclose(F.matmul(gs.Tensor(a), gs.Tensor(b)).data, np.matmul(a, b), rtol=1e-12)
    gs.check_backward(F.matmul, [a, b])


def test_matmul_rejects_vectors_with_advice():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        F.matmul(gs.Tensor(np.ones(3)), gs.Tensor(np.ones((3, 2))))


def _axis_strategy(ndim):
    single = st.integers(-ndim, ndim - 1)
    several = st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)
    return st.one_of(st.none(), single, several)


@given(data=st.data())
def test_sum_and_mean_over_axes(data):
    shape = data.draw(shapes(max_dims=3))
    x = data.draw(arrays(shape))
    axis = data.draw(_axis_strategy(len(shape)))
    keepdims = data.draw(st.booleans())
    np.testing.assert_allclose(F.sum(gs.Tensor(x), axis, keepdims).data, x.sum(axis=axis, keepdims=keepdims))
    np.testing.assert_allclose(F.mean(gs.Tensor(x), axis, keepdims).data, x.mean(axis=axis, keepdims=keepdims))
    gs.check_backward(lambda t: F.sum(t, axis, keepdims), [x])
    gs.check_backward(lambda t: F.mean(t, axis, keepdims), [x])


@given(data=st.data())
def test_max_away_from_ties(data):
    shape = data.draw(shapes(max_dims=3))
    x = data.draw(distinct_arrays(shape))
    axis = data.draw(_axis_strategy(len(shape)))
    keepdims = data.draw(st.booleans())
    np.testing.assert_array_equal(F.max(gs.Tensor(x), axis, keepdims).data, x.max(axis=axis, keepdims=keepdims))
    gs.check_backward(lambda t: F.max(t, axis, keepdims), [x])


def test_max_splits_gradient_among_ties():
    x = gs.Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    F.max(x).backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.5, 0.5])


@given(data=st.data())
def test_reshape_transpose_swapaxes(data):
    shape = data.draw(shapes(min_dims=2, max_dims=4))
    x = data.draw(arrays(shape))
    perm = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(F.transpose(gs.Tensor(x), perm).data, x.transpose(perm))
    np.testing.assert_array_equal(gs.Tensor(x).T.data, x.T)
    np.testing.assert_array_equal(F.swapaxes(gs.Tensor(x), 0, -1).data, np.swapaxes(x, 0, -1))
    gs.check_backward(lambda t: F.transpose(t, perm), [x])
    gs.check_backward(lambda t: F.swapaxes(t, 0, -1), [x])
    gs.check_backward(lambda t: F.reshape(t, (-1,)), [x])
    gs.check_backward(lambda t: t.reshape(shape[0], -1), [x])


@pytest.mark.parametrize(
    "index",
    [
        (slice(1, None), 0),
        (Ellipsis, slice(None, None, 2)),
        (np.array([0, 2, 0, 0]),),  # repeated rows: gradients must accumulate
        (np.array([[1, 0], [2, 2]]), slice(0, 2)),
        (np.array([True, False, True]),),
        (1, -1),
    ],
    ids=["slice-int", "ellipsis-step", "repeated-rows", "2d-int-array", "bool-mask", "scalar"],
)
def test_getitem_scatter_gradient(index, rng):
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(gs.Tensor(x)[index].data, x[index])
    gs.check_backward(lambda t: t[index], [x])


def test_getitem_repeated_indices_accumulate_exactly():
    x = gs.Tensor(np.zeros(3), requires_grad=True)
    x[np.array([0, 0, 2, 0])].backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(x.grad.data, [7.0, 0.0, 3.0])


@given(data=st.data())
def test_concatenate_and_stack(data):
    base = data.draw(shapes(min_dims=1, max_dims=3))
    axis = data.draw(st.integers(0, len(base) - 1))
    pieces = []
    for _ in range(data.draw(st.integers(1, 3))):
        shape = list(base)
        shape[axis] = data.draw(st.integers(1, 3))
        pieces.append(data.draw(arrays(tuple(shape))))
    np.testing.assert_array_equal(
        F.concatenate([gs.Tensor(p) for p in pieces], axis).data, np.concatenate(pieces, axis)
    )
    gs.check_backward(lambda *ts: F.concatenate(ts, axis), pieces)
    same = [data.draw(arrays(base)) for _ in range(2)]
    stack_axis = data.draw(st.integers(-len(base) - 1, len(base)))
    np.testing.assert_array_equal(F.stack([gs.Tensor(p) for p in same], stack_axis).data, np.stack(same, stack_axis))
    gs.check_backward(lambda *ts: F.stack(ts, stack_axis), same)


@given(data=st.data())
def test_where_routes_gradient(data):
    shape_a, shape_b = data.draw(broadcastable_pair(max_dims=3))
    a, b = data.draw(arrays(shape_a)), data.draw(arrays(shape_b))
    cond = data.draw(arrays(np.broadcast_shapes(shape_a, shape_b))) > 0
    np.testing.assert_array_equal(F.where(cond, gs.Tensor(a), gs.Tensor(b)).data, np.where(cond, a, b))
    gs.check_backward(lambda s, t: F.where(cond, s, t), [a, b])


@given(x=shapes(max_dims=3).flatmap(arrays))
def test_clip_away_from_bounds(x):
    lo, hi = -1.0, 1.0
    x = np.where(np.abs(np.abs(x) - 1.0) < 0.05, 1.2 * x, x)  # move entries off the kinks at +-1
    np.testing.assert_array_equal(F.clip(gs.Tensor(x), lo, hi).data, np.clip(x, lo, hi))
    gs.check_backward(lambda t: F.clip(t, lo, hi), [x])
    gs.check_backward(lambda t: F.clip(t, None, hi), [x])


@given(data=st.data())
def test_broadcast_to_and_sum_to_are_adjoint(data):
    small, big = data.draw(broadcastable_pair(max_dims=3))
    target = np.broadcast_shapes(small, big)
    x = data.draw(arrays(small))
    np.testing.assert_array_equal(F.broadcast_to(gs.Tensor(x), target).data, np.broadcast_to(x, target))
    gs.check_backward(lambda t: F.broadcast_to(t, target), [x])
    y = data.draw(arrays(target))
    gs.check_backward(lambda t: F.sum_to(t, small), [y])


def test_hessian_vector_product_by_double_backward():
    """f(x) = sum(A (x / (1 + x^2))): H v by create_graph=True equals the FD of the gradient along v."""
    rng = np.random.default_rng(1)
    a = gs.Tensor(rng.standard_normal((3, 3)))
    x0, v = rng.standard_normal((3, 1)), rng.standard_normal((3, 1))
    hvp, numeric = hessian_vector_products(lambda x: F.sum(F.matmul(a, x / (1.0 + x * x))), x0, v)
    np.testing.assert_allclose(hvp, numeric, rtol=1e-6, atol=1e-8)


def test_backend_parity_of_core_ops(xp):
    """The same graph on the test backend equals NumPy float64 (forward and gradients)."""
    rng = np.random.default_rng(7)
    a_np, b_np = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))

    def run(a, b):
        ta, tb = gs.Tensor(a, requires_grad=True), gs.Tensor(b, requires_grad=True)
        y = F.sum(F.exp(F.matmul(ta, tb)[:, 1:] * 0.1), axis=1).max(axis=-1)
        y.backward(gs.get_array_module(y).ones(y.shape))  # the upstream gradient lives where y lives
        return [gs.to_cpu(t) for t in (y.data, ta.grad.data, tb.grad.data)]

    expected = run(a_np, b_np)
    got = run(xp.asarray(a_np), xp.asarray(b_np))
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-12)
