"""The two presets: follow the paper's text, or the official MatConvNet release.

``preset="paper"`` (default) follows the NeurIPS paper: an 8×8 final map for
every head, 5 Newton–Schulz iterations, weight decay 5e-4.
``preset="official"`` follows the public MatConvNet release: the last stage
keeps a 16×16 map (no stride) for second-order heads, 3 Newton–Schulz
iterations, weight decay 1e-4. Everything else is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Preset", "PRESETS", "get_preset"]


@dataclass(frozen=True)
class Preset:
    name: str
    sop_last_stage_stride: int  # stride of stage 4 when the head is second-order
    num_iters: int  # Newton–Schulz iterations in SR-SOP heads
    weight_decay: float  # SGD weight decay


PRESETS = {
    "paper": Preset("paper", sop_last_stage_stride=2, num_iters=5, weight_decay=5e-4),
    "official": Preset("official", sop_last_stage_stride=1, num_iters=3, weight_decay=1e-4),
}


def get_preset(preset: str | Preset) -> Preset:
    """A Preset from its name ('paper' / 'official') or a Preset instance."""
    if isinstance(preset, Preset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset]
