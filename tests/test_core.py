"""The engine: graph construction, backward order, accumulation, modes, errors."""

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.core import ArrayFunction, Function
from gmsop_np.testing import device_sim, simulated_gpu


def leaf(values, dtype=np.float64):
    return gs.Tensor(np.asarray(values, dtype=dtype), requires_grad=True)


def test_tensor_basics():
    t = gs.Tensor([[1, 2, 3]])
    assert t.shape == (1, 3) and t.ndim == 2 and t.size == 3
    assert t.dtype == np.float32, "Python data defaults to float32"
    assert t.backend == "numpy"
    assert gs.Tensor(np.zeros(2)).dtype == np.float64, "float64 arrays keep their dtype"
    assert gs.Tensor(np.arange(3)).dtype.kind == "i", "integer arrays (labels) keep their dtype"
    copy = t.numpy()
    copy[0, 0] = 99
    assert t.data[0, 0] == 1, "numpy() returns a copy"
    assert gs.Tensor(np.float64(2.5)).item() == 2.5


def test_python_scalars_keep_tensor_dtype():
    x = gs.Tensor(np.ones(3, dtype=np.float32))
    for y in (x + 1.5, 2.0 * x, x / 3, 1 - x, x**2):
        assert y.dtype == np.float32


def test_reused_non_leaf_accumulates():
    """b = a + a; c = b + b  =>  dc/da = 4 (micrograd's classic bug case)."""
    a = leaf([1.0, -2.0])
    b = a + a
    c = b + b
    c.backward(np.ones(2))
    np.testing.assert_array_equal(a.grad.data, [4.0, 4.0])


def test_diamond_graph_order():
    """y = (x*x) * exp(x) reuses x on two paths; dy/dx = (2x + x^2) e^x."""
    x = leaf([0.3, -1.2, 2.0])
    y = (x * x) * F.exp(x)
    y.backward(np.ones(3))
    xv = x.data
    np.testing.assert_allclose(x.grad.data, (2 * xv + xv**2) * np.exp(xv), rtol=1e-13)


def test_second_backward_after_clearing_is_identical():
    x = leaf(np.linspace(-1, 1, 6).reshape(2, 3))
    w = leaf(np.arange(12.0).reshape(3, 4) / 10)
    u = np.random.default_rng(0).standard_normal((2, 4))
    y = F.matmul(F.exp(x), w)
    y.backward(u)
    first = (x.grad.numpy(), w.grad.numpy())
    y.backward(u)  # without clearing: accumulates
    np.testing.assert_allclose(x.grad.data, 2 * first[0])
    x.zero_grad()
    w.zero_grad()
    y.backward(u)
    np.testing.assert_array_equal(x.grad.data, first[0])
    np.testing.assert_array_equal(w.grad.data, first[1])


def test_deep_chain_of_10000_ops_does_not_recurse():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward(np.ones(1))
    np.testing.assert_allclose(x.grad.data, [1.0001**10_000], rtol=1e-10)
    del y  # freeing the long chain must not overflow the stack either


def test_second_order_gradient_of_cube():
    """d/dx x^3 = 3x^2 and d^2/dx^2 x^3 = 6x, by create_graph=True."""
    x = leaf(np.array([1.5, -0.5, 2.0]))
    y = F.sum(x**3)
    y.backward(create_graph=True)
    gx = x.grad
    np.testing.assert_allclose(gx.data, 3 * x.data**2)
    assert gx.creator is not None, "create_graph keeps a graph on the gradient"
    x.zero_grad()
    F.sum(gx).backward()
    np.testing.assert_allclose(x.grad.data, 6 * x.data)


def test_second_order_through_exp_and_mul():
    """f = sum(x * exp(x)): f'' = (2 + x) e^x."""
    x = leaf(np.array([0.1, -0.7]))
    F.sum(x * F.exp(x)).backward(create_graph=True)
    g = x.grad
    x.zero_grad()
    F.sum(g).backward()
    np.testing.assert_allclose(x.grad.data, (2 + x.data) * np.exp(x.data), rtol=1e-12)


def test_retain_grad_for_intermediate():
    x = leaf([1.0, 2.0])
    h = (x * 3.0).retain_grad()
    z = x * 5.0  # an intermediate that did not ask
    y = F.sum(h * h) + F.sum(z)
    y.backward()
    np.testing.assert_allclose(h.grad.data, 2 * h.data)
    assert z.grad is None
    np.testing.assert_allclose(x.grad.data, 18 * x.data + 5)


def test_no_grad_context_and_decorator():
    x = leaf([1.0])
    with gs.no_grad():
        y = x * 2
    assert y.creator is None and not y.requires_grad

    @gs.no_grad()
    def f(t):
        return t * 2

    assert f(x).creator is None
    assert (x * 2).creator is not None, "recording is back on after the block"


def test_debug_switch_nests_and_restores():
    assert not gs.is_debug()
    with gs.debug():
        assert gs.is_debug()
        with gs.debug(False):
            assert not gs.is_debug()
        assert gs.is_debug()
    assert not gs.is_debug()


def test_leaf_without_requires_grad_gets_no_grad():
    x = leaf([1.0, 2.0])
    c = gs.Tensor(np.array([3.0, 4.0]))
    (x * c).backward(np.ones(2))
    assert c.grad is None
    np.testing.assert_array_equal(x.grad.data, [3.0, 4.0])


