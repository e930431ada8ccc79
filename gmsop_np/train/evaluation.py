"""Evaluation: the errors of a model on a loader, and of a saved checkpoint on its run's data."""

from __future__ import annotations

import os

from .. import functional as F
from ..backend import using_backend
from ..checkpoint import CheckpointError, load_checkpoint
from ..config import no_grad
from ..core import Tensor
from .build import build_run, make_run_loader
from .options import TrainConfig
from .rundir import RunDirectory

__all__ = ["evaluate", "evaluate_checkpoint"]


def evaluate(model, loader, topk=(1, 5)) -> dict:
    """Mean cross-entropy and top-k errors of ``model`` over ``loader`` (eval mode, no graph)."""
    total, loss_sum = 0, 0.0
    wrong = {k: 0.0 for k in topk}
    was_training = model.training
    model.eval()
    with no_grad():
        for x, y in loader:
            logits = model(Tensor(x))
            b = len(y)
            loss_sum += float(F.softmax_cross_entropy(logits, y).item()) * b
            for k in topk:
                wrong[k] += F.topk_error(logits, y, min(k, logits.shape[1])) * b
            total += b
    model.train(was_training)
    return {"loss": loss_sum / total, **{f"top{k}": wrong[k] / total for k in topk}}


def evaluate_checkpoint(run, checkpoint="best", data_dir=None, batch_size=None, backend=None) -> dict:
    """Top-1 / top-5 error and loss of a run's checkpoint on its validation set.

    ``run`` is a run directory (``checkpoint`` picks best.npz or last.npz) or the
    path of a checkpoint inside one. The network and the data are rebuilt from
    the run's ``config.json`` by the same ``build_run`` as in training.
    ``data_dir`` / ``backend`` override the run's. Writes ``eval_<name>.json``
    next to the checkpoint and returns the same dict.
    """
    if os.path.isfile(run):
        run_dir, path = os.path.dirname(run) or ".", run
    else:
        run_dir, path = run, os.path.join(run, f"{checkpoint}.npz")
    directory = RunDirectory(run_dir)
    options = dict(directory.read_config()["options"], out=run_dir, progress=False)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {path}; train first (gmsop train --out {run_dir})")
    if data_dir is not None:
        options["data_dir"] = data_dir
    if backend is not None:
        options["backend"] = backend
    config = TrainConfig.from_dict(options, source=directory.file("config.json"))
    built = build_run(config, train=False)
    try:
        load_checkpoint(path, built.model)
    except CheckpointError:
        raise  # already names the file and the problem
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path} does not fit the network of {directory.file('config.json')}: {exc}") from None
    with using_backend(config.backend):
        result = evaluate(built.model, make_run_loader(built, "val", batch_size))
    result.update(checkpoint=path, split="val", images=len(built.val_set))
    directory.write_json(f"eval_{os.path.splitext(os.path.basename(path))[0]}.json", result)
    return result
