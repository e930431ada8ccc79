"""conv2d (im2col / col2im, 1x1 fast path) and linear: forward vs a loop oracle,
float64 gradient checks, odd shapes, invariants, errors and backend parity.
Equations: derivations/02_convolution.md."""

import pathlib
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions import conv as conv_module
from gmsop_np.functions import parallel

from strategies import arrays, conv_configs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def conv_oracle(x, W, b, stride, padding):
    """Direct definition of cross-correlation: one loop per output pixel (small inputs only)."""
    (sh, sw), (ph, pw) = stride, padding
    B, C, H, Wd = x.shape
    C_out, _, kh, kw = W.shape
    x_pad = np.zeros((B, C, H + 2 * ph, Wd + 2 * pw))
    x_pad[:, :, ph : ph + H, pw : pw + Wd] = x
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (Wd + 2 * pw - kw) // sw + 1
    y = np.zeros((B, C_out, Ho, Wo))
    for r in range(Ho):
        for s in range(Wo):
            window = x_pad[:, :, r * sh : r * sh + kh, s * sw : s * sw + kw]  # (B, C, kh, kw)
            y[:, :, r, s] = np.einsum("bcij,ocij->bo", window, W)
    return y if b is None else y + b[None, :, None, None]


def as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def draw_problem(data, cfg, with_bias):
    x = data.draw(arrays(cfg["x_shape"]))
    W = data.draw(arrays(cfg["w_shape"]))
    b = data.draw(arrays((cfg["w_shape"][0],))) if with_bias else None
    return x, W, b


# ----- forward ---------------------------------------------------------------------------
@given(data=st.data(), cfg=conv_configs(), with_bias=st.booleans())
def test_conv_forward_matches_loop_oracle_eq3(data, cfg, with_bias):
    x, W, b = draw_problem(data, cfg, with_bias)
    y = F.conv2d(x, W, b, stride=cfg["stride"], padding=cfg["padding"])
    expected = conv_oracle(x, W, b, as_pair(cfg["stride"]), as_pair(cfg["padding"]))
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)


def test_conv_forward_matches_scipy_correlate():
    """A second, independent oracle: scipy.signal.correlate per (image, out, in) channel."""
    from scipy.signal import correlate

    rng = np.random.default_rng(0)
    x, W = rng.standard_normal((2, 3, 7, 5)), rng.standard_normal((4, 3, 3, 2))
    y = F.conv2d(x, W).data
    expected = np.zeros((2, 4, 5, 4))
    for n in range(2):
        for o in range(4):
            expected[n, o] = sum(correlate(x[n, c], W[o, c], mode="valid") for c in range(3))
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


