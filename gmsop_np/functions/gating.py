"""The sparsity-constrained gating module of GM-SOP (paper Eqs. 2-4).

Three steps turn gating features ``u`` (B, D) into mixture weights (B, N):

1. ``noisy_gate_logits``  H = u W_g^T + gamma * softplus(u W_n^T)      (Eq. 2)
2. ``topk_softmax``       keep the K largest logits, softmax over them  (Eq. 3)
3. ``balance_loss``       alpha * CV^2 of the per-component importance  (Eq. 4)

``draw_gate_noise`` draws gamma on the data's backend from a seeded ``CounterRNG``
(``gmsop_np/random.py``), so runs are reproducible and NumPy / CuPy runs see the same numbers.

Derivations: derivations/08_gating.md (Eqs. 2-3) and derivations/09_balance_loss.md (Eq. 4).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_finite, check_float_dtype, check_int, check_nonnegative, check_number
from ..backend import get_array_module
from ..core import Function, Tensor, TensorLike, as_tensor
from ..random import as_counter_rng
from . import basic
from .activation import softplus

__all__ = ["draw_gate_noise", "noisy_gate_logits", "topk_softmax", "balance_loss", "NOISE_MODES"]

#: "shared": one gamma ~ N(0, 1) per sample for all N logits (official release; the
#: paper's gamma is a scalar). "independent": one gamma per (sample, component)
#: (Shazeer et al. 2017).
NOISE_MODES = ("shared", "independent")


def _data(x):
    return x.data if isinstance(x, Tensor) else x


# ----- noisy logits (Eq. 2) ---------------------------------------------------------------
def draw_gate_noise(rng, batch_size: int, num_components: int, mode: str = "shared", dtype=np.float64, xp=None):
    """gamma ~ N(0, 1): (B, 1) for ``mode="shared"``, (B, N) for "independent", drawn on ``xp``
    (default: the current backend) from ``rng`` (a ``gmsop_np.random.CounterRNG`` or an int seed).

    The (B, 1) column broadcasts over the N logits in ``noisy_gate_logits``. The same seed gives
    the same numbers on NumPy and on CuPy (``gmsop_np/random.py``).
    """
    rng = as_counter_rng(rng)  # a TypeError for anything else (e.g. a numpy Generator)
    if mode not in NOISE_MODES:
        raise ValueError(f"unknown noise mode {mode!r}; choose one of {NOISE_MODES}")
    shape = (batch_size, 1 if mode == "shared" else num_components)
    return rng.standard_normal(shape, dtype, xp=xp)


def noisy_gate_logits(
    u: TensorLike, W_g: TensorLike, W_n: TensorLike | None = None, noise: TensorLike | None = None
) -> Tensor:
    """Noisy gating logits (paper Eq. 2): (B, D) -> (B, N).

    $$H = u W_g^\\top + \\gamma \\odot \\mathrm{softplus}(u W_n^\\top)$$, no bias.
    ``noise`` is gamma: None (evaluation, gamma = 0: H = u W_g^T), an array of
    shape (B, 1) (one draw per sample, shared by the N components) or (B, N).
    Built from differentiable ops (matmul, softplus, mul), so its gradient is the
    engine's; derivations/08_gating.md, eq. (1) and eq. (3) give the VJP.
    """
    u, W_g = as_tensor(u), as_tensor(W_g)
    _check_gate_shapes(u, W_g, "W_g")
    clean = basic.matmul(u, basic.transpose(W_g))  # (B, N)
    if noise is None:
        return clean
    if W_n is None:
        raise ValueError("noise was given but W_n is None; pass the noise weights W_n of shape (N, D)")
    W_n = as_tensor(W_n)
    _check_gate_shapes(u, W_n, "W_n")
    gamma = _noise_array(noise, u, W_g.shape[0])
    spread = softplus(basic.matmul(u, basic.transpose(W_n)))  # softplus(W_n u) >= 0: per-logit noise scale
    return clean + Tensor(gamma) * spread


def _check_gate_shapes(u, W, name):
    if u.ndim != 2:
        raise ValueError(
            f"gating features u must be (B, D), got shape {tuple(u.shape)}; flatten the pooled features first"
        )
    if W.ndim != 2 or W.shape[1] != u.shape[1]:
        raise ValueError(
            f"{name} must be (N, D) with D = {u.shape[1]} (the feature size of u), got shape {tuple(W.shape)}"
        )


def _noise_array(noise, u, num_components):
    """gamma as an array on u's backend and dtype, shape-checked."""
    xp = get_array_module(u)
    gamma = xp.asarray(_data(noise), dtype=u.dtype)
    batch = u.shape[0]
    if gamma.shape not in ((batch, 1), (batch, num_components)):
        raise ValueError(
            f"noise must have shape ({batch}, 1) (shared) or ({batch}, {num_components}) "
            f"(independent), got {tuple(gamma.shape)}"
        )
    return gamma


