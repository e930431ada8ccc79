"""Convolution (NCHW) through im2col / col2im, and the fully connected layer.

A convolution is a matrix product in disguise (derivations/02_convolution.md):

1. ``im2col`` copies every receptive field of the (padded) input into one
   column of a matrix ``X_col`` of shape ``(C_in kh kw, Ho Wo)`` per image -- eq. (2);
2. the whole convolution is then a matrix product with the weights reshaped
   to ``W_mat (C_out, C_in kh kw)``: ``Y_b = W_mat X_col,b + b`` for every image b -- eq. (3);
3. the backward pass is two more matrix products and ``col2im``, the adjoint
   of ``im2col``, which adds each column back where it came from -- eqs. (4)-(7).
   For stride 1 the input gradient is itself a convolution, of the padded output
   gradient with the flipped kernel (eq. (11)): one more im2col and product.

Speed notes (why the code looks the way it does):

* ``im2col`` is ONE strided view of the padded input (``as_strided``: every window
  is a view, nothing moves) followed by ONE copy into the column layout; no
  Python loop over pixels, images or kernel offsets.
* The columns are laid out image by image, ``(B, C_in kh kw, Ho Wo)``, so that the
  batched product ``W_mat @ X_col`` writes its result straight into the NCHW output
  (no transpose) and the NCHW output gradient is already in the layout the
  backward products want.
* The columns are NOT kept for backward: backward builds them again (one copy,
  cheaper than holding ``kh*kw`` times each input alive between forward and backward).
* On the CPU the batch is processed in cache-sized parts spread over threads
  (``functions/parallel.py``): each part's columns are used while still in cache,
  and the copies run on every core. On the GPU the whole batch is one part, so
  each step above is one kernel.
* 1x1 convolutions need no im2col at all (each receptive field is a single
  pixel): they are a batched matrix product on the input itself -- eq. (8).
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from ..backend import get_array_module
from ..core import ArrayFunction, Function, Tensor, TensorLike, as_tensor
from . import parallel
from .basic import matmul, sum, swapaxes

__all__ = ["conv2d", "linear"]  # im2col / col2im / conv_output_size: raw-array helpers, import from here


# ----- helpers ------------------------------------------------------------------------
def _pair(value, name, minimum):
    """An int or a pair of ints -> a pair of ints (each >= ``minimum``)."""

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    pair = (value, value) if is_int(value) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(is_int(v) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size, kernel, stride, padding):
    """Output length along one axis: ``floor((size + 2 p - k) / s) + 1`` (eq. (1))."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, ph, pw):
    """Zero-pad the two spatial axes of (B, C, H, W) (one copy; nothing when no padding)."""
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    B, C, H, W = x.shape
    padded = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=x.dtype)
    padded[:, :, ph : ph + H, pw : pw + W] = x
    return padded


def _windows(x, kh, kw, stride, padding):
    """Every receptive field of ``x`` (B, C, H, W) as a strided VIEW: (B, C, kh, kw, Ho, Wo).

    ``windows[b, c, i, j, r, s] = x_pad[b, c, sh*r + i, sw*s + j]`` (eq. (2)): one step
    along ``r`` moves ``sh`` rows of ``x_pad`` and one step along ``i`` moves one row,
    so both use the row stride of ``x_pad`` (the first scaled by ``sh``); likewise for
    columns. Nothing is copied except the padding; the windows overlap in memory,
    so the view is only ever read.
    """
    xp = get_array_module(x)
    (sh, sw), (ph, pw) = stride, padding
    B, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    x_pad = _pad(x, ph, pw)
    step_b, step_c, step_h, step_w = x_pad.strides  # bytes per step along each axis
    return xp.lib.stride_tricks.as_strided(
        x_pad, shape=(B, C, kh, kw, Ho, Wo), strides=(step_b, step_c, step_h, step_w, sh * step_h, sw * step_w)
    )


def im2col(x, kh, kw, stride=(1, 1), padding=(0, 0)):
    """Receptive fields of ``x`` (B, C, H, W) as columns, image by image: (B, C, kh, kw, Ho, Wo).

    ``cols[b, c, i, j, r, s] = x_pad[b, c, sh*r + i, sw*s + j]`` (eq. (2)): the strided
    view of :func:`_windows`, copied once. ``cols[b].reshape(C kh kw, Ho Wo)`` is
    image b's block of columns ``X_col,b`` (free: the array is contiguous).
    """
    xp = get_array_module(x)
    return xp.ascontiguousarray(_windows(x, kh, kw, stride, padding))


