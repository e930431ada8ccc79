"""relu, sigmoid, softplus, dropout, softmax, log_softmax: forward vs explicit
formulas / SciPy, float64 gradient checks with random cotangents, stability at
|x| = 1000, second-order gradients, dropout seeding, backend parity.
Equations: derivations/04_softmax_cross_entropy.md."""

import pathlib

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from test_conv import cited_equations

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions import activation as activation_module
from gmsop_np.random import CounterRNG

from checks import splitmix64_words
from strategies import arrays, away_from_zero, shapes

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----- elementwise activations -----------------------------------------------------------------
@given(x=shapes(max_dims=3).flatmap(away_from_zero))
def test_relu_forward_and_backward_eq1_eq2(x):
    np.testing.assert_array_equal(F.relu(x).data, np.where(x > 0, x, 0.0))
    gs.check_backward(F.relu, [x])


def test_relu_gradient_at_zero_is_zero():
    x = gs.Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    F.relu(x).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 1.0])


@given(x=shapes(max_dims=3).flatmap(lambda s: arrays(s, -6.0, 6.0)))
def test_sigmoid_forward_and_backward_eq3_eq4(x):
    np.testing.assert_allclose(F.sigmoid(x).data, scipy.special.expit(x), rtol=1e-14)
    gs.check_backward(F.sigmoid, [x])


@given(x=shapes(max_dims=3).flatmap(lambda s: arrays(s, -6.0, 6.0)))
def test_softplus_forward_and_backward_eq5_eq6(x):
    np.testing.assert_allclose(F.softplus(x).data, np.logaddexp(0.0, x), rtol=1e-14, atol=1e-300)
    gs.check_backward(F.softplus, [x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_and_sigmoid_stable_at_1000_eq3_eq5(dtype):
    x = gs.Tensor(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=dtype), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        y = F.softplus(x)
        s = F.sigmoid(x)
        y.backward(np.ones(5, dtype))
    assert y.dtype == s.dtype == dtype
    np.testing.assert_allclose(y.data, [0.0, np.exp(-50.0), np.log(2.0), 50.0, 1000.0], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(s.data, [0.0, np.exp(-50.0), 0.5, 1.0, 1.0], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(x.grad.data, s.data)  # softplus' = sigmoid
    assert np.isfinite(x.grad.data).all()


def test_softplus_second_derivative():
    """softplus'' = sigma (1 - sigma): softplus' backward is differentiable."""
    x = gs.Tensor(np.array([-2.0, 0.3, 1.5]), requires_grad=True)
    F.softplus(x).backward(np.ones(3), create_graph=True)
    g = x.grad
    x.zero_grad()
    F.sum(g).backward()
    s = scipy.special.expit(x.data)
    np.testing.assert_allclose(x.grad.data, s * (1 - s), rtol=1e-12)


# ----- dropout -------------------------------------------------------------------------------------
def test_dropout_same_seed_same_mask_and_scaling_eq7():
    x = np.ones((50, 40))
    a = F.dropout(x, 0.3, training=True, rng=CounterRNG(7)).data
    b = F.dropout(x, 0.3, training=True, rng=7).data
    c = F.dropout(x, 0.3, training=True, rng=CounterRNG(8)).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, 1 / 0.7}, "kept entries are scaled by 1/(1-p)"
    # keep entry i with probability 0.7: its SplitMix64 word's top 53 bits below 0.7 * 2^53
    words = np.array(splitmix64_words(7, x.size), dtype=np.uint64).reshape(x.shape)
    np.testing.assert_array_equal(a != 0, (words >> np.uint64(11)) < np.uint64(round(0.7 * 2.0**53)))


def test_dropout_preserves_the_mean_approximately():
    x = np.random.default_rng(0).uniform(1, 2, size=(200, 500))
    y = F.dropout(x, 0.2, training=True, rng=CounterRNG(1)).data
    assert abs((y == 0).mean() - 0.2) < 0.005  # ~ 4 standard deviations
    np.testing.assert_allclose(y.mean(), x.mean(), rtol=0.01)


def test_dropout_is_identity_in_eval_and_for_p0():
    x = gs.Tensor(np.arange(6.0).reshape(2, 3))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0, training=True, rng=CounterRNG(0)) is x


@given(x=shapes(max_dims=3).flatmap(arrays), seed=st.integers(0, 2**31 - 1))
def test_dropout_backward_eq8(x, seed):
    mask = np.random.default_rng(seed).random(x.shape) >= 0.4
    gs.check_backward(lambda t: F.dropout(t, 0.4, training=True, mask=mask), [x])
    # rtol: the code multiplies by 1/(1-p) where the oracle divides (1-ulp differences)
    np.testing.assert_allclose(F.dropout(x, 0.4, mask=mask).data, x * mask / 0.6, rtol=1e-15, atol=1e-300)


def test_dropout_errors():
    with pytest.raises(ValueError, match="in \\[0, 1\\)"):
        F.dropout(np.ones(3), 1.0)
    with pytest.raises(ValueError, match="mask has shape"):
        F.dropout(np.ones(3), 0.5, mask=np.ones(4, bool))
    with pytest.raises(TypeError, match="CounterRNG"):
        F.dropout(np.ones(3), 0.5, rng=np.random.default_rng(3))


# ----- softmax and log-softmax -------------------------------------------------------------------
@st.composite
def array_and_axis(draw, low=-5.0, high=5.0):
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=5))
    return draw(arrays(shape, low, high)), draw(st.integers(-len(shape), len(shape) - 1))


