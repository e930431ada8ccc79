"""The training application: configuration, the paper's recipe, the training loop.

    from gmsop_np.train import TrainConfig, Trainer
    trainer = Trainer(TrainConfig(head="gmsop", epochs=6, out="runs/demo"))
    summary = trainer.fit()

``gmsop train`` (``gmsop_np/cli.py``) is a thin layer over this module.

The objective (SPEC §2): ``loss = CE_mean(logits, y) + L_B / B``, where
``L_B`` is the head's unscaled balance loss (Eq. 4; ``None`` for heads without a
gate). SGD with momentum 0.9 and the preset's weight decay, a multi-step
learning-rate schedule (÷10 per stage).

A run directory holds

* ``config.json`` -- every option, plus what was derived from them (lr, schedule,
  weight decay, parameter count, dataset sizes);
* ``metrics.csv`` -- one row per epoch (``METRIC_COLUMNS``);
* ``usage.csv`` -- per epoch, the samples each mixture component received (paper Fig. 2);
* ``last.npz`` (every epoch, and on Ctrl-C) and ``best.npz`` (lowest val top-1 error).

Resuming (``Trainer(config, resume=True)`` / ``gmsop train --resume``) restores
the model, the optimizer's momentum, the schedule position, the loader's epoch
and batch position and the state of every random generator inside the model
(dropout, gating noise). Data order and augmentation are pure functions of
(seed, epoch, batch), so on NumPy a resumed run reproduces the metrics of an
uninterrupted one exactly (up to the wall-clock columns).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import functional as F
from .backend import using_backend
from .checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .config import no_grad
from .core import Tensor
from .data import get_dataset, make_loader
from .optim import SGD, MultiStepLR
from .presets import get_preset

__all__ = [
    "TrainConfig",
    "Trainer",
    "NonFiniteLossError",
    "paper_recipe",
    "scale_schedule",
    "build_network",
    "evaluate",
    "evaluate_checkpoint",
    "make_dataset",
    "default_batch_size",
    "METRIC_COLUMNS",
    "ARCH_CHOICES",
    "model_rngs",
]

#: Columns of metrics.csv (``images_per_s`` and ``seconds`` are wall-clock, all others reproducible).
METRIC_COLUMNS = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "train_top5",
    "balance_loss",
    "usage_cv",
    "val_loss",
    "val_top1",
    "val_top5",
    "images_per_s",
    "seconds",
]
TIMING_COLUMNS = ("images_per_s", "seconds")

#: "tiny" is a small ResNet for CPU demos; the others are the paper's networks (Table 1).
ARCH_CHOICES = ("tiny", "resnet18", "resnet50", "wrn36_2")

# The tiny network: one basic block per stage, widths 8/16/32/32, stem 8, and
# narrow heads, so that ``gmsop train`` runs in minutes on two CPU cores.
TINY_BACKBONE = dict(blocks=(1, 1, 1, 1), widths=(8, 16, 32, 32), stem_width=8)
TINY_HEAD_KWARGS = {
    "gmsop": dict(hidden=32, out=16),
    "avesop": dict(hidden=32, out=16),
    "psrsop": dict(hidden=32, out=16),
    "gmgap": dict(width=64),
    "avegap": dict(width=64),
    "gapxd": dict(dim=64),
}

# The paper's recipes (SPEC §3 and §3.2 of the paper): head -> (initial lr, epochs per
# stage), lr / 10 after each stage, batch 256, momentum 0.9.
_GAP_RECIPE = (0.075, (50, 15, 10))  # GAP, ResNet-18-512d, Ave-GAP, GM-GAP
PAPER_RECIPES = {
    "gap": _GAP_RECIPE,
    "gap512": _GAP_RECIPE,
    "gapxd": _GAP_RECIPE,
    "avegap": _GAP_RECIPE,
    "gmgap": _GAP_RECIPE,
    "srsop": (0.15, (20, 5, 5, 5)),
    "psrsop": (0.15, (20, 5, 5, 5)),  # SR-SOP, parametric SR-SOP
    "avesop": (0.1, (40, 10, 5, 5)),
    "gmsop": (0.1, (40, 10, 5, 5)),  # Ave-SOP-16, GM-SOP-16-8
}

# Epoch budgets when --epochs is not given: a short demo on the small built-in
# sets, the paper's full schedule on the real ones.
# On those sets the batch is 32 (more steps per epoch on a CPU) and the initial lr half the
# paper's (0.05 for GM-SOP): the paper's 0.1 was tuned for batch 256 and is unstable at 32.
DEMO_EPOCHS = {"textures": 5, "digits": 8}
DEMO_BATCH_SIZE = {"textures": 32, "digits": 32}
DEMO_LR_FACTOR = {"textures": 0.5, "digits": 0.5}


def default_batch_size(dataset: str) -> int:
    """32 on the small built-in sets (more steps per epoch on a CPU), 256 (the paper's) otherwise."""
    return DEMO_BATCH_SIZE.get(dataset, 256)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad update."""


def paper_recipe(head: str):
    """(initial learning rate, epochs per stage) of the paper for ``head``.

    Heads without a recipe in the paper take the GM-SOP one when second-order,
    the GAP one otherwise.
    """
    from .nn.heads import get_head  # noqa: PLC0415

    if head in PAPER_RECIPES:
        return PAPER_RECIPES[head]
    return PAPER_RECIPES["gmsop"] if get_head(head).second_order else _GAP_RECIPE


def scale_schedule(stages, epochs: int):
    """Scale a stage list to a budget of ``epochs``, keeping its proportions.

    ``scale_schedule((40, 10, 5, 5), 12) -> [8, 2, 1, 1]``. Trailing stages that
    would get less than about half an epoch are dropped first
    (``scale_schedule((40, 10, 5, 5), 3) -> [2, 1]``); then the stage boundaries
    are rounded, so the stages sum to ``epochs``, each at least 1.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    stages = [float(s) for s in stages]
    for m in range(len(stages), 0, -1):
        exact = np.array(stages[:m]) * epochs / sum(stages[:m])
        if m == 1 or (exact.min() >= 0.55 and m <= epochs):
            break
    # Round the stage *boundaries* (not the lengths): the total is exact and the proportions hold.
    boundaries = np.floor(np.cumsum(exact) + 0.5).astype(int)
    scaled = np.diff(np.concatenate([[0], boundaries]))
    while scaled.min() < 1:  # a stage rounded away: borrow from the longest
        scaled[int(np.argmin(scaled))] += 1
        scaled[int(np.argmax(scaled))] -= 1
    return [int(s) for s in scaled]


@dataclass
class TrainConfig:
    """Every option of a training run (``gmsop train --help`` lists the same)."""

    arch: str = "tiny"
    head: str = "gmsop"
    num_components: int | None = None  # N of GM heads (None: the head's default, 16)
    k: int | None = None  # K of GM heads (default 8) / components of Ave heads (default 16)
    alpha: float = 100.0  # balance-loss weight (Eq. 4)
    preset: str = "paper"
    dataset: str = "textures"
    data_dir: str | None = None
    train_size: int | None = None  # textures: number of generated training images
    val_size: int | None = None
    image_size: int | None = None  # textures / digits: image side (default per dataset)
    epochs: int | None = None  # None: the paper's total for the head
    schedule: list | None = None  # epochs per stage; None: the paper's, scaled to `epochs`
    lr: float | None = None  # None: the paper's initial lr for the head (halved on the demo sets)
    batch_size: int | None = None  # None: default_batch_size(dataset)
    momentum: float = 0.9
    weight_decay: float | None = None  # None: from the preset
    backend: str = "numpy"
    dtype: str = "float32"
    seed: int = 0
    out: str | None = None
    head_kwargs: dict = field(default_factory=dict)
    progress: bool = True

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**values)

    def resolved(self):
        """(lr, schedule, weight_decay) after filling in the paper's defaults."""
        base_lr, stages = paper_recipe(self.head)
        epochs = self.epochs if self.epochs is not None else DEMO_EPOCHS.get(self.dataset)
        if self.schedule is not None:
            schedule = [int(s) for s in self.schedule]
            if self.epochs is not None and sum(schedule) != self.epochs:
                raise ValueError(
                    f"--schedule {schedule} sums to {sum(schedule)} epochs but --epochs is "
                    f"{self.epochs}; give one of them"
                )
        else:
            schedule = scale_schedule(stages, epochs) if epochs is not None else list(stages)
        lr = self.lr if self.lr is not None else base_lr * DEMO_LR_FACTOR.get(self.dataset, 1.0)
        wd = self.weight_decay if self.weight_decay is not None else get_preset(self.preset).weight_decay
        return float(lr), schedule, float(wd)