def col2im(cols, x_shape, stride=(1, 1), padding=(0, 0)):
    """Adjoint of :func:`im2col`: add each column entry back to its pixel (eq. (7)).

    ``cols`` has shape (B, C, kh, kw, Ho, Wo); returns (B, C, H, W). Pixels
    covered by several receptive fields receive the sum of their entries;
    entries that fell on the zero padding are dropped. One strided ``+=`` per
    kernel offset (i, j): within one offset the target pixels are distinct.
    """
    xp = get_array_module(cols)
    (sh, sw), (ph, pw) = stride, padding
    B, C, kh, kw, Ho, Wo = cols.shape
    _, _, H, W = x_shape
    gx_pad = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            gx_pad[:, :, i : i + sh * Ho : sh, j : j + sw * Wo : sw] += cols[:, :, i, j]
    return gx_pad[:, :, ph : ph + H, pw : pw + W]


def _column_matrices(x, kh, kw, stride, padding):
    """im2col(x) as a stack of matrices X_col,b: (B, C kh kw, Ho Wo)."""
    cols = im2col(x, kh, kw, stride, padding)
    B, C, _, _, Ho, Wo = cols.shape
    return cols.reshape(B, C * kh * kw, Ho * Wo)


def _batch_parts(x, kh, kw, out_pixels):
    """How to split a batch for the CPU threads: by the bytes of one image's columns."""
    return parallel.pieces(x, x.shape[1] * kh * kw * out_pixels * x.itemsize)


def _convolve_into(out, x, W_mat, kh, kw, stride, padding):
    """Eq. (3) for the images of ``x``: ``out_b = W_mat X_col,b``, written into ``out`` (n, C_out, Ho, Wo)."""
    xp = get_array_module(x, W_mat)
    n, C_out = out.shape[:2]
    xp.matmul(W_mat, _column_matrices(x, kh, kw, stride, padding), out=out.reshape(n, C_out, -1))


# ----- convolution ------------------------------------------------------------------------
class Conv2d(ArrayFunction):  # kernel-style: im2col / col2im on raw arrays
    """2-D cross-correlation, NCHW: x (B, C_in, H, W), W (C_out, C_in, kh, kw), b (C_out,)
    -> y (B, C_out, Ho, Wo).

    Forward:  $Y_b = W_{mat} X_{col,b} + b 1^\\top$ with $X_{col,b} = \\mathrm{im2col}(x)_b$.
    VJP:      $\\bar W_{mat} = \\sum_b G_b X_{col,b}^\\top$, $\\bar b = \\sum_b G_b 1$,
              $\\bar x = \\mathrm{col2im}(W_{mat}^\\top G)$, or for stride 1
              $\\bar x = \\mathrm{conv}(G, \\tilde W)$ with the flipped kernel $\\tilde W$.
    See derivations/02_convolution.md, eq. (3) (forward), eqs. (4)-(7) (VJP) and eq. (11).

    Forward and backward each make one pass over the batch, in parts (see the module
    docstring); every part's work only touches that part's images. Array operations
    (kernels on a GPU) of a stride-1 convolution: forward 4 (padding 2, im2col copy,
    product), backward 10 (input gradient: flipped kernel, padding 2, im2col, product;
    weight gradient: padding 2, column copy, output-gradient transpose, product).
    """

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, W, b=None):
        xp = get_array_module(x, W)
        B, _, H, W_in = x.shape
        C_out, _, kh, kw = W.shape
        Ho = conv_output_size(H, kh, self.stride[0], self.padding[0])
        Wo = conv_output_size(W_in, kw, self.stride[1], self.padding[1])
        y = xp.empty((B, C_out, Ho, Wo), dtype=xp.result_type(x.dtype, W.dtype))
        W_mat = W.reshape(C_out, -1)

        def forward_part(part):  # eq. (3)
            _convolve_into(y[part], x[part], W_mat, kh, kw, self.stride, self.padding)

        parallel.run(forward_part, _batch_parts(x, kh, kw, Ho * Wo), x)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        need_x, need_W = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        x, W = self.inputs[0].data, self.inputs[1].data
        C_out, C_in, kh, kw = W.shape
        B, _, Ho, Wo = gy.shape
        G = gy.reshape(B, C_out, Ho * Wo)  # G_b: image b's output gradient in the layout of eq. (3)
        gx = xp.empty(x.shape, dtype=gy.dtype) if need_x else None
        input_gradient_part = self._input_gradient_part(W) if need_x else None

        def backward_part(part):
            if need_x:
                input_gradient_part(gx[part], gy[part])
            if need_W:  # eq. (4) on this part, as ONE product over its (image, pixel) columns
                n = G[part].shape[0]
                windows = _windows(x[part], kh, kw, self.stride, self.padding)  # (n, C_in, kh, kw, Ho, Wo)
                X_col = xp.ascontiguousarray(windows.transpose(1, 2, 3, 0, 4, 5)).reshape(-1, n * Ho * Wo)
                G_mat = xp.ascontiguousarray(G[part].transpose(1, 0, 2)).reshape(C_out, n * Ho * Wo)
                return xp.matmul(G_mat, X_col.T)
            return None

        parts = parallel.run(backward_part, _batch_parts(x, kh, kw, Ho * Wo), x)
        gW = functools.reduce(operator.add, parts).reshape(W.shape) if need_W else None
        gb = G.sum(axis=(0, 2)) if need_b else None  # eq. (5)
        return (gx, gW) if len(self.inputs) == 2 else (gx, gW, gb)

    def _input_gradient_part(self, W):
        """A function ``(gx_part, gy_part) -> None`` writing x̄ for some images: eqs. (6)-(7) or eq. (11)."""
        xp = get_array_module(W)
        C_out, C_in, kh, kw = W.shape
        (ph, pw) = self.padding
        if self.stride == (1, 1) and ph < kh and pw < kw:
            # eq. (11): a stride-1 convolution's input gradient is the convolution of G
            # (padded by k - 1 - p) with the kernel flipped in space and transposed in channels
            W_flipped = xp.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C_in, -1)
            return lambda gx, gy: _convolve_into(gx, gy, W_flipped, kh, kw, (1, 1), (kh - 1 - ph, kw - 1 - pw))
        W_mat_T = W.reshape(C_out, -1).T

        def through_col2im(gx, gy):
            n, _, Ho, Wo = gy.shape
            g_cols = xp.matmul(W_mat_T, gy.reshape(n, C_out, Ho * Wo))  # eq. (6)
            gx[...] = col2im(g_cols.reshape(n, C_in, kh, kw, Ho, Wo), gx.shape, self.stride, self.padding)  # eq. (7)

        return through_col2im