ODD_CASES = [
    # (x_shape, w_shape, stride, padding)
    ((1, 1, 5, 7), (2, 1, 3, 3), 2, 1),  # B = 1, C = 1, non-square, stride 2, padding 1
    ((2, 3, 6, 4), (1, 3, 3, 3), (2, 1), (1, 0)),  # different stride / padding per axis
    ((2, 2, 4, 4), (3, 2, 4, 4), 1, 0),  # kernel = whole image -> 1x1 output
    ((1, 2, 3, 5), (2, 2, 2, 3), 3, 1),  # stride larger than the kernel
    ((2, 3, 5, 5), (4, 3, 1, 1), 2, 0),  # 1x1 fast path with stride (eq. (8))
    ((2, 3, 4, 3), (2, 3, 1, 1), 1, 0),  # 1x1 fast path
    ((1, 2, 3, 3), (2, 2, 1, 1), 1, 1),  # 1x1 with padding: general im2col path
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", ODD_CASES)
def test_conv_odd_shapes_forward_and_backward_eq4_to_eq8(x_shape, w_shape, stride, padding, rng):
    x, W, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    y = F.conv2d(x, W, b, stride=stride, padding=padding)
    np.testing.assert_allclose(y.data, conv_oracle(x, W, b, as_pair(stride), as_pair(padding)), rtol=1e-12, atol=1e-12)
    gs.check_backward(lambda x, W, b: F.conv2d(x, W, b, stride=stride, padding=padding), [x, W, b])


def test_conv_uses_1x1_fast_path_only_without_padding():
    x, W = gs.Tensor(np.ones((1, 2, 3, 3)), requires_grad=True), np.ones((2, 2, 1, 1))
    assert isinstance(F.conv2d(x, W, stride=2).creator, conv_module.Conv2d1x1)
    assert isinstance(F.conv2d(x, W, padding=1).creator, conv_module.Conv2d)


# ----- backward ---------------------------------------------------------------------------
@given(data=st.data(), cfg=conv_configs(), with_bias=st.booleans())
def test_conv_backward_eq4_to_eq7(data, cfg, with_bias):
    """Random-cotangent check of gx (eqs. (6)-(7)), gW (eq. (4)) and gb (eq. (5))."""
    x, W, b = draw_problem(data, cfg, with_bias)
    s, p = cfg["stride"], cfg["padding"]
    if with_bias:
        gs.check_backward(lambda x, W, b: F.conv2d(x, W, b, stride=s, padding=p), [x, W, b])
    else:
        gs.check_backward(lambda x, W: F.conv2d(x, W, stride=s, padding=p), [x, W])


@given(data=st.data(), cfg=conv_configs())
def test_col2im_is_the_adjoint_of_im2col_eq7(data, cfg):
    """<im2col(x), c> = <x, col2im(c)> for every x and c (what makes eq. (7) the VJP)."""
    x = data.draw(arrays(cfg["x_shape"]))
    _, _, kh, kw = cfg["w_shape"]
    stride, padding = as_pair(cfg["stride"]), as_pair(cfg["padding"])
    cols = conv_module.im2col(x, kh, kw, stride, padding)
    c = np.random.default_rng(0).standard_normal(cols.shape)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, conv_module.col2im(c, x.shape, stride, padding))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@given(data=st.data(), cfg=conv_configs())
def test_im2col_copies_every_window_eq2(data, cfg):
    """The strided-view im2col against eq. (2) written as one slice per kernel offset."""
    x = data.draw(arrays(cfg["x_shape"]))
    _, _, kh, kw = cfg["w_shape"]
    (sh, sw), (ph, pw) = as_pair(cfg["stride"]), as_pair(cfg["padding"])
    cols = conv_module.im2col(x, kh, kw, (sh, sw), (ph, pw))
    x_pad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    B, C, Ho, Wo = x.shape[0], x.shape[1], cols.shape[4], cols.shape[5]
    assert cols.shape == (B, C, kh, kw, Ho, Wo) and cols.flags.c_contiguous
    for i in range(kh):
        for j in range(kw):
            np.testing.assert_array_equal(cols[:, :, i, j], x_pad[:, :, i : i + sh * Ho : sh, j : j + sw * Wo : sw])


@pytest.mark.parametrize(
    "x_shape, w_shape, padding",
    [((2, 3, 6, 5), (4, 3, 3, 3), (1, 1)), ((1, 2, 5, 4), (3, 2, 2, 3), (0, 1)), ((2, 1, 4, 4), (2, 1, 3, 3), (2, 2))],
)
def test_conv_input_gradient_as_convolution_equals_col2im_eq11(x_shape, w_shape, padding, rng):
    """Stride 1: x̄ = conv(ȳ, flipped W) (eq. (11)) equals col2im(W_matᵀ ȳ) (eqs. (6)-(7))."""
    W = rng.standard_normal(w_shape)
    y_shape = F.conv2d(np.zeros(x_shape), W, padding=padding).shape
    gy = rng.standard_normal(y_shape)
    via_convolution = np.empty(x_shape)
    conv_module.Conv2d((1, 1), padding)._input_gradient_part(W)(via_convolution, gy)
    C_out, C_in, kh, kw = w_shape
    g_cols = np.matmul(W.reshape(C_out, -1).T, gy.reshape(y_shape[0], C_out, -1))
    g_cols = g_cols.reshape(y_shape[0], C_in, kh, kw, *y_shape[2:])
    np.testing.assert_allclose(via_convolution, conv_module.col2im(g_cols, x_shape, (1, 1), padding), rtol=1e-12)


