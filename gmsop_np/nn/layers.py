"""Layers: thin Modules around the functions of ``gmsop_np.functional``.

Each layer owns its Parameters (created in float32 on the current default
backend) and calls one function of ``F``. Shapes follow PyTorch: images are
``(B, C, H, W)``, convolution weights ``(C_out, C_in, kh, kw)``, linear weights
``(out, in)``.

Initialisation (documented choice, as in torchvision's ResNets):

* ``Conv2d``: He / Kaiming normal with *fan-out*, ``W ~ N(0, 2 / (C_out kh kw))``.
  He et al. (2015) show that either fan-in or fan-out keeps the signal scale
  stable through ReLU layers; ResNet implementations use fan-out.
* ``Linear``: ``W, b ~ U(-1/sqrt(in), 1/sqrt(in))`` (PyTorch's default for the
  final classifier of a ResNet).
* ``BatchNorm``: gamma = 1, beta = 0, running mean 0, running variance 1.

Seeding: every constructor takes ``rng`` (a ``numpy.random.Generator``). Models
create ONE generator from their ``seed`` and pass it to every layer in build
order, so two builds with the same seed are bit-identical. Values are always
drawn on the host (NumPy) and then moved, so NumPy and CuPy runs start from the
same weights. ``rng=None`` draws from a fresh, unseeded generator.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .._checks import check_int, check_int_pair, check_number
from ..backend import default_xp
from ..core import Parameter
from ..random import CounterRNG
from .module import Module

__all__ = [
    "as_rng",
    "Conv2d",
    "Linear",
    "BatchNorm1d",
    "BatchNorm2d",
    "ReLU",
    "Dropout",
    "GlobalAvgPool",
    "Flatten",
]


def as_rng(rng) -> np.random.Generator:
    """``rng`` as a Generator: a Generator is used as is, an int seeds a new one, None is unseeded."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def _parameter(host_array: np.ndarray) -> Parameter:
    """A float32 Parameter on the default backend from host data."""
    return Parameter(default_xp().asarray(host_array.astype(np.float32)))


class Conv2d(Module):
    """2-D convolution (cross-correlation): (B, C_in, H, W) -> (B, C_out, H', W').

    ``W``: (C_out, C_in, kh, kw), He-normal with fan-out; ``b``: (C_out,) zeros or None.
    ``bias=False`` by default because in a ResNet every conv is followed by
    batch norm, whose beta makes a bias redundant.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False, rng=None):
        super().__init__()
        check_int(in_channels, "in_channels", 1)
        check_int(out_channels, "out_channels", 1)
        kh, kw = check_int_pair(kernel_size, "kernel_size", 1)
        rng = as_rng(rng)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        std = math.sqrt(2.0 / (out_channels * kh * kw))  # fan-out He init
        self.W = _parameter(rng.standard_normal((out_channels, in_channels, kh, kw)) * std)
        self.b = _parameter(np.zeros(out_channels)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.W, self.b, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.b is not None}"
        )


class Linear(Module):
    """Fully connected layer: (B, in) -> (B, out), ``y = x W^T + b``.

    ``W``: (out, in), ``b``: (out,), both ``U(-1/sqrt(in), 1/sqrt(in))``.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        check_int(in_features, "in_features", 1)
        check_int(out_features, "out_features", 1)
        rng = as_rng(rng)
        self.in_features, self.out_features = int(in_features), int(out_features)
        bound = 1.0 / math.sqrt(in_features)
        self.W = _parameter(rng.uniform(-bound, bound, (out_features, in_features)))
        self.b = _parameter(rng.uniform(-bound, bound, out_features)) if bias else None

    def forward(self, x):
        return F.linear(x, self.W, self.b)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.b is not None}"


class _BatchNorm(Module):
    """Batch normalisation over every axis except the channel axis 1.

    Training: normalise with the batch mean / (biased) variance and update the
    running statistics, ``r <- (1 - momentum) r + momentum * batch_stat``
    (PyTorch's convention; the running variance uses the unbiased batch variance).
    Evaluation: normalise with the running statistics.
    ``y = gamma (x - mu) / sqrt(var + eps) + beta`` (derivations/03_batch_norm.md).
    """

    expected_ndim = None

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        super().__init__()
        check_int(num_features, "num_features", 1)
        check_number(momentum, "momentum", 0.0, 1.0)
        check_number(eps, "eps", 0.0, above=True)
        self.num_features, self.momentum, self.eps = int(num_features), float(momentum), float(eps)
        self.gamma = _parameter(np.ones(num_features))
        self.beta = _parameter(np.zeros(num_features))
        xp = default_xp()
        self.register_buffer("running_mean", xp.zeros(num_features, dtype=np.float32))
        self.register_buffer("running_var", xp.ones(num_features, dtype=np.float32))

    def forward(self, x):
        if x.ndim != self.expected_ndim or x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) expects input of shape "
                f"{self._shape_text()}, got {tuple(x.shape)}"
            )
        return F.batch_norm(
            x,
            self.gamma,
            self.beta,
            self.running_mean,
            self.running_var,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )

    def _shape_text(self):
        return "(B, C)" if self.expected_ndim == 2 else "(B, C, H, W)"

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"


class BatchNorm1d(_BatchNorm):
    """Batch norm of feature vectors (B, C) (used on the pooled representation)."""

    expected_ndim = 2


class BatchNorm2d(_BatchNorm):
    """Batch norm of feature maps (B, C, H, W): statistics over B, H and W per channel."""

    expected_ndim = 4


class ReLU(Module):
    """max(x, 0), elementwise."""

    def forward(self, x):
        return F.relu(x)


class Dropout(Module):
    """Inverted dropout: in training, zero each entry with probability ``p`` and scale
    the rest by 1/(1-p); the identity in evaluation.

    The layer keeps its own ``CounterRNG`` (seeded from ``rng`` at construction), so a
    model built with a seed drops the same entries on every run and on every backend; the
    mask is drawn on the data's backend (``gmsop_np/random.py``).
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        check_number(p, "dropout probability p", 0.0, 1.0)
        if p == 1.0:
            raise ValueError("dropout probability p must be below 1 (p = 1 drops everything), got 1.0")
        self.p = float(p)
        # its own stream: dropout draws during training do not disturb the init stream
        self.rng = CounterRNG(int(as_rng(rng).integers(2**63)))

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training, rng=self.rng)

    def extra_repr(self):
        return f"p={self.p}"


class GlobalAvgPool(Module):
    """Global average pooling: (B, C, H, W) -> (B, C)."""

    def forward(self, x):
        return F.global_avg_pool(x)


class Flatten(Module):
    """(B, d1, d2, ...) -> (B, d1 * d2 * ...)."""

    def forward(self, x):
        return x.reshape(x.shape[0], -1)