class Conv2d1x1(ArrayFunction):
    """1x1 convolution as a batched matrix product (no im2col), NCHW.

    Forward:  $Y_b = W_{mat} X_b + b 1^\\top$ for each image b, with $X_b$ the
              (C_in, Ho Wo) pixels of the (strided) input.
    VJP:      $\\bar W_{mat} = \\sum_b G_b X_b^\\top$, $\\bar X_b = W_{mat}^\\top G_b$.
    See derivations/02_convolution.md, eq. (8).
    """

    def __init__(self, stride):
        self.stride = stride

    def _pixels(self, x):
        """X_b for every image: the (strided) input as (B, C_in, Ho Wo); a view for stride 1."""
        xp = get_array_module(x)
        sh, sw = self.stride
        x_s = x[:, :, ::sh, ::sw] if (sh, sw) != (1, 1) else x  # a strided 1x1 conv samples pixels
        return xp.ascontiguousarray(x_s).reshape(x_s.shape[0], x_s.shape[1], -1)

    def _parts(self, x, out_pixels):
        return parallel.pieces(x, x.shape[1] * out_pixels * x.itemsize)

    def forward(self, x, W, b=None):
        xp = get_array_module(x, W)
        sh, sw = self.stride
        B, C_in, H, W_in = x.shape
        C_out, Ho, Wo = W.shape[0], conv_output_size(H, 1, sh, 0), conv_output_size(W_in, 1, sw, 0)
        W_mat = W.reshape(C_out, C_in)
        y = xp.empty((B, C_out, Ho, Wo), dtype=xp.result_type(x.dtype, W.dtype))

        def forward_part(part):  # eq. (8): Y_b = W_mat X_b, written straight into NCHW
            xp.matmul(W_mat, self._pixels(x[part]), out=y[part].reshape(-1, C_out, Ho * Wo))

        parallel.run(forward_part, self._parts(x, Ho * Wo), x)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        need_x, need_W = self.needs_input_grad[:2]
        need_b = len(self.needs_input_grad) > 2 and self.needs_input_grad[2]
        x, W = self.inputs[0].data, self.inputs[1].data
        B, C_out, Ho, Wo = gy.shape
        C_in = W.shape[1]
        G = gy.reshape(B, C_out, Ho * Wo)
        sh, sw = self.stride
        strided = (sh, sw) != (1, 1)
        gx = None
        if need_x:  # pixels skipped by a stride get zero gradient
            gx = xp.zeros(x.shape, dtype=gy.dtype) if strided else xp.empty(x.shape, dtype=gy.dtype)
        W_mat_T = W.reshape(C_out, C_in).T

        def backward_part(part):
            if need_x and strided:  # eq. (8): X̄_b = W_matᵀ G_b
                gx[part, :, ::sh, ::sw] = xp.matmul(W_mat_T, G[part]).reshape(-1, C_in, Ho, Wo)
            elif need_x:
                xp.matmul(W_mat_T, G[part], out=gx[part].reshape(-1, C_in, Ho * Wo))
            if need_W:  # eq. (8): sum_b G_b X_bᵀ over this part's images
                return xp.matmul(G[part], self._pixels(x[part]).transpose(0, 2, 1)).sum(axis=0)
            return None

        parts = parallel.run(backward_part, self._parts(x, Ho * Wo), x)
        gW = functools.reduce(operator.add, parts).reshape(W.shape) if need_W else None
        gb = G.sum(axis=(0, 2)) if need_b else None
        return (gx, gW) if len(self.inputs) == 2 else (gx, gW, gb)