@pytest.mark.parametrize("stride, padding, k", [(1, 1, 3), (2, 1, 3), (2, 0, 1)])
def test_conv_in_parts_on_threads_equals_whole_batch(stride, padding, k, rng, monkeypatch):
    """The batch in parts (one image each here) on 1 or 3 threads: the whole-batch result,
    and bit for bit the same result whatever the number of threads."""
    x, W = rng.standard_normal((5, 3, 7, 6)), rng.standard_normal((4, 3, k, k))
    gy = rng.standard_normal(F.conv2d(x, W, stride=stride, padding=padding).shape)

    def run(threads):
        parallel.set_num_threads(threads)
        tx, tW = gs.Tensor(x, requires_grad=True), gs.Tensor(W, requires_grad=True)
        y = F.conv2d(tx, tW, stride=stride, padding=padding)
        y.backward(gy)
        return y.data, tx.grad.data, tW.grad.data

    before = parallel.get_num_threads()
    try:
        assert len(parallel.pieces(x, item_bytes=1)) == 5
        one_thread, three_threads = run(1), run(3)
        with monkeypatch.context() as m:
            m.setattr(parallel, "pieces", lambda x, item_bytes: [slice(0, x.shape[0])])
            whole = run(1)
    finally:
        parallel.set_num_threads(before)
    for a, b, c in zip(one_thread, three_threads, whole):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("w_shape", [(3, 2, 3, 3), (3, 2, 1, 1)])
def test_conv_computes_only_requested_gradients(w_shape, rng):
    x = gs.Tensor(rng.standard_normal((2, 2, 5, 5)))  # no grad for x
    W = gs.Tensor(rng.standard_normal(w_shape), requires_grad=True)
    b = gs.Tensor(rng.standard_normal(3))  # no grad for b
    gy = rng.standard_normal((2, 3) + (5 - w_shape[2] + 1,) * 2)
    F.conv2d(x, W, b).backward(gy)
    assert x.grad is None and b.grad is None
    expected = np.einsum("bohw,bchw->oc", gy, x.data) if w_shape[2] == 1 else None
    if expected is not None:
        np.testing.assert_allclose(W.grad.data.reshape(3, 2), expected, rtol=1e-12)
    assert W.grad.shape == w_shape


def test_conv_rejects_second_order_gradients():
    x = gs.Tensor(np.ones((1, 1, 3, 3)), requires_grad=True)
    y = F.conv2d(x, np.ones((1, 1, 2, 2))).sum()
    with pytest.raises(RuntimeError, match="create_graph"):
        y.backward(create_graph=True)


# ----- invariants and dtype --------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3])
def test_conv_keeps_float32_and_does_not_mutate_inputs(k, rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    W = rng.standard_normal((4, 3, k, k)).astype(np.float32)
    x0, W0 = x.copy(), W.copy()
    tx, tW = gs.Tensor(x, requires_grad=True), gs.Tensor(W, requires_grad=True)
    y = F.conv2d(tx, tW, gs.Tensor(np.zeros(4, np.float32), requires_grad=True), stride=2, padding=k // 2)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    assert y.dtype == tx.grad.dtype == tW.grad.dtype == np.float32
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(W, W0)
    assert not np.shares_memory(tx.grad.data, gy) and not np.shares_memory(tW.grad.data, gy)


# ----- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x=np.ones((1, 2, 4, 4)), W=np.ones((1, 3, 3, 3))), ValueError, "channels"),
        (dict(x=np.ones((2, 4, 4)), W=np.ones((1, 2, 3, 3))), ValueError, r"\(B, C, H, W\)"),
        (dict(x=np.ones((1, 2, 2, 2)), W=np.ones((1, 2, 3, 3))), ValueError, "does not fit"),
        (dict(x=np.ones((1, 2, 4, 4)), W=np.ones((1, 2, 3, 3)), stride=0), ValueError, "stride"),
        (dict(x=np.ones((1, 2, 4, 4)), W=np.ones((1, 2, 3, 3)), padding=1.5), TypeError, "padding"),
        (dict(x=np.ones((1, 2, 4, 4)), W=np.ones((3, 2, 3, 3)), b=np.ones(2)), ValueError, "bias"),
    ],
)
def test_conv_errors_say_what_is_wrong(kwargs, error, match):
    with pytest.raises(error, match=match):
        F.conv2d(**kwargs)


