"""Gated mixtures of component models (paper §2.1, Eqs. 1-4) and their heads.

``GatedMixture`` is the general module; GM-SOP and GM-GAP are instances:

    x (B, C, h, w) --gate_features--> u (B, D) --Eq. 2--> logits H (B, N)
                   --Top-K softmax (Eq. 3)--> weights w (B, N), indices (B, K)
    y (B, R) = sum_{i in TopK} w_i * tail(M_i(x))      (Eq. 1, computed sparsely)

* Sparse: component i runs only on the samples that selected it (B*K rows in
  total instead of B*N), see ``gmsop_np.functions.dispatch`` and
  derivations/10_dispatch.md. The components must treat samples independently
  (no batch norm inside them), which holds for the paper's components.
* ``tail`` is the parameter-free end of every component (SR-SOP: covariance,
  Newton-Schulz, triu; GAP: the average), run ONCE on all B*K rows.
* Noise (Eq. 2, training only): ``noise="shared"`` draws one gamma ~ N(0, 1) per
  sample for all N logits (the official release; the paper's gamma is a scalar),
  ``"independent"`` one per (sample, component) (Shazeer et al. 2017). gamma is
  drawn on the data's backend from the module's own seeded ``CounterRNG`` (``noise_rng``,
  ``gmsop_np/random.py``): the same numbers on NumPy and CuPy, saved in checkpoints.
* Gate weights W_g, W_n (N, D): ``gate_init="constant"`` sets every entry to 1/D
  (the official release; all logits tie at first, and in training exact ties are
  broken at random, ``tie_break="random"``, so every component receives images
  from the first batch), ``"zeros"`` follows Shazeer et al. Both are documented choices.
* Balance loss (Eq. 4): each *training* forward stores the unscaled
  ``self.balance_loss`` = alpha * CV^2(importance) (a Tensor; None in evaluation).
  Training convention: ``loss = CE_mean + balance_loss / B``. The official
  release sums the cross-entropy over the batch and divides all gradients by B,
  so against a mean cross-entropy the faithful weight is 1/B; adding alpha = 100
  unscaled overwhelms the cross-entropy and collapses routing
  (derivations/09_balance_loss.md, eq. (9)).
* Usage (paper Fig. 2): the buffer ``usage_counts`` (int64, N, on the model's
  backend: no device read per step) accumulates the samples each component
  received over training forwards; ``reset_usage()`` clears it (the trainer does
  at the start of every epoch); ``usage_cv(counts)`` summarises it.

Heads registered here (their options in brackets): "gmsop" and "gmgap"
[num_components=16, k=8, alpha=100, noise, gate_init, tie_break, ...], "avesop"
and "avegap" [k=16]. SOP heads take the preset's Newton-Schulz iterations
unless ``num_iters`` is given.
"""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from .._checks import check_choice, check_int, check_number
from ..backend import default_xp, get_array_module
from ..core import Tensor
from ..functions.dispatch import routed_mixture, sparse_mixture
from ..functions.gating import NOISE_MODES, balance_loss, draw_gate_noise, noisy_gate_logits, topk_softmax
from ..presets import get_preset
from ..random import CounterRNG
from . import sop as _sop  # SR-SOP (looked up at construction time)
from .heads import GAP_RECIPE, ClassifierHead, Recipe, register_head
from .layers import BatchNorm2d, Conv2d, GlobalAvgPool, ReLU, _parameter, as_rng
from .module import Module, ModuleList, Sequential

__all__ = [
    "ComponentBank",
    "GatedMixture",
    "AverageMixture",
    "GMSOP",
    "GMGAP",
    "AveSOP",
    "AveGAP",
    "MixtureHead",
    "GATE_INITS",
    "gmsop",
    "gmgap",
    "avesop",
    "avegap",
    "usage_cv",
]

GATE_INITS = ("constant", "zeros")
TIE_BREAKS = ("random", "lowest")


