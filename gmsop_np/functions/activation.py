"""Activations: ReLU, sigmoid, softplus, dropout, softmax and log-softmax.

The derivations are in derivations/04_softmax_cross_entropy.md. Every
backward here is written with differentiable ops, so second derivatives
(``create_graph=True``) work through these functions.

Numerical stability:

* ``sigmoid`` and ``softplus`` only ever exponentiate ``-|x|`` (<= 0), so they
  never overflow: softplus(1000) = 1000, softplus(-1000) = 0 (eqs. (3), (5)).
* ``softmax`` / ``log_softmax`` subtract the row maximum first (eq. (9)).
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor, TensorLike, as_tensor
from ..random import as_counter_rng
from .basic import exp, sum

__all__ = ["relu", "sigmoid", "softplus", "dropout", "softmax", "log_softmax"]


# ----- ReLU ---------------------------------------------------------------------------
class ReLU(Function):
    """y = max(x, 0), any shape.

    Forward:  $y = \\max(x, 0)$.
    VJP:      $\\bar x = \\bar y \\odot 1[x > 0]$ (0 at the kink x = 0).
    See derivations/04_softmax_cross_entropy.md, eqs. (1)-(2).
    """

    def forward(self, x):
        xp = get_array_module(x)
        return xp.maximum(x, 0)  # a Python scalar keeps x's dtype and is no device transfer

    def backward(self, gy):
        y = self.output().data
        return gy * Tensor(y > 0)  # eq. (2); the boolean mask multiplies without a float copy


def relu(x: TensorLike) -> Tensor:
    """Rectified linear unit, elementwise."""
    return ReLU()(x)


# ----- sigmoid ------------------------------------------------------------------------
def _stable_sigmoid(xp, x):
    """1 / (1 + e^{-x}) computed from e^{-|x|} only, so it cannot overflow."""
    e = xp.exp(-xp.abs(x))  # in (0, 1]
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Function):
    """y = 1 / (1 + e^{-x}), any shape.

    Forward:  $y = \\sigma(x)$, evaluated from $e^{-|x|}$ (no overflow).
    VJP:      $\\bar x = \\bar y \\odot y (1 - y)$.
    See derivations/04_softmax_cross_entropy.md, eqs. (3)-(4).
    """

    def forward(self, x):
        return _stable_sigmoid(get_array_module(x), x)  # eq. (3)

    def backward(self, gy):
        y = self.output()
        return gy * y * (1 - y)  # eq. (4)


def sigmoid(x: TensorLike) -> Tensor:
    """Logistic sigmoid, elementwise (numerically stable for any |x|)."""
    return Sigmoid()(x)


# ----- softplus ------------------------------------------------------------------------
class Softplus(Function):
    """y = log(1 + e^x), any shape.

    Forward:  $y = \\max(x, 0) + \\log(1 + e^{-|x|})$ (no overflow for any x).
    VJP:      $\\bar x = \\bar y \\odot \\sigma(x)$.
    See derivations/04_softmax_cross_entropy.md, eqs. (5)-(6).
    """

    def forward(self, x):
        xp = get_array_module(x)
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))  # eq. (5)

    def backward(self, gy):
        return gy * sigmoid(self.inputs[0])  # eq. (6)


def softplus(x: TensorLike) -> Tensor:
    """Smooth ReLU ``log(1 + e^x)``, elementwise (numerically stable)."""
    return Softplus()(x)


# ----- dropout ---------------------------------------------------------------------------
class Dropout(Function):
    """Inverted dropout with a fixed keep-mask m (1 = keep, 0 = drop), any shape.

    Forward:  $y = x \\odot m / (1 - p)$.
    VJP:      $\\bar x = \\bar y \\odot m / (1 - p)$.
    See derivations/04_softmax_cross_entropy.md, eqs. (7)-(8).
    """

    def __init__(self, scaled_mask):
        self.scaled_mask = scaled_mask  # m / (1 - p), x's dtype

    def forward(self, x):
        return x * self.scaled_mask  # eq. (7)

    def backward(self, gy):
        return gy * Tensor(self.scaled_mask)  # eq. (8)


def dropout(x: TensorLike, p: float = 0.5, training: bool = True, rng=None, mask: TensorLike | None = None) -> Tensor:
    """Inverted dropout: zero each entry with probability ``p``, scale the rest by 1/(1-p).

    The expected value of every entry is unchanged, so evaluation needs no
    rescaling: with ``training=False`` (or ``p == 0``) this is the identity.

    Parameters
    ----------
    x : Tensor, any shape
    p : float in [0, 1) -- drop probability
    training : bool -- pass the layer's train/eval flag
    rng : ``gmsop_np.random.CounterRNG``, an int seed, or None (unseeded) -- where the mask
        comes from. The mask is drawn on x's backend (no host->device copy), and the same
        seed drops the same entries on NumPy and on CuPy.
    mask : array of x's shape (1 = keep, 0 = drop), optional -- use this mask
        instead of drawing one (``rng`` is then ignored; a host mask is copied to x's backend).
    """
    x = as_tensor(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability p must be in [0, 1), got {p}")
    if not training or (p == 0.0 and mask is None):
        return x
    xp = get_array_module(x)
    if mask is None:
        mask = as_counter_rng(rng).bernoulli(x.shape, 1.0 - p, xp=xp)  # keep with probability 1 - p
    mask = mask.data if isinstance(mask, Tensor) else mask
    if tuple(mask.shape) != x.shape:
        raise ValueError(f"dropout: mask has shape {tuple(mask.shape)} but x has shape {x.shape}")
    if get_array_module(mask) is not xp:
        mask = xp.asarray(mask)  # an explicit host mask for device data: copied once
    scale = x.dtype.type(1.0 / (1.0 - p))
    return Dropout(xp.where(mask, scale, x.dtype.type(0)))(x)


# ----- softmax and log-softmax -----------------------------------------------------------------
class Softmax(Function):
    """y = softmax(x) along ``axis``, any shape.

    Forward:  $y_i = e^{x_i - m} / \\sum_j e^{x_j - m}$, $m = \\max_j x_j$.
    VJP:      $\\bar x = y \\odot (\\bar y - \\langle \\bar y, y \\rangle)$.
    See derivations/04_softmax_cross_entropy.md, eqs. (9)-(10).
    """

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))  # eq. (9): exponent <= 0
        return e / e.sum(axis=self.axis, keepdims=True)

    def backward(self, gy):
        y = self.output()
        return y * (gy - sum(gy * y, axis=self.axis, keepdims=True))  # eq. (10)


class LogSoftmax(Function):
    """y = log softmax(x) along ``axis``, any shape.

    Forward:  $y_i = x_i - m - \\log \\sum_j e^{x_j - m}$.
    VJP:      $\\bar x = \\bar y - \\mathrm{softmax}(x) \\sum_j \\bar y_j$.
    See derivations/04_softmax_cross_entropy.md, eqs. (11)-(12).
    """

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        xp = get_array_module(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))  # eq. (11)

    def backward(self, gy):
        softmax_x = exp(self.output())  # e^{log softmax} = softmax
        return gy - softmax_x * sum(gy, axis=self.axis, keepdims=True)  # eq. (12)


def _check_axis(x, axis, name):
    if not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{name}: axis {axis!r} is out of range for an input of shape {x.shape}")
    return axis % x.ndim


def softmax(x: TensorLike, axis: int | tuple | None = -1) -> Tensor:
    """Softmax along ``axis`` (numerically stable: the maximum is subtracted first)."""
    x = as_tensor(x)
    return Softmax(_check_axis(x, axis, "softmax"))(x)


def log_softmax(x: TensorLike, axis: int | tuple | None = -1) -> Tensor:
    """log(softmax(x)) along ``axis``, computed without forming softmax (stable)."""
    x = as_tensor(x)
    return LogSoftmax(_check_axis(x, axis, "log_softmax"))(x)
