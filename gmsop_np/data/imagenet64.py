"""Downsampled ImageNet, 64x64 and 32x32 (Chrabaszcz, Loshchilov & Hutter, 2017).

Files (download "Imagenet64x64" or "Imagenet32x32" from image-net.org and unpack)::

    train_data_batch_1 ... train_data_batch_10     (training, ~128k images each)
    val_data                                       (50,000 validation images)

``root`` is the folder that holds these files, or the folder the archives were
unpacked into: the reader also looks in the archives' own folders
``Imagenet{s}_train/``, ``Imagenet{s}_train_part1/``, ``Imagenet{s}_train_part2/``
and ``Imagenet{s}_val/`` (``s`` = 32 or 64).

Each file is either a NumPy archive (``train_data_batch_1.npz``, keys
``data`` and ``labels``) or the original pickled dict (``train_data_batch_1``
or ``.pkl``, keys ``data``, ``labels`` and optionally ``mean``). ``data`` holds
one row of ``3 s s`` uint8 per image (12,288 at 64x64, 3,072 at 32x32),
*channel-planar*: the ``s x s`` red values (row-major), then the green ones,
then the blue ones -- so a row reshapes directly to (3, s, s)
(``gmsop_np/data/batches.py``). ``labels`` are 1..1000; we return 0..999.

Memory: the whole 64x64 training set is 1.28M x 12,288 bytes = 15.7 GB (32x32: 3.9 GB).
Two ways to avoid holding it:

* default, *file at a time*: a shuffled epoch visits the 10 batch files in a
  random order and the images of each file in a random order, so only one
  file (~1.6 GB at 64x64) is in memory (``epoch_order``). The shuffle is therefore
  "block-wise", which is what the reference Lasagne/Theano code did too.
* ``cache_dir=...``: convert once to a ``.npy`` file of shape (N, 3, s, s)
  that is memory-mapped (the OS pages images in on demand); the epoch is then
  a full random permutation.

A pickle can execute code when it is loaded: only open files you downloaded yourself.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from .batches import check_labels, read_pickled_dict, rows_to_images
from .loader import DataFormatError

__all__ = [
    "DownsampledImageNet",
    "load_imagenet64",
    "load_imagenet32",
    "read_batch_file",
    "find_batch_file",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

# The usual ImageNet channel statistics, in 0..255 units.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
NUM_CLASSES = 1000


def _search_folders(root: str, image_size: int):
    """``root`` itself, then the folders the image-net.org archives unpack into."""
    prefix = f"Imagenet{image_size}"
    subfolders = (f"{prefix}_train", f"{prefix}_train_part1", f"{prefix}_train_part2", f"{prefix}_val")
    return [root] + [os.path.join(root, sub) for sub in subfolders]


def find_batch_file(root: str, base: str, image_size: int = 64) -> str:
    """The path of ``base`` (``base.npz``, ``base`` (pickle) or ``base.pkl``) in ``root`` or its archive folders."""
    folders = _search_folders(root, image_size)
    for folder in folders:
        for name in (base + ".npz", base, base + ".pkl", base + ".pickle"):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    searched = ", ".join(repr(f) for f in folders)
    raise FileNotFoundError(
        f"downsampled ImageNet {image_size}x{image_size}: no file {base}.npz, {base} or {base}.pkl in {searched}. "
        f"Download Imagenet{image_size}x{image_size} (train_data_batch_1..10 and val_data) from image-net.org "
        "and unpack it there, or pass --data-dir"
    )


def _read_raw(path: str, labels_only: bool = False):
    """The 'data' and 'labels' entries of a batch file (npz or pickle); clear errors."""
    if not path.endswith(".npz"):
        content = read_pickled_dict(path, ("data", "labels"))
        return content["data"], np.asarray(content["labels"])
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("data", "labels") if k not in archive.files]
            if missing:
                raise DataFormatError(
                    f"{path}: the archive has no {missing} entry "
                    f"(found {archive.files}); expected keys 'data' and 'labels'"
                )
            labels = archive["labels"]
            data = None if labels_only else archive["data"]
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as exc:
        raise DataFormatError(
            f"{path}: cannot read the file, it is truncated or corrupt "
            f"({type(exc).__name__}: {exc}). Download it again."
        ) from exc
    return data, np.asarray(labels)


def _check_labels(path: str, labels, n_rows=None):
    """Labels 1..1000 (the downsampled-ImageNet convention) -> int64 0..999."""
    return check_labels(path, labels, first=1, num_classes=NUM_CLASSES, n_rows=n_rows)


def read_batch_file(path: str, image_size: int = 64):
    """One batch file as (images uint8 (n, 3, s, s), labels int64 0..999), validated."""
    data, labels = _read_raw(path)
    images = rows_to_images(path, data, image_size)
    return images, _check_labels(path, labels, n_rows=len(images))


class DownsampledImageNet:
    """Downsampled ImageNet as a dataset for ``DataLoader`` (see the module docstring).

    Parameters
    ----------
    root : folder with ``train_data_batch_1..10`` and ``val_data``
    split : ``"train"`` or ``"val"``
    image_size : 64 or 32 (the side of the published images; 16 and 8 work too)
    cache_dir : when given, convert once to memory-mapped ``.npy`` files there
    train_files : how many training batch files to use (1..10; fewer for quick runs)
    """

    num_classes = NUM_CLASSES
    mean = np.asarray(IMAGENET_MEAN)
    std = np.asarray(IMAGENET_STD)

    def __init__(self, root: str, split: str = "train", image_size: int = 64, cache_dir=None, train_files: int = 10):
        if split not in ("train", "val"):
            raise ValueError(f"imagenet{image_size} has splits ['train', 'val'], not {split!r}")
        if not 1 <= train_files <= 10:
            raise ValueError(f"train_files must be 1..10, got {train_files}")
        self.root, self.split, self.image_size = root, split, image_size
        self.name = f"imagenet{image_size}/{split}"
        bases = [f"train_data_batch_{i}" for i in range(1, train_files + 1)] if split == "train" else ["val_data"]
        self.files = [find_batch_file(root, b, image_size) for b in bases]
        # Read only the labels now (cheap for .npz; a pickle must be read whole).
        per_file = [_check_labels(p, _read_raw(p, labels_only=True)[1]) for p in self.files]
        self.labels = np.concatenate(per_file)
        self.starts = np.cumsum([0] + [len(lab) for lab in per_file])  # file k holds starts[k]:starts[k+1]
        self._cached = (None, None)  # (file index, images) held in memory
        self._memmap = None
        if cache_dir is not None:
            self._memmap = self._build_cache(cache_dir)

    def __len__(self):
        return len(self.labels)

    @property
    def image_shape(self):
        return (3, self.image_size, self.image_size)

    def _file_images(self, k: int):
        if self._cached[0] != k:
            self._cached = (None, None)  # free the previous file first
            images, labels = read_batch_file(self.files[k], self.image_size)
            if len(labels) != self.starts[k + 1] - self.starts[k]:
                raise DataFormatError(f"{self.files[k]}: the file changed while it was in use")
            self._cached = (k, images)
        return self._cached[1]

    def load(self, indices):
        indices = np.asarray(indices)
        if self._memmap is not None:
            return np.asarray(self._memmap[indices]), self.labels[indices]
        file_of = np.searchsorted(self.starts, indices, side="right") - 1
        images = np.empty((len(indices),) + self.image_shape, dtype=np.uint8)
        for k in np.unique(file_of):  # a batch touches one file, rarely two
            chosen = file_of == k
            images[chosen] = self._file_images(k)[indices[chosen] - self.starts[k]]
        return images, self.labels[indices]

    def epoch_order(self, rng: np.random.Generator):
        """Shuffled order: files in random order, images shuffled within each file."""
        if self._memmap is not None:
            return rng.permutation(len(self))
        blocks = [
            self.starts[k] + rng.permutation(self.starts[k + 1] - self.starts[k])
            for k in rng.permutation(len(self.files))
        ]
        return np.concatenate(blocks)

    def _build_cache(self, cache_dir: str):
        """Write all images once to a .npy file and memory-map it (read-only)."""
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"imagenet{self.image_size}_{self.split}_{len(self.files)}files.npy")
        if not os.path.isfile(path):
            partial = path + ".partial.npy"
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(self),) + self.image_shape)
            for k in range(len(self.files)):
                out[self.starts[k] : self.starts[k + 1]] = self._file_images(k)
            out.flush()
            del out
            self._cached = (None, None)
            os.replace(partial, path)  # atomic: a crash never leaves a half cache
        cached = np.load(path, mmap_mode="r")
        if cached.shape != (len(self),) + self.image_shape:
            raise DataFormatError(
                f"{path}: cache has shape {cached.shape}, expected "
                f"{(len(self),) + self.image_shape}; delete it to rebuild"
            )
        return cached

    def __repr__(self):
        return (
            f"DownsampledImageNet({self.root!r}, split={self.split!r}, image_size={self.image_size}, "
            f"n={len(self)}, files={len(self.files)})"
        )


def load_imagenet64(root: str, split: str = "train", **kwargs) -> DownsampledImageNet:
    """Downsampled ImageNet 64x64, the paper's data set (rows of 12,288 values)."""
    return DownsampledImageNet(root, split, image_size=64, **kwargs)


def load_imagenet32(root: str, split: str = "train", **kwargs) -> DownsampledImageNet:
    """Downsampled ImageNet 32x32 (rows of 3,072 values; the same files otherwise)."""
    return DownsampledImageNet(root, split, image_size=32, **kwargs)
