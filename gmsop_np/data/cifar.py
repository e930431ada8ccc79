"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009), the "CIFAR-10/100 python version" downloads.

Layout, as ``cifar-10-python.tar.gz`` and ``cifar-100-python.tar.gz`` unpack::

    cifar-10-batches-py/data_batch_1 ... data_batch_5   training, 10,000 images each
    cifar-10-batches-py/test_batch                      10,000 test images
    cifar-10-batches-py/batches.meta                    class names (b"label_names")
    cifar-100-python/train                              50,000 training images
    cifar-100-python/test                               10,000 test images
    cifar-100-python/meta                               b"fine_label_names", b"coarse_label_names"

``root`` is that folder or its parent. Each file is a Python 2 pickle of a
dict with *bytes* keys (read with ``encoding="bytes"``, see
``gmsop_np/data/batches.py``): ``b"data"``, a (n, 3072) uint8 array of
channel-planar 32x32 rows (1,024 red values, then green, then blue; each plane
row-major), and the labels -- ``b"labels"`` 0..9 for CIFAR-10,
``b"fine_labels"`` 0..99 and ``b"coarse_labels"`` 0..19 for CIFAR-100.

CIFAR has no separate validation set: split ``"val"`` is the published test
set, as is usual. The images are small (50,000 x 3,072 bytes = 150 MB), so both
splits are held in memory (``ArrayDataset``). Normalisation uses the
per-channel mean and std of the 50,000 training images (the usual figures).
The meta file is optional: without it the classes have no names.

A pickle can execute code when it is loaded: only open files you downloaded yourself.
"""

from __future__ import annotations

import os

import numpy as np

from .batches import check_labels, read_pickled_dict, rows_to_images
from .loader import ArrayDataset

__all__ = ["load_cifar10", "load_cifar100", "find_cifar_folder", "read_cifar_file", "CIFAR_LAYOUTS"]

#: Per variant: the download, the folder it unpacks into, the files of each split, the
#: meta file and its name key per label kind, the number of classes per label kind,
#: and the training-set channel statistics (0..255 units).
CIFAR_LAYOUTS = {
    "cifar10": dict(
        archive="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        files={"train": [f"data_batch_{i}" for i in range(1, 6)], "val": ["test_batch"]},
        meta="batches.meta",
        names={"labels": "label_names"},
        num_classes={"labels": 10},
        mean=(125.3, 123.0, 113.9),
        std=(63.0, 62.1, 66.7),
    ),
    "cifar100": dict(
        archive="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        files={"train": ["train"], "val": ["test"]},
        meta="meta",
        names={"fine_labels": "fine_label_names", "coarse_labels": "coarse_label_names"},
        num_classes={"fine_labels": 100, "coarse_labels": 20},
        mean=(129.3, 124.1, 112.4),
        std=(68.2, 65.4, 70.4),
    ),
}


def find_cifar_folder(root: str, variant: str) -> str:
    """The folder holding the ``variant`` files: ``root`` itself or ``root/<archive folder>``."""
    layout = CIFAR_LAYOUTS[variant]
    first = layout["files"]["train"][0]
    for folder in (root, os.path.join(root, layout["folder"])):
        if os.path.isfile(os.path.join(folder, first)):
            return folder
    expected = ", ".join(layout["files"]["train"] + layout["files"]["val"] + [layout["meta"]])
    raise FileNotFoundError(
        f"{variant}: no {first!r} in {root!r} or in {os.path.join(root, layout['folder'])!r}. Download the "
        f"python version ({layout['archive']} from https://www.cs.toronto.edu/~kriz/cifar.html), "
        f"unpack it and pass --data-dir pointing at "
        f"{layout['folder']}/ (files {expected}) or at its parent"
    )


def read_cifar_file(path: str, label_key: str, num_classes: int):
    """One CIFAR batch file as (images uint8 (n, 3, 32, 32), labels int64 0..num_classes-1), validated."""
    content = read_pickled_dict(path, ("data", label_key))
    images = rows_to_images(path, content["data"], 32)
    labels = check_labels(path, content[label_key], first=0, num_classes=num_classes, n_rows=len(images), key=label_key)
    return images, labels


def _class_names(folder: str, layout: dict, label_key: str):
    path = os.path.join(folder, layout["meta"])
    if not os.path.isfile(path):
        return None
    names = read_pickled_dict(path, (layout["names"][label_key],))[layout["names"][label_key]]
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]


def _cifar(variant: str, root: str, split: str, label_key: str) -> ArrayDataset:
    layout = CIFAR_LAYOUTS[variant]
    if split not in layout["files"]:
        raise ValueError(f"{variant} has splits ['train', 'val'] ('val' is the test set), not {split!r}")
    if label_key not in layout["num_classes"]:
        raise ValueError(f"{variant} has the label kinds {sorted(layout['num_classes'])}, not {label_key!r}")
    folder = find_cifar_folder(root, variant)
    num_classes = layout["num_classes"][label_key]
    parts = []
    for base in layout["files"][split]:
        path = os.path.join(folder, base)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{variant}: {path!r} is missing; the folder must hold "
                f"{', '.join(layout['files']['train'] + layout['files']['val'])} as the archive unpacks"
            )
        parts.append(read_cifar_file(path, label_key, num_classes))
    return ArrayDataset(
        np.concatenate([images for images, _ in parts]),
        np.concatenate([labels for _, labels in parts]),
        num_classes=num_classes,
        mean=layout["mean"],
        std=layout["std"],
        name=f"{variant}/{split}",
        class_names=_class_names(folder, layout, label_key),
    )


def load_cifar10(root: str, split: str = "train") -> ArrayDataset:
    """CIFAR-10: 10 classes, 50,000 training and 10,000 test ("val") images of 32x32."""
    return _cifar("cifar10", root, split, "labels")


def load_cifar100(root: str, split: str = "train", labels: str = "fine") -> ArrayDataset:
    """CIFAR-100: 100 fine classes (``labels="fine"``) or 20 superclasses (``labels="coarse"``)."""
    if labels not in ("fine", "coarse"):
        raise ValueError(f"CIFAR-100 labels are 'fine' (100 classes) or 'coarse' (20), not {labels!r}")
    return _cifar("cifar100", root, split, f"{labels}_labels")
