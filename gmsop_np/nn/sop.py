"""Second-order pooling modules and heads: SR-SOP and parametric SR-SOP.

* ``SRSOP`` (paper Eq. 5 + Eq. 9): covariance pooling -> matrix square root
  (Newton–Schulz, or exact via eigh) -> upper-triangular vector.
  (B, C, h, w) -> (B, C(C+1)/2): 8256 values for C = 128.
* ``ParametricSRSOP`` (paper Eq. 6 with J = 2): two 1×1 convolutions
  C -> 256 -> 128, each followed by ReLU, no bias, no BN (as in the official
  release), then SR-SOP.

Registered heads (``gmsop_np.nn.heads``): "srsop" and "psrsop" = the module
above followed by ``ClassifierHead`` (BN1d -> Dropout(0.2) -> FC), as in the
paper. The number of Newton–Schulz iterations defaults to ``preset.ns_iters``
(``preset.num_iters``: 5 for "paper", 3 for "official").

Derivations: derivations/05_covariance_pooling.md, 06_newton_schulz.md, 07_eig_sqrt.md.
"""

from __future__ import annotations

from .. import functional as F
from .._checks import check_choice, check_int
from ..functions.matrix_sqrt import DEFAULT_TRACE_EPS
from .heads import ClassifierHead, Recipe, register_head
from .layers import Conv2d
from .module import Module

__all__ = ["SRSOP", "ParametricSRSOP", "SOPHead", "srsop", "psrsop", "triu_dim"]

SQRT_METHODS = ("ns", "eig")


def triu_dim(channels: int) -> int:
    """Length of the SR-SOP representation: C(C+1)/2 (8256 for C = 128)."""
    return channels * (channels + 1) // 2


class SRSOP(Module):
    """Square-root second-order pooling: (B, C, h, w) -> (B, C(C+1)/2).

    z = triu_vec(sqrtm(cov_pool(x))): covariance (derivations/05_covariance_pooling.md,
    eq. (2)), Newton–Schulz square root (derivations/06_newton_schulz.md, eqs. (1)-(6))
    or exact eig square root (derivations/07_eig_sqrt.md, eq. (3)), triangular vector
    (derivations/05_covariance_pooling.md, eq. (5)).

    Parameters
    ----------
    method : "ns" (Newton–Schulz, what the paper trains with) or "eig" (exact, reference)
    num_iters : Newton–Schulz iterations (ignored for "eig"); the paper uses 5
    eps : trace regulariser of Newton–Schulz (t = tr Σ + eps), see ``DEFAULT_TRACE_EPS``
    """

    def __init__(self, method="ns", num_iters=5, eps=DEFAULT_TRACE_EPS):
        super().__init__()
        check_choice(method, "square-root method", SQRT_METHODS)
        check_int(num_iters, "num_iters", 1)
        self.method, self.num_iters, self.eps = method, num_iters, eps

    def output_dim(self, channels: int) -> int:
        return triu_dim(channels)

    def forward(self, x):
        sigma = F.cov_pool(x)  # (B, C, C)
        if self.method == "ns":
            root = F.sqrtm_newton_schulz(sigma, self.num_iters, eps=self.eps)
        else:
            root = F.sqrtm_eig(sigma)
        return F.triu_vec(root)  # (B, C(C+1)/2)

    def extra_repr(self):
        return f"method={self.method!r}" + (f", num_iters={self.num_iters}" if self.method == "ns" else "")


class ParametricSRSOP(Module):
    """Parametric SR-SOP (Eq. 6, J = 2): (B, C_in, h, w) -> (B, out(out+1)/2).

    x -> relu(conv1x1(C_in -> hidden)) -> relu(conv1x1(hidden -> out)) -> SR-SOP.
    The convolutions have no bias and no batch norm (official release). With the
    paper's sizes (128 -> 256 -> 128) they add 2 · 128 · 256 = 65,536 parameters.
    """

    def __init__(self, in_channels=128, hidden=256, out=128, num_iters=5, rng=None, method="ns", eps=DEFAULT_TRACE_EPS):
        super().__init__()
        self.conv1 = Conv2d(in_channels, hidden, 1, bias=False, rng=rng)
        self.conv2 = Conv2d(hidden, out, 1, bias=False, rng=rng)
        self.sop = SRSOP(method=method, num_iters=num_iters, eps=eps)
        self.out_channels = out

    def output_dim(self, channels: int | None = None) -> int:
        return triu_dim(self.out_channels)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.sop(x)


class SOPHead(Module):
    """A second-order representation followed by the paper's classifier.

    (B, C, h, w) -> pooling (B, representation_dim) -> BN1d -> Dropout(0.2) -> FC -> (B, num_classes).
    """

    def __init__(self, pooling, representation_dim, num_classes, rng=None):
        super().__init__()
        self.pooling = pooling
        self.representation_dim = int(representation_dim)
        self.balance_loss = None
        self.classifier = ClassifierHead(self.representation_dim, num_classes, rng=rng)

    def forward(self, x):
        return self.classifier(self.pooling(x))


#: SR-SOP and parametric SR-SOP: lr 0.15 for {20, 5, 5, 5} epochs (the paper's Sec. 3.2).
SR_SOP_RECIPE = Recipe(0.15, (20, 5, 5, 5))


@register_head(
    "srsop",
    label="SR-SOP",
    second_order=True,
    recipe=SR_SOP_RECIPE,
    description="SR-SOP: covariance -> Newton-Schulz sqrt -> triu (8256-d for 128 ch), BN, FC",
)
def srsop(in_channels, num_classes, *, preset, rng, num_iters=None, method="ns"):
    num_iters = preset.num_iters if num_iters is None else num_iters
    pooling = SRSOP(method=method, num_iters=num_iters)
    return SOPHead(pooling, triu_dim(in_channels), num_classes, rng=rng)


@register_head(
    "psrsop",
    label="parametric SR-SOP",
    second_order=True,
    recipe=SR_SOP_RECIPE,
    tiny=dict(hidden=32, out=16),
    description="parametric SR-SOP: 1x1 conv ->256 +ReLU, 1x1 conv ->128 +ReLU, then SR-SOP, BN, FC",
)
def psrsop(in_channels, num_classes, *, preset, rng, num_iters=None, method="ns", hidden=256, out=128):
    num_iters = preset.num_iters if num_iters is None else num_iters
    pooling = ParametricSRSOP(in_channels, hidden, out, num_iters=num_iters, rng=rng, method=method)
    return SOPHead(pooling, triu_dim(out), num_classes, rng=rng)