@given(xa=array_and_axis())
def test_softmax_forward_and_backward_eq9_eq10(xa):
    x, axis = xa
    np.testing.assert_allclose(F.softmax(x, axis).data, scipy.special.softmax(x, axis=axis), rtol=1e-12)
    gs.check_backward(lambda t: F.softmax(t, axis), [x])


@given(xa=array_and_axis())
def test_log_softmax_forward_and_backward_eq11_eq12(xa):
    x, axis = xa
    expected = x - scipy.special.logsumexp(x, axis=axis, keepdims=True)
    np.testing.assert_allclose(F.log_softmax(x, axis).data, expected, rtol=1e-12, atol=1e-12)
    gs.check_backward(lambda t: F.log_softmax(t, axis), [x])


def test_softmax_family_is_stable_for_huge_logits():
    x = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -1000.0, -1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = F.softmax(x).data
        ls = F.log_softmax(x).data
    np.testing.assert_allclose(s, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-300)
    np.testing.assert_allclose(ls, [[0, -1000, -2000], [-np.log(3)] * 3], rtol=1e-12)


def test_softmax_second_order_matches_finite_differences():
    """The softmax backward (eq. (10)) is differentiable: d/dx <grad_x <u, softmax x>, v>
    from a second backward pass equals central differences of the first-order gradient."""
    rng = np.random.default_rng(2)
    x0, u, v, d = (rng.standard_normal((2, 4)) for _ in range(4))

    def first_order_grad(values, create_graph=False):
        x = gs.Tensor(values, requires_grad=True)
        F.softmax(x).backward(u, create_graph=create_graph)
        return x, x.grad

    x, g = first_order_grad(x0, create_graph=True)
    x.zero_grad()
    F.sum(g * v).backward()
    analytic = np.vdot(x.grad.data, d)
    eps = 1e-6
    plus, minus = (np.vdot(first_order_grad(x0 + s * eps * d)[1].data, v) for s in (1, -1))
    np.testing.assert_allclose(analytic, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-9)


def test_softmax_axis_error():
    with pytest.raises(ValueError, match="axis"):
        F.softmax(np.ones((2, 3)), axis=2)


# ----- backend parity and citations -------------------------------------------------------------------
def test_activation_backend_parity(xp):
    rng = np.random.default_rng(4)
    x_np, gy_np = rng.standard_normal((3, 5)), rng.standard_normal((3, 5))
    mask = rng.random((3, 5)) >= 0.5
    ops = [F.relu, F.sigmoid, F.softplus, F.softmax, F.log_softmax, lambda t: F.dropout(t, 0.5, mask=mask)]

    def run(mod):
        out = []
        for op in ops:
            x = gs.Tensor(mod.asarray(x_np), requires_grad=True)
            op(x).backward(mod.asarray(gy_np))
            out += [gs.to_cpu(op(x).data), gs.to_cpu(x.grad.data)]
        return out

    for e, g in zip(run(np), run(xp)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_activation_docstrings_cite_existing_equations():
    cited = cited_equations(activation_module)
    assert len(cited) >= 12
    for path, n in cited:
        assert f"\\tag{{{n}}}" in (ROOT / path).read_text(), f"{path} has no equation \\tag{{{n}}}"