def usage_cv(counts) -> float:
    """Coefficient of variation std/mean (population std) of per-component sample counts.

    0 for perfectly even usage; ``sqrt(N/K - 1)`` when every sample picks the same K of N
    components (the paper's Fig. 2 without the balance loss). NaN for fewer than two
    components or no samples.

    >>> usage_cv([10, 10, 10, 10])
    0.0
    >>> usage_cv([20, 20, 0, 0])  # K = 2 of N = 4 take everything: sqrt(4/2 - 1)
    1.0
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size < 2 or counts.sum() == 0:
        return float("nan")
    return float(counts.std() / counts.mean())


class _UsageMixin:
    """``usage_counts``: samples received per component, accumulated in training forwards."""

    def _init_usage(self) -> None:
        self.register_buffer("usage_counts", default_xp().zeros(self.num_components, dtype=np.int64))

    def reset_usage(self) -> None:
        """Start counting again (e.g. at the beginning of an epoch)."""
        self.usage_counts[...] = 0


class ComponentBank(Module):
    """N components of one architecture -- 1x1 convolutions (no bias), each followed by ReLU -- with
    their weights stacked, run on routed rows as one batched product per layer.

    ``ComponentBank(N, (C_0, C_1, ..., C_J))``: component i maps (C_0, h, w) -> (C_J, h, w) by
    $h_j = \\mathrm{relu}(W_j^{(i)} h_{j-1})$ at every pixel; ``W_j`` is a Parameter (N, C_j, C_{j-1}).
    ``bank(rows, route)``: rows (R, C_0, h, w), route (R, N) one-hot (``F.route_matrix``) ->
    (R, C_J, h, w), row p through the component its route selects. The weights of every row are
    gathered by a matrix product with the one-hot route, $W_{rows} = E W$, whose VJP
    $\\bar W = E^\\top \\bar W_{rows}$ sums each component's rows in one deterministic GEMM (no
    scatter-add); then each layer is one batched matmul (derivations/10_dispatch.md, eqs. (10)-(12)).
    Compared with running N modules on sorted slices, nothing is read back from the device and
    a layer is a few array operations whatever N is. ``bank[i]`` is component i alone (a callable on
    (R, C_0, h, w), for references and plots). Initialisation: He fan-out per component, drawn in the
    order N separate ``Conv2d`` layers would draw it.
    """

    def __init__(self, num_components, channels, rng=None):
        super().__init__()
        check_int(num_components, "num_components", 1)
        channels = [check_int(c, "channels", 1) for c in channels]
        if len(channels) < 2:
            raise ValueError(f"a component needs at least one layer: channels (C_0, C_1, ...), got {channels}")
        rng = as_rng(rng)
        self.num_components, self.channels = int(num_components), tuple(channels)
        shapes = list(zip(channels[1:], channels[:-1]))  # (C_j, C_{j-1}) per layer
        draws = [
            [rng.standard_normal(shape) * math.sqrt(2.0 / shape[0]) for shape in shapes]  # fan-out He init
            for _ in range(num_components)
        ]
        for j in range(len(shapes)):
            setattr(self, f"W{j + 1}", _parameter(np.stack([per_component[j] for per_component in draws])))

    @property
    def weights(self):
        return [getattr(self, f"W{j + 1}") for j in range(len(self.channels) - 1)]

    def forward(self, rows, route):
        r, c, h, w = rows.shape
        if c != self.channels[0] or tuple(route.shape) != (r, self.num_components):
            raise ValueError(
                f"ComponentBank expects rows (R, {self.channels[0]}, h, w) and a route (R, {self.num_components}); "
                f"got {tuple(rows.shape)} and {tuple(route.shape)}"
            )
        route = Tensor(route.data if isinstance(route, Tensor) else route)
        x = F.reshape(rows, (r, c, h * w))
        for W in self.weights:
            n, c_out, c_in = W.shape
            per_row = F.reshape(F.matmul(route, F.reshape(W, (n, c_out * c_in))), (r, c_out, c_in))  # eq. (10)
            x = F.relu(F.matmul(per_row, x))  # eq. (11)
        return F.reshape(x, (r, self.channels[-1], h, w))

    def __len__(self):
        return self.num_components

    def __getitem__(self, i):
        i = check_int(i, "component index", 0, self.num_components - 1)

        def component(rows):
            x = F.reshape(rows, (rows.shape[0], rows.shape[1], -1))
            for W in self.weights:
                x = F.relu(F.matmul(W[i], x))
            return F.reshape(x, (rows.shape[0], self.channels[-1]) + tuple(rows.shape[2:]))

        return component

    def __iter__(self):
        return (self[i] for i in range(self.num_components))

    def extra_repr(self):
        return f"N={self.num_components}, channels={self.channels}"


class GatedMixture(_UsageMixin, Module):
    """Sparsely gated mixture (paper Eqs. 1-3) of N components: (B, ...) -> (B, R).

    Parameters
    ----------
    gate_features : Module, (B, ...) -> (B, D): the gating "prediction layers" f(theta_g; X).
    components : a ``ComponentBank`` (every (sample, slot) row through its component in one batched
        call, ``F.routed_mixture``: nothing read from the device), or a list of N Modules,
        (rows, ...) -> (rows, ...), samples treated independently (sorted and sliced per component,
        ``F.sparse_mixture``: one device read per step for the slice bounds).
    k : number of components per sample, 2 <= k <= N.
    gate_dim : D, the size of the gating features.
    tail : optional parameter-free Module run once on all B*K component outputs.
    noise : "shared" (default, official release) or "independent" (see module docstring).
    gate_init : "constant" (1/D, official release) or "zeros".
    tie_break : how Top-K chooses among exactly equal logits in training: "random"
        (default; with the constant init every logit ties at first, and the official
        release's first batches pick a random Top-K, so every component gets a
        gradient) or "lowest" (lower index wins). Evaluation always uses "lowest".
    alpha, ddof : balance-loss weight and the std's ddof (100 and 1 as in the official release).
    rng : Generator / seed for the initial weights; the noise generator is derived from it.

    Math: derivations/08_gating.md, eq. (1) (logits) and eq. (5) (Top-K softmax);
    derivations/09_balance_loss.md, eq. (3); derivations/10_dispatch.md, eq. (6).
    """

    def __init__(
        self,
        gate_features,
        components,
        k,
        gate_dim,
        *,
        tail=None,
        noise="shared",
        gate_init="constant",
        tie_break="random",
        alpha=100.0,
        ddof=1,
        rng=None,
    ):
        super().__init__()
        n = len(components)
        check_int(n, "the number of components N", 2)
        check_int(k, f"k (components per sample; 2 <= k <= N = {n})", 2, n)
        check_int(gate_dim, "gate_dim", 1)
        check_choice(noise, "noise mode", NOISE_MODES)
        check_choice(gate_init, "gate_init", GATE_INITS)
        check_choice(tie_break, "tie_break", TIE_BREAKS)
        check_number(alpha, "alpha (balance-loss weight)", 0.0)
        rng = as_rng(rng)
        self.num_components, self.k, self.gate_dim = n, int(k), int(gate_dim)
        self.noise, self.gate_init, self.alpha, self.ddof = noise, gate_init, float(alpha), int(ddof)
        self.tie_break = tie_break
        self.gate_features = gate_features
        self.components = components if isinstance(components, ComponentBank) else ModuleList(components)
        self.tail = tail
        value = 1.0 / gate_dim if gate_init == "constant" else 0.0
        self.W_g = _parameter(np.full((n, gate_dim), value))  # clean logits  (Eq. 2)
        self.W_n = _parameter(np.full((n, gate_dim), value))  # noise scale   (Eq. 2)
        # its own stream: gating noise does not disturb the initialisation stream
        self.noise_rng = CounterRNG(int(rng.integers(2**63)))
        self.balance_loss = None
        self.last_indices = None  # (B, K) selected components of the last forward (array)
        self.last_weights = None  # (B, N) gating weights of the last forward (array)
        self._init_usage()

    def gate(self, x, noise=None):
        """The gating weights: ``(weights (B, N) Tensor, indices (B, K) Tensor, logits (B, N) Tensor)``.

        ``noise``: gamma for this call ((B, 1) or (B, N)); by default drawn from
        ``noise_rng`` in training and 0 in evaluation. When the module draws its
        own noise it also draws the random tie-break priorities (``tie_break``);
        with an explicit ``noise`` the call is fully deterministic (ties: lower index).
        """
        u = self.gate_features(x)
        if u.ndim != 2 or u.shape[1] != self.gate_dim:
            raise ValueError(f"gate_features must return (B, {self.gate_dim}) gating features, got {tuple(u.shape)}")
        if u.shape[0] != x.shape[0]:
            raise ValueError(
                f"gate_features returned {u.shape[0]} rows for a batch of {x.shape[0]}: the gate "
                "and the components must see the same batch"
            )
        priorities = None
        if noise is None and self.training:  # drawn where u lives (no host -> device copy)
            xp = get_array_module(u)
            noise = draw_gate_noise(self.noise_rng, x.shape[0], self.num_components, self.noise, u.dtype, xp)
            if self.tie_break == "random":
                priorities = self.noise_rng.words((x.shape[0], self.num_components), xp)
        logits = noisy_gate_logits(u, self.W_g, self.W_n, noise if self.training else None)
        weights, indices = topk_softmax(logits, self.k, tie_break=priorities)
        return weights, indices, logits

    def forward(self, x, noise=None):
        weights, indices, _ = self.gate(x, noise)
        if isinstance(self.components, ComponentBank):
            y, counts = routed_mixture(x, weights, indices, self.components, tail=self.tail)
        else:
            y, plan = sparse_mixture(x, weights, indices, list(self.components), tail=self.tail)
            counts = plan.device_counts
        self.last_indices, self.last_weights = indices.data, weights.data
        if self.training:
            self.balance_loss = balance_loss(weights, self.alpha, self.ddof)
            self.usage_counts += counts
        else:
            self.balance_loss = None
        return y

    def extra_repr(self):
        return (
            f"N={self.num_components}, K={self.k}, gate_dim={self.gate_dim}, noise={self.noise!r}, "
            f"gate_init={self.gate_init!r}, alpha={self.alpha}, ddof={self.ddof}"
        )


class AverageMixture(_UsageMixin, Module):
    """Plain average of K components, no gate (Ave-GAP-K / Ave-SOP-K): (B, ...) -> (B, R).

    $y = \\frac1K \\sum_{i=1}^K \\mathrm{tail}(M_i(x))$. Every component sees every sample,
    so ``usage_counts`` grows by B per component. ``balance_loss`` is always None.
    """

    def __init__(self, components, *, tail=None):
        super().__init__()
        check_int(len(components), "the number of components K", 1)
        self.num_components = self.k = len(components)
        self.components = ModuleList(components)
        self.tail = tail
        self.balance_loss = None
        self._init_usage()

    def forward(self, x):
        b = x.shape[0]
        outs = F.concatenate([m(x) for m in self.components], axis=0)  # (K*B, ...)
        if self.tail is not None:
            outs = self.tail(outs)  # one batched call
        outs = F.reshape(outs, (self.k, b) + tuple(outs.shape[1:]))
        if self.training:
            self.usage_counts += b
        return F.mean(outs, axis=0)


# ----- the paper's mixtures ------------------------------------------------------------------
def _sop_component(in_channels, hidden, out, rng):
    """The convolutional part of a parametric SR-SOP (Eq. 6, J = 2; official release: ReLU, no bias, no BN)."""
    return Sequential(Conv2d(in_channels, hidden, 1, rng=rng), ReLU(), Conv2d(hidden, out, 1, rng=rng), ReLU())


def _sop_gate(in_channels, hidden, out, num_iters, rng):
    """Gating prediction layers of GM-SOP (official release): conv+BN+ReLU twice, then SR-SOP -> (B, out(out+1)/2)."""
    return Sequential(
        Conv2d(in_channels, hidden, 1, rng=rng),
        BatchNorm2d(hidden),
        ReLU(),
        Conv2d(hidden, out, 1, rng=rng),
        BatchNorm2d(out),
        ReLU(),
        _sop.SRSOP(num_iters=num_iters),
    )


def _gap_component(in_channels, width, rng):
    """A parametric GAP component without its pooling: 1x1 conv -> width, ReLU (no bias)."""
    return Sequential(Conv2d(in_channels, width, 1, rng=rng), ReLU())


def _check_channels(module, x):
    if x.ndim != 4 or x.shape[1] != module.in_channels:
        raise ValueError(
            f"{type(module).__name__} expects feature maps (B, {module.in_channels}, h, w), got "
            f"{tuple(x.shape)}; build it with in_channels = the backbone's output channels"
        )


class GMSOP(GatedMixture):
    """GM-SOP-N-K (paper §2.3): gated mixture of N parametric SR-SOPs, (B, C, h, w) -> (B, out(out+1)/2).

    Each component: 1x1 conv C -> hidden + ReLU, 1x1 conv hidden -> out + ReLU; the
    SR-SOP after them (covariance -> Newton-Schulz (num_iters) -> triu) is shared and
    run once on all B*K gathered rows. Gate: the same convs with BN, then SR-SOP, so
    u has out(out+1)/2 = 8256 entries for out = 128 (official release).
    ``hidden`` / ``out`` are configurable so tests can build tiny heads.
    """

    def __init__(
        self,
        in_channels=128,
        num_components=16,
        k=8,
        *,
        hidden=256,
        out=128,
        num_iters=5,
        noise="shared",
        gate_init="constant",
        tie_break="random",
        alpha=100.0,
        ddof=1,
        rng=None,
    ):
        check_int(in_channels, "in_channels", 1)
        check_int(num_components, "num_components", 2)
        rng = as_rng(rng)
        dim = out * (out + 1) // 2
        gate = _sop_gate(in_channels, hidden, out, num_iters, rng)
        components = ComponentBank(num_components, (in_channels, hidden, out), rng=rng)  # _sop_component each
        super().__init__(
            gate,
            components,
            k,
            dim,
            tail=_sop.SRSOP(num_iters=num_iters),
            noise=noise,
            gate_init=gate_init,
            tie_break=tie_break,
            alpha=alpha,
            ddof=ddof,
            rng=rng,
        )
        self.in_channels, self.representation_dim = int(in_channels), dim

    def forward(self, x, noise=None):
        _check_channels(self, x)
        return super().forward(x, noise)


class GMGAP(GatedMixture):
    """GM-GAP-N-K: gated mixture of N parametric GAPs, (B, C, h, w) -> (B, width).

    Each component: 1x1 conv C -> width (512) + ReLU, then GAP (the shared tail).
    Gate (documented choice, mirroring GM-SOP's gate): 1x1 conv C -> width + BN + ReLU, GAP.
    """

    def __init__(
        self,
        in_channels=128,
        num_components=16,
        k=8,
        *,
        width=512,
        noise="shared",
        gate_init="constant",
        tie_break="random",
        alpha=100.0,
        ddof=1,
        rng=None,
    ):
        check_int(in_channels, "in_channels", 1)
        check_int(num_components, "num_components", 2)
        rng = as_rng(rng)
        gate = Sequential(Conv2d(in_channels, width, 1, rng=rng), BatchNorm2d(width), ReLU(), GlobalAvgPool())
        components = ComponentBank(num_components, (in_channels, width), rng=rng)  # _gap_component each
        super().__init__(
            gate,
            components,
            k,
            width,
            tail=GlobalAvgPool(),
            noise=noise,
            gate_init=gate_init,
            tie_break=tie_break,
            alpha=alpha,
            ddof=ddof,
            rng=rng,
        )
        self.in_channels, self.representation_dim = int(in_channels), int(width)

    def forward(self, x, noise=None):
        _check_channels(self, x)
        return super().forward(x, noise)


class AveSOP(AverageMixture):
    """Ave-SOP-K: the plain average of K parametric SR-SOPs (no gate), (B, C, h, w) -> (B, out(out+1)/2)."""

    def __init__(self, in_channels=128, k=16, *, hidden=256, out=128, num_iters=5, rng=None):
        check_int(in_channels, "in_channels", 1)
        rng = as_rng(rng)
        super().__init__(
            [_sop_component(in_channels, hidden, out, rng) for _ in range(k)], tail=_sop.SRSOP(num_iters=num_iters)
        )
        self.in_channels, self.representation_dim = int(in_channels), out * (out + 1) // 2

    def forward(self, x):
        _check_channels(self, x)
        return super().forward(x)


class AveGAP(AverageMixture):
    """Ave-GAP-K: the plain average of K parametric GAPs (1x1 conv -> width + ReLU, GAP), no gate."""

    def __init__(self, in_channels=128, k=16, *, width=512, rng=None):
        check_int(in_channels, "in_channels", 1)
        rng = as_rng(rng)
        super().__init__([_gap_component(in_channels, width, rng) for _ in range(k)], tail=GlobalAvgPool())
        self.in_channels, self.representation_dim = int(in_channels), int(width)

    def forward(self, x):
        _check_channels(self, x)
        return super().forward(x)


class MixtureHead(Module):
    """A mixture representation followed by ``ClassifierHead`` (BN1d -> Dropout(0.2) -> FC).

    (B, C, h, w) -> (B, num_classes). Exposes the mixture's ``balance_loss`` (unscaled
    L_B of the last training forward, or None; add ``balance_loss / B`` to a mean
    cross-entropy), ``usage_counts`` and ``reset_usage()``.
    """

    def __init__(self, mixture, num_classes, rng=None):
        super().__init__()
        self.mixture = mixture
        self.classifier = ClassifierHead(mixture.representation_dim, num_classes, rng=rng)
        self.representation_dim = mixture.representation_dim

    @property
    def balance_loss(self):
        return self.mixture.balance_loss

    @property
    def usage_counts(self):
        return self.mixture.usage_counts

    def reset_usage(self):
        self.mixture.reset_usage()

    def forward(self, x):
        return self.classifier(self.mixture(x))


# ----- registry ------------------------------------------------------------------------------
#: GM-SOP and Ave-SOP: lr 0.1 for {40, 10, 5, 5} epochs (the paper's Sec. 3.2).
SOP_MIXTURE_RECIPE = Recipe(0.1, (40, 10, 5, 5))

_TINY_SOP = dict(hidden=32, out=16)  # narrow components for the ``tiny`` CPU backbone
_TINY_GAP = dict(width=64)


@register_head(
    "gmsop",
    label="GM-SOP-{num_components}-{k}",
    second_order=True,
    recipe=SOP_MIXTURE_RECIPE,
    tiny=_TINY_SOP,
    description="GM-SOP-N-K: gated mixture of N parametric SR-SOPs, K per image (default 16, 8)",
)
def gmsop(
    in_channels,
    num_classes,
    *,
    preset,
    rng,
    num_components=16,
    k=8,
    alpha=100.0,
    noise="shared",
    gate_init="constant",
    tie_break="random",
    num_iters=None,
    hidden=256,
    out=128,
):
    rng = as_rng(rng)
    num_iters = get_preset(preset).num_iters if num_iters is None else num_iters
    mixture = GMSOP(
        in_channels,
        num_components,
        k,
        hidden=hidden,
        out=out,
        num_iters=num_iters,
        noise=noise,
        gate_init=gate_init,
        tie_break=tie_break,
        alpha=alpha,
        rng=rng,
    )
    return MixtureHead(mixture, num_classes, rng=rng)


@register_head(
    "gmgap",
    label="GM-GAP-{num_components}-{k}",
    second_order=False,
    recipe=GAP_RECIPE,
    tiny=_TINY_GAP,
    description="GM-GAP-N-K: gated mixture of N parametric GAPs, K per image (default 16, 8)",
)
def gmgap(
    in_channels,
    num_classes,
    *,
    preset,
    rng,
    num_components=16,
    k=8,
    alpha=100.0,
    noise="shared",
    gate_init="constant",
    tie_break="random",
    width=512,
):
    rng = as_rng(rng)
    mixture = GMGAP(
        in_channels,
        num_components,
        k,
        width=width,
        noise=noise,
        gate_init=gate_init,
        tie_break=tie_break,
        alpha=alpha,
        rng=rng,
    )
    return MixtureHead(mixture, num_classes, rng=rng)


@register_head(
    "avesop",
    label="Ave-SOP-{k}",
    second_order=True,
    recipe=SOP_MIXTURE_RECIPE,
    tiny=_TINY_SOP,
    description="Ave-SOP-K: plain average of K parametric SR-SOPs, no gate (default 16)",
)
def avesop(in_channels, num_classes, *, preset, rng, k=16, num_iters=None, hidden=256, out=128):
    rng = as_rng(rng)
    num_iters = get_preset(preset).num_iters if num_iters is None else num_iters
    mixture = AveSOP(in_channels, k, hidden=hidden, out=out, num_iters=num_iters, rng=rng)
    return MixtureHead(mixture, num_classes, rng=rng)


@register_head(
    "avegap",
    label="Ave-GAP-{k}",
    second_order=False,
    recipe=GAP_RECIPE,
    tiny=_TINY_GAP,
    description="Ave-GAP-K: plain average of K parametric GAPs, no gate (default 16)",
)
def avegap(in_channels, num_classes, *, preset, rng, k=16, width=512):
    rng = as_rng(rng)
    return MixtureHead(AveGAP(in_channels, k, width=width, rng=rng), num_classes, rng=rng)
