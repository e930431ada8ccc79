"""Places365-Standard (Zhou et al.), resized to 100x100 as in the paper.

Layout (the "small images (256x256)" download from places2.csail.mit.edu)::

    <root>/places365_train_standard.txt   lines "/a/airfield/00000001.jpg 0"
    <root>/places365_val.txt              lines "Places365_val_00000001.jpg 165"
    <root>/data_256/a/airfield/00000001.jpg ...
    <root>/val_256/Places365_val_00000001.jpg ...

Each line of a file list is ``<path relative to the image folder> <label 0..364>``.
Images are read with Pillow, converted to RGB and resized to 100x100; training
takes a random 96x96 crop plus a horizontal flip, evaluation the centre 96x96
crop (set ``crop=96`` on the ``DataLoader``; ``gmsop train`` does it).

Every listed image must exist: the constructor checks them all and names the
list file, the line and the missing path (nothing is skipped silently).
Needs Pillow: ``pip install 'gmsop_np[data]'``.
"""

from __future__ import annotations

import os

import numpy as np

from .imagenet64 import IMAGENET_MEAN, IMAGENET_STD
from .loader import DataFormatError

__all__ = ["Places365", "read_file_list"]

NUM_CLASSES = 365
DEFAULT_LAYOUT = {
    "train": ("places365_train_standard.txt", "data_256"),
    "val": ("places365_val.txt", "val_256"),
}


def _require_pillow():
    try:
        from PIL import Image  # noqa: PLC0415  (optional extra)
    except ImportError as exc:
        raise ImportError(
            "the 'places365' data set needs Pillow to read images, which is not installed. "
            "Install the data extra: pip install 'gmsop_np[data]'"
        ) from exc
    return Image


def read_file_list(path: str, num_classes: int = NUM_CLASSES):
    """Parse a ``path label`` list: (relative paths, int64 labels, line numbers)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Places365 file list {path!r} does not exist; pass --data-dir pointing at the folder that holds it"
        )
    paths, labels, line_numbers = [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue  # blank lines (e.g. a final newline) carry no entry
            if len(fields) != 2:
                raise DataFormatError(f"{path}, line {number}: expected '<image path> <label>', got {line.strip()!r}")
            try:
                label = int(fields[1])
            except ValueError:
                raise DataFormatError(f"{path}, line {number}: the label {fields[1]!r} is not an integer") from None
            if not 0 <= label < num_classes:
                raise DataFormatError(f"{path}, line {number}: label {label} is outside 0..{num_classes - 1}")
            paths.append(fields[0].lstrip("/"))
            labels.append(label)
            line_numbers.append(number)
    if not paths:
        raise DataFormatError(f"{path}: the file list has no entries")
    return paths, np.asarray(labels, dtype=np.int64), line_numbers


class Places365:
    """Places365-Standard as a dataset for ``DataLoader`` (images uint8 (n, 3, 100, 100)).

    Parameters
    ----------
    root : folder with the file lists and the image folders (see the module docstring)
    split : ``"train"`` or ``"val"``
    file_list, image_dir : override the default names inside ``root``
    image_size : side of the stored (resized) images, 100 in the paper
    check_files : verify at construction that every listed image exists
    """

    num_classes = NUM_CLASSES
    mean = np.asarray(IMAGENET_MEAN)
    std = np.asarray(IMAGENET_STD)

    def __init__(
        self,
        root: str,
        split: str = "train",
        file_list=None,
        image_dir=None,
        image_size: int = 100,
        check_files: bool = True,
    ):
        if split not in DEFAULT_LAYOUT:
            raise ValueError(f"places365 has splits {sorted(DEFAULT_LAYOUT)}, not {split!r}")
        list_name, dir_name = DEFAULT_LAYOUT[split]
        self.file_list = file_list or os.path.join(root, list_name)
        self.image_dir = image_dir or os.path.join(root, dir_name)
        self.split, self.image_size, self.name = split, int(image_size), f"places365/{split}"
        self.paths, self.labels, self.line_numbers = read_file_list(self.file_list)
        if check_files:
            self._check_files()

    def _check_files(self):
        missing = [i for i, p in enumerate(self.paths) if not os.path.isfile(os.path.join(self.image_dir, p))]
        if missing:
            first = missing[0]
            raise DataFormatError(
                f"{self.file_list}: {len(missing)} listed image(s) do not exist under {self.image_dir!r}, "
                f"e.g. line {self.line_numbers[first]}: {self.paths[first]!r}. Fix the list or the folder "
                "(no entry is skipped silently)"
            )

    def __len__(self):
        return len(self.labels)

    @property
    def image_shape(self):
        return (3, self.image_size, self.image_size)

    def read_image(self, i: int):
        """Image ``i`` as uint8 (3, s, s): RGB, resized with bilinear filtering."""
        Image = _require_pillow()
        path = os.path.join(self.image_dir, self.paths[i])
        try:
            with Image.open(path) as img:
                img = img.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
                pixels = np.asarray(img, dtype=np.uint8)
        except FileNotFoundError:
            raise DataFormatError(
                f"{self.file_list}, line {self.line_numbers[i]}: the image {path!r} does not exist"
            ) from None
        except OSError as exc:  # PIL.UnidentifiedImageError and truncated files are OSErrors
            raise DataFormatError(
                f"{path} (listed in {self.file_list}, line {self.line_numbers[i]}): cannot decode the image ({exc})"
            ) from exc
        return pixels.transpose(2, 0, 1)

    def load(self, indices):
        indices = np.asarray(indices)
        images = np.stack([self.read_image(int(i)) for i in indices])  # one file read per image
        return images, self.labels[indices]

    def __repr__(self):
        return f"Places365({self.file_list!r}, n={len(self)})"
