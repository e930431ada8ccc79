"""Datasets and loaders for the training application.

==============  ==========================================================  =========
name            what                                                        needs
==============  ==========================================================  =========
``textures``    built-in, generated from a seed; 4 classes that differ only  nothing
                in channel correlations (``gmsop_np/data/textures.py``)
``multimodal``  built-in; 4 second-order classes, each a mixture of two      nothing
                covariance patterns (``gmsop_np/data/multimodal.py``)
``hues``        built-in; 4 first-order classes, each a union of three       nothing
                object hues (``gmsop_np/data/hues.py``)
``digits``      scikit-learn's 8x8 digits, upsampled, 3 channels             ``[data]``
``cifar10``     CIFAR-10, python version (``gmsop_np/data/cifar.py``)        the files
``cifar100``    CIFAR-100, python version, fine labels                       the files
``imagenet32``  downsampled ImageNet 32x32 (Chrabaszcz et al. 2017)          the files
``imagenet64``  downsampled ImageNet 64x64, the paper's data set             the files
``places365``   Places365-Standard, resized to 100x100, 96x96 crops          files, ``[data]``
==============  ==========================================================  =========

``get_dataset(name, split, root)`` builds one; ``make_loader(dataset, ...)``
wraps it in a ``DataLoader`` with the dataset's standard augmentation.
"""

from __future__ import annotations

from .cifar import load_cifar10, load_cifar100
from .digits import load_digits
from .hues import hue_class_names, load_hues, make_hues
from .imagenet64 import DownsampledImageNet, load_imagenet32, load_imagenet64, read_batch_file
from .loader import ArrayDataset, DataFormatError, DataLoader, augment_batch, normalize
from .multimodal import MULTIMODAL_CLASS_AXES, load_multimodal, make_multimodal, multimodal_class_names
from .places365 import Places365, read_file_list
from .textures import TEXTURE_CLASS_AXES, load_textures, make_textures, texture_class_names

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
    "load_textures",
    "make_textures",
    "texture_class_names",
    "TEXTURE_CLASS_AXES",
    "load_multimodal",
    "make_multimodal",
    "multimodal_class_names",
    "MULTIMODAL_CLASS_AXES",
    "load_hues",
    "make_hues",
    "hue_class_names",
    "load_digits",
    "load_cifar10",
    "load_cifar100",
    "DownsampledImageNet",
    "load_imagenet32",
    "load_imagenet64",
    "read_batch_file",
    "Places365",
    "read_file_list",
]

# Per dataset: the input size the network sees, the standard augmentation and the training defaults.
#   size: side of the network input; flip: random horizontal flip (training);
#   pad: zero-pad and randomly crop back (training; the CIFAR recipe);
#   crop: random crop in training / centre crop in evaluation (None: whole image);
#   needs_root: read from files in a folder (get_dataset's root); the others are built in;
#   generated: made from the seed, as many images as asked for (get_dataset's n);
#   epochs, batch_size, lr_scale: what `gmsop train` uses when not told. The small built-in
#   sets get a short demo budget, batch 32 (more steps per epoch on a CPU) and half the
#   paper's learning rate (the paper's rates were tuned for batch 256 and are unstable at 32);
#   the real ones the paper's full schedule (epochs None) at batch 256.
_DEMO = dict(batch_size=32, lr_scale=0.5)
_PAPER = dict(epochs=None, batch_size=256, lr_scale=1.0)
DATASETS = {
    "textures": dict(size=32, flip=True, pad=0, crop=None, needs_root=False, generated=True, epochs=5, **_DEMO),
    "multimodal": dict(size=32, flip=True, pad=0, crop=None, needs_root=False, generated=True, epochs=20, **_DEMO),
    "hues": dict(size=32, flip=True, pad=0, crop=None, needs_root=False, generated=True, epochs=8, **_DEMO),
    # a mirrored digit is not a digit
    "digits": dict(size=32, flip=False, pad=0, crop=None, needs_root=False, generated=False, epochs=8, **_DEMO),
    "cifar10": dict(size=32, flip=True, pad=4, crop=None, needs_root=True, generated=False, **_PAPER),
    "cifar100": dict(size=32, flip=True, pad=4, crop=None, needs_root=True, generated=False, **_PAPER),
    # downsampled ImageNet: flips only, as in the paper
    "imagenet32": dict(size=32, flip=True, pad=0, crop=None, needs_root=True, generated=False, **_PAPER),
    "imagenet64": dict(size=64, flip=True, pad=0, crop=None, needs_root=True, generated=False, **_PAPER),
    # 100x100 images, 96x96 crops
    "places365": dict(size=96, flip=True, pad=0, crop=96, needs_root=True, generated=False, **_PAPER),
}

_GENERATED = {"textures": load_textures, "multimodal": load_multimodal, "hues": load_hues}
_READERS = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "imagenet32": load_imagenet32,
    "imagenet64": load_imagenet64,
    "places365": Places365,
}


def dataset_defaults(name: str) -> dict:
    """The registry entry of dataset ``name`` (a copy); a ValueError listing the names otherwise."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return dict(DATASETS[name])


def get_dataset(name: str, split: str = "train", root=None, *, seed: int = 0, size=None, n=None, **kwargs):
    """Build dataset ``name`` for ``split`` ('train' or 'val').

    ``root`` is the data folder (the file-based sets); ``size`` the image side
    for the generated / upsampled sets (textures, multimodal, hues, digits);
    ``n`` the number of images of a generated set; ``seed`` the generation /
    split seed. Extra keyword arguments go to the dataset's constructor.
    """
    info = dataset_defaults(name)
    if info["needs_root"] and root is None:
        raise ValueError(
            f"the {name!r} dataset is read from files: pass root= (gmsop train --data-dir DIR); "
            "see the README section 'Datasets' for the expected layout"
        )
    if info["generated"]:
        return _GENERATED[name](split, n=n, image_size=size or info["size"], seed=seed, **kwargs)
    if name == "digits":
        return load_digits(split, image_size=size or info["size"], seed=seed, **kwargs)
    return _READERS[name](root, split, **kwargs)


def make_loader(name: str, dataset, batch_size: int, *, train: bool, seed: int = 0, **kwargs):
    """A ``DataLoader`` with the standard augmentation of dataset ``name``.

    Training: shuffled, flips (where the dataset allows), pad-and-crop (CIFAR),
    random crops, full batches only. Evaluation: fixed order, centre crop, every image.
    """
    info = dataset_defaults(name)
    options = dict(
        shuffle=train,
        train=train,
        seed=seed,
        flip=info["flip"] and train,
        pad=info["pad"],
        crop=info["crop"],
        drop_last=train and len(dataset) >= batch_size,
    )
    options.update(kwargs)
    return DataLoader(dataset, batch_size, **options)
