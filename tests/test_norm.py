"""batch_norm: forward vs the explicit formulas, gradient checks (training and
evaluation), running statistics vs a NumPy reference, errors and backend parity.
Equations: derivations/03_batch_norm.md."""

import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_conv import cited_equations

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions import norm as norm_module
from gmsop_np.functions import parallel

from strategies import arrays, distinct_arrays

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPS = 1e-5


def bn_reference(x, gamma, beta, eps=EPS):
    """Eqs. (1)-(4) written out with NumPy, statistics over every axis but 1."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes)
    var = ((x - mu.reshape(shape)) ** 2).mean(axis=axes)
    x_hat = (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return gamma.reshape(shape) * x_hat + beta.reshape(shape), mu, var


@st.composite
def bn_problems(draw):
    """x of shape (B, C) or (B, C, H, W) with >= 2 distinct values per channel, gamma, beta."""
    if draw(st.booleans()):
        shape = (draw(st.integers(2, 5)), draw(st.integers(1, 4)))
    else:
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 3)))
    x = draw(distinct_arrays(shape, gap=0.05, low=-2.0, high=2.0))
    C = shape[1]
    return x, draw(arrays((C,), 0.5, 2.0)), draw(arrays((C,)))


@given(problem=bn_problems())
def test_bn_train_forward_eq1_to_eq4(problem):
    x, gamma, beta = problem
    y = F.batch_norm(x, gamma, beta, training=True)
    np.testing.assert_allclose(y.data, bn_reference(x, gamma, beta)[0], rtol=1e-10, atol=1e-12)


@given(problem=bn_problems())
def test_bn_train_backward_eq6_to_eq8(problem):
    x, gamma, beta = problem
    gs.check_backward(lambda x, g, b: F.batch_norm(x, g, b, training=True), [x, gamma, beta])


def test_bn_input_gradient_is_orthogonal_to_shift_and_scale_eq8(rng):
    """sum_j gx_j = 0 and, for eps = 0, sum_j gx_j x_hat_j = 0 per channel (derivation section 2)."""
    x = gs.Tensor(rng.standard_normal((4, 3, 2, 5)), requires_grad=True)
    F.batch_norm(x, np.ones(3) * 1.7, np.zeros(3), eps=0.0).backward(rng.standard_normal(x.shape))
    x_hat = bn_reference(x.data, np.ones(3), np.zeros(3), eps=0.0)[0]
    np.testing.assert_allclose(x.grad.data.sum(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose((x.grad.data * x_hat).sum(axis=(0, 2, 3)), 0, atol=1e-11)


@given(problem=bn_problems(), seed=st.integers(0, 2**31 - 1))
def test_bn_eval_forward_and_backward_eq9_eq10(problem, seed):
    x, gamma, beta = problem
    r = np.random.default_rng(seed)
    mean, var = r.standard_normal(x.shape[1]), r.uniform(0.5, 2.0, x.shape[1])
    shape = (1, -1) + (1,) * (x.ndim - 2)
    expected = gamma.reshape(shape) * (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS) + beta.reshape(
        shape
    )
    y = F.batch_norm(x, gamma, beta, mean, var, training=False)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    gs.check_backward(lambda x, g, b: F.batch_norm(x, g, b, mean, var, training=False), [x, gamma, beta])


# ----- running statistics -----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 2)])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_bn_running_stats_match_reference_eq5(shape, as_tensor, rng):
    """Three training steps update the buffers in place with the unbiased variance (PyTorch's rule)."""
    C, momentum = shape[1], 0.3
    mean_buf, var_buf = np.zeros(C, np.float32), np.ones(C, np.float32)
    mean_arg = gs.Tensor(mean_buf) if as_tensor else mean_buf
    var_arg = gs.Tensor(var_buf) if as_tensor else var_buf
    ref_mean, ref_var = np.zeros(C), np.ones(C)
    m = int(np.prod(shape)) // C
    for _ in range(3):
        x = rng.standard_normal(shape) * 2 + 1
        F.batch_norm(x, np.ones(C), np.zeros(C), mean_arg, var_arg, training=True, momentum=momentum)
        _, mu, var = bn_reference(x, np.ones(C), np.zeros(C))
        ref_mean = (1 - momentum) * ref_mean + momentum * mu
        ref_var = (1 - momentum) * ref_var + momentum * var * m / (m - 1)
    buffers = (mean_arg.data, var_arg.data) if as_tensor else (mean_buf, var_buf)
    assert buffers[0] is mean_buf and buffers[1] is var_buf, "buffers must be updated in place"
    assert mean_buf.dtype == np.float32, "buffers keep their own dtype"
    np.testing.assert_allclose(mean_buf, ref_mean, rtol=1e-6)
    np.testing.assert_allclose(var_buf, ref_var, rtol=1e-6)


def test_bn_eval_uses_running_stats_and_leaves_them_alone(rng):
    x = rng.standard_normal((5, 2, 3, 3))
    mean, var = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    y = F.batch_norm(x, np.ones(2), np.zeros(2), mean, var, training=False)
    np.testing.assert_allclose(y.data, (x - mean.reshape(1, 2, 1, 1)) / np.sqrt(var.reshape(1, 2, 1, 1) + EPS))
    np.testing.assert_array_equal(mean, [0.5, -1.0])
    np.testing.assert_array_equal(var, [2.0, 0.25])
    one = F.batch_norm(x[:1, :, 0, 0], np.ones(2), np.zeros(2), mean, var, training=False)
    assert one.shape == (1, 2), "a single sample is fine in evaluation"


def test_bn_training_without_buffers_and_float32(rng):
    x = gs.Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    gamma = gs.Tensor(np.ones(3, np.float32), requires_grad=True)
    beta = gs.Tensor(np.zeros(3, np.float32), requires_grad=True)
    y = F.batch_norm(x, gamma, beta)
    y.backward(np.ones((4, 3), np.float32))
    assert y.dtype == x.grad.dtype == gamma.grad.dtype == np.float32


# ----- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 4), (1, 4, 1, 1)])
def test_bn_refuses_one_value_per_channel_in_training(shape):
    with pytest.raises(ValueError, match="more than one value per channel"):
        F.batch_norm(np.ones(shape), np.ones(4), np.zeros(4), training=True)


def test_bn_argument_errors():
    x = np.ones((3, 2))
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(x, np.ones(2), np.zeros(2), training=False)
    with pytest.raises(ValueError, match="gamma and beta"):
        F.batch_norm(x, np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="running_var must be an array of shape"):
        F.batch_norm(x, np.ones(2), np.zeros(2), np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"\(B, C\) or \(B, C, H, W\)"):
        F.batch_norm(np.ones((3, 2, 4)), np.ones(2), np.zeros(2))


@pytest.mark.parametrize("shape", [(4, 5, 3, 2), (6, 7)])
def test_bn_in_channel_groups_on_threads_equals_one_group(shape, rng, monkeypatch):
    """One channel group per thread: bit for bit the one-group result (outputs, gradients,
    running statistics), whatever the number of threads."""
    x, gamma, beta = rng.standard_normal(shape), rng.uniform(0.5, 2.0, shape[1]), rng.standard_normal(shape[1])
    gy = rng.standard_normal(shape)

    def run(threads):
        parallel.set_num_threads(threads)
        tx, tg, tb = (gs.Tensor(a, requires_grad=True) for a in (x, gamma, beta))
        mean, var = np.zeros(shape[1]), np.ones(shape[1])
        y = F.batch_norm(tx, tg, tb, mean, var, training=True)
        y.backward(gy)
        return y.data, tx.grad.data, tg.grad.data, tb.grad.data, mean, var

    before = parallel.get_num_threads()
    try:
        one_group, three_groups = run(1), run(3)
        assert len(parallel.per_thread(np.empty(shape[1]))) == 3
        with monkeypatch.context() as m:  # a channel per group
            m.setattr(parallel, "per_thread", lambda x: [slice(i, i + 1) for i in range(x.shape[0])])
            single_channels = run(2)
    finally:
        parallel.set_num_threads(before)
    for a, b, c in zip(one_group, three_groups, single_channels):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_bn_backend_parity(xp):
    rng = np.random.default_rng(5)
    x_np, gy_np = rng.standard_normal((4, 3, 2, 2)), rng.standard_normal((4, 3, 2, 2))

    def run(mod):
        x = gs.Tensor(mod.asarray(x_np), requires_grad=True)
        gamma = gs.Tensor(mod.asarray(np.linspace(0.5, 1.5, 3)), requires_grad=True)
        beta = gs.Tensor(mod.zeros(3), requires_grad=True)
        mean, var = mod.zeros(3), mod.ones(3)
        y = F.batch_norm(x, gamma, beta, mean, var, training=True)
        y.backward(mod.asarray(gy_np))
        y_eval = F.batch_norm(x, gamma, beta, mean, var, training=False)
        return [gs.to_cpu(a) for a in (y.data, x.grad.data, gamma.grad.data, mean, var, y_eval.data)]

    for e, g in zip(run(np), run(xp)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_norm_docstrings_cite_existing_equations():
    cited = cited_equations(norm_module)
    assert len(cited) >= 8
    for path, n in cited:
        assert f"\\tag{{{n}}}" in (ROOT / path).read_text(), f"{path} has no equation \\tag{{{n}}}"