def _mixture_kwargs(config: TrainConfig) -> dict:
    """Head keyword arguments from N, K, alpha (only those the head takes; None: head default)."""
    if config.head in ("gmsop", "gmgap"):
        kwargs = dict(num_components=config.num_components, k=config.k, alpha=config.alpha)
    elif config.head in ("avesop", "avegap"):
        kwargs = dict(k=config.k)
    else:
        kwargs = {}
    return {key: value for key, value in kwargs.items() if value is not None}


def build_network(config: TrainConfig, num_classes: int, input_size: int):
    """The model of ``config``: a paper network (``build_model``) or the ``tiny`` CPU network."""
    from .models import ResNet, build_model  # noqa: PLC0415

    kwargs = _mixture_kwargs(config)
    if config.arch == "tiny":
        kwargs.update(TINY_HEAD_KWARGS.get(config.head, {}))
        kwargs.update(config.head_kwargs)
        return ResNet(
            **TINY_BACKBONE,
            head=config.head,
            num_classes=num_classes,
            input_size=input_size,
            preset=config.preset,
            seed=config.seed,
            **kwargs,
        )
    if config.arch not in ARCH_CHOICES:
        raise ValueError(f"unknown arch {config.arch!r}; choose one of {ARCH_CHOICES}")
    kwargs.update(config.head_kwargs)
    return build_model(
        config.arch,
        config.head,
        num_classes=num_classes,
        input_size=input_size,
        preset=config.preset,
        seed=config.seed,
        **kwargs,
    )


