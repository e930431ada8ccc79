"""The paper's networks: modified ResNet-18 / ResNet-50 / WRN-36-2 backbones + a head.

Backbone (paper Table 1), for 64×64 inputs::

    conv1   3×3, 16, stride 1, BN, ReLU            (no max-pool)       64×64
    stage1  basic blocks, width w1, stride 1                           64×64
    stage2  basic blocks, width w2, first block stride 2               32×32
    stage3  basic blocks, width w3, first block stride 2               16×16
    stage4  basic blocks, width w4, first block stride s4              8×8 (s4 = 2) or 16×16 (s4 = 1)
    head    HEADS[head].factory(w4, num_classes, preset=..., rng=...)

A basic block is ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``;
the shortcut is the identity, or a projection (1×1 conv with the block's
stride + BN) when the shape changes.

========  ==================  =================  ==========================
arch      blocks per stage    widths             depth (convs + FC)
========  ==================  =================  ==========================
ResNet-18 [2, 2, 2, 2]        16/32/64/128       1 + 2·8 + 1 = 18
ResNet-50 [6, 6, 6, 6]        16/32/64/128       1 + 2·24 + 1 = 50
WRN-36-2  [4, 4, 4, 4]        32/64/128/256      8n + 4 = 36 with n = 4
========  ==================  =================  ==========================

WRN-36-2 (documented choice): the paper takes WRN-N-k from Chrabaszcz et al.
(2017), whose depth rule for four groups is N = 8n + 4 (n blocks per group;
the "+4" counts conv1, the FC and the convention of the WRN paper), so N = 36
gives n = 4, and k = 2 doubles the widths. The stem stays 16 channels as in
WRN. With these choices the parameter counts match the paper's tables:
WRN-36-2 (GAP, 1000 classes) 6.2M (paper: 6.2M), WRN-36-1 1.6M (paper:
1.6M). We use the same post-activation basic block as the ResNets (WRN uses
pre-activation blocks; the parameter count is the same).

Last-stage stride: ``get_preset(preset).sop_last_stage_stride`` when the head
is second-order (``HEADS[head].second_order``), else 2. So the "paper" preset
gives an 8×8 map for every head and the "official" preset keeps 16×16 for SOP
heads, as the MatConvNet release does. Places365 uses 96×96 crops (12×12 map).

Inputs smaller than 64×64 (documented choice): with the paper's strides a 32×32 image
(CIFAR, ImageNet32, the built-in datasets) would end in a 4×4 map -- 16 positions for a
128-d covariance, too few for second-order pooling. So for inputs below 64 the last
stage keeps its resolution for every head (stride 1): 32×32 ends in 8×8, the map the
paper's networks see at 64×64, and first- and second-order heads still see the same map.
"""

from __future__ import annotations

import numpy as np

from . import nn as _nn  # noqa: F401  (importing gmsop_np.nn registers every head)
from ._checks import check_int
from .nn.heads import HEADS, get_head
from .nn.layers import BatchNorm2d, Conv2d, ReLU
from .nn.module import Module, ModuleList, Sequential
from .presets import get_preset

__all__ = ["BasicBlock", "ResNet", "tiny", "resnet18", "resnet50", "wrn36_2", "build_model", "list_heads", "ARCHS"]


class BasicBlock(Module):
    """Two 3×3 convolutions with BN, plus a shortcut: (B, C_in, H, W) -> (B, C_out, H/s, W/s).

    ``y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` where the shortcut is
    the identity when shapes agree, otherwise 1×1 conv (stride s) + BN.
    """

    def __init__(self, in_channels, out_channels, stride=1, rng=None):
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, rng=rng)
        self.bn1 = BatchNorm2d(out_channels)
        self.relu = ReLU()
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, rng=rng)
        self.bn2 = BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = Sequential(
                Conv2d(in_channels, out_channels, 1, stride=stride, rng=rng), BatchNorm2d(out_channels)
            )
        else:
            self.shortcut = None

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(y + skip)


def _check_input_size(input_size):
    check_int(input_size, "input_size", 8)
    if input_size % 8:
        raise ValueError(
            f"input_size must be a multiple of 8 (the backbone halves the map three times), got {input_size}. "
            "The paper uses 64 (downsampled ImageNet) and 96 (Places365 crops)."
        )


