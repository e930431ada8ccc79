"""``textures``: a built-in data set whose classes differ only in second-order statistics.

Why it exists
-------------
The paper's motivation (its Fig. 1) is that the activations of one image are
*multi-modal* -- several objects or parts -- and that second-order pooling sees
statistics that global average pooling (GAP) cannot. ``textures`` is a tiny,
deterministic, download-free data set built to show exactly that on a laptop CPU.

How an image is generated (everything vectorised over the batch)
----------------------------------------------------------------
1. A straight boundary at a random angle splits the image into two regions
   (each covers roughly 30--70 % of it): two *modes*.
2. Region 1 is painted with colour ``m1 = s + (delta/2) v``, region 2 with
   ``m2 = s - (delta/2) v`` (which region gets the ``+`` is a coin flip).
   ``s ~ N(0, tau^2 I)`` is a random per-image colour offset (it moves every
   pixel together, so it is invisible to a covariance), and ``v`` is the unit
   *colour axis of the class*: one of the four diagonals of the RGB cube,
   ``(1,1,1)/sqrt3, (1,1,-1)/sqrt3, (1,-1,1)/sqrt3, (-1,1,1)/sqrt3``.
3. A coloured texture is added on top: white Gaussian noise, blurred by a small
   Gaussian kernel, with the *same* isotropic channel covariance for every class.
4. Values are mapped to ``uint8`` as ``128 + 32 x`` (clipped).

What differs between the classes
--------------------------------
Every component of every class axis has the same magnitude ``1/sqrt3`` and the
sign of ``v`` is random, so each channel has the *same mean and the same
variance in every class*, and the per-image channel means are distributed
identically too (symmetric around the random offset ``s``). What the class
changes is the **correlation between channels**: the covariance of the pixels of
an image is

    Sigma = sigma^2 I  +  pi (1 - pi) delta^2  v v^T,

``pi`` the area fraction of region 1. Classes are four rank-one correlation
patterns (e.g. "red and green rise together while blue falls"). The two modes
are only distinguishable through their *difference* ``m1 - m2``, a
between-region (second-order, non-local) quantity; the per-image offset ``s``
keeps a ReLU from turning it into a first-order feature at a fixed operating
point. A covariance-pooling head reads ``v v^T`` directly; a GAP head must
learn to find the boundary and compare colours across it, which is much
harder (a deep enough GAP network does learn it eventually: no data set can
hide a covariance from ReLU features for ever). Measured while designing it,
with a tiny ResNet of the same shape in PyTorch, 3,000 training images, batch
32: covariance pooling reached 4 % validation error after 4 epochs, GAP was
still at 70 % after 7 epochs and 51 % after 14. Chance is 75 % error (4 classes).

``make_textures(n, seed)`` is a pure function of its arguments: the same seed
gives the same images, bit for bit, on every machine.
"""

from __future__ import annotations

import numpy as np

from .synthetic import balanced_labels, generated_split, half_plane_masks, texture_noise, to_uint8

__all__ = ["make_textures", "load_textures", "TEXTURE_CLASS_AXES", "texture_class_names"]

# The four class colour axes: the diagonals of the RGB cube (unit length).
TEXTURE_CLASS_AXES = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], dtype=np.float64) / np.sqrt(3.0)


def texture_class_names():
    """Human-readable names: which channels rise together in each class."""
    names = []
    for axis in TEXTURE_CLASS_AXES:
        up = "".join(c for c, a in zip("RGB", axis) if a > 0)
        down = "".join(c for c, a in zip("RGB", axis) if a < 0)
        names.append(f"{up}+" + (f"/{down}-" if down else ""))
    return names


def make_textures(
    n: int,
    image_size: int = 32,
    seed: int = 0,
    *,
    delta: float = 1.6,
    offset_std: float = 1.2,
    noise_std: float = 0.6,
    blur: float = 1.0,
):
    """Generate ``n`` ``textures`` images (see the module docstring for the recipe).

    Parameters
    ----------
    n : number of images (classes are balanced: ``n // 4`` or ``n // 4 + 1`` each).
    image_size : height = width of the images (>= 8).
    seed : everything is a deterministic function of ``seed``.
    delta : distance between the two region colours along the class axis.
    offset_std : std ``tau`` of the random per-image colour offset ``s``.
    noise_std : std ``sigma`` of the texture noise in every channel.
    blur : std (pixels) of the Gaussian blur that turns white noise into texture.

    Returns
    -------
    images : uint8 array (n, 3, image_size, image_size), NCHW
    labels : int64 array (n,), values 0..3
    """
    if n < 1:
        raise ValueError(f"make_textures needs n >= 1 images, got {n}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    rng = np.random.default_rng(seed)
    num_classes = len(TEXTURE_CLASS_AXES)
    labels = balanced_labels(rng, n, num_classes)

    in_region1 = half_plane_masks(rng, n, image_size)  # (n, H, W)
    sign = rng.choice([-1.0, 1.0], size=n)  # which region gets +v
    half_step = 0.5 * delta * sign[:, None] * TEXTURE_CLASS_AXES[labels]  # (n, 3)
    offset = rng.normal(0.0, offset_std, size=(n, 3))  # s, shared by both regions
    colour1, colour2 = offset + half_step, offset - half_step  # (n, 3) each

    mask = in_region1[:, None, :, :]  # (n, 1, H, W)
    images = np.where(mask, colour1[:, :, None, None], colour2[:, :, None, None])
    images = images + noise_std * texture_noise(rng, n, image_size, blur)
    return to_uint8(images), labels


def load_textures(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0, **kwargs):
    """The ``textures`` data set as an ``ArrayDataset`` (4 classes, uint8 NCHW).

    ``split`` is ``"train"`` (default 3000 images) or ``"val"`` (default 1000);
    the two splits are drawn from different seeds (``[seed, 0]`` and ``[seed, 1]``),
    so they never share an image. Extra keyword arguments go to ``make_textures``.
    Normalised with the analytic statistics (mean 128, std 45), the same for both splits.
    """
    sizes = {"train": 3000, "val": 1000}
    return generated_split(
        make_textures,
        "textures",
        split,
        n,
        sizes,
        image_size,
        seed,
        std=45.0,
        class_names=texture_class_names(),
        **kwargs,
    )
