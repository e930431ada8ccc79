"""Classification heads and the head registry.

A *head* maps the backbone's last feature map ``(B, C, h, w)`` to logits
``(B, num_classes)``. The networks of the paper differ only in their head
(Table 2/3): GAP, ResNet-18-Xd, SR-SOP, Ave-/GM-GAP, Ave-/GM-SOP, ...
``gmsop_np.models`` looks heads up by name in ``HEADS``; each file that
defines heads registers them with ``@register_head``:

    @register_head("gap", second_order=False, description="GAP -> FC")
    def gap(in_channels, num_classes, *, preset, rng, **kwargs) -> Module: ...

The factory receives the backbone's channel count, the number of classes, the
``Preset`` (paper / official) and the model's seeded generator. The Module it
returns has

* ``representation_dim`` (int): length of the image representation fed to
  the classifier (128 for GAP on ResNet-18, 8256 for SR-SOP, ...);
* ``balance_loss``: the Eq. (4) balance loss of the last forward pass
  (a Tensor) for gated heads, ``None`` for the others.

``second_order=True`` tells the model builder that the head pools second-order
statistics, which selects the last-stage stride of the preset (the official
release keeps a 16×16 map for those heads).

This file defines the first-order baselines: "gap" (ResNet-18/50 as in
Table 3, 128-d) and "gap512" / "gapxd" (ResNet-18-Xd: 1×1 conv to X channels
+ BN + ReLU, then GAP).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .layers import BatchNorm1d, BatchNorm2d, Conv2d, Dropout, GlobalAvgPool, Linear, ReLU
from .module import Module

__all__ = [
    "HeadSpec",
    "HEADS",
    "register_head",
    "get_head",
    "ClassifierHead",
    "GAPHead",
    "GAPXdHead",
    "gap",
    "gap512",
    "gapxd",
]


@dataclass(frozen=True)
class HeadSpec:
    """A registered head: its name, factory, whether it is second-order, and a one-line description."""

    name: str
    factory: Callable
    second_order: bool
    description: str


#: name -> HeadSpec for every registered head (filled by @register_head at import time).
HEADS: dict[str, HeadSpec] = {}


def register_head(name: str, *, second_order: bool, description: str = ""):
    """Decorator: register ``factory(in_channels, num_classes, *, preset, rng, **kwargs)`` under ``name``."""
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
        HEADS[name] = HeadSpec(name, factory, bool(second_order), description or (factory.__doc__ or "").strip())
        return factory

    return decorator


def get_head(name: str) -> HeadSpec:
    """The HeadSpec registered under ``name`` (KeyError listing the known names otherwise)."""
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; registered heads: {sorted(HEADS)}")
    return HEADS[name]


class ClassifierHead(Module):
    """What the paper puts after a representation: BatchNorm1d(dim) -> Dropout(0.2) -> Linear.

    (B, dim) -> (B, num_classes). Used by the SOP and mixture heads (SPEC §2, "After the mixture").
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


@register_head("gap", second_order=False, description="GAP -> FC (plain ResNet, Table 3)")
def gap(in_channels, num_classes, *, preset, rng):
    return GAPHead(in_channels, num_classes, rng=rng)


@register_head(
    "gapxd",
    second_order=False,
    description="ResNet-18-Xd: 1x1 conv -> dim (+BN+ReLU), GAP, FC; pass dim=... (default 512)",
)
def gapxd(in_channels, num_classes, *, preset, rng, dim=512):
    return GAPXdHead(in_channels, num_classes, dim=dim, rng=rng)


@register_head("gap512", second_order=False, description="ResNet-18-512d: 1x1 conv -> 512 (+BN+ReLU), GAP, FC")
def gap512(in_channels, num_classes, *, preset, rng):
    return GAPXdHead(in_channels, num_classes, dim=512, rng=rng)
