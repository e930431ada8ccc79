"""``digits``: the 8x8 handwritten digits shipped with scikit-learn (no download).

1,797 grey images of the digits 0-9 (values 0..16). We scale them to 0..255,
upsample them bilinearly to ``image_size`` (default 32) and repeat the grey
channel three times, so every network of the package takes them unchanged.
A seeded permutation splits them into train / val (80 % / 20 % by default).

Needs scikit-learn: ``pip install 'gmsop_np[data]'``.
"""

from __future__ import annotations

import numpy as np

from .loader import ArrayDataset

__all__ = ["load_digits", "load_digits_images"]


def _require_sklearn():
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415  (optional extra)
    except ImportError as exc:
        raise ImportError(
            "the 'digits' data set needs scikit-learn, which is not installed. "
            "Install the data extra: pip install 'gmsop_np[data]'"
        ) from exc
    return load_digits


def load_digits_images(image_size: int = 32):
    """All 1,797 digits as uint8 (N, 3, image_size, image_size) and int64 labels."""
    from scipy.ndimage import zoom  # noqa: PLC0415

    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 (the digits are 8x8), got {image_size}")
    bunch = _require_sklearn()()
    grey = bunch.images.astype(np.float64) * (255.0 / 16.0)  # (N, 8, 8) in 0..255
    factor = image_size / 8.0
    big = zoom(grey, (1.0, factor, factor), order=1, mode="nearest", grid_mode=True)
    big = np.clip(np.rint(big), 0, 255).astype(np.uint8)  # (N, s, s)
    images = np.repeat(big[:, None, :, :], 3, axis=1)  # grey -> 3 channels
    return images, bunch.target.astype(np.int64)


def load_digits(split: str = "train", image_size: int = 32, seed: int = 0, val_fraction: float = 0.2):
    """The scikit-learn digits as an ``ArrayDataset`` (10 classes, uint8 NCHW)."""
    if split not in ("train", "val"):
        raise ValueError(f"digits has splits ['train', 'val'], not {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    images, labels = load_digits_images(image_size)
    order = np.random.default_rng([seed, 7]).permutation(len(labels))
    n_val = int(round(val_fraction * len(labels)))
    chosen = order[:n_val] if split == "val" else order[n_val:]
    train_images = images[order[n_val:]]
    mean = train_images.mean(axis=(0, 2, 3))  # statistics of the training split only
    std = train_images.std(axis=(0, 2, 3))
    return ArrayDataset(
        images[chosen],
        labels[chosen],
        num_classes=10,
        mean=mean,
        std=std,
        name=f"digits/{split}",
        class_names=[str(d) for d in range(10)],
    )
