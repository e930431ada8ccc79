"""The training loop: ``Trainer`` (fit, checkpoints, resume) and ``evaluate``.

One training step minimises the objective ``F.objective(logits, labels,
model.balance_loss)`` = ``CE_mean + L_B / B`` (``L_B`` is the head's unscaled
balance loss, Eq. 4; ``None`` for heads without a gate) with SGD (momentum,
the preset's weight decay) and a multi-step learning-rate schedule (÷10 per stage).

Resuming (``Trainer.resume(run_dir)`` / ``gmsop train --out DIR --resume``)
restores the model, the optimizer's momentum, the schedule position, the
loader's epoch and batch position and the state of every random generator
inside the model (dropout, gating noise). Data order and augmentation are pure
functions of (seed, epoch, batch), so on NumPy a resumed run reproduces the
metrics of an uninterrupted one exactly (up to the wall-clock columns).
"""

from __future__ import annotations

import math
import signal
import sys
import time

from .. import functional as F
from ..backend import to_cpu, using_backend
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import debug
from ..core import Tensor
from ..nn.mixture import usage_cv
from ..optim import SGD, MultiStepLR
from .build import build_run, make_run_loader
from .evaluation import evaluate
from .options import RESUMABLE, TrainConfig, model_label
from .rundir import RunDirectory, fresh_run_path

