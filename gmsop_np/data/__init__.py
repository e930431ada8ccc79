"""Datasets and loaders for the training application.

=============  ==========================================================  =========
name           what                                                         needs
=============  ==========================================================  =========
``textures``   built-in, generated from a seed; 4 classes that differ only  nothing
               in channel correlations (``gmsop_np/data/textures.py``)
``digits``     scikit-learn's 8x8 digits, upsampled, 3 channels             ``[data]``
``imagenet64`` downsampled ImageNet 64x64 (Chrabaszcz et al. 2017)          the files
``places365``  Places365-Standard, resized to 100x100, 96x96 crops          files, ``[data]``
=============  ==========================================================  =========

``get_dataset(name, split, root)`` builds one; ``make_loader(dataset, ...)``
wraps it in a ``DataLoader`` with the dataset's standard augmentation.
"""

from __future__ import annotations

from .digits import Digits
from .imagenet64 import ImageNet64, read_batch_file
from .loader import ArrayDataset, DataFormatError, DataLoader, augment_batch, normalize
from .places365 import Places365, read_file_list
from .textures import TEXTURE_CLASS_AXES, Textures, make_textures, texture_class_names

__all__ = [
    "DATASETS",
    "get_dataset",
    "make_loader",
    "dataset_defaults",
    "ArrayDataset",
    "DataFormatError",
    "DataLoader",
    "augment_batch",
    "normalize",
    "Textures",
    "make_textures",
    "texture_class_names",
    "TEXTURE_CLASS_AXES",
    "Digits",
    "ImageNet64",
    "read_batch_file",
    "Places365",
    "read_file_list",
]

# Per dataset: the input size the network sees, the standard augmentation and the training defaults.
#   size: side of the network input; flip: random horizontal flip (training);
#   crop: random crop in training / centre crop in evaluation (None: whole image);
#   needs_root: read from files in a folder (get_dataset's root); the others are built in;
#   generated: made from the seed, as many images as asked for (get_dataset's n);
#   epochs, batch_size, lr_scale: what `gmsop train` uses when not told. The small built-in
#   sets get a short demo budget, batch 32 (more steps per epoch on a CPU) and half the
#   paper's learning rate (the paper's rates were tuned for batch 256 and are unstable at 32);
#   the real ones the paper's full schedule (epochs None) at batch 256.
DATASETS = {
    "textures": dict(
        size=32, flip=True, crop=None, needs_root=False, generated=True, epochs=5, batch_size=32, lr_scale=0.5
    ),
    # a mirrored digit is not a digit: no flip
    "digits": dict(
        size=32, flip=False, crop=None, needs_root=False, generated=False, epochs=8, batch_size=32, lr_scale=0.5
    ),
    # the paper: flips only
    "imagenet64": dict(
        size=64, flip=True, crop=None, needs_root=True, generated=False, epochs=None, batch_size=256, lr_scale=1.0
    ),
    # 100x100 images, 96x96 crops
    "places365": dict(
        size=96, flip=True, crop=96, needs_root=True, generated=False, epochs=None, batch_size=256, lr_scale=1.0
    ),
}


def dataset_defaults(name: str) -> dict:
    """The registry entry of dataset ``name`` (a copy); a ValueError listing the names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return dict(DATASETS[name])


def get_dataset(name: str, split: str = "train", root=None, *, seed: int = 0, size=None, n=None, **kwargs):
    """Build dataset ``name`` for ``split`` ('train' or 'val').

    ``root`` is the data folder (imagenet64, places365); ``size`` the image side
    for the generated / upsampled sets (textures, digits); ``n`` the number of
    images for ``textures``; ``seed`` the generation / split seed.
    """
    info = dataset_defaults(name)
    if info["needs_root"] and root is None:
        raise ValueError(
            f"the {name!r} dataset is read from files: pass root= (gmsop train --data-dir DIR); "
            "see the README section 'Datasets' for the expected layout"
        )
    if name == "textures":
        return Textures(split, n=n, image_size=size or info["size"], seed=seed, **kwargs)
    if name == "digits":
        return Digits(split, image_size=size or info["size"], seed=seed, **kwargs)
    if name == "imagenet64":
        return ImageNet64(root, split, **kwargs)
    return Places365(root, split, **kwargs)


def make_loader(name: str, dataset, batch_size: int, *, train: bool, seed: int = 0, **kwargs):
    """A ``DataLoader`` with the standard augmentation of dataset ``name``.

    Training: shuffled, flips (where the dataset allows), random crops, full
    batches only. Evaluation: fixed order, centre crop, every image.
    """
    info = dataset_defaults(name)
    options = dict(
        shuffle=train,
        train=train,
        seed=seed,
        flip=info["flip"] and train,
        crop=info["crop"],
        drop_last=train and len(dataset) >= batch_size,
    )
    options.update(kwargs)
    return DataLoader(dataset, batch_size, **options)
