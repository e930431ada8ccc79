"""Mini-batches for training and evaluation.

A *dataset* here is anything with

* ``len(ds)`` -- number of images,
* ``ds.load(indices) -> (images, labels)``: host arrays, images ``(n, C, H, W)``
  (uint8 or float) and integer labels ``(n,)``,
* ``ds.num_classes``, ``ds.mean`` / ``ds.std`` (per channel, in the units of
  the stored images) and optionally ``ds.epoch_order(rng)`` -- the order in
  which to visit the images in a shuffled epoch (default: a full random
  permutation; ``DownsampledImageNet`` visits one batch file at a time).

``DataLoader`` turns a dataset into batches: seeded shuffling, random
horizontal flip, optional pad-and-crop / random crop (centre crop at
evaluation), per-channel normalisation; batches are prepared in a background
thread and handed out as arrays of the active backend (NumPy or CuPy). Images
travel to the backend as stored (uint8: a quarter of the bytes of float32) and
are normalised there, in the loader's dtype.

Reproducibility and resuming: the visiting order of epoch ``e`` is drawn from
``default_rng([seed, e])`` and the augmentation of batch ``b`` of epoch ``e``
from ``default_rng([seed, e, b])``. So an epoch is a pure function of
``(seed, epoch)``, the background thread cannot change the result, and resuming
needs only ``{"epoch", "batch"}`` (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from ..backend import default_xp, get_array_module

__all__ = ["DataFormatError", "ArrayDataset", "DataLoader", "augment_batch", "normalize", "channel_constants"]


class DataFormatError(ValueError):
    """A data file is malformed (wrong shape, labels out of range, truncated, missing...).

    The message always names the file and the problem; nothing is skipped silently.
    """


class ArrayDataset:
    """Images and labels held in memory (or memory-mapped).

    Parameters
    ----------
    images : array (N, C, H, W), uint8 or float
    labels : int array (N,), values in ``0 .. num_classes-1``
    num_classes : number of classes
    mean, std : per-channel statistics used for normalisation (computed from
        ``images`` when not given)
    name : shown in logs and errors
    """

    def __init__(self, images, labels, num_classes: int, mean=None, std=None, name: str = "arrays", class_names=None):
        images, labels = images, np.asarray(labels)
        if images.ndim != 4:
            raise ValueError(f"{name}: images must be (N, C, H, W), got shape {images.shape}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{name}: {images.shape[0]} images but labels have shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataFormatError(
                f"{name}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
            )
        self.images, self.labels = images, labels.astype(np.int64)
        self.num_classes, self.name = int(num_classes), name
        self.class_names = class_names
        if mean is None or std is None:
            mean, std = channel_stats(images)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)

    def __len__(self):
        return len(self.labels)

    @property
    def image_shape(self):
        return tuple(self.images.shape[1:])

    def load(self, indices):
        indices = np.asarray(indices)
        return np.asarray(self.images[indices]), self.labels[indices]

    def __repr__(self):
        return (
            f"{type(self).__name__}({self.name!r}, n={len(self)}, image_shape={self.image_shape}, "
            f"num_classes={self.num_classes})"
        )


def channel_stats(images, max_images: int = 10000):
    """Per-channel mean and std of (N, C, H, W) images (on at most ``max_images`` of them)."""
    step = max(1, len(images) // max_images)
    sample = np.asarray(images[::step], dtype=np.float64)
    mean = sample.mean(axis=(0, 2, 3))
    std = sample.std(axis=(0, 2, 3))
    return mean, np.maximum(std, 1e-8)


def augment_batch(images, rng: np.random.Generator, *, flip: bool = False, pad: int = 0, crop=None, train: bool = True):
    """Random flip / pad-and-crop / crop of a batch (n, C, H, W), vectorised.

    * ``flip``: each image is mirrored left-right with probability 1/2 (training only).
    * ``pad``: zero-pad by ``pad`` pixels, then crop back to (H, W) at a random offset
      (training only; the CIFAR recipe -- the paper uses flips only).
    * ``crop``: output size ``(h, w)`` smaller than (H, W): a random crop when
      ``train``, the centre crop otherwise (Places365: 100x100 -> 96x96).
    """
    n, c, height, width = images.shape
    if train and pad > 0:
        padded = np.zeros((n, c, height + 2 * pad, width + 2 * pad), dtype=images.dtype)
        padded[:, :, pad : pad + height, pad : pad + width] = images
        images = _crop(padded, (height, width), rng, random=True)
    if crop is not None:
        crop = (crop, crop) if np.isscalar(crop) else tuple(crop)
        if crop[0] > images.shape[2] or crop[1] > images.shape[3]:
            raise ValueError(f"crop {crop} is larger than the images {images.shape[2:]}")
        images = _crop(images, crop, rng, random=train)
    if train and flip:
        mirrored = rng.random(n) < 0.5
        images = np.where(mirrored[:, None, None, None], images[..., ::-1], images)
    return images


def _crop(images, size, rng, random: bool):
    """Crop (n, C, H, W) to (n, C, h, w): per-image random offsets, or the centre."""
    n, _, height, width = images.shape
    h, w = size
    if not random:
        top, left = (height - h) // 2, (width - w) // 2
        return images[:, :, top : top + h, left : left + w]
    top = rng.integers(0, height - h + 1, size=n)
    left = rng.integers(0, width - w + 1, size=n)
    rows = top[:, None] + np.arange(h)  # (n, h)
    cols = left[:, None] + np.arange(w)  # (n, w)
    sample = np.arange(n)[:, None, None]
    # Advanced indices separated by a slice put their dims first: (n, h, w, C).
    cropped = images[sample, :, rows[:, :, None], cols[:, None, :]]
    return np.ascontiguousarray(cropped.transpose(0, 3, 1, 2))


def channel_constants(mean, std, dtype=np.float32, xp=np):
    """``(shift, scale)``, each (1, C, 1, 1) in ``dtype`` on backend ``xp``: normalise as (x - shift) * scale."""
    mean = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
    return xp.asarray(mean.astype(dtype)), xp.asarray((1.0 / std).astype(dtype))


def _normalise(images, shift, scale, dtype):
    """(x - shift) * scale in ``dtype``: two array operations on the images' backend."""
    return ((images - shift) * scale).astype(dtype, copy=False)


