"""Batch normalisation of feature vectors (B, C) and feature maps (B, C, H, W).

Statistics are taken per channel (axis 1) over every other axis: over the
batch for (B, C), over batch and pixels for (B, C, H, W). Derivation, with
every equation number used below: derivations/03_batch_norm.md.

Running statistics follow PyTorch: ``r <- (1 - momentum) r + momentum * s``
where ``s`` is the batch mean, or the *unbiased* batch variance (the
normalisation itself uses the biased one). The running buffers are updated
IN PLACE; they may be raw arrays (what ``nn.BatchNorm*`` registers as buffers)
or Tensors (then their ``.data`` is updated), and they keep their own dtype.
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import ArrayFunction, Tensor, TensorLike, as_tensor
from . import parallel

__all__ = ["batch_norm"]


def _channel_shape(ndim):
    """Shape that broadcasts a (C,) vector along axis 1 of an ndim-array."""
    return (1, -1) + (1,) * (ndim - 2)


def _reduce_axes(ndim):
    """Every axis except the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def _per_channel(x):
    """x (B, C) or (B, C, H, W) as (B, C, P): a view; P = 1 for feature vectors."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _channel_sum(a):
    """``sum(a)`` over every axis but the channel axis 1: (C,)."""
    return get_array_module(a).einsum("bcp->c", _per_channel(a))


def _channel_dot(a, b):
    """``sum(a * b)`` over every axis but the channel axis 1: (C,), without the product array."""
    return get_array_module(a, b).einsum("bcp,bcp->c", _per_channel(a), _per_channel(b))


def _channel_groups(x):
    """Groups of channels, one per CPU thread: batch norm treats every channel on its own.

    The per-channel sums are ``einsum`` contractions, which add a channel's values in
    the same order whatever group the channel is in, so the grouping never changes a result.
    """
    return parallel.per_thread(x.swapaxes(0, 1))


def _joined(parts):
    """Per-group (C_group,) results as one (C,) vector (no copy when there is one group)."""
    return parts[0] if len(parts) == 1 else get_array_module(parts[0]).concatenate(parts)


class BatchNormTrain(ArrayFunction):  # the compact closed form works on raw arrays
    """Batch norm with batch statistics: x (B, C) or (B, C, H, W), gamma, beta (C,).

    Forward:  $\\hat x = (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon}$, $y = \\gamma \\hat x + \\beta$,
              with the per-channel batch mean $\\mu$ and biased variance $\\sigma^2$ over m values.
    VJP:      $\\bar x = \\frac{\\gamma}{m \\sqrt{\\sigma^2 + \\epsilon}}
              (m \\bar y - \\sum \\bar y - \\hat x \\sum \\bar y \\hat x)$,
              $\\bar \\gamma = \\sum \\bar y \\hat x$, $\\bar \\beta = \\sum \\bar y$.
    See derivations/03_batch_norm.md, eqs. (1)-(4) (forward) and eqs. (6)-(8) (VJP).

    Passes over the data: forward 6 (sum, centre, sum of squares, normalise, scale,
    shift), backward 6; with the arithmetic on (C,) vectors, 10 and 9 array operations
    (kernels on a GPU). $\\hat x$ is kept for backward; the per-channel sums of products
    need no temporary array (``_channel_dot``).
    On the CPU, one group of channels per thread (``functions/parallel.py``); on the
    GPU all channels are one group.
    """

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        shape, m = _channel_shape(x.ndim), x.size // x.shape[1]  # m values per channel
        y, self.x_hat = xp.empty_like(x), xp.empty_like(x)

        def normalize(ch):  # eqs. (1)-(4) for the channels ch
            x_ch, x_hat, y_ch = x[:, ch], self.x_hat[:, ch], y[:, ch]
            mean = _channel_sum(x_ch) / m  # eq. (1)
            xp.subtract(x_ch, mean.reshape(shape), out=x_hat)  # x - mu, normalised in place below
            var = _channel_dot(x_hat, x_hat) / m  # eq. (2), biased
            inv_std = (var + self.eps) ** -0.5  # a Python float keeps x's dtype
            x_hat *= inv_std.reshape(shape)  # eq. (3)
            xp.multiply(x_hat, gamma[ch].reshape(shape), out=y_ch)
            y_ch += beta[ch].reshape(shape)  # eq. (4)
            return mean, var, inv_std

        groups = parallel.run(normalize, _channel_groups(x), x)
        self.mean, self.var, self.inv_std = (_joined([g[i] for g in groups]) for i in range(3))
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        need_x, need_gamma, need_beta = self.needs_input_grad
        shape, m = _channel_shape(gy.ndim), gy.size // gy.shape[1]  # m values per channel
        gamma = self.inputs[1].data
        gx = xp.empty_like(gy) if need_x else None

        def backward_channels(ch):
            gy_ch, x_hat = gy[:, ch], self.x_hat[:, ch]
            sum_gy = _channel_sum(gy_ch)  # eq. (7): d beta
            sum_gy_x_hat = _channel_dot(gy_ch, x_hat)  # eq. (6): d gamma
            if need_x:
                # eq. (8):  gx = a (gy - (sum gy + x_hat sum(gy x_hat)) / m)  with  a = gamma / sqrt(var + eps)
                a = gamma[ch] * self.inv_std[ch]
                gx_ch = gx[:, ch]
                xp.multiply(x_hat, sum_gy_x_hat.reshape(shape), out=gx_ch)
                gx_ch += sum_gy.reshape(shape)
                gx_ch *= (a * (-1 / m)).reshape(shape)
                gx_ch += gy_ch * a.reshape(shape)
            return sum_gy, sum_gy_x_hat

        groups = parallel.run(backward_channels, _channel_groups(gy), gy)
        sum_gy, sum_gy_x_hat = (_joined([g[i] for g in groups]) for i in range(2))
        return gx, (sum_gy_x_hat if need_gamma else None), (sum_gy if need_beta else None)


class BatchNormEval(ArrayFunction):
    """Batch norm with fixed (running) statistics: an affine map per channel.

    Forward:  $y = \\gamma (x - \\mu_r) / \\sqrt{\\sigma_r^2 + \\epsilon} + \\beta$.
    VJP:      $\\bar x = \\gamma \\bar y / \\sqrt{\\sigma_r^2 + \\epsilon}$,
              $\\bar \\gamma = \\sum \\bar y \\hat x$, $\\bar \\beta = \\sum \\bar y$.
    See derivations/03_batch_norm.md, eqs. (9)-(10).
    """

    def __init__(self, mean, var, eps):
        self.mean, self.var, self.eps = mean, var, eps

    def forward(self, x, gamma, beta):
        shape = _channel_shape(x.ndim)
        mean = self.mean.astype(x.dtype, copy=False)
        var = self.var.astype(x.dtype, copy=False)
        self.inv_std = (var + self.eps) ** -0.5
        self.x_hat = (x - mean.reshape(shape)) * self.inv_std.reshape(shape)
        return gamma.reshape(shape) * self.x_hat + beta.reshape(shape)  # eq. (9)

    def backward(self, gy):
        need_x, need_gamma, need_beta = self.needs_input_grad
        axes, shape = _reduce_axes(gy.ndim), _channel_shape(gy.ndim)
        gamma = self.inputs[1].data
        gx = gy * (gamma * self.inv_std).reshape(shape) if need_x else None  # eq. (10)
        g_gamma = (gy * self.x_hat).sum(axis=axes) if need_gamma else None
        g_beta = gy.sum(axis=axes) if need_beta else None
        return gx, g_gamma, g_beta


def _buffer_array(buffer, name, channels, xp):
    """The raw array behind a running-statistics buffer (array or Tensor), checked."""
    if buffer is None:
        return None
    array = buffer.data if isinstance(buffer, Tensor) else buffer
    if not hasattr(array, "shape") or tuple(array.shape) != (channels,):
        raise ValueError(
            f"batch_norm: {name} must be an array of shape ({channels},), "
            f"got {getattr(array, 'shape', type(array).__name__)}"
        )
    if get_array_module(array) is not xp:
        raise TypeError(
            f"batch_norm: {name} lives on another backend than x; move the module with .to_gpu() / .to_cpu()"
        )
    return array


def batch_norm(
    x: TensorLike,
    gamma: TensorLike,
    beta: TensorLike,
    running_mean: TensorLike | None = None,
    running_var: TensorLike | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation over every axis except the channel axis 1.

    Parameters
    ----------
    x : Tensor (B, C) or (B, C, H, W)
    gamma, beta : Tensor (C,) -- scale and shift
    running_mean, running_var : array or Tensor (C,), or None -- running statistics.
        In training they are updated in place (eq. (5)) when given; in
        evaluation they are required and used instead of the batch statistics.
    training : bool -- batch statistics (True) or running statistics (False)
    momentum : float -- weight of the new batch statistic (PyTorch's convention)
    eps : float -- added to the variance before the square root
    """
    x, gamma, beta = as_tensor(x), as_tensor(gamma), as_tensor(beta)
    if x.ndim not in (2, 4):
        raise ValueError(f"batch_norm expects x of shape (B, C) or (B, C, H, W), got {x.shape}")
    C = x.shape[1]
    if gamma.shape != (C,) or beta.shape != (C,):
        raise ValueError(
            f"batch_norm: gamma and beta must have shape ({C},) for x of shape {x.shape}, "
            f"got {gamma.shape} and {beta.shape}"
        )
    xp = get_array_module(x)
    mean_buf = _buffer_array(running_mean, "running_mean", C, xp)
    var_buf = _buffer_array(running_var, "running_var", C, xp)

    if not training:
        if mean_buf is None or var_buf is None:
            raise ValueError(
                "batch_norm in evaluation mode needs running_mean and running_var "
                "(or call it with training=True to use batch statistics)"
            )
        return BatchNormEval(mean_buf, var_buf, eps)(x, gamma, beta)

    m = x.size // C  # values per channel
    if m < 2:
        raise ValueError(
            f"batch_norm in training mode needs more than one value per channel, got input of shape "
            f"{x.shape}: the batch variance of a single value is 0 and the output would be all beta. "
            "Use a batch of at least 2 samples, or evaluation mode (training=False)."
        )
    fn = BatchNormTrain(eps)
    y = fn(x, gamma, beta)
    if mean_buf is not None:  # eq. (5), in place
        mean_buf *= 1 - momentum
        mean_buf += fn.mean * momentum
    if var_buf is not None:  # with the unbiased batch variance: var * m / (m - 1)
        var_buf *= 1 - momentum
        var_buf += fn.var * (momentum * m / (m - 1))
    return y
