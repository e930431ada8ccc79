"""Reading *batch files*: pickled dicts of image rows (CIFAR, downsampled ImageNet).

CIFAR-10/100 and downsampled ImageNet publish their images the same way: a
pickled dict whose ``data`` entry holds one row of ``3 x s x s`` uint8 values
per image, *channel-planar* -- the ``s x s`` red values (row-major), then the
green ones, then the blue ones -- so a row reshapes directly to ``(3, s, s)``;
and a list of integer labels beside it.

The CIFAR files are Python 2 pickles: in Python 3 they must be read with
``pickle.load(f, encoding="bytes")`` and their keys are then ``bytes``
(``b"data"``). ``read_pickled_dict`` reads both kinds and returns ``str`` keys.

Every problem raises ``DataFormatError`` naming the file and what is wrong.
A pickle can execute code when it is loaded: only open files you downloaded yourself.
"""

from __future__ import annotations

import pickle

import numpy as np

from .loader import DataFormatError

__all__ = ["read_pickled_dict", "rows_to_images", "check_labels"]


def read_pickled_dict(path: str, keys) -> dict:
    """The pickled dict in ``path`` with ``str`` keys; a DataFormatError unless it holds every key of ``keys``."""
    try:
        with open(path, "rb") as handle:
            # "bytes": Python 2 strings stay bytes (the only safe choice for the pickled NumPy arrays);
            # a Python 3 pickle is unaffected.
            content = pickle.load(handle, encoding="bytes")
    except (EOFError, pickle.UnpicklingError, ValueError, OSError, AttributeError, IndexError, ImportError) as exc:
        raise DataFormatError(
            f"{path}: cannot read the file, it is truncated or corrupt "
            f"({type(exc).__name__}: {exc}). Download it again."
        ) from exc
    if not isinstance(content, dict):
        raise DataFormatError(f"{path}: expected a pickled dict with keys {list(keys)}, got {type(content).__name__}")
    content = {key.decode("latin-1") if isinstance(key, bytes) else key: value for key, value in content.items()}
    missing = [key for key in keys if key not in content]
    if missing:
        raise DataFormatError(
            f"{path}: expected a pickled dict with keys {list(keys)}; {missing} missing "
            f"(found {sorted(map(str, content))})"
        )
    return content


def rows_to_images(path: str, data, image_size: int) -> np.ndarray:
    """Channel-planar rows (n, 3 s s) uint8 -> images (n, 3, s, s), validated."""
    data = np.asarray(data)
    row = 3 * image_size * image_size
    if data.ndim != 2 or data.shape[1] != row:
        raise DataFormatError(
            f"{path}: 'data' must have rows of {row} values (3 x {image_size} x "
            f"{image_size}, channel-planar), got shape {data.shape}"
        )
    if data.dtype != np.uint8:
        raise DataFormatError(f"{path}: 'data' must be uint8, got {data.dtype}")
    return data.reshape(len(data), 3, image_size, image_size)


def check_labels(path: str, labels, first: int, num_classes: int, n_rows=None, key: str = "labels") -> np.ndarray:
    """Labels ``first .. first + num_classes - 1`` (1-D integers, one per row) -> int64 ``0 .. num_classes - 1``."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DataFormatError(f"{path}: '{key}' must be a 1-D list, got shape {labels.shape}")
    if n_rows is not None and len(labels) != n_rows:
        raise DataFormatError(f"{path}: {n_rows} image rows but {len(labels)} {key}")
    if labels.size and labels.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: '{key}' must be integers, got dtype {labels.dtype}")
    last = first + num_classes - 1
    outside = (labels < first) | (labels > last)
    if np.any(outside):
        raise DataFormatError(
            f"{path}: '{key}' must lie in {first}..{last}, found {int(outside.sum())} outside, "
            f"e.g. {labels[outside][0]}"
        )
    return labels.astype(np.int64) - first