# ----- linear --------------------------------------------------------------------------------------
@given(data=st.data(), b=st.integers(1, 4), n_in=st.integers(1, 5), n_out=st.integers(1, 4), with_bias=st.booleans())
def test_linear_forward_and_backward_eq9_eq10(data, b, n_in, n_out, with_bias):
    x, W = data.draw(arrays((b, n_in))), data.draw(arrays((n_out, n_in)))
    bias = data.draw(arrays((n_out,))) if with_bias else None
    expected = x @ W.T + (0 if bias is None else bias)
    np.testing.assert_allclose(F.linear(x, W, bias).data, expected, rtol=1e-12, atol=1e-12)
    inputs = [x, W] if bias is None else [x, W, bias]
    gs.check_backward(F.linear, inputs)


def test_linear_second_order_gradient():
    """Linear's backward is differentiable: d/dW of <grad_x, v> = v^T-weighted gy (exact)."""
    rng = np.random.default_rng(1)
    x = gs.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    W = gs.Tensor(rng.standard_normal((2, 4)), requires_grad=True)
    gy = rng.standard_normal((3, 2))
    F.linear(x, W).backward(gy, create_graph=True)
    v = rng.standard_normal((3, 4))
    gx = x.grad
    W.zero_grad()
    F.sum(gx * v).backward()  # gx = gy W  =>  d<gx, v>/dW = gy^T v
    np.testing.assert_allclose(W.grad.data, gy.T @ v, rtol=1e-12)


def test_linear_errors():
    with pytest.raises(ValueError, match="features"):
        F.linear(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="flatten"):
        F.linear(np.ones((2, 3, 1)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="bias"):
        F.linear(np.ones((2, 3)), np.ones((4, 3)), np.ones(3))


# ----- backend parity and citations --------------------------------------------------------------------
def test_conv_backend_parity(xp):
    rng = np.random.default_rng(3)
    x_np, W_np, b_np = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    gy_np = rng.standard_normal((2, 4, 4, 3))

    def run(mod):
        x, W, b = (gs.Tensor(mod.asarray(a), requires_grad=True) for a in (x_np, W_np, b_np))
        y = F.conv2d(x, W, b, stride=2, padding=1)
        y.backward(mod.asarray(gy_np))
        y1 = F.conv2d(x, W[:, :, :1, :1], stride=2)  # the 1x1 path
        return [gs.to_cpu(a) for a in (y.data, x.grad.data, W.grad.data, b.grad.data, y1.data)]

    for e, g in zip(run(np), run(xp)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def cited_equations(module):
    """(file, eq) pairs cited in the Function docstrings of a module."""
    found = set()
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, gs.Function) and obj.__module__ == module.__name__:
            for path, eqs in re.findall(r"(derivations/\S+\.md), eqs?\. ([^\n]*)", obj.__doc__ or ""):
                for lo, hi in re.findall(r"\((\d+)\)(?:-\((\d+)\))?", eqs):
                    for n in range(int(lo), int(hi or lo) + 1):
                        found.add((path, n))
    return found


def test_conv_docstrings_cite_existing_equations():
    cited = cited_equations(conv_module)
    assert len(cited) >= 8
    for path, n in cited:
        text = (ROOT / path).read_text()
        assert f"\\tag{{{n}}}" in text, f"{path} has no equation \\tag{{{n}}}"
