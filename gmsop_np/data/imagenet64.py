"""Downsampled ImageNet 64x64 (Chrabaszcz, Loshchilov & Hutter, 2017).

Files (download "Imagenet64x64" from image-net.org and unpack into one folder)::

    <root>/train_data_batch_1 ... train_data_batch_10     (training, ~128k images each)
    <root>/val_data                                       (50,000 validation images)

Each file is either a NumPy archive (``train_data_batch_1.npz``, keys
``data`` and ``labels``) or the original pickled dict (``train_data_batch_1``
or ``.pkl``, keys ``data``, ``labels`` and optionally ``mean``). ``data`` holds
one row of 12,288 uint8 per image, *channel-planar*: the 4,096 red values of
the 64x64 image (row-major), then the green ones, then the blue ones -- so a
row reshapes directly to (3, 64, 64). ``labels`` are 1..1000; we return 0..999.

Memory: the whole training set is 1.28M x 12,288 bytes = 15.7 GB. Two ways
to avoid holding it:

* default, *file at a time*: a shuffled epoch visits the 10 batch files in a
  random order and the images of each file in a random order, so only one
  file (~1.6 GB) is in memory (``epoch_order``). The shuffle is therefore
  "block-wise", which is what the reference Lasagne/Theano code did too.
* ``cache_dir=...``: convert once to a ``.npy`` file of shape (N, 3, 64, 64)
  that is memory-mapped (the OS pages images in on demand); the epoch is then
  a full random permutation.

A pickle can execute code when it is loaded: only open files you downloaded yourself.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np

from .loader import DataFormatError

__all__ = ["ImageNet64", "read_batch_file", "find_batch_file", "IMAGENET_MEAN", "IMAGENET_STD"]

# The usual ImageNet channel statistics, in 0..255 units.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
NUM_CLASSES = 1000


def find_batch_file(root: str, base: str) -> str:
    """The path of ``base`` in ``root``: ``base.npz``, ``base`` (pickle) or ``base.pkl``."""
    for name in (base + ".npz", base, base + ".pkl", base + ".pickle"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"downsampled ImageNet: no file {base}.npz, {base} or {base}.pkl in {root!r}. "
        "Download Imagenet64x64 (train_data_batch_1..10 and val_data) from image-net.org "
        "and unpack it there, or pass --data-dir"
    )


def _read_raw(path: str, labels_only: bool = False):
    """The 'data' and 'labels' entries of a batch file (npz or pickle); clear errors."""
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                missing = [k for k in ("data", "labels") if k not in archive.files]
                if missing:
                    raise DataFormatError(
                        f"{path}: the archive has no {missing} entry "
                        f"(found {archive.files}); expected keys 'data' and 'labels'"
                    )
                labels = archive["labels"]
                data = None if labels_only else archive["data"]
        else:
            with open(path, "rb") as handle:
                content = pickle.load(handle)
            if not isinstance(content, dict) or "data" not in content or "labels" not in content:
                raise DataFormatError(
                    f"{path}: expected a pickled dict with keys 'data' and 'labels', "
                    f"got {type(content).__name__}"
                    + (f" with keys {sorted(content)}" if isinstance(content, dict) else "")
                )
            data, labels = content["data"], content["labels"]
    except DataFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, OSError, KeyError) as exc:
        raise DataFormatError(
            f"{path}: cannot read the file, it is truncated or corrupt "
            f"({type(exc).__name__}: {exc}). Download it again."
        ) from exc
    return data, np.asarray(labels)


def _check_labels(path: str, labels, n_rows=None):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataFormatError(f"{path}: 'labels' must be a 1-D list, got shape {labels.shape}")
    if n_rows is not None and len(labels) != n_rows:
        raise DataFormatError(f"{path}: {n_rows} image rows but {len(labels)} labels")
    if labels.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 1 or labels.max() > NUM_CLASSES):
        bad = labels[(labels < 1) | (labels > NUM_CLASSES)]
        raise DataFormatError(
            f"{path}: labels must lie in 1..{NUM_CLASSES} (the downsampled-ImageNet "
            f"convention), found {bad.size} outside, e.g. {bad[0]}"
        )
    return labels.astype(np.int64) - 1


def read_batch_file(path: str, image_size: int = 64):
    """One batch file as (images uint8 (n, 3, s, s), labels int64 0..999), validated."""
    data, labels = _read_raw(path)
    data = np.asarray(data)
    row = 3 * image_size * image_size
    if data.ndim != 2 or data.shape[1] != row:
        raise DataFormatError(
            f"{path}: 'data' must have rows of {row} values (3 x {image_size} x "
            f"{image_size}, channel-planar), got shape {data.shape}"
        )
    if data.dtype != np.uint8:
        raise DataFormatError(f"{path}: 'data' must be uint8, got {data.dtype}")
    labels = _check_labels(path, labels, n_rows=len(data))
    return data.reshape(len(data), 3, image_size, image_size), labels


class ImageNet64:
    """Downsampled ImageNet as a dataset for ``DataLoader`` (see the module docstring).

    Parameters
    ----------
    root : folder with ``train_data_batch_1..10`` and ``val_data``
    split : ``"train"`` or ``"val"``
    image_size : 64 (also works for the 32x32 and 16x16 variants)
    cache_dir : when given, convert once to memory-mapped ``.npy`` files there
    train_files : how many training batch files to use (1..10; fewer for quick runs)
    """

    num_classes = NUM_CLASSES
    mean = np.asarray(IMAGENET_MEAN)
    std = np.asarray(IMAGENET_STD)

    def __init__(self, root: str, split: str = "train", image_size: int = 64, cache_dir=None, train_files: int = 10):
        if split not in ("train", "val"):
            raise ValueError(f"imagenet64 has splits ['train', 'val'], not {split!r}")
        if not 1 <= train_files <= 10:
            raise ValueError(f"train_files must be 1..10, got {train_files}")
        self.root, self.split, self.image_size = root, split, image_size
        self.name = f"imagenet64/{split}"
        bases = [f"train_data_batch_{i}" for i in range(1, train_files + 1)] if split == "train" else ["val_data"]
        self.files = [find_batch_file(root, b) for b in bases]
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
        return f"ImageNet64({self.root!r}, split={self.split!r}, n={len(self)}, files={len(self.files)})"