def conv2d(
    x: TensorLike,
    W: TensorLike,
    b: TensorLike | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> Tensor:
    """2-D convolution (cross-correlation, as in PyTorch) of NCHW images.

    Parameters
    ----------
    x : Tensor (B, C_in, H, W)
    W : Tensor (C_out, C_in, kh, kw) -- PyTorch's weight layout
    b : Tensor (C_out,) or None
    stride, padding : int or (int, int) -- zero padding on each side

    Returns a Tensor (B, C_out, Ho, Wo) with ``Ho = (H + 2 p - kh) // s + 1``.
    """
    x, W = as_tensor(x), as_tensor(W)
    stride = _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    if x.ndim != 4:
        raise ValueError(
            f"conv2d expects x of shape (B, C, H, W), got shape {x.shape}; "
            "add a batch axis with x.reshape(1, *x.shape) for one image"
        )
    if W.ndim != 4:
        raise ValueError(f"conv2d expects W of shape (C_out, C_in, kh, kw), got shape {W.shape}")
    if x.shape[1] != W.shape[1]:
        raise ValueError(
            f"conv2d: x has {x.shape[1]} channels but W expects C_in = {W.shape[1]} (x {x.shape}, W {W.shape})"
        )
    kh, kw = W.shape[2:]
    Ho = conv_output_size(x.shape[2], kh, stride[0], padding[0])
    Wo = conv_output_size(x.shape[3], kw, stride[1], padding[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"conv2d: a {kh}x{kw} kernel does not fit the {x.shape[2]}x{x.shape[3]} input "
            f"with padding {padding}; increase padding or use a smaller kernel"
        )
    inputs = (x, W) if b is None else (x, W, as_tensor(b))
    if b is not None and inputs[2].shape != (W.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({W.shape[0]},), got {inputs[2].shape}")
    if (kh, kw) == (1, 1) and padding == (0, 0):
        return Conv2d1x1(stride)(*inputs)  # eq. (8): no im2col
    return Conv2d(stride, padding)(*inputs)


# ----- fully connected ------------------------------------------------------------------
class Linear(Function):
    """Fully connected layer: x (B, in), W (out, in), b (out,) -> y (B, out).

    Forward:  $y = x W^\\top + b$.
    VJP:      $\\bar x = G W$, $\\bar W = G^\\top x$, $\\bar b = 1^\\top G$.
    See derivations/02_convolution.md, eqs. (9)-(10).

    The backward is written with differentiable ops, so second derivatives work.
    """

    def forward(self, x, W, b=None):
        xp = get_array_module(x, W)
        y = xp.matmul(x, W.T)
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        x, W = self.inputs[:2]
        gx = matmul(gy, W) if self.needs_input_grad[0] else None
        gW = matmul(swapaxes(gy, 0, 1), x) if self.needs_input_grad[1] else None
        if len(self.inputs) == 2:
            return gx, gW
        gb = sum(gy, axis=0) if self.needs_input_grad[2] else None
        return gx, gW, gb


def linear(x: TensorLike, W: TensorLike, b: TensorLike | None = None) -> Tensor:
    """``y = x W^T + b`` with x (B, in), W (out, in) (PyTorch's layout), b (out,) or None."""
    x, W = as_tensor(x), as_tensor(W)
    if x.ndim != 2 or W.ndim != 2:
        raise ValueError(
            f"linear expects x (B, in) and W (out, in), got shapes {x.shape} and {W.shape}; "
            "flatten feature maps first with x.reshape(B, -1)"
        )
    if x.shape[1] != W.shape[1]:
        raise ValueError(
            f"linear: x has {x.shape[1]} features but W expects in = {W.shape[1]} (x {x.shape}, W {W.shape})"
        )
    if b is None:
        return Linear()(x, W)
    b = as_tensor(b)
    if b.shape != (W.shape[0],):
        raise ValueError(f"linear: bias must have shape ({W.shape[0]},), got {b.shape}")
    return Linear()(x, W, b)
