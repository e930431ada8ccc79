"""Average pooling: windowed (``avg_pool2d``) and global (``global_avg_pool``).

Derivations: derivations/04_softmax_cross_entropy.md, eqs. (15)-(18).
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import ArrayFunction, Function, Tensor, TensorLike, as_tensor
from .basic import broadcast_to, reshape
from .conv import _pad, _pair, conv_output_size

__all__ = ["avg_pool2d", "global_avg_pool"]


class AvgPool2d(ArrayFunction):
    """Average over kh x kw windows, NCHW: (B, C, H, W) -> (B, C, Ho, Wo).

    Zero padding counts towards the average (PyTorch's ``count_include_pad=True``):
    every window divides by kh*kw.

    Forward:  $y_{r s} = \\frac{1}{k_h k_w} \\sum_{i, j} x^{pad}_{s_h r + i,\\, s_w s + j}$.
    VJP:      $\\bar x^{pad}_{s_h r + i,\\, s_w s + j} \\mathrel{+}= \\bar y_{r s} / (k_h k_w)$, then crop.
    See derivations/04_softmax_cross_entropy.md, eqs. (15)-(16).
    """

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        xp = get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        B, C, H, W = self.x_shape = x.shape
        Ho, Wo = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
        x_pad = _pad(x, ph, pw)
        y = xp.zeros((B, C, Ho, Wo), dtype=x.dtype)
        for i in range(kh):  # one strided slice per kernel offset, no im2col
            for j in range(kw):
                y += x_pad[:, :, i : i + sh * Ho : sh, j : j + sw * Wo : sw]
        return y * (1.0 / (kh * kw))  # eq. (15)

    def backward(self, gy):
        xp = get_array_module(gy)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        B, C, H, W = self.x_shape
        _, _, Ho, Wo = gy.shape
        share = gy * (1.0 / (kh * kw))
        gx_pad = xp.zeros((B, C, H + 2 * ph, W + 2 * pw), dtype=gy.dtype)
        for i in range(kh):  # eq. (16): each window hands its share back
            for j in range(kw):
                gx_pad[:, :, i : i + sh * Ho : sh, j : j + sw * Wo : sw] += share
        return gx_pad[:, :, ph : ph + H, pw : pw + W]


def avg_pool2d(
    x: TensorLike,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = None,
    padding: int | tuple[int, int] = 0,
) -> Tensor:
    """Average pooling of NCHW images.

    kernel_size, stride, padding : int or (int, int); ``stride`` defaults to
    ``kernel_size`` (non-overlapping windows). Padding must be at most half
    the kernel (as in PyTorch), and counts as zeros in the average.
    """
    x = as_tensor(x)
    if x.ndim != 4:
        raise ValueError(f"avg_pool2d expects x of shape (B, C, H, W), got {x.shape}")
    kernel = _pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else _pair(stride, "stride", 1)
    padding = _pair(padding, "padding", 0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"avg_pool2d: padding {padding} must be at most half the kernel {kernel}")
    Ho = conv_output_size(x.shape[2], kernel[0], stride[0], padding[0])
    Wo = conv_output_size(x.shape[3], kernel[1], stride[1], padding[1])
    if Ho < 1 or Wo < 1:
        raise ValueError(f"avg_pool2d: a {kernel} window does not fit the {x.shape[2:]} input with padding {padding}")
    return AvgPool2d(kernel, stride, padding)(x)


class GlobalAvgPool(Function):
    """Mean over all pixels: (B, C, H, W) -> (B, C).

    Forward:  $y_{bc} = \\frac{1}{HW} \\sum_{h, w} x_{bchw}$.
    VJP:      $\\bar x_{bchw} = \\bar y_{bc} / (HW)$.
    See derivations/04_softmax_cross_entropy.md, eqs. (17)-(18).

    The backward is written with differentiable ops (second derivatives work).
    """

    def forward(self, x):
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))  # eq. (17)

    def backward(self, gy):
        B, C, H, W = self.x_shape
        spread = broadcast_to(reshape(gy, (B, C, 1, 1)), self.x_shape)  # eq. (18)
        return spread * (1.0 / (H * W))


def global_avg_pool(x: TensorLike) -> Tensor:
    """Global average pooling (B, C, H, W) -> (B, C), the GAP head of ResNets."""
    x = as_tensor(x)
    if x.ndim != 4:
        raise ValueError(f"global_avg_pool expects x of shape (B, C, H, W), got {x.shape}")
    return GlobalAvgPool()(x)