def normalize(images, mean, std, dtype=np.float32):
    """(x - mean_c) / std_c per channel, computed and returned in ``dtype`` on the images' backend."""
    xp = get_array_module(images)
    return _normalise(images, *channel_constants(mean, std, dtype, xp), dtype)


class DataLoader:
    """Iterate over a dataset in mini-batches ``(x, y)`` on the active backend.

    Parameters
    ----------
    dataset : see the module docstring
    batch_size : images per batch
    shuffle : visit the images in a new seeded random order every epoch
    train : apply the random augmentations (flip/pad/random crop); when False,
        only the deterministic centre crop
    seed : seeds the order and the augmentation (see the module docstring)
    flip, pad, crop : augmentation options (``augment_batch``)
    drop_last : drop a final incomplete batch (training usually does)
    dtype : floating dtype of ``x``
    prefetch : batches prepared ahead by the background thread (0: no thread)

    Yields ``x`` (B, C, h, w) float and ``y`` (B,) int64, as arrays of the
    backend that is active when iteration starts (``gmsop_np.backend``).
    Each completed pass increments ``epoch``.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        train: bool = False,
        seed: int = 0,
        flip: bool = False,
        pad: int = 0,
        crop=None,
        drop_last: bool = False,
        dtype=np.float32,
        prefetch: int = 2,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset!r} is empty")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.train, self.seed = shuffle, train, int(seed)
        self.flip, self.pad, self.crop = flip, int(pad), crop
        self.drop_last, self.dtype, self.prefetch = drop_last, np.dtype(dtype), int(prefetch)
        self.epoch = 0  # completed passes
        self.batch = 0  # batches already handed out in the current pass (for resuming)
        self._channel_constants = {}  # (backend, dtype) -> (shift, scale) on that backend

    # ----- bookkeeping -------------------------------------------------------------
    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def state_dict(self):
        return {"epoch": int(self.epoch), "batch": int(self.batch), "seed": int(self.seed)}

    def load_state_dict(self, state):
        self.epoch, self.batch, self.seed = int(state["epoch"]), int(state["batch"]), int(state["seed"])

    def order(self, epoch: int):
        """The index order of pass ``epoch`` (a pure function of seed and epoch)."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, epoch])
        if hasattr(self.dataset, "epoch_order"):
            return np.asarray(self.dataset.epoch_order(rng))
        return rng.permutation(n)

    def make_batch(self, indices, epoch: int, batch: int):
        """Load and augment one batch on the host, NOT normalised: (images, labels int64).

        Integer images (uint8) keep their dtype, so the copy to the device moves a quarter of the
        bytes of float32; float images are cast to the loader's dtype. ``__iter__`` normalises
        them on the backend.
        """
        images, labels = self.dataset.load(indices)
        rng = np.random.default_rng([self.seed, epoch, batch, 1])
        images = augment_batch(images, rng, flip=self.flip, pad=self.pad, crop=self.crop, train=self.train)
        if images.dtype.kind == "f":
            images = images.astype(self.dtype, copy=False)
        return np.ascontiguousarray(images), labels.astype(np.int64)

    def _constants(self, xp):
        """The normalisation constants on backend ``xp``: copied there once, then reused."""
        key = (xp.__name__, self.dtype)
        if key not in self._channel_constants:
            self._channel_constants[key] = channel_constants(self.dataset.mean, self.dataset.std, self.dtype, xp)
        return self._channel_constants[key]

    def _host_batches(self, epoch: int, start: int):
        order = self.order(epoch)
        for b in range(start, len(self)):
            yield b, self.make_batch(order[b * self.batch_size : (b + 1) * self.batch_size], epoch, b)

    # ----- iteration -----------------------------------------------------------------
    def __iter__(self):
        xp = default_xp()  # read in the calling thread: the backend setting is thread-local
        shift, scale = self._constants(xp)
        epoch, start = self.epoch, self.batch
        batches = self._host_batches(epoch, start)
        source = _Prefetcher(batches, self.prefetch) if self.prefetch > 0 else batches
        try:
            for b, (images, y) in source:
                self.batch = b + 1
                yield _normalise(xp.asarray(images), shift, scale, self.dtype), xp.asarray(y)
        finally:
            if isinstance(source, _Prefetcher):
                source.close()
        # Reached only when the pass ran to its end (not on break / exceptions).
        self.epoch, self.batch = epoch + 1, 0


class _Prefetcher:
    """Run a generator in a background thread, ``depth`` items ahead.

    Exceptions raised by the generator are re-raised in the consuming thread.
    ``close()`` stops the thread (used when the consumer stops early).
    """

    def __init__(self, generator, depth: int):
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(generator,), daemon=True, name="gmsop-data-loader")
        self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, generator):
        try:
            for item in generator:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(("error", exc))

    def __iter__(self):
        while True:
            kind, item = self._queue.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5.0)