__all__ = ["Trainer", "NonFiniteLossError", "forward_objective", "update"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before the bad update."""


def forward_objective(model, x, y):
    """The forward half of a training step: ``(logits, loss, balance_loss)`` for a batch ``x``, ``y``
    (arrays on the model's backend); ``loss = F.objective(logits, y, model.balance_loss)``."""
    logits = model(Tensor(x))
    balance = model.balance_loss
    return logits, F.objective(logits, y, balance), balance


def update(optimizer, loss) -> None:
    """The backward half: gradients of ``loss`` and one optimizer step."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


class _EpochStats:
    """Running sums of one training epoch (saved in checkpoints for mid-epoch resumes)."""

    FIELDS = ("images", "steps", "loss_sum", "top1_sum", "top5_sum", "balance_sum", "seconds")

    def __init__(self, values=None):
        for f in self.FIELDS:
            setattr(self, f, 0.0)
        for f, v in (values or {}).items():
            setattr(self, f, float(v))

    def state(self) -> dict:
        return {f: float(getattr(self, f)) for f in self.FIELDS}


class Trainer:
    """Trains one configuration into one run directory.

    Parameters
    ----------
    config : TrainConfig (a fresh run; continue an existing one with ``Trainer.resume``)
    datasets : optional ``(train, val)`` dataset objects instead of the configured dataset
    callbacks : functions ``f(trainer, epoch, step)`` called after every training step
    """

    def __init__(self, config: TrainConfig, datasets=None, callbacks=(), *, _resuming=False):
        self.config, self.callbacks = config, list(callbacks)
        if config.out is None:
            config.out = fresh_run_path(config.dataset, config.arch, config.head)
        self.run_dir = RunDirectory(config.out)
        if not _resuming and self.run_dir.holds_a_run():
            raise FileExistsError(
                f"{config.out} already holds a run (last.npz); continue it with --resume or choose another --out"
            )
        run = build_run(config, datasets=datasets)
        self.run, self.model, self.plan = run, run.model, run.plan
        self.train_set, self.val_set, self.num_classes = run.train_set, run.val_set, run.num_classes
        self.optimizer = SGD(
            self.model.parameters(), lr=self.plan.lr, momentum=config.momentum, weight_decay=self.plan.weight_decay
        )
        self.scheduler = MultiStepLR(self.optimizer, self.plan.schedule, base_lr=self.plan.lr)
        self.train_loader = make_run_loader(run, "train")
        self.val_loader = make_run_loader(run, "val")
        self.history, self.usage_history, self.best_val = [], [], math.inf
        self.partial = _EpochStats()
        self._stop_requested = False
        self.run_dir.create()
        if not _resuming:
            self.run_dir.write_config(config.to_dict(), self._derived())

    @classmethod
    def resume(cls, out: str, changes: dict | None = None, datasets=None, callbacks=()) -> Trainer:
        """Continue the run in ``out`` from its ``last.npz``.

        ``changes`` may set the options in ``RESUMABLE`` (``backend``, ``progress``,
        ``debug``, ``data_dir``, and ``epochs``: a larger budget extends the last stage
        of the schedule, i.e. training continues at the final learning rate); any
        other option given with a value different from the run's is a ValueError naming it.
        """
        run_dir = RunDirectory(out)
        if not run_dir.holds_a_run():
            raise FileNotFoundError(
                f"cannot resume: {out} has no config.json and last.npz (start the run without --resume)"
            )
        stored = run_dir.read_config()
        options = dict(stored["options"], out=out)
        for name, value in (changes or {}).items():
            if name not in RESUMABLE and options.get(name) != value:
                raise ValueError(
                    f"--{name.replace('_', '-')} cannot change when resuming (the run has {options.get(name)!r}, "
                    f"given {value!r}); only {', '.join('--' + r.replace('_', '-') for r in RESUMABLE)} can"
                )
        schedule = list(stored["derived"].get("schedule") or [])
        epochs = (changes or {}).get("epochs")
        options.update({k: v for k, v in (changes or {}).items() if k in RESUMABLE and k != "epochs"})
        if epochs is not None and schedule:
            if epochs < sum(schedule):
                raise ValueError(
                    f"--epochs {epochs} is fewer than the run's {sum(schedule)}; a run can only be extended"
                )
            schedule[-1] += epochs - sum(schedule)  # the extra epochs run at the final learning rate
            options.update(schedule=schedule, epochs=None)
        config = TrainConfig.from_dict(options, source=run_dir.file("config.json"))
        trainer = cls(config, datasets=datasets, callbacks=callbacks, _resuming=True)
        trainer._restore()
        trainer.run_dir.write_config(config.to_dict(), trainer._derived())
        return trainer

    @property
    def out(self) -> str:
        return self.run_dir.path

    @property
    def epochs(self) -> int:
        return self.plan.epochs

    def _derived(self) -> dict:
        return {
            "model": model_label(self.config),
            **self.plan.to_dict(),
            "num_classes": self.num_classes,
            "input_size": self.run.input_size,
            "num_parameters": self.model.num_parameters(),
            "representation_dim": getattr(self.model.head, "representation_dim", None),
            "train_images": len(self.train_set),
            "val_images": len(self.val_set),
            "objective": "CE_mean + balance_loss / batch_size",
        }

    # ----- checkpoints -------------------------------------------------------------------------
    def save(self, path=None) -> str:
        """Write a checkpoint (default: ``last.npz``) with everything needed to resume."""
        rngs = {name: gen.bit_generator.state for name, gen in self.model.named_generators()}
        extra = {
            "loader": self.train_loader.state_dict(),
            "history": self.history,
            "usage_history": self.usage_history,
            "best_val": None if math.isinf(self.best_val) else self.best_val,
            "partial": self.partial.state(),
        }
        return save_checkpoint(
            path or self.run_dir.last, self.model, self.optimizer, self.scheduler, rng_state=rngs, extra=extra
        )

    def _restore(self) -> None:
        info = load_checkpoint(self.run_dir.last, self.model, self.optimizer, self.scheduler)
        generators = dict(self.model.named_generators())
        for name, state in (info["rng_state"] or {}).items():
            generators[name].bit_generator.state = state
        extra = info["extra"]
        self.train_loader.load_state_dict(extra["loader"])
        self.history, self.usage_history = list(extra["history"]), list(extra["usage_history"])
        self.best_val = math.inf if extra["best_val"] is None else float(extra["best_val"])
        self.partial = _EpochStats(extra["partial"])
        if self.plan.epochs > self.scheduler.total_epochs:  # an extended run (see ``resume``)
            self.scheduler.extend_last_stage(self.plan.epochs - self.scheduler.total_epochs)

    # ----- the loop ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, save ``last.npz`` and return from ``fit`` (what Ctrl-C does)."""
        self._stop_requested = True

    def fit(self, until_epoch=None) -> dict:
        """Train until epoch ``until_epoch`` (default: the end of the schedule).

        Returns a summary dict (``status``: "finished", "paused" or "interrupted").
        """
        until = self.epochs if until_epoch is None else min(int(until_epoch), self.epochs)
        with using_backend(self.config.backend), debug(self.config.debug), _InterruptHandler(self):
            while self.train_loader.epoch < until:
                epoch = self.train_loader.epoch
                if not self._train_epoch(epoch):
                    self.save()
                    print(
                        f"\ninterrupted at epoch {epoch + 1}, step {self.train_loader.batch}: saved "
                        f"{self.run_dir.last}; continue with `gmsop train --out {self.out} --resume`",
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
                logits, loss, balance = forward_objective(model, x, y)
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    self._non_finite(epoch, step, loss_value, balance)
                update(self.optimizer, loss)

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

    def _non_finite(self, epoch, step, loss_value, balance):
        parts = f"loss {loss_value!r}"
        if balance is not None:
            parts += f", balance loss {float(balance.item())!r}"
        kept = (
            f"the last good checkpoint {self.run_dir.last} is kept"
            if self.run_dir.holds_a_run()
            else "no checkpoint was written yet"
        )
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
            "usage_cv": float("nan") if counts is None else usage_cv(counts),
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
        self.save()
        if improved:
            self.run_dir.copy_last_to_best()
        self.run_dir.write_metrics(self.history)
        self.run_dir.write_usage(self.usage_history)
        print(
            f"epoch {epoch + 1}/{self.epochs}  lr {lr:.3g}  train loss {row['train_loss']:.4f} "
            f"err {row['train_top1']:.3f}  val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.3f} "
            f"top-5 {row['val_top5']:.3f}  bal {row['balance_loss']:.3g}  {row['images_per_s']:.0f} img/s  "
            f"{row['seconds']:.1f}s",
            file=sys.stderr if self.config.progress else sys.stdout,
            flush=True,
        )

    def summary(self, status) -> dict:
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


def _usage_counts(model):
    """The head's per-component sample counts as host int64 (None without a mixture): one read per epoch."""
    counts = getattr(model.head, "usage_counts", None)
    return None if counts is None else to_cpu(counts).astype("int64")


def _reset_usage(model) -> None:
    if hasattr(model.head, "reset_usage"):
        model.head.reset_usage()


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