# ----- Top-K softmax (Eq. 3) ------------------------------------------------------------
class TopKSoftmax(Function):
    """Softmax over the K largest logits of each row, exactly 0 elsewhere: (B, N) -> (B, N).

    Forward:  $w_i = e^{H_i - m} / \\sum_{j \\in T} e^{H_j - m}$ for $i \\in T$ (the Top-K set), else 0.
    VJP:      $\\bar H_i = w_i (\\bar w_i - \\sum_j w_j \\bar w_j)$ -- exactly 0 for $i \\notin T$.
    See derivations/08_gating.md, eq. (5) and eq. (7).

    The Top-K set uses a *stable* argsort of -H: among equal logits the lower
    index wins (eq. (4)). With ``tie_break`` (B, N) priorities, the columns are
    first visited in the order of those priorities, so exactly equal logits are
    ranked by priority instead (unequal logits are unaffected). ``self.indices``
    (B, K) holds the selected components in rank order (largest logit first);
    dispatch uses it.
    """

    def __init__(self, k, tie_break=None):
        self.k, self.tie_break = k, tie_break

    def forward(self, logits):
        xp = get_array_module(logits)
        batch = logits.shape[0]
        rows = xp.arange(batch)[:, None]
        # eq. (4): a stable sort of -H puts larger logits first, equal ones by index ...
        if self.tie_break is None:
            order = xp.argsort(-logits, axis=1, kind="stable")
        else:  # ... or, visiting the columns in priority order first, equal ones by priority
            visit = xp.argsort(xp.asarray(self.tie_break), axis=1)
            order = visit[rows, xp.argsort(-logits[rows, visit], axis=1, kind="stable")]
        self.indices = order[:, : self.k]
        selected = logits[rows, self.indices]  # (B, K), descending
        # eq. (5): subtract the row maximum (the first selected logit) so exp cannot overflow
        e = xp.exp(selected - selected[:, :1])
        w = xp.zeros_like(logits)
        w[rows, self.indices] = e / e.sum(axis=1, keepdims=True)
        return w

    def backward(self, gw):
        # eq. (7): the softmax Jacobian restricted to T; w = 0 off T makes those entries 0.
        w = self.output(0)
        return w * (gw - basic.sum(w * gw, axis=1, keepdims=True))


