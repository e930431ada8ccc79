"""Classification heads and the head registry: everything the application knows about a head.

A *head* maps the backbone's last feature map ``(B, C, h, w)`` to logits
``(B, num_classes)``. The networks of the paper differ only in their head
(Table 2/3): GAP, ResNet-18-Xd, SR-SOP, Ave-/GM-GAP, Ave-/GM-SOP, ...
Each file that defines heads registers them with ``@register_head``, and
everything else (``gmsop_np.models``, the training application, the command
line, the experiments) asks the registry instead of keeping tables of its own::

    @register_head("gap", label="GAP", second_order=False, recipe=GAP_RECIPE,
                   description="GAP -> FC (plain ResNet, Table 3)")
    def gap(in_channels, num_classes, *, preset, rng) -> Module: ...

The factory receives the backbone's channel count, the number of classes, the
``Preset`` (paper / official) and the model's seeded generator; its other
keyword-only arguments (with defaults) are the head's *options*
(``HeadSpec.options``), e.g. ``num_components``, ``k``, ``alpha``, ``num_iters``.
The Module it returns has

* ``representation_dim`` (int): length of the image representation fed to
  the classifier (128 for GAP on ResNet-18, 8256 for SR-SOP, ...);
* ``balance_loss``: the Eq. (4) balance loss of the last training forward
  (a Tensor) for gated heads, ``None`` for the others.

``second_order=True`` tells the model builder that the head pools second-order
statistics, which selects the last-stage stride of the preset (the official
release keeps a 16×16 map for those heads).

This file defines the first-order baselines: "gap" (ResNet-18/50 as in
Table 3, 128-d) and "gap512" / "gapxd" (ResNet-18-Xd: 1×1 conv to X channels
+ BN + ReLU, then GAP).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from .layers import BatchNorm1d, BatchNorm2d, Conv2d, Dropout, GlobalAvgPool, Linear, ReLU
from .module import Module

__all__ = [
    "Recipe",
    "HeadSpec",
    "HEADS",
    "register_head",
    "get_head",
    "GAP_RECIPE",
    "ClassifierHead",
    "GAPHead",
    "GAPXdHead",
    "gap",
    "gap512",
    "gapxd",
]


@dataclass(frozen=True)
class Recipe:
    """The paper's training recipe for a head (its Sec. 3.2): SGD with momentum 0.9 and batch 256,
    initial learning rate ``lr``, divided by 10 after each stage of ``stages`` epochs."""

    lr: float
    stages: tuple[int, ...]


#: GAP, ResNet-18-512d, Ave-GAP, GM-GAP: lr 0.075 for {50, 15, 10} epochs.
GAP_RECIPE = Recipe(0.075, (50, 15, 10))


@dataclass(frozen=True)
class HeadSpec:
    """A registered head and everything the application needs to know about it.

    name : registry key ("gmsop")
    factory : ``factory(in_channels, num_classes, *, preset, rng, **options) -> Module``
    label : the paper's name, a template over the options ("GM-SOP-{num_components}-{k}")
    second_order : pools second-order statistics (selects the preset's last-stage stride)
    recipe : the paper's learning rate and stage lengths for this head
    tiny : option values for the small CPU backbone ``tiny`` (narrower components)
    description : one line for ``--help``
    """

    name: str
    factory: Callable
    label: str
    second_order: bool
    recipe: Recipe
    tiny: dict = field(default_factory=dict)
    description: str = ""

    @property
    def options(self) -> dict:
        """The head's options and their defaults (the factory's keyword-only arguments)."""
        return {
            name: p.default
            for name, p in inspect.signature(self.factory).parameters.items()
            if p.kind is p.KEYWORD_ONLY and name not in ("preset", "rng")
        }

    def check_options(self, options: dict) -> None:
        """A TypeError naming the options this head does not take, and the ones it does."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(sorted(self.options)) or "no options"
            raise TypeError(
                f"head {self.name!r} does not take the option(s) {', '.join(unknown)}; it takes: {accepted}"
            )

    def display_name(self, options: dict | None = None) -> str:
        """The label with the options filled in.

        >>> get_head("gmsop").display_name({"k": 4})
        'GM-SOP-16-4'
        """
        return self.label.format(**{**self.options, **(options or {})})