def make_dataset(config: TrainConfig, split: str):
    """The ``split`` ('train' / 'val') of the configured dataset."""
    extra = {}
    if config.dataset == "textures":
        extra["n"] = config.train_size if split == "train" else config.val_size
    return get_dataset(config.dataset, split, root=config.data_dir, seed=config.seed, size=config.image_size, **extra)


def _cast_model(model, dtype) -> None:
    """Convert every parameter and buffer of ``model`` to ``dtype`` in place."""
    for m in model.modules():
        for p in m._parameters.values():
            p.data = p.data.astype(dtype)
        for name, b in m._buffers.items():
            if b is not None and b.dtype.kind == "f":
                m._buffers[name] = b.astype(dtype)


def model_rngs(model) -> dict:
    """Every ``numpy.random.Generator`` held by a module (dropout, gating noise), by path."""
    found = {}
    for path, module in model.named_modules():
        for name, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found[f"{path}:{name}" if path else f":{name}"] = value
    return found


def _usage_counts(model):
    counts = getattr(model.head, "usage_counts", None)
    return None if counts is None else np.asarray(counts, dtype=np.int64)


def _reset_usage(model) -> None:
    if hasattr(model.head, "reset_usage"):
        model.head.reset_usage()


def usage_cv(counts) -> float:
    """Coefficient of variation std/mean (population std) of per-component counts; nan without a mixture."""
    if counts is None or len(counts) < 2 or np.sum(counts) == 0:
        return float("nan")
    counts = np.asarray(counts, dtype=np.float64)
    return float(counts.std() / counts.mean())