def test_backward_needs_gradient_for_non_scalar():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        gs.Tensor(np.ones(2)).backward(np.ones(2))


class WrongCount(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy


class WrongShape(Function):
    def forward(self, a):
        return a.sum()

    def backward(self, gy):
        return gy  # should be broadcast to a's shape


def test_backward_errors_name_the_function():
    a, b = leaf([1.0]), leaf([2.0])
    with pytest.raises(RuntimeError, match=r"WrongCount\.backward returned 1 gradient\(s\) for 2 input"):
        WrongCount()(a, b).backward(np.ones(1))
    with pytest.raises(
        RuntimeError, match=r"WrongShape\.backward returned a gradient of shape \(\) for input 0 of shape \(3,\)"
    ):
        WrongShape()(leaf([1.0, 2.0, 3.0])).backward()


class KernelSquare(ArrayFunction):
    """y = x^2 with a raw-array backward (kernel style)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, gy):
        assert isinstance(gy, np.ndarray), "an ArrayFunction's backward receives raw arrays"
        return 2 * self.x * gy


def test_kernel_style_backward_works_and_refuses_create_graph():
    x = leaf([3.0])
    KernelSquare()(x).backward(np.ones(1))
    np.testing.assert_array_equal(x.grad.data, [6.0])
    with pytest.raises(RuntimeError, match="KernelSquare.backward works on raw arrays"):
        KernelSquare()(x).backward(np.ones(1), create_graph=True)


def test_multiple_outputs_and_unused_output():
    class SplitHalves(Function):
        def forward(self, x):
            return x[:2].copy(), x[2:].copy()

        def backward(self, g0, g1):
            return F.concatenate([g0, g1])

    x = leaf([1.0, 2.0, 3.0, 4.0])
    first, _ = SplitHalves()(x)
    F.sum(first * 2.0).backward()
    np.testing.assert_array_equal(x.grad.data, [2.0, 2.0, 0.0, 0.0])


def test_gradient_is_not_an_alias_of_upstream():
    x = leaf([1.0, 2.0])
    u = np.array([5.0, 6.0])
    (x + 0.0).backward(u)
    x.grad.data[0] = -1.0
    assert u[0] == 5.0, "writing into .grad must not change the caller's upstream array"


def test_forward_does_not_mutate_inputs():
    a = np.array([[1.0, -2.0], [3.0, 4.0]])
    before = a.copy()
    x = gs.Tensor(a, requires_grad=True)
    y = F.sum(F.abs(x) * F.exp(x) / (x + 10.0))
    y.backward()
    np.testing.assert_array_equal(a, before)


def test_tensor_constructor_rejects_tensor():
    with pytest.raises(TypeError, match="detach"):
        gs.Tensor(gs.Tensor([1.0]))


def test_leaves_sharing_an_upstream_gradient_get_separate_arrays():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).backward(np.ones(2))
    a.grad.data[0] = 100.0
    assert b.grad.data[0] == 1.0


def test_tensor_construction_refuses_what_is_not_numeric_data():
    with pytest.raises(TypeError, match="Tensor data must be"):
        gs.Tensor(None)
    with pytest.raises(TypeError, match="Tensor data must be"):
        gs.Tensor("1.0")
    with pytest.raises(TypeError, match="numeric"):
        gs.Tensor([gs.Tensor([1.0]), gs.Tensor([2.0])])
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        gs.Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        gs.Parameter(np.ones(2, dtype=bool))


def test_numpy_errors_inside_an_op_name_the_op_and_the_shapes():
    with pytest.raises(ValueError, match=r"Add \(inputs of shape \(2, 3\), \(4,\)\)"):
        gs.Tensor(np.ones((2, 3))) + gs.Tensor(np.ones(4))
    with pytest.raises(IndexError, match=r"GetItem \(inputs of shape \(3,\)\)"):
        gs.Tensor(np.ones(3))[5]
    with pytest.raises(ValueError, match=r"matmul: the inner dimensions differ.*\(2, 3\).*\(4, 5\)"):
        gs.Tensor(np.ones((2, 3))) @ gs.Tensor(np.ones((4, 5)))


def test_tensor_operators_are_defined_on_the_class_itself():
    """core.py shows a Tensor with its operators: nothing is attached from elsewhere at import time."""
    for name in ("__add__", "__mul__", "__matmul__", "__getitem__", "sum", "reshape", "T"):
        assert name in vars(gs.Tensor), name


def test_backward_copies_a_leaf_gradient_only_when_it_is_shared():
    """Each parameter's gradient array is its own (no copy needed: one array operation per parameter saved);
    shared arrays (a + b, the caller's seed) are still copied, see the two tests above."""
    with simulated_gpu(), gs.using_backend("cupy"):
        params = [gs.Parameter(device_sim.full((3,), float(i + 1), dtype=np.float32)) for i in range(4)]
        loss = F.sum(params[0] * params[1]) + F.sum(params[2] * params[3] * 2.0)
        with device_sim.counting() as counts:
            loss.backward()
    engine_copies = [e for e in counts.events if e.site.startswith("gmsop_np/core.py") and e.name == "copy"]
    assert not engine_copies, counts.summary()
    np.testing.assert_array_equal(params[1].grad.data.get(), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(params[3].grad.data.get(), [6.0, 6.0, 6.0])
    assert counts.copies_to_device == 0, "Python scalars (2.0) are filled on the device, not copied there"
