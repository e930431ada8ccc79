"""Evaluation: the errors of a model on a loader, and of a saved checkpoint on its run's data."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

from .. import functional as F
from .._checks import check_choice
from ..backend import default_xp, using_backend
from ..checkpoint import CheckpointError, load_checkpoint
from ..config import no_grad
from ..core import Tensor
from .build import build_run, make_run_loader
from .console import Console, format_duration, progress_bar
from .meters import DeviceSums
from .options import TrainConfig, model_label
from .rundir import RunDirectory

__all__ = ["evaluate", "evaluate_checkpoint"]


def evaluate(model, loader, console: Console | None = None, label: str = "evaluating") -> dict:
    """Mean cross-entropy, top-1 and top-5 error of ``model`` over ``loader`` (eval mode, no graph).

    The sums stay on the device and are read once, at the end (``DeviceSums``).
    ``console`` draws a progress line (``label`` 12/32 batches) while it runs.
    Returns ``{"loss", "top1", "top5", "images", "seconds"}``; with five classes or
    fewer, ``top5`` is top-min(5, classes) (0 when every class is within reach).
    """
    sums, total = DeviceSums(default_xp()), 0
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    batches = iter(loader)
    with no_grad(), contextlib.closing(batches):
        for i, (x, y) in enumerate(batches, 1):
            logits = model(Tensor(x))
            sums.add(F.softmax_cross_entropy(logits, y), logits, y)
            total += len(y)
            if console is not None:
                elapsed = time.perf_counter() - start
                left = elapsed / i * (len(loader) - i)
                text = f"{label} {progress_bar(i, len(loader))} {i}/{len(loader)} | {format_duration(left)} left"
                console.show(text, force=i == 1)
    model.train(was_training)
    values = sums.read()
    return {
        "loss": values["loss_sum"] / total,
        "top1": values["top1_sum"] / total,
        "top5": values["top5_sum"] / total,
        "images": total,
        "seconds": time.perf_counter() - start,
    }


def evaluate_checkpoint(run, checkpoint="best", data_dir=None, batch_size=None, backend=None, progress=False) -> dict:
    """Top-1 / top-5 error and loss of a run's checkpoint on its validation set.

    ``run`` is a run directory (``checkpoint`` picks best.npz or last.npz) or the
    path of a checkpoint inside one. The network and the data are rebuilt from
    the run's ``config.json`` by the same ``build_run`` as in training.
    ``data_dir`` / ``backend`` / ``batch_size`` override the run's; ``progress``
    draws a progress line on a terminal. Writes ``eval_<name>.json`` next to the
    checkpoint and returns the same dict.
    """
    check_choice(checkpoint, "checkpoint", ("best", "last"))
    run = os.fspath(run)
    if os.path.isfile(run):
        run_dir, path = os.path.dirname(run) or ".", run
    else:
        run_dir, path = run, os.path.join(run, f"{checkpoint}.npz")
    directory = RunDirectory(run_dir)
    config = _stored_config(directory)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {path}; train first (gmsop train --out {run_dir})")
    overrides = {"data_dir": data_dir, "backend": backend, "batch_size": batch_size}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    config.validate()  # the file's options passed: an error here is about an override
    built = build_run(config, train=False)
    try:
        load_checkpoint(path, built.model)
    except CheckpointError:
        raise  # already names the file and the problem
    except (KeyError, ValueError):
        raise ValueError(
            f"{path} does not fit the network that {directory.file('config.json')} describes "
            f"({model_label(config)}, {built.num_classes} classes): it was saved by another architecture, head "
            "or dataset; evaluate it with the run directory it was trained in"
        ) from None
    console = Console(progress=progress)
    try:
        with using_backend(config.backend):
            result = evaluate(built.model, make_run_loader(built, "val"), console)
    finally:
        console.clear()
    result.update(checkpoint=path, split="val", num_classes=built.num_classes)
    directory.write_json(f"eval_{os.path.splitext(os.path.basename(path))[0]}.json", result)
    return result


def _stored_config(directory: RunDirectory) -> TrainConfig:
    """The config.json of a run, checked: an option that is not valid names the file.

    (Its backend is checked later, with the overrides: a GPU run may be evaluated on a CPU.)
    """
    source = directory.file("config.json")
    options = dict(directory.read_config()["options"], out=directory.path, progress=False)
    config = TrainConfig.from_dict(options, source=source)
    try:
        dataclasses.replace(config, backend="numpy").validate()
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{source}: {exc}") from None
    return config