def evaluate(model, loader, topk=(1, 5)):
    """Mean cross-entropy and top-k errors of ``model`` over ``loader`` (eval mode, no graph)."""
    total, loss_sum = 0, 0.0
    wrong = {k: 0.0 for k in topk}
    model.eval()
    with no_grad():
        for x, y in loader:
            logits = model(Tensor(x))
            b = len(y)
            loss_sum += float(F.softmax_cross_entropy(logits, y).item()) * b
            for k in topk:
                wrong[k] += F.topk_error(logits, y, min(k, logits.shape[1])) * b
            total += b
    return {"loss": loss_sum / total, **{f"top{k}": wrong[k] / total for k in topk}}


class _EpochStats:
    """Running sums of one training epoch (saved in checkpoints for mid-epoch resumes)."""

    FIELDS = ("images", "steps", "loss_sum", "top1_sum", "top5_sum", "balance_sum", "seconds")

    def __init__(self, values=None):
        for f in self.FIELDS:
            setattr(self, f, 0.0)
        for f, v in (values or {}).items():
            setattr(self, f, float(v))

    def state(self):
        return {f: float(getattr(self, f)) for f in self.FIELDS}


class Trainer:
    """Trains one configuration into one run directory (see the module docstring).

    Parameters
    ----------
    config : TrainConfig
    resume : continue from ``<out>/last.npz`` (the stored ``config.json`` is used)
    datasets : optional ``(train, val)`` dataset objects instead of ``get_dataset``
    callbacks : functions ``f(trainer, epoch, step)`` called after every training step
    """

    def __init__(self, config: TrainConfig, resume: bool = False, datasets=None, callbacks=()):
        if resume:
            if config.out is None:
                raise ValueError("--resume needs the run directory (--out DIR)")
            config = self._stored_config(config.out, progress=config.progress)
        if config.batch_size is None:
            config.batch_size = default_batch_size(config.dataset)
        self.config, self.callbacks = config, list(callbacks)
        self.out = config.out or _fresh_run_dir(config)
        config.out = self.out
        self.lr, self.schedule, self.weight_decay = config.resolved()
        self.epochs = sum(self.schedule)
        self.dtype = np.dtype(config.dtype)
        self._stop_requested = False

        self.train_set, self.val_set = datasets if datasets is not None else self._datasets()
        self.num_classes = self.train_set.num_classes
        input_size = self._input_size()
        self.model = build_network(config, self.num_classes, input_size)
        if self.dtype != np.float32:
            _cast_model(self.model, self.dtype)
        if config.backend == "cupy":
            self.model.to_gpu()
        self.optimizer = SGD(
            self.model.parameters(), lr=self.lr, momentum=config.momentum, weight_decay=self.weight_decay
        )
        self.scheduler = MultiStepLR(self.optimizer, self.schedule, base_lr=self.lr)
        self.train_loader = make_loader(
            config.dataset, self.train_set, config.batch_size, train=True, seed=config.seed, dtype=self.dtype
        )
        self.val_loader = make_loader(
            config.dataset, self.val_set, config.batch_size, train=False, seed=config.seed, dtype=self.dtype
        )
        self.history, self.usage_history, self.best_val = [], [], float("inf")
        self.partial = _EpochStats()
        os.makedirs(self.out, exist_ok=True)
        if resume:
            self._restore(os.path.join(self.out, "last.npz"))
        else:
            if os.path.exists(os.path.join(self.out, "last.npz")):
                raise FileExistsError(
                    f"{self.out} already holds a run (last.npz); continue it with --resume or choose another --out"
                )
            self._write_config(input_size)

    # ----- setup -------------------------------------------------------------------------------
    @staticmethod
    def _stored_config(out, progress=True):
        path = os.path.join(out, "config.json")
        if not os.path.isfile(path) or not os.path.isfile(os.path.join(out, "last.npz")):
            raise FileNotFoundError(
                f"cannot resume: {out} has no config.json and last.npz (start the run without --resume)"
            )
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)["options"]
        stored["out"], stored["progress"] = out, progress
        return TrainConfig.from_dict(stored)

    def _datasets(self):
        return make_dataset(self.config, "train"), make_dataset(self.config, "val")

    def _input_size(self):
        from .data import dataset_defaults  # noqa: PLC0415

        crop = dataset_defaults(self.config.dataset)["crop"] if self.config.dataset in ("places365",) else None
        return int(crop or self.train_set.image_shape[-1])

    def _write_config(self, input_size):
        info = {
            "options": self.config.to_dict(),
            "derived": {
                "lr": self.lr,
                "schedule": self.schedule,
                "epochs": self.epochs,
                "weight_decay": self.weight_decay,
                "num_classes": self.num_classes,
                "input_size": input_size,
                "num_parameters": self.model.num_parameters(),
                "representation_dim": getattr(self.model.head, "representation_dim", None),
                "train_images": len(self.train_set),
                "val_images": len(self.val_set),
                "objective": "CE_mean + balance_loss / batch_size",
            },
        }
        _atomic_write(os.path.join(self.out, "config.json"), json.dumps(info, indent=2) + "\n")

    # ----- checkpoints -------------------------------------------------------------------------
    def _extra(self):
        return {
            "loader": self.train_loader.state_dict(),
            "history": self.history,
            "usage_history": self.usage_history,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "partial": self.partial.state(),
            "usage_counts": None if _usage_counts(self.model) is None else _usage_counts(self.model).tolist(),
        }

    def save(self, name="last.npz"):
        rngs = {path: gen.bit_generator.state for path, gen in model_rngs(self.model).items()}
        path = os.path.join(self.out, name)
        save_checkpoint(path, self.model, self.optimizer, self.scheduler, rng_state=rngs, extra=self._extra())
        return path

    def _restore(self, path):
        info = load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        gens = model_rngs(self.model)
        for key, state in (info["rng_state"] or {}).items():
            gens[key].bit_generator.state = state
        extra = info["extra"]
        self.train_loader.load_state_dict(extra["loader"])
        self.history, self.usage_history = list(extra["history"]), list(extra["usage_history"])
        self.best_val = float("inf") if extra["best_val"] is None else float(extra["best_val"])
        self.partial = _EpochStats(extra["partial"])
        if extra["usage_counts"] is not None and hasattr(self.model.head, "mixture"):
            self.model.head.mixture.usage_counts = np.asarray(extra["usage_counts"], dtype=np.int64)

    # ----- the loop ----------------------------------------------------------------------------
    def request_stop(self):
        """Finish the current step, save ``last.npz`` and return from ``fit`` (what Ctrl-C does)."""
        self._stop_requested = True

    def fit(self, until_epoch=None):
        """Train until epoch ``until_epoch`` (default: the end of the schedule).

        Returns a summary dict (``status``: "finished", "paused" or "interrupted").
        """
        until = self.epochs if until_epoch is None else min(int(until_epoch), self.epochs)
        with using_backend(self.config.backend), _InterruptHandler(self):
            while self.train_loader.epoch < until:
                epoch = self.train_loader.epoch
                if not self._train_epoch(epoch):
                    self.save()
                    print(
                        f"\ninterrupted at epoch {epoch + 1}, step {self.train_loader.batch}: saved "
                        f"{os.path.join(self.out, 'last.npz')}; continue with `gmsop train --out {self.out} "
                        "--resume`",
                        file=sys.stderr,
                    )
                    return self.summary("interrupted")
                self._end_epoch(epoch)
        return self.summary("finished" if self.train_loader.epoch >= self.epochs else "paused")

    def _train_epoch(self, epoch) -> bool:
        """One pass over the training set; False when a stop was requested."""
        from tqdm import tqdm  # noqa: PLC0415  (optional: the `app` extra)

        model, stats = self.model, self.partial
        model.train()
        if self.train_loader.batch == 0:
            _reset_usage(model)
        bar = tqdm(
            total=len(self.train_loader),
            initial=self.train_loader.batch,
            unit="batch",
            desc=f"epoch {epoch + 1}/{self.epochs}",
            disable=not self.config.progress,
            leave=False,
            dynamic_ncols=True,
        )
        tick = time.perf_counter()
        try:
            for x, y in self.train_loader:
                step = self.train_loader.batch  # 1-based index of this batch in the epoch
                b = len(y)
                logits = model(Tensor(x))
                ce = F.softmax_cross_entropy(logits, y)
                balance = model.balance_loss
                loss = ce if balance is None else ce + balance / b
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    self._non_finite(epoch, step, ce, balance)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()

                now = time.perf_counter()
                stats.seconds += now - tick
                tick = now
                stats.images += b
                stats.steps += 1
                stats.loss_sum += loss_value * b
                stats.top1_sum += F.topk_error(logits, y, 1) * b
                stats.top5_sum += F.topk_error(logits, y, min(5, logits.shape[1])) * b
                stats.balance_sum += 0.0 if balance is None else float(balance.item()) * b
                bar.update(1)
                bar.set_postfix(
                    loss=f"{stats.loss_sum / stats.images:.3f}",
                    err=f"{stats.top1_sum / stats.images:.3f}",
                    bal=f"{stats.balance_sum / stats.images:.3g}",
                    ips=f"{stats.images / max(stats.seconds, 1e-9):.0f}",
                    refresh=False,
                )
                for callback in self.callbacks:
                    callback(self, epoch, step)
                if self._stop_requested:
                    return False
        finally:
            bar.close()
        return True

    def _non_finite(self, epoch, step, ce, balance):
        parts = f"cross-entropy {float(ce.item())!r}"
        if balance is not None:
            parts += f", balance loss {float(balance.item())!r}"
        last = os.path.join(self.out, "last.npz")
        kept = f"the last good checkpoint {last} is kept" if os.path.exists(last) else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, step {step} ({parts}); stopped before updating the "
            f"weights, {kept}. Try a smaller --lr or --dtype float64."
        )

    def _end_epoch(self, epoch):
        stats, n = self.partial, max(self.partial.images, 1)
        lr = self.optimizer.lr
        val = evaluate(self.model, self.val_loader)
        counts = _usage_counts(self.model)
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": stats.loss_sum / n,
            "train_top1": stats.top1_sum / n,
            "train_top5": stats.top5_sum / n,
            "balance_loss": stats.balance_sum / n,
            "usage_cv": usage_cv(counts),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "images_per_s": stats.images / max(stats.seconds, 1e-9),
            "seconds": stats.seconds,
        }
        self.history.append(row)
        if counts is not None:
            self.usage_history.append([epoch + 1] + counts.tolist())
        self.scheduler.step()
        self.partial = _EpochStats()
        improved = row["val_top1"] < self.best_val
        if improved:
            self.best_val = row["val_top1"]
        path = self.save()
        if improved:
            _atomic_copy(path, os.path.join(self.out, "best.npz"))
        self._write_tables()
        print(
            f"epoch {epoch + 1}/{self.epochs}  lr {lr:.3g}  train loss {row['train_loss']:.4f} "
            f"err {row['train_top1']:.3f}  val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.3f} "
            f"top-5 {row['val_top5']:.3f}  bal {row['balance_loss']:.3g}  {row['images_per_s']:.0f} img/s  "
            f"{row['seconds']:.1f}s",
            file=sys.stderr if self.config.progress else sys.stdout,
            flush=True,
        )

    def _write_tables(self):
        _write_csv(
            os.path.join(self.out, "metrics.csv"),
            METRIC_COLUMNS,
            [[r[c] for c in METRIC_COLUMNS] for r in self.history],
        )
        if self.usage_history:
            n = len(self.usage_history[0]) - 1
            _write_csv(
                os.path.join(self.out, "usage.csv"),
                ["epoch"] + [f"component_{i}" for i in range(n)],
                self.usage_history,
            )

    def summary(self, status):
        last = self.history[-1] if self.history else {}
        return {
            "status": status,
            "out": self.out,
            "epochs_done": len(self.history),
            "epochs": self.epochs,
            "val_top1": last.get("val_top1"),
            "val_top5": last.get("val_top5"),
            "best_val_top1": None if math.isinf(self.best_val) else self.best_val,
            "seconds": float(sum(r["seconds"] for r in self.history)),
            "chance_top1": 1.0 - 1.0 / self.num_classes,
        }


