"""``multimodal``: second-order classes, each a mixture of two covariance patterns.

Why it exists
-------------
The paper's motivation for a *mixture* of second-order poolings (its Fig. 1)
is that one Gaussian -- one covariance -- summarises complex, multi-modal data
poorly. ``multimodal`` makes that concrete on a laptop CPU. As in ``textures``
(read its docstring first), an image is two flat regions plus texture noise, and
its covariance is ``sigma^2 I + beta v v^T`` for a colour axis ``v``; but each
class now owns *two* orthogonal axes and an image is drawn from one of them.
A covariance-pooling head sees, per class, a two-point mixture of covariances,
and the two points of one class average to a matrix close to the average of
every other class: one covariance per class (the unimodal summary) describes
the classes badly, while a model that first decides *which pattern* an image
shows (what the gate of GM-SOP can learn: each rank-one pattern is an extreme
point of the set of covariances, so a linear gate logit can single it out) and
then classifies within it is nearly perfect.

How an image is generated (everything vectorised over the batch)
----------------------------------------------------------------
1. A straight boundary at a random angle splits the image into two regions
   (each 30--70 % of it), painted ``s + (delta/2) v`` and ``s - (delta/2) v``
   (which region gets the ``+`` is a coin flip); ``s ~ N(0, tau^2 I)`` is a
   per-image colour offset, invisible to a covariance.
2. The colour axis ``v`` of an image of class ``c`` is ``u_c`` or ``w_c``
   (probability 1/2 each): two orthogonal unit axes in the plane orthogonal to
   the diagonal ``d_c`` of the RGB cube. Class 0 has ``d_0 = (1,1,1)/sqrt3``,
   ``u_0 = cos(phi) a + sin(phi) b`` and ``w_0 = d_0 x u_0`` with
   ``a = (1,-1,0)/sqrt2``, ``b = d_0 x a``; class ``c`` is class 0 rotated by
   ``c x 90`` degrees about the blue axis (that rotation permutes the four
   diagonals). ``phi = 22.16`` degrees maximises the smallest angle between any
   two of the 8 axes (35.9 degrees): every pattern is far from every other.
3. A coloured texture is added on top (blurred white noise, the same isotropic
   channel covariance in every class), and colour units are mapped to ``uint8``
   as ``128 + 32 x``.

Statistics per class
--------------------
The covariance of the pixels of an image is

    Sigma = sigma^2 I  +  pi (1 - pi) delta^2  v v^T,      v in {u_c, w_c},

``pi`` the area fraction of region 1, so the class-conditional distribution of
``Sigma`` is a mixture of two modes, and the class average is

    E[Sigma | c] = sigma^2 I  +  E[pi (1 - pi)] delta^2 (I - d_c d_c^T) / 2

(``u u^T + w w^T = I - d d^T`` for an orthonormal basis ``u, w, d``). Every
component of ``d_c`` is ``+-1/sqrt3``, so each channel has the *same mean and
the same variance* in every class, as in ``textures``; the classes differ in the
correlations between channels -- in the class average only by the weak term
``-d_c d_c^T / 2``, in each mode by a full rank-one pattern. So one covariance
per class (the unimodal summary) describes the classes badly: classifying the
trace-normalised per-image covariance by the nearest class average gets 67--85 %
of the images right (16x16 images, seeds 0--7), by the nearest of the 8 patterns
99.7--100 % (the tests measure both). The 8 patterns are in general position in the 5-dimensional space
of trace-one covariances, so a linear discriminant *fitted* to the exact
per-image covariances still separates them (90 % at 16x16, 98 % at 32x32): the
difficulty for a network is to learn features whose covariance shows the
pattern, not a wall that linear classifiers cannot pass.

Measured while designing it (NumPy, the ``tiny`` backbone with the 8x8 final
map a 32x32 input gets when stage 4 keeps stride 1, 2,000 training and 500
validation images, batch 32, seeds 0-2, mean +- std; chance 75 %):

* 10 epochs: GAP family 58-67 %, SR-SOP 20.0 +- 12.1 %, parametric SR-SOP
  24.5 +- 21.3 %, Ave-SOP-16 12.8 +- 2.4 %, GM-SOP-16-8 21.7 +- 3.6 %;
* 20 epochs: SR-SOP 11.1 +- 7.9 %, Ave-SOP-16 5.5 +- 0.8 %, GM-SOP-16-8 5.1 +- 1.6 %.

Second-order pooling is far ahead of first-order pooling at once. The gate of
GM-SOP needs time: after 10 epochs its choice of components says little about
an image's pattern (0.3 bit of mutual information between the top component and
the 8 patterns) and GM-SOP trails the plain average; after 20 epochs it routes
by pattern (0.6-1.0 bit) and matches or beats Ave-SOP, while single SR-SOPs
vary widely from seed to seed.

``make_multimodal(n, seed)`` is a pure function of its arguments.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int
from .synthetic import balanced_labels, generated_split, half_plane_masks, texture_noise, to_uint8

__all__ = [
    "make_multimodal",
    "load_multimodal",
    "MULTIMODAL_CLASS_AXES",
    "MULTIMODAL_DIAGONALS",
    "multimodal_class_names",
]

_PHI = np.radians(22.16)  # angle of u_0 in the plane orthogonal to (1,1,1); see the module docstring
_QUARTER_TURN_BLUE = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about the B axis


def _class_axes():
    """(4, 2, 3): the two orthogonal unit colour axes (u_c, w_c) of each class, and (4, 3) the diagonals d_c."""
    d0 = np.ones(3) / np.sqrt(3.0)
    a = np.array([1.0, -1.0, 0.0]) / np.sqrt(2.0)
    b = np.cross(d0, a)
    u0 = np.cos(_PHI) * a + np.sin(_PHI) * b
    w0 = np.cross(d0, u0)
    turns = [np.linalg.matrix_power(_QUARTER_TURN_BLUE, c) for c in range(4)]
    axes = np.stack([np.stack([turn @ u0, turn @ w0]) for turn in turns])
    diagonals = np.stack([turn @ d0 for turn in turns])
    return axes, diagonals


#: MULTIMODAL_CLASS_AXES[c, m]: colour axis of mode m of class c; MULTIMODAL_DIAGONALS[c]: the axis both avoid.
MULTIMODAL_CLASS_AXES, MULTIMODAL_DIAGONALS = _class_axes()


def multimodal_class_names():
    """Each class named by the RGB diagonal its two colour axes are orthogonal to, e.g. 'perp(RG+/B-)'."""
    names = []
    for d in MULTIMODAL_DIAGONALS:
        d = d if np.sum(d > 0) >= 2 else -d  # a line: show the sign with more rising channels
        up = "".join(ch for ch, x in zip("RGB", d) if x > 0)
        down = "".join(ch for ch, x in zip("RGB", d) if x < 0)
        names.append(f"perp({up}+" + (f"/{down}-)" if down else ")"))
    return names


def make_multimodal(
    n: int,
    image_size: int = 32,
    seed: int = 0,
    *,
    delta: float = 2.4,
    offset_std: float = 1.2,
    noise_std: float = 0.5,
    blur: float = 1.0,
):
    """Generate ``n`` ``multimodal`` images (see the module docstring for the recipe).

    Parameters
    ----------
    n : number of images (classes are balanced: ``n // 4`` or ``n // 4 + 1`` each).
    image_size : height = width of the images (>= 8).
    seed : everything is a deterministic function of ``seed``.
    delta : distance between the two region colours along the image's colour axis.
    offset_std : std ``tau`` of the random per-image colour offset ``s``.
    noise_std : std ``sigma`` of the texture noise in every channel.
    blur : std (pixels) of the Gaussian blur that turns white noise into texture.

    Returns
    -------
    images : uint8 array (n, 3, image_size, image_size), NCHW
    labels : int64 array (n,), values 0..3
    modes : int64 array (n,), 0 or 1: which of its class's two axes the image shows
    """
    n = check_int(n, "n (number of images)", minimum=1)
    image_size = check_int(image_size, "image_size", minimum=8)
    rng = np.random.default_rng(seed)
    labels = balanced_labels(rng, n, len(MULTIMODAL_CLASS_AXES))
    modes = rng.integers(0, MULTIMODAL_CLASS_AXES.shape[1], size=n)
    axis = MULTIMODAL_CLASS_AXES[labels, modes]  # (n, 3)

    in_region1 = half_plane_masks(rng, n, image_size)[:, None, :, :]  # (n, 1, H, W)
    sign = rng.choice([-1.0, 1.0], size=n)  # which region gets +v
    half_step = 0.5 * delta * sign[:, None] * axis  # (n, 3)
    offset = rng.normal(0.0, offset_std, size=(n, 3))  # s, shared by both regions
    images = np.where(in_region1, (offset + half_step)[:, :, None, None], (offset - half_step)[:, :, None, None])
    images = images + noise_std * texture_noise(rng, n, image_size, blur)
    return to_uint8(images), labels, modes.astype(np.int64)


def _images_and_labels(n, image_size, seed, **kwargs):
    images, labels, _ = make_multimodal(n, image_size, seed, **kwargs)
    return images, labels


def load_multimodal(split: str = "train", n: int | None = None, image_size: int = 32, seed: int = 0, **kwargs):
    """The ``multimodal`` data set as an ``ArrayDataset`` (4 classes, uint8 NCHW).

    ``split`` is ``"train"`` (default 2000 images) or ``"val"`` (default 500), drawn
    from the seeds ``[seed, 0]`` and ``[seed, 1]``. Extra keyword arguments go to
    ``make_multimodal``. Normalised with the analytic statistics of the default
    recipe: mean 128, std ``32 sqrt(tau^2 + delta^2/12 + sigma^2)`` = 47, for both splits.
    """
    sizes = {"train": 2000, "val": 500}
    return generated_split(
        _images_and_labels,
        "multimodal",
        split,
        n,
        sizes,
        image_size,
        seed,
        std=47.0,
        class_names=multimodal_class_names(),
        **kwargs,
    )
