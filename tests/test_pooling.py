"""avg_pool2d and global_avg_pool: forward vs loops, gradient checks, errors,
backend parity. Equations: derivations/04_softmax_cross_entropy.md, eqs. (15)-(18)."""

import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_conv import cited_equations

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions import pooling as pooling_module

from strategies import arrays, feature_maps, pool_configs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def avg_pool_oracle(x, kernel, stride, padding):
    """Mean over each padded window, one loop per output pixel (zeros count, as in PyTorch)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    B, C, H, W = x.shape
    x_pad = np.zeros((B, C, H + 2 * ph, W + 2 * pw))
    x_pad[:, :, ph : ph + H, pw : pw + W] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    y = np.zeros((B, C, Ho, Wo))
    for r in range(Ho):
        for s in range(Wo):
            y[:, :, r, s] = x_pad[:, :, r * sh : r * sh + kh, s * sw : s * sw + kw].mean(axis=(2, 3))
    return y


def stride_pair(cfg):
    s = cfg["stride"]
    return cfg["kernel"] if s is None else ((s, s) if isinstance(s, int) else s)


@given(data=st.data(), cfg=pool_configs())
def test_avg_pool_forward_and_backward_eq15_eq16(data, cfg):
    x = data.draw(arrays(cfg["x_shape"]))
    y = F.avg_pool2d(x, cfg["kernel"], cfg["stride"], cfg["padding"])
    expected = avg_pool_oracle(x, cfg["kernel"], stride_pair(cfg), cfg["padding"])
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    gs.check_backward(lambda t: F.avg_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"]), [x])


def test_avg_pool_odd_case_and_float32(rng):
    """Non-square map, stride 2, padding 1, B = 1, C = 1, overlapping 3x3 windows."""
    x = rng.standard_normal((1, 1, 5, 6)).astype(np.float32)
    t = gs.Tensor(x, requires_grad=True)
    y = F.avg_pool2d(t, 3, stride=2, padding=1)
    np.testing.assert_allclose(y.data, avg_pool_oracle(x.astype(np.float64), (3, 3), (2, 2), (1, 1)), rtol=1e-6)
    y.backward(np.ones(y.shape, np.float32))
    assert y.dtype == t.grad.dtype == np.float32
    gs.check_backward(lambda t: F.avg_pool2d(t, 3, stride=2, padding=1), [x.astype(np.float64)])


def test_avg_pool_errors():
    with pytest.raises(ValueError, match="at most half"):
        F.avg_pool2d(np.ones((1, 1, 4, 4)), 2, padding=2)
    with pytest.raises(ValueError, match="does not fit"):
        F.avg_pool2d(np.ones((1, 1, 2, 2)), 3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        F.avg_pool2d(np.ones((4, 4)), 2)


@given(x=feature_maps())
def test_global_avg_pool_forward_and_backward_eq17_eq18(x):
    np.testing.assert_allclose(F.global_avg_pool(x).data, x.mean(axis=(2, 3)), rtol=1e-12, atol=1e-15)
    gs.check_backward(F.global_avg_pool, [x])


def test_global_avg_pool_second_order_and_errors():
    x = gs.Tensor(np.ones((2, 3, 2, 2)), requires_grad=True)
    F.global_avg_pool(x * x).backward(np.ones((2, 3)), create_graph=True)  # d/dx = 2x/4
    g = x.grad
    x.zero_grad()
    F.sum(g).backward()  # d2/dx2 = 2/4
    np.testing.assert_allclose(x.grad.data, np.full((2, 3, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        F.global_avg_pool(np.ones((2, 3)))


def test_pooling_backend_parity(xp):
    rng = np.random.default_rng(6)
    x_np = rng.standard_normal((2, 3, 5, 4))

    def run(mod):
        out = []
        for op in (lambda t: F.avg_pool2d(t, 3, 2, 1), F.global_avg_pool):
            x = gs.Tensor(mod.asarray(x_np), requires_grad=True)
            y = op(x)
            y.backward(mod.asarray(np.arange(y.size, dtype=np.float64).reshape(y.shape)))
            out += [gs.to_cpu(y.data), gs.to_cpu(x.grad.data)]
        return out

    for e, g in zip(run(np), run(xp)):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_pooling_docstrings_cite_existing_equations():
    cited = cited_equations(pooling_module)
    assert len(cited) >= 4
    for path, n in cited:
        assert f"\\tag{{{n}}}" in (ROOT / path).read_text(), f"{path} has no equation \\tag{{{n}}}"
