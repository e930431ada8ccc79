"""``hues``: a built-in data set whose classes are first-order *and* multi-modal.

Why it exists
-------------
``textures`` hides the label from first-order statistics, so a GAP network
learns nothing there -- and the paper's Figure 2 (which components a gated
mixture of GAPs routes the images to) and the GAP rows of Table 2 need a
network that learns. In ``hues`` the colour of one object carries the label:
global average pooling (GAP) of colour-detecting features is all a network
needs. Each class is nevertheless a *union of three distinct prototypes*
(three hues far apart on the colour wheel, interleaved with the hues of the
other classes), so no single linear map of the mean colour separates the
classes: a head has to carve the colour wheel into 12 sectors and regroup
them, which is what a gated mixture of GAP components (each component
specialising in a few sectors) is built for.

How an image is generated (everything vectorised over the batch)
----------------------------------------------------------------
1. Grey background (0 colour units, i.e. pixel value 128).
2. One disc of radius 0.20--0.35 x the image side, entirely inside the image,
   painted with the colour ``c = a (cos h e1 + sin h e2) + b g`` where
   ``g = (1,1,1)/sqrt3`` is the grey axis, ``e1, e2`` an orthonormal basis of the
   plane of pure chroma (orthogonal to ``g``), ``a = chroma x U(0.75, 1.25)``
   the saturation, ``b ~ N(0, brightness_std^2)`` a random brightness.
3. The hue: prototype ``j`` in 0..11 has ``h = 2 pi j / 12`` (plus a jitter of
   at most 10 % of the 30 degree spacing); class ``c`` owns the prototypes
   ``c, c + 4, c + 8`` -- three hues 120 degrees apart -- and an image of class
   ``c`` takes one of them at random (probability 1/3 each).
4. A coloured texture is added on top (blurred white noise, the same isotropic
   channel covariance for every class, as in ``textures``), and colour units
   are mapped to ``uint8`` as ``128 + 32 x``.

What differs between the classes
--------------------------------
The three hues of a class sum to zero chroma (``sum_k (cos, sin)(h + 2 pi k/3) = 0``),
so the *class-average* image is the same grey for every class: per channel,
every class has the same mean (128) and the same variance. The label lives in
*which of the 12 hues* the disc has, i.e. in the per-image mean colour, which
is a mixture of three well separated modes for each class. A linear classifier
on the per-image mean colour is therefore close to chance, while classifying
the mean colour by its nearest prototype (a mixture-aware classifier) is
nearly perfect.

Measured while designing it (NumPy, the ``tiny`` backbone with the 8x8 final
map a 32x32 input gets when stage 4 keeps stride 1, 2,000 training and 500
validation images, 8 epochs, batch 32, seeds 0-2; chance 75 %): validation
error GAP 7.1 +- 1.6 %, ResNet-Xd 7.7 +- 1.4 %, Ave-GAP 8.4 +- 2.0 %, GM-GAP-16-8
9.3 +- 2.0 % -- every GAP head learns, but the gated mixture does *not* beat the
single GAP at this scale. GM-GAP-16-4 (per-image gating noise): alpha = 0
routes 64 % of the samples to 4 of the 16 components (usage CV 1.04), alpha = 100
spreads them evenly (CV 0.07) at a cost in error after 8 epochs (9 % vs 30 +- 20 %).

``make_hues(n, seed)`` is a pure function of its arguments: the same seed
gives the same images, bit for bit, on every machine.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int, check_number
from .synthetic import balanced_labels, generated_split, texture_noise, to_uint8

__all__ = ["make_hues", "load_hues", "hue_class_names", "HUE_NUM_CLASSES", "HUE_MODES", "GREY_AXIS", "CHROMA_PLANE"]

HUE_NUM_CLASSES = 4  # classes
HUE_MODES = 3  # prototypes (hues) per class

#: Unit grey axis and an orthonormal basis (rows) of the chroma plane orthogonal to it.
GREY_AXIS = np.ones(3) / np.sqrt(3.0)
CHROMA_PLANE = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]) / np.array([[np.sqrt(2.0)], [np.sqrt(6.0)]])


def hue_class_names():
    """Each class named by the hue angles (degrees) of its three prototypes."""
    step = 360 // (HUE_NUM_CLASSES * HUE_MODES)
    return ["/".join(str(step * (c + HUE_NUM_CLASSES * m)) for m in range(HUE_MODES)) for c in range(HUE_NUM_CLASSES)]


def _disc_masks(rng: np.random.Generator, n: int, size: int, radius) -> np.ndarray:
    """(n, size, size) booleans: a disc of random radius (fraction of ``size``) entirely inside the image."""
    r = rng.uniform(radius[0], radius[1], size=n) * size
    cy, cx = rng.uniform(r, size - r), rng.uniform(r, size - r)
    coord = np.arange(size) + 0.5  # pixel centres
    dy = coord[None, :, None] - cy[:, None, None]
    dx = coord[None, None, :] - cx[:, None, None]
    return dy**2 + dx**2 <= r[:, None, None] ** 2


def make_hues(
    n: int,
    image_size: int = 32,
    seed: int = 0,
    *,
    chroma: float = 1.2,
    brightness_std: float = 0.4,
    noise_std: float = 0.6,
    blur: float = 1.0,
):
    """Generate ``n`` ``hues`` images (see the module docstring for the recipe).

    Parameters
    ----------
    n : number of images (classes are balanced: ``n // 4`` or ``n // 4 + 1`` each).
    image_size : height = width of the images (>= 8).
    seed : everything is a deterministic function of ``seed``.
    chroma : mean saturation ``a`` of the disc colour (colour units).
    brightness_std : std of the random brightness ``b`` of the disc.
    noise_std : std of the texture noise in every channel.
    blur : std (pixels) of the Gaussian blur that turns white noise into texture.

    Returns
    -------
    images : uint8 array (n, 3, image_size, image_size), NCHW
    labels : int64 array (n,), values 0..3
    prototypes : int64 array (n,), the hue index 0..11 of each image (class = prototype % 4)
    """
    n = check_int(n, "n (number of images)", minimum=1)
    image_size = check_int(image_size, "image_size", minimum=8)
    chroma = check_number(chroma, "chroma", minimum=0.0, above=True)
    rng = np.random.default_rng(seed)
    num_hues = HUE_NUM_CLASSES * HUE_MODES
    labels = balanced_labels(rng, n, HUE_NUM_CLASSES)
    prototypes = labels + HUE_NUM_CLASSES * rng.integers(0, HUE_MODES, size=n)  # interleaved around the wheel

    jitter = rng.uniform(-0.1, 0.1, size=n)  # in units of the spacing between hues
    hue = 2.0 * np.pi * (prototypes + jitter) / num_hues
    saturation = chroma * rng.uniform(0.75, 1.25, size=n)
    brightness = rng.normal(0.0, brightness_std, size=n)
    chroma_vector = np.stack([np.cos(hue), np.sin(hue)], axis=1) @ CHROMA_PLANE  # (n, 3)
    colour = saturation[:, None] * chroma_vector + brightness[:, None] * GREY_AXIS  # (n, 3)

    inside = _disc_masks(rng, n, image_size, radius=(0.2, 0.35))[:, None, :, :]  # (n, 1, H, W)
    images = np.where(inside, colour[:, :, None, None], 0.0)
    images = images + noise_std * texture_noise(rng, n, image_size, blur)
    return to_uint8(images), labels, prototypes.astype(np.int64)


def _images_and_labels(n, image_size, seed, **kwargs):
    images, labels, _ = make_hues(n, image_size, seed, **kwargs)
    return images, labels


def load_hues(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0, **kwargs):
    """The ``hues`` data set as an ``ArrayDataset`` (4 classes, uint8 NCHW).

    ``split`` is ``"train"`` (default 2000 images) or ``"val"`` (default 500), drawn
    from the seeds ``[seed, 0]`` and ``[seed, 1]``. Extra keyword arguments go to
    ``make_hues``. Normalised with fixed statistics: mean 128 and std 22.5 (the
    pixel std of the default recipe, measured over 20,000 images), for both splits.
    """
    sizes = {"train": 2000, "val": 500}
    return generated_split(
        _images_and_labels, "hues", split, n, sizes, image_size, seed, std=22.5, class_names=hue_class_names(), **kwargs
    )
