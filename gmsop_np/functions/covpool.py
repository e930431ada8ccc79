"""Covariance pooling (paper Eq. 5): the second-order statistic of a feature map.

A feature map ``x`` of shape (B, C, H, W) holds, per image, L = H·W feature
vectors of dimension d = C (one per spatial position). Covariance pooling
replaces them by their biased (1/L) sample covariance, a (C, C) matrix.

We store the features per image as a (C, L) matrix X (columns = positions),
so the paper's ``Xᵀ Ĵ X`` (rows = positions) reads ``X Ĵ Xᵀ`` here.
The paper writes the centring as a product with the L×L matrix
``Ĵ = (I − 11ᵀ/L)/L``; building that matrix costs O(L²) memory per image and
O(L²C) time, so we centre by subtracting the mean instead (same result).

Derivation: derivations/05_covariance_pooling.md, eqs. (1)-(4).
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, Tensor, TensorLike, as_tensor
from . import parallel
from .basic import matmul, mean, reshape, swapaxes

__all__ = ["cov_pool"]


class CovPool(Function):
    """Covariance pooling: (B, C, H, W) -> (B, C, C), Σ = (1/L) X_c X_cᵀ per image.

    Forward:  $\\Sigma = \\tfrac{1}{L} X_c X_c^\\top$, $X_c = X - \\mu 1^\\top$, $\\mu = \\tfrac1L X 1$.
    VJP:      $\\bar X = \\tfrac{1}{L} (G + G^\\top) X_c$ for any (also non-symmetric) G = ∂ℓ/∂Σ.
    See derivations/05_covariance_pooling.md, eq. (2) (forward) and eq. (4) (VJP).

    The backward is written with differentiable ops (matmul, mean, ...), so
    second derivatives through covariance pooling work.
    """

    def forward(self, x):
        xp = get_array_module(x)
        b, c, h, w = x.shape
        length = h * w
        features = x.reshape(b, c, length)  # (B, C, L): column l = position l
        centred = features - features.mean(axis=2, keepdims=True)  # eq. (1): X_c = X − μ1ᵀ
        # eq. (2): Σ = (1/L) X_c X_cᵀ  (batched matmul, never the L×L centring matrix)
        sigma = parallel.matmul(centred, xp.swapaxes(centred, 1, 2))  # the stack over the CPU threads
        return sigma / length  # a Python number: a kernel argument, no host -> device copy

    def backward(self, gsigma):
        x = self.inputs[0]
        b, c, h, w = x.shape
        length = h * w
        features = reshape(x, (b, c, length))
        # Recomputed with differentiable ops so that the VJP itself is differentiable.
        centred = features - mean(features, axis=2, keepdims=True)
        # eq. (4): X̄ = (1/L)(G + Gᵀ) X_c. No extra term for the mean: the centring
        # projector P = I − 11ᵀ/L is its own adjoint and X_c P = X_c (eq. (3)).
        gsym = gsigma + swapaxes(gsigma, 1, 2)
        gx = matmul(gsym, centred) * (1.0 / length)
        return reshape(gx, x.shape)


def cov_pool(x: TensorLike) -> Tensor:
    """Biased covariance of each image's feature vectors: (B, C, H, W) -> (B, C, C).

    ``Σ_b = (1/L) Σ_l (x_l − μ)(x_l − μ)ᵀ`` over the L = H·W positions of image b
    (paper Eq. 5). Float input only; the dtype is kept.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4, 4))
    >>> sigma = cov_pool(x).data
    >>> sigma.shape, np.allclose(sigma[0], np.cov(x[0].reshape(3, 16), bias=True))
    ((2, 3, 3), True)
    """
    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(
            f"cov_pool needs a floating-point feature map, got dtype {x.dtype}; convert it first, "
            "e.g. x.astype(numpy.float32)"
        )
    if x.ndim != 4:
        raise ValueError(
            f"cov_pool expects a feature map of shape (B, C, H, W), got shape {tuple(x.shape)}; "
            "add the missing axes with reshape (e.g. a single image: x.reshape(1, C, H, W))"
        )
    if x.shape[2] * x.shape[3] == 0:
        raise ValueError(f"cov_pool needs at least one spatial position, got H×W = {x.shape[2]}×{x.shape[3]}")
    return CovPool()(x)
