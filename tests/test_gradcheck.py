"""The gradient-check harness must catch wrong gradients -- including the one a
sum-of-outputs check cannot see."""

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.core import Function


def softmax_by_ops(x):
    e = F.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ZeroBackwardSoftmax(Function):
    """A correct softmax forward with a wrong (all-zero) backward."""

    def forward(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def backward(self, gy):
        return gy * 0.0


def test_harness_rejects_zero_backward_softmax_that_a_sum_check_accepts(rng):
    x = rng.standard_normal((3, 5))
    # The naive check (cotangent of ones) is blind: sum(softmax(x)) == 1 for all x,
    # so both the true gradient and the broken one are zero.
    t = gs.Tensor(x, requires_grad=True)
    F.sum(ZeroBackwardSoftmax()(t)).backward()
    naive_numeric = gs.numerical_vjp(
        lambda s: ZeroBackwardSoftmax()(s), [t], 0, [np.ones((3, 5))], rng.standard_normal((3, 5)), 1e-6
    )
    assert abs(naive_numeric) < 1e-8 and np.all(t.grad.data == 0), "sum-check passes the broken op"
    # Our harness uses a random cotangent and catches it, in both modes.
    with pytest.raises(gs.GradientCheckError, match="worst at input 0"):
        gs.check_backward(lambda s: ZeroBackwardSoftmax()(s), [x], mode="elementwise")
    with pytest.raises(gs.GradientCheckError, match="random direction"):
        gs.check_backward(lambda s: ZeroBackwardSoftmax()(s), [x], mode="directional")
    # ... and the correct softmax passes.
    gs.check_backward(softmax_by_ops, [x], mode="elementwise")
    gs.check_backward(softmax_by_ops, [x], mode="directional")


class ScaledGradient(Function):
    """y = 2x with a backward off by a factor (1 + delta) on one entry."""

    def __init__(self, delta):
        self.delta = delta

    def forward(self, x):
        return 2 * x

    def backward(self, gy):
        g = 2 * gy.data.copy()
        g.flat[3] *= 1 + self.delta
        return gs.Tensor(g)


def test_failure_message_names_worst_element(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(gs.GradientCheckError) as info:
        gs.check_backward(lambda t: ScaledGradient(1e-3)(t), [x], mode="elementwise")
    message = str(info.value)
    assert "element (1, 0)" in message and "analytic" in message and "numeric" in message


def test_tiny_but_real_error_is_caught(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(gs.GradientCheckError):
        gs.check_backward(lambda t: ScaledGradient(1e-4)(t), [x])
    gs.check_backward(lambda t: ScaledGradient(0.0)(t), [x])


def test_multiple_outputs_and_integer_inputs_pass_through(rng):
    x = rng.standard_normal((4, 3))
    labels = np.array([0, 2, 1, 1])

    def picked_and_square(t, y):
        return t[np.arange(4), y.data], t * t

    grads = gs.check_backward(picked_and_square, [x, labels])
    assert len(grads) == 1 and grads[0].shape == (4, 3)


def test_harness_refuses_float32(rng):
    with pytest.raises(TypeError, match="float64"):
        gs.check_backward(F.exp, [rng.standard_normal(3).astype(np.float32)])


def test_harness_does_not_mutate_inputs(rng):
    x = rng.standard_normal((3, 3))
    before = x.copy()
    gs.check_backward(F.exp, [x])
    np.testing.assert_array_equal(x, before)