def topk_softmax(logits: TensorLike, k: int, tie_break: TensorLike | None = None) -> tuple[Tensor, Tensor]:
    """Top-K softmax gating weights (paper Eq. 3).

    Parameters
    ----------
    logits : Tensor or array (B, N), finite.
    k : int with 2 <= k <= N (K = 1 makes every weight 1, so no gradient reaches the gate).
    tie_break : None (exactly equal logits: the lower index wins) or an array (B, N)
        of priorities (e.g. uniform random numbers): among exactly equal logits
        the lowest priority wins. Only the choice among *tied* logits changes.

    Returns
    -------
    (weights, indices): weights a Tensor (B, N) that is exactly zero off the Top-K;
    indices a non-differentiable integer Tensor (B, K) of the selected components,
    largest logit first (ties: lower index first).
    """
    logits = as_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, N), got shape {tuple(logits.shape)}")
    n = logits.shape[1]
    k = check_int(k, f"k (2 <= k <= N = {n}; with k = 1 the softmax is identically 1 and the gate never learns)", 2, n)
    check_float_dtype(logits, "topk_softmax: logits")
    check_finite(logits.data, "topk_softmax: logits", "a NaN often comes from an exploding learning rate")
    if tie_break is not None and tuple(tie_break.shape) != tuple(logits.shape):
        raise ValueError(f"tie_break must have the logits' shape {tuple(logits.shape)}, got {tuple(tie_break.shape)}")
    fn = TopKSoftmax(int(k), tie_break)
    weights = fn(logits)
    return weights, Tensor(fn.indices)


# ----- balance loss (Eq. 4) -------------------------------------------------------------
class BalanceLoss(Function):
    """Balance loss (paper Eq. 4): weights (B, N) -> scalar.

    Forward:  $v = \\sum_s w_s$, $\\mu = \\bar v$, $S = \\sum_i (v_i - \\mu)^2 / (N - \\mathrm{ddof})$,
              $L_B = \\alpha S / \\mu^2$.
    VJP:      $\\bar w_{s,i} = \\bar L \\, \\frac{2\\alpha}{\\mu^2}
              \\Big[\\frac{v_i - \\mu}{N - \\mathrm{ddof}} - \\frac{S}{N \\mu}\\Big]$ (same for every s).
    See derivations/09_balance_loss.md, eq. (3) (forward) and eqs. (4)-(6) (VJP).
    """

    def __init__(self, alpha, ddof):
        self.alpha, self.ddof = alpha, ddof

    def forward(self, w):
        xp = get_array_module(w)
        v = w.sum(axis=0)  # eq. (1): importance of each component
        mu = v.mean()
        var = ((v - mu) ** 2).sum() / (v.shape[0] - self.ddof)
        return xp.asarray(self.alpha * var / mu**2, dtype=w.dtype)

    def backward(self, gL):
        w = self.inputs[0]
        n = w.shape[1]
        v = basic.sum(w, axis=0)
        mu = basic.mean(v)
        dev = v - mu
        var = basic.sum(dev * dev) / (n - self.ddof)
        # eq. (4): dL/dv_i; the second term comes from mu's dependence on v
        gv = (2.0 * self.alpha / (mu * mu)) * (dev / (n - self.ddof) - var / (n * mu))
        return basic.broadcast_to(basic.reshape(gv * gL, (1, n)), w.shape)  # eq. (6): v_i = sum_s w_si


def balance_loss(weights: TensorLike, alpha: float = 100.0, ddof: int = 1) -> Tensor:
    """``alpha * (std(v) / mean(v))**2`` with ``v = weights.sum(axis=0)`` (paper Eq. 4).

    ``ddof=1`` (the official release) gives the sample standard deviation;
    NumPy's default would be 0. Since each row of Top-K weights sums to 1,
    mean(v) = B / N. The value is *not* divided by the batch size: against a
    mean cross-entropy, the faithful objective is ``CE_mean + L_B / B``
    (derivations/09_balance_loss.md, eq. (9)).
    """
    weights = as_tensor(weights)
    if weights.ndim != 2:
        raise ValueError(f"balance_loss: weights must be (B, N), got shape {tuple(weights.shape)}")
    check_float_dtype(weights, "balance_loss: weights")
    check_nonnegative(weights.data, "balance_loss: weights", "pass the gate's Top-K softmax weights")  # debug only
    n = weights.shape[1]
    ddof = check_int(ddof, "ddof", 0, 1)
    if n - ddof < 1:
        raise ValueError(f"balance loss needs N > ddof components, got N = {n} with ddof = {ddof}")
    alpha = check_number(alpha, "alpha", 0.0)
    return BalanceLoss(alpha, ddof)(weights)