def evaluate_checkpoint(run, checkpoint="best", data_dir=None, batch_size=None, backend=None, split="val"):
    """Top-1 / top-5 error of a run's checkpoint on its validation set.

    ``run`` is a run directory (``checkpoint`` picks best.npz or last.npz) or the
    path of a checkpoint inside one. The network and the data are rebuilt from
    the run's ``config.json``. Writes ``eval_<name>.json`` next to the checkpoint.
    """
    if os.path.isfile(run):
        run_dir, path = os.path.dirname(run) or ".", run
    else:
        run_dir, path = run, os.path.join(run, f"{checkpoint}.npz")
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{run_dir} has no config.json: is it a run directory written by gmsop train?")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {path}; train first (gmsop train --out {run_dir})")
    with open(config_path, encoding="utf-8") as handle:
        info = json.load(handle)
    options = dict(info["options"], out=run_dir, progress=False)
    if data_dir is not None:
        options["data_dir"] = data_dir
    if backend is not None:
        options["backend"] = backend
    config = TrainConfig.from_dict(options)
    val_set = make_dataset(config, split)
    model = build_network(config, val_set.num_classes, info["derived"]["input_size"])
    if np.dtype(config.dtype) != np.float32:
        _cast_model(model, np.dtype(config.dtype))
    load_checkpoint(path, model)
    if config.backend == "cupy":
        model.to_gpu()
    loader = make_loader(
        config.dataset,
        val_set,
        batch_size or config.batch_size,
        train=False,
        seed=config.seed,
        dtype=np.dtype(config.dtype),
    )
    with using_backend(config.backend):
        result = evaluate(model, loader)
    result.update(checkpoint=path, split=split, images=len(val_set))
    name = os.path.splitext(os.path.basename(path))[0]
    _atomic_write(os.path.join(run_dir, f"eval_{name}.json"), json.dumps(result, indent=2) + "\n")
    return result


class _InterruptHandler:
    """During ``fit``: the first Ctrl-C asks the trainer to stop after the current step
    (it then saves ``last.npz``); a second Ctrl-C interrupts immediately."""

    def __init__(self, trainer):
        self.trainer, self.previous = trainer, None

    def _handle(self, signum, frame):
        if self.trainer._stop_requested:
            raise KeyboardInterrupt
        print("\nCtrl-C: finishing this step and saving a checkpoint (press again to abort)", file=sys.stderr)
        self.trainer.request_stop()

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def _fresh_run_dir(config: TrainConfig) -> str:
    """runs/<dataset>-<arch>-<head>, with -2, -3, ... appended if it already exists."""
    base = os.path.join("runs", f"{config.dataset}-{config.arch}-{config.head}")
    path, i = base, 1
    while os.path.exists(path):
        i += 1
        path = f"{base}-{i}"
    return path


def _atomic_write(path, text):
    atomic_write(path, lambda f: f.write(text), text=True)


def _atomic_copy(src, dst):
    with open(src, "rb") as source:
        atomic_write(dst, lambda f: shutil.copyfileobj(source, f))


def _write_csv(path, header, rows):
    def write(handle):
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])

    atomic_write(path, write, text=True)
