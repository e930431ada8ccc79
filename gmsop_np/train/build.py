"""Build what a run needs from its options: datasets, the network, loaders.

``build_run`` is the one place that turns a ``TrainConfig`` into data and a
model; the trainer and ``evaluate_checkpoint`` both use it, so a checkpoint is
always evaluated on exactly the network it was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import using_backend
from ..data import dataset_defaults, get_dataset, make_loader
from ..models import build_model
from .options import Plan, TrainConfig, head_options, resolve

__all__ = ["Run", "build_run", "build_network", "make_dataset", "make_run_loader"]


@dataclass
class Run:
    """A config with everything built from it. ``train_set`` is None when only evaluating."""

    config: TrainConfig
    plan: Plan
    train_set: object
    val_set: object
    model: object
    input_size: int

    @property
    def num_classes(self) -> int:
        return self.val_set.num_classes


def make_dataset(config: TrainConfig, split: str):
    """The ``split`` ('train' / 'val') of the configured dataset."""
    size = config.train_size if split == "train" else config.val_size
    extra = {} if size is None else {"n": size}
    return get_dataset(config.dataset, split, root=config.data_dir, seed=config.seed, size=config.image_size, **extra)


def build_network(config: TrainConfig, num_classes: int, input_size: int):
    """The network of ``config``, built on its backend (parameters created there) in its dtype."""
    with using_backend(config.backend):
        model = build_model(
            config.arch,
            config.head,
            num_classes=num_classes,
            input_size=input_size,
            preset=config.preset,
            seed=config.seed,
            **head_options(config),
        )
        if config.dtype != "float32":
            model.astype(config.dtype)
    return model


def build_run(config: TrainConfig, *, datasets=None, train: bool = True) -> Run:
    """Validate ``config`` and build its datasets (or use ``datasets=(train, val)``) and network.

    ``train=False`` builds only the validation set (evaluation).
    """
    config.validate()
    if datasets is not None:
        train_set, val_set = datasets
    else:
        train_set = make_dataset(config, "train") if train else None
        val_set = make_dataset(config, "val")
    crop = dataset_defaults(config.dataset)["crop"]
    input_size = int(crop or val_set.image_shape[-1])
    model = build_network(config, val_set.num_classes, input_size)
    return Run(config, resolve(config), train_set, val_set, model, input_size)


def make_run_loader(run: Run, split: str, batch_size: int | None = None):
    """The loader of ``split`` with the dataset's standard augmentation (training: shuffled, augmented)."""
    training = split == "train"
    dataset = run.train_set if training else run.val_set
    return make_loader(
        run.config.dataset,
        dataset,
        batch_size or run.plan.batch_size,
        train=training,
        seed=run.config.seed,
        dtype=np.dtype(run.config.dtype),
    )