class ResNet(Module):
    """Modified ResNet backbone (Table 1) with a registered head.

    Input (B, 3, input_size, input_size) -> logits (B, num_classes).

    Parameters
    ----------
    blocks, widths : basic blocks and channels of the four stages
    head : name of a registered head (see ``list_heads()``)
    num_classes, input_size : 1000 / 64 for downsampled ImageNet; 365 / 96 for Places365
    preset : "paper" or "official" (last-stage stride for second-order heads, NS iterations, ...)
    seed : seeds the one Generator that initialises every layer (same seed -> identical weights)
    stem_width : channels of conv1 (16 in every network of the paper)
    head_options : the head's options (``HEADS[head].options``), e.g. ``dim=`` for "gapxd",
        ``num_components=`` / ``k=`` / ``alpha=`` for "gmsop"

    Attributes: ``stem``, ``stages`` (ModuleList of Sequential), ``head``,
    ``feature_map_size`` (side of the map the head sees), ``balance_loss``.
    """

    def __init__(
        self,
        blocks=(2, 2, 2, 2),
        widths=(16, 32, 64, 128),
        *,
        head="gap",
        num_classes=1000,
        input_size=64,
        preset="paper",
        seed=0,
        stem_width=16,
        in_channels=3,
        **head_options,
    ):
        super().__init__()
        if len(blocks) != 4 or len(widths) != 4 or min(blocks) < 1:
            raise ValueError(f"need four stages with >= 1 block each: blocks={blocks}, widths={widths}")
        check_int(num_classes, "num_classes", 1)
        _check_input_size(input_size)
        spec, preset = get_head(head), get_preset(preset)
        rng = np.random.default_rng(seed)
        last_stride = preset.sop_last_stage_stride if spec.second_order else 2
        if input_size < 64:  # small inputs (32x32 CIFAR, ImageNet32, the built-in sets): see the module docstring
            last_stride = 1
        strides = (1, 2, 2, last_stride)

        self.head_name, self.preset, self.input_size, self.in_channels = head, preset, int(input_size), in_channels
        self.feature_map_size = input_size // (2 * 2 * last_stride)
        self.stem = Sequential(
            Conv2d(in_channels, stem_width, 3, stride=1, padding=1, rng=rng), BatchNorm2d(stem_width), ReLU()
        )
        self.stages = ModuleList()
        channels = stem_width
        for n_blocks, width, stride in zip(blocks, widths, strides):
            stage = [BasicBlock(channels, width, stride, rng=rng)]
            stage += [BasicBlock(width, width, 1, rng=rng) for _ in range(n_blocks - 1)]
            self.stages.append(Sequential(*stage))
            channels = width
        spec.check_options(head_options)
        self.head = spec.factory(channels, num_classes, preset=preset, rng=rng, **head_options)

    def features(self, x):
        """The backbone's last feature map (B, widths[-1], s, s), s = feature_map_size."""
        expected = (self.in_channels, self.input_size, self.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape (B, {expected[0]}, {expected[1]}, {expected[2]}), got "
                f"{tuple(x.shape)}; build the model with input_size={x.shape[-1] if x.ndim == 4 else '...'} "
                "for other image sizes"
            )
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x):
        return self.head(self.features(x))

    @property
    def balance_loss(self):
        """The head's balance loss from the last forward (a Tensor), or None for non-gated heads."""
        return getattr(self.head, "balance_loss", None)

    def extra_repr(self):
        return f"head={self.head_name!r}, preset={self.preset.name!r}, feature_map={self.feature_map_size}"


def _network(name: str, blocks, widths, description: str, *, stem_width: int = 16, narrow_heads: bool = False):
    """The builder of one backbone of the table in the module docstring: ``f(head, ...) -> ResNet``.

    ``narrow_heads``: fill in the head's ``tiny`` options (``HEADS[head].tiny``) unless given.
    """

    def build(
        head: str = "gap",
        num_classes: int = 1000,
        input_size: int = 64,
        preset: str = "paper",
        seed: int = 0,
        **head_options,
    ) -> ResNet:
        if narrow_heads:
            head_options = {**get_head(head).tiny, **head_options}
        return ResNet(
            blocks,
            widths,
            stem_width=stem_width,
            head=head,
            num_classes=num_classes,
            input_size=input_size,
            preset=preset,
            seed=seed,
            **head_options,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = description + "\n\n``head_options`` are the head's options (``HEADS[head].options``)."
    return build


resnet18 = _network(
    "resnet18",
    (2, 2, 2, 2),
    (16, 32, 64, 128),
    "Modified ResNet-18 (Table 1): [2, 2, 2, 2] basic blocks, widths 16/32/64/128.",
)
resnet50 = _network(
    "resnet50",
    (6, 6, 6, 6),
    (16, 32, 64, 128),
    "Modified ResNet-50 (Table 1): [6, 6, 6, 6] basic blocks, widths 16/32/64/128.",
)
wrn36_2 = _network(
    "wrn36_2",
    (4, 4, 4, 4),
    (32, 64, 128, 256),
    "WRN-36-2: [4, 4, 4, 4] basic blocks, widths 32/64/128/256 (see the module docstring).",
)
tiny = _network(
    "tiny",
    (1, 1, 1, 1),
    (8, 16, 32, 32),
    "A small ResNet for CPU demos and tests: one basic block per stage, widths 8/16/32/32, an 8-channel "
    "stem, and the head's narrow ``tiny`` options (``HEADS[head].tiny``, e.g. components 32 -> 16 channels "
    "for GM-SOP) unless given. Not a network of the paper.",
    stem_width=8,
    narrow_heads=True,
)


#: Every backbone by name: the paper's three networks and the small CPU one.
ARCHS = {"tiny": tiny, "resnet18": resnet18, "resnet50": resnet50, "wrn36_2": wrn36_2}


def build_model(arch: str, head: str = "gap", **kwargs) -> ResNet:
    """The network ``arch`` (a key of ``ARCHS``; spellings like "ResNet-18" or "wrn-36-2" work)
    with head ``head`` (``list_heads()``); ``kwargs`` go to the arch function.

    >>> model = build_model("resnet18", "gmsop", num_classes=10, k=4)
    >>> model.head.mixture.k, model.num_parameters() > 10**6
    (4, True)
    """
    key = {k.replace("_", ""): k for k in ARCHS}.get(str(arch).lower().replace("-", "").replace("_", ""))
    if key is None:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    return ARCHS[key](head=head, **kwargs)


def list_heads() -> list:
    """Names of every registered head (``HEADS[name].description`` says what each is)."""
    return sorted(HEADS)