#: name -> HeadSpec for every registered head (filled by @register_head at import time).
HEADS: dict[str, HeadSpec] = {}


def register_head(
    name: str,
    *,
    label: str,
    second_order: bool,
    recipe: Recipe,
    tiny: dict | None = None,
    description: str = "",
):
    """Decorator: register ``factory(in_channels, num_classes, *, preset, rng, **options)`` under ``name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"head name must be a non-empty string, got {name!r}")

    def decorator(factory):
        old = HEADS.get(name)
        same = old is not None and (old.factory.__module__, old.factory.__qualname__) == (
            factory.__module__,
            factory.__qualname__,
        )
        if old is not None and not same:  # re-registering the same function (module reload) is fine
            raise ValueError(f"a head named {name!r} is already registered by {old.factory.__module__}")
        description_line = description or (factory.__doc__ or "").strip()
        spec = HeadSpec(name, factory, label, bool(second_order), recipe, dict(tiny or {}), description_line)
        spec.check_options(spec.tiny)
        HEADS[name] = spec
        return factory

    return decorator


def get_head(name: str) -> HeadSpec:
    """The HeadSpec registered under ``name`` (a ValueError listing the known names otherwise)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; registered heads: {', '.join(sorted(HEADS))}")
    return HEADS[name]


class ClassifierHead(Module):
    """What the paper puts after a representation: BatchNorm1d(dim) -> Dropout(0.2) -> Linear.

    (B, dim) -> (B, num_classes). Used by the SOP and mixture heads (the paper's Sec. 2.2).
    """

    def __init__(self, dim, num_classes, dropout=0.2, rng=None):
        super().__init__()
        self.bn = BatchNorm1d(dim)
        self.dropout = Dropout(dropout, rng=rng)
        self.fc = Linear(dim, num_classes, rng=rng)

    def forward(self, z):
        return self.fc(self.dropout(self.bn(z)))


class GAPHead(Module):
    """GAP baseline: (B, C, h, w) -> global average pool (B, C) -> Linear -> (B, num_classes).

    The plain ResNet of Table 3 (representation 128-d for ResNet-18/50).
    """

    def __init__(self, in_channels, num_classes, rng=None):
        super().__init__()
        self.representation_dim = int(in_channels)
        self.balance_loss = None
        self.pool = GlobalAvgPool()
        self.fc = Linear(in_channels, num_classes, rng=rng)

    def forward(self, x):
        return self.fc(self.pool(x))


class GAPXdHead(Module):
    """ResNet-18-Xd: 1×1 conv C -> dim + BN + ReLU, then GAP, then Linear.

    (B, C, h, w) -> (B, dim, h, w) -> (B, dim) -> (B, num_classes). The paper's
    baseline with the same representation size as the mixture models (512).
    """

    def __init__(self, in_channels, num_classes, dim=512, rng=None):
        super().__init__()
        self.representation_dim = int(dim)
        self.balance_loss = None
        self.proj = Conv2d(in_channels, dim, 1, rng=rng)
        self.bn = BatchNorm2d(dim)
        self.relu = ReLU()
        self.pool = GlobalAvgPool()
        self.fc = Linear(dim, num_classes, rng=rng)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.bn(self.proj(x)))))


@register_head(
    "gap", label="GAP", second_order=False, recipe=GAP_RECIPE, description="GAP -> FC (plain ResNet, Table 3)"
)
def gap(in_channels, num_classes, *, preset, rng):
    return GAPHead(in_channels, num_classes, rng=rng)


@register_head(
    "gapxd",
    label="GAP-{dim}d",
    second_order=False,
    recipe=GAP_RECIPE,
    tiny=dict(dim=64),
    description="ResNet-18-Xd: 1x1 conv -> dim (+BN+ReLU), GAP, FC (dim default 512)",
)
def gapxd(in_channels, num_classes, *, preset, rng, dim=512):
    return GAPXdHead(in_channels, num_classes, dim=dim, rng=rng)


@register_head(
    "gap512",
    label="GAP-512d",
    second_order=False,
    recipe=GAP_RECIPE,
    description="ResNet-18-512d: 1x1 conv -> 512 (+BN+ReLU), GAP, FC",
)
def gap512(in_channels, num_classes, *, preset, rng):
    return GAPXdHead(in_channels, num_classes, dim=512, rng=rng)
