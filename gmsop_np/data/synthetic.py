"""Building blocks shared by the generated data sets (``textures``, ``hues``, ``multimodal``).

Each generated image is a few flat colour regions plus a coloured *texture*
(white Gaussian noise blurred by a small Gaussian kernel), in units where
``x = 1`` is one "colour unit", mapped to ``uint8`` as ``128 + 32 x``.
Everything is vectorised over the batch and a pure function of the seed.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int

__all__ = [
    "balanced_labels",
    "blur_periodic",
    "half_plane_masks",
    "texture_noise",
    "to_uint8",
    "generated_split",
    "SPLIT_SEEDS",
]

#: Each split is drawn from its own stream, ``default_rng([seed, SPLIT_SEEDS[split]])``: never a shared image.
SPLIT_SEEDS = {"train": 0, "val": 1}


def balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """(n,) int64 labels in a random order, ``n // C`` or ``n // C + 1`` of each class."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _gaussian_kernel_1d(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(2.5 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / np.sqrt(np.sum(k**2))  # unit energy: blurred white noise keeps variance 1


def blur_periodic(noise: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (..., H, W) white noise with wrap-around borders.

    The kernel has unit energy, so each output pixel still has variance 1
    (the texture looks the same everywhere, including at the borders).
    """
    k = _gaussian_kernel_1d(sigma).astype(noise.dtype)
    radius = len(k) // 2
    out = np.zeros_like(noise)
    for offset, weight in zip(range(-radius, radius + 1), k):  # loop over taps, not pixels
        out += weight * np.roll(noise, offset, axis=-1)
    result = np.zeros_like(noise)
    for offset, weight in zip(range(-radius, radius + 1), k):
        result += weight * np.roll(out, offset, axis=-2)
    return result


def texture_noise(rng: np.random.Generator, n: int, size: int, blur: float) -> np.ndarray:
    """(n, 3, size, size) float32 texture: blurred white noise, variance 1 per pixel and channel, isotropic."""
    noise = rng.standard_normal(size=(n, 3, size, size), dtype=np.float32)
    return blur_periodic(noise, blur)


def half_plane_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, size, size) booleans: True on region 1, split by a random straight line.

    The line has a uniform random angle and passes within 0.2 x size of the
    centre, so each region covers roughly 30--70 % of the image.
    """
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    offset = rng.uniform(-0.2, 0.2, size=n) * size
    coord = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    yy, xx = np.meshgrid(coord, coord, indexing="ij")
    signed_distance = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy - offset[:, None, None]
    return signed_distance > 0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Colour units -> pixels: ``128 + 32 x``, rounded and clipped to 0..255."""
    return np.clip(np.rint(128.0 + 32.0 * images), 0, 255).astype(np.uint8)


def generated_split(make, name, split, n, default_sizes, image_size, seed, *, std, class_names, **kwargs):
    """One split of a generated data set as an ``ArrayDataset``.

    ``make(n, image_size, seed=[seed, SPLIT_SEEDS[split]], **kwargs) -> (images, labels)``;
    ``default_sizes`` maps each split to its default number of images. The
    images are normalised with fixed statistics (mean 128, ``std``), the same
    for both splits, so nothing leaks from the validation images.
    """
    from .loader import ArrayDataset  # noqa: PLC0415  (avoid an import cycle)

    if split not in SPLIT_SEEDS:
        raise ValueError(f"{name} has splits {sorted(SPLIT_SEEDS)}, not {split!r}")
    n = check_int(default_sizes[split] if n is None else n, f"the number of {name} images n", minimum=1)
    images, labels = make(n, image_size, seed=[seed, SPLIT_SEEDS[split]], **kwargs)
    return ArrayDataset(
        images,
        labels,
        num_classes=len(class_names),
        mean=[128.0] * 3,
        std=[std] * 3,
        name=f"{name}/{split}",
        class_names=list(class_names),
    )
