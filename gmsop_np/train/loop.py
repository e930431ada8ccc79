"""The training loop: ``Trainer`` (fit, checkpoints, resume) and the NaN guard.

One training step minimises the objective ``F.objective(logits, labels,
model.balance_loss)`` = ``CE_mean + L_B / B`` (``L_B`` is the head's unscaled
balance loss, Eq. 4; ``None`` for heads without a gate) with SGD (momentum,
the preset's weight decay) and a multi-step learning-rate schedule (÷10 per stage).

A step reads nothing back from the device. Its loss, top-1 / top-5 errors and
balance loss are added up on the device (``meters.DeviceSums``) and read every
``log_every`` steps and at the end of each epoch: one synchronisation per read.
The NaN guard works on these reads: a non-finite sum means a step of the
interval diverged, and the run stops (``NonFiniteLossError``; exit status 1 on
the command line) without saving, so ``last.npz`` keeps the last good weights.
A non-finite validation loss stops it the same way. After each update the
step's graph is released before the next forward (it holds every activation
the backward needed: keeping it would double the peak memory).

Resuming (``Trainer.resume(run_dir)`` / ``gmsop train --out DIR --resume``)
restores the model, the optimizer's momentum, the schedule position, the
loader's epoch and batch position and the state of every random generator
inside the model (dropout, gating noise). Data order and augmentation are pure
functions of (seed, epoch, batch), so on NumPy a resumed run reproduces the
metrics of an uninterrupted one exactly (up to the wall-clock columns).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time

import numpy as np

from .. import __version__
from .. import functional as F
from .._checks import check_int
from ..backend import default_xp, to_cpu, using_backend
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import debug
from ..core import Tensor
from ..nn.mixture import usage_cv
from ..optim import SGD, MultiStepLR
from .build import build_run, make_run_loader
from .console import Console, format_duration, progress_bar
from .evaluation import evaluate
from .meters import SUM_FIELDS, DeviceSums, all_finite
from .options import RESUMABLE, TrainConfig, model_label
from .rundir import RunDirectory, fresh_run_path

__all__ = ["Trainer", "NonFiniteLossError", "forward_objective", "update", "release_graph"]


class NonFiniteLossError(RuntimeError):
    """The training or validation loss became NaN or infinite; the run stopped without saving."""


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


def release_graph(model) -> None:
    """Let go of the last forward's graph once the step is done.

    A gated head keeps its balance loss (``balance_loss``, a Tensor) until its next
    forward, and that Tensor's graph reaches back through every layer to the input:
    it would hold all the activations saved for this step's backward through the next
    step's forward, twice the peak memory. The value itself was already added up.
    """
    for _, module in model.named_modules():
        if isinstance(vars(module).get("balance_loss"), Tensor):
            module.balance_loss = None


@dataclasses.dataclass
class _EpochStats:
    """What is known on the host about the current epoch (saved in checkpoints for mid-epoch resumes):
    images, steps and seconds, counted per step, and the sums last read from the device."""

    images: float = 0.0
    steps: float = 0.0
    seconds: float = 0.0
    loss_sum: float = 0.0
    top1_sum: float = 0.0
    top5_sum: float = 0.0
    balance_sum: float = 0.0

    @classmethod
    def from_state(cls, values) -> _EpochStats:
        return cls(**{k: float(v) for k, v in (values or {}).items()})

    def state(self) -> dict:
        return {k: float(v) for k, v in dataclasses.asdict(self).items()}

    def sums(self) -> dict:
        return {name: getattr(self, name) for name in SUM_FIELDS}

    def mean(self, name) -> float:
        return getattr(self, name) / max(self.images, 1)


class _Clock:
    """Seconds per training step and per validation batch, measured in this session: the ETAs."""

    def __init__(self):
        self.train_seconds, self.train_steps, self.val_seconds, self.val_batches = 0.0, 0, 0.0, 0

    def left(self, train_steps: int, val_batches: int) -> float:
        step = self.train_seconds / max(self.train_steps, 1)
        # before the first validation, a batch is taken to cost a training step (an overestimate)
        val = self.val_seconds / self.val_batches if self.val_batches else step
        return train_steps * step + val_batches * val


class Trainer:
    """Trains one configuration into one run directory.

    Parameters
    ----------
    config : TrainConfig (a fresh run; continue an existing one with ``Trainer.resume``)
    datasets : optional ``(train, val)`` dataset objects instead of the configured dataset
    callbacks : functions ``f(trainer, epoch, step)`` called after every training step

    ``fit`` prints a header, one line per epoch and a summary (stdout and the run's
    ``train.log``) and draws a progress line on a terminal (``console.Console``).
    """

    def __init__(self, config: TrainConfig, datasets=None, callbacks=(), *, _resuming=False):
        self.config, self.callbacks = config, list(callbacks)
        self.notes = []  # header lines: where the run goes and why, where it resumes from
        if config.out is None:
            config.out, taken = fresh_run_path(config.dataset, config.arch, config.head)
            if taken is not None:
                what = "holds an earlier run" if RunDirectory(taken).holds_a_run() else "exists"
                self.notes.append(
                    f"{taken} {what}, so this run goes to {config.out} (choose the folder with --out; "
                    f"continue the earlier run with `gmsop train --out {taken} --resume`)"
                )
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
        self._stop_requested, self._announced, self._resuming = False, False, _resuming
        self._clock, self._figures, self._saved_at = _Clock(), "", None
        self.run_dir.create()
        self.console = Console(self.run_dir.log, progress=config.progress)
        if not _resuming:
            self.run_dir.write_config(config.to_dict(), self._derived())

    @classmethod
    def resume(cls, out: str, changes: dict | None = None, datasets=None, callbacks=()) -> Trainer:
        """Continue the run in ``out`` from its ``last.npz``.

        ``changes`` may set the options in ``RESUMABLE`` (``backend``, ``progress``,
        ``debug``, ``data_dir``, ``log_every``, and ``epochs``: a larger budget extends
        the last stage of the schedule, i.e. training continues at the final learning
        rate); any other option given with a value different from the run's is a
        ValueError naming it.
        """
        run_dir = RunDirectory(out)
        if not run_dir.holds_a_run():
            raise FileNotFoundError(
                f"cannot resume: {out} has no config.json and last.npz (start the run without --resume)"
            )
        stored = run_dir.read_config()
        options = dict(stored["options"], out=out)
        changes = dict(changes or {})
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown training option {name!r}; known: {', '.join(sorted(known))}")
            # an option left to the recipe is compared by the value the run used (config.json's "derived")
            used = options.get(name) if options.get(name) is not None else stored["derived"].get(name)
            if name not in RESUMABLE and used != value:
                raise ValueError(
                    f"{name} cannot change when resuming (the run has {used!r}, given {value!r}); "
                    f"only {', '.join(f'`{r}`' for r in RESUMABLE)} can. Train other options in a new run "
                    "(another `out`)"
                )
        schedule = list(stored["derived"].get("schedule") or [])
        epochs = changes.pop("epochs", None)
        if epochs is not None:
            check_int(epochs, "epochs", 1)
        options.update({k: v for k, v in changes.items() if k in RESUMABLE})
        extension = None
        if epochs is not None and schedule and epochs != sum(schedule):
            if epochs < sum(schedule):
                raise ValueError(
                    f"epochs {epochs} is fewer than the run's {sum(schedule)}; a run can only be extended "
                    f"(give more than {sum(schedule)}, or leave `epochs` out)"
                )
            extension = (sum(schedule), epochs, schedule[-1])
            schedule[-1] += epochs - sum(schedule)  # the extra epochs run at the final learning rate
            options.update(schedule=schedule, epochs=None)
        config = TrainConfig.from_dict(options, source=run_dir.file("config.json"))
        trainer = cls(config, datasets=datasets, callbacks=callbacks, _resuming=True)
        trainer._restore()
        trainer.notes.append(trainer._resume_note(stored["options"].get("backend")))
        if extension is not None:
            before, after, last_stage = extension
            final_lr = trainer.scheduler.get_lr(after - 1)[0]
            trainer.notes.append(
                f"extended from {before} to {after} epochs: the last stage of the schedule grows from {last_stage} "
                f"to {trainer.plan.schedule[-1]} epochs, so the {after - before} new epoch(s) run at its learning "
                f"rate {final_lr:g}"
            )
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
        written = save_checkpoint(
            path or self.run_dir.last, self.model, self.optimizer, self.scheduler, rng_state=rngs, extra=extra
        )
        if path is None:
            self._saved_at = self._position()
        return written

    def _restore(self) -> None:
        info = load_checkpoint(self.run_dir.last, self.model, self.optimizer, self.scheduler)
        generators = dict(self.model.named_generators())
        for name, state in (info["rng_state"] or {}).items():
            generators[name].bit_generator.state = state
        extra = info["extra"]
        self.train_loader.load_state_dict(extra["loader"])
        self.history, self.usage_history = list(extra["history"]), list(extra["usage_history"])
        self.best_val = math.inf if extra["best_val"] is None else float(extra["best_val"])
        self.partial = _EpochStats.from_state(extra["partial"])
        if self.plan.epochs > self.scheduler.total_epochs:  # an extended run (see ``resume``)
            self.scheduler.extend_last_stage(self.plan.epochs - self.scheduler.total_epochs)
        self._saved_at = self._position()

    def _position(self) -> str:
        """Where the loader stands, in words: "the end of epoch 2" or "epoch 3, step 40 of 93"."""
        epoch, step = self.train_loader.epoch, self.train_loader.batch
        if step == 0:
            return f"the end of epoch {epoch}" if epoch else "the start"
        return f"epoch {epoch + 1}, step {step} of {len(self.train_loader)}"

    def _resume_note(self, stored_backend) -> str:
        done = self.train_loader.epoch >= self.epochs and self.train_loader.batch == 0
        if done:
            return (
                f"resuming from {self.run_dir.last}: the run is already finished ({self.epochs}/{self.epochs} "
                "epochs); give a larger --epochs to extend it"
            )
        note = f"resuming from {self.run_dir.last}, saved at {self._saved_at}"
        step = self.train_loader.batch
        if step:
            note += f": training continues with step {step + 1}"
        if stored_backend is not None and stored_backend != self.config.backend:
            note += f"; backend {stored_backend} -> {self.config.backend}"
        return note

    # ----- the loop ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, save ``last.npz`` and return from ``fit`` (what Ctrl-C does)."""
        self._stop_requested = True

    def fit(self, until_epoch=None) -> dict:
        """Train until epoch ``until_epoch`` (default: the end of the schedule).

        Returns a summary dict (``status``: "finished", "paused" or "interrupted").
        Raises ``NonFiniteLossError`` when the run diverges (nothing is saved then).
        """
        until = self.epochs if until_epoch is None else min(check_int(until_epoch, "until_epoch", 0), self.epochs)
        try:
            with (
                _InterruptHandler(self),
                using_backend(self.config.backend),
                debug(self.config.debug),
                _quiet_floating_point(not self.config.debug),
            ):
                self._announce()  # after the handler: a Ctrl-C from here on stops cleanly
                while self.train_loader.epoch < until:
                    epoch = self.train_loader.epoch
                    completed = self._train_epoch(epoch)
                    if completed:
                        self._end_epoch(epoch)
                    if self._stop_requested:
                        if not completed:
                            self.save()
                        self.console.note(
                            f"interrupted at {self._saved_at}: saved {self.run_dir.last}; continue with "
                            f"`gmsop train --out {self.out} --resume`"
                        )
                        return self._finish("interrupted")
        except NonFiniteLossError as exc:
            self.console.log(f"stopped: {exc}")
            raise
        except KeyboardInterrupt:
            kept = (
                f"nothing was saved since {self._saved_at}; continue from there with "
                f"`gmsop train --out {self.out} --resume`"
                if self.run_dir.holds_a_run()
                else "no checkpoint had been written yet"
            )
            self.console.note(f"aborted (a second Ctrl-C) at {self._position()}: {kept}")
            raise
        finally:
            self.console.clear()
        return self._finish("finished" if self.train_loader.epoch >= self.epochs else "paused")

    def _announce(self) -> None:
        """The header (once per Trainer): the model, the data, the recipe, the run directory, the notes."""
        if self._announced:
            return
        self._announced = True
        c, plan = self.config, self.plan
        self.console.log_start(f"gmsop_np {__version__}, {'resuming' if self._resuming else 'starting'} {self.out}")
        self.console.line(
            f"{'resuming' if self._resuming else 'training'} {model_label(c)} on {c.dataset} "
            f"({len(self.train_set)} train / {len(self.val_set)} val images, {self.num_classes} classes), "
            f"{self.model.num_parameters():,} parameters, {c.backend}/{c.dtype}"
        )
        self.console.line(
            f"SGD lr {plan.lr:g} (momentum {c.momentum}, weight decay {plan.weight_decay:g}), "
            f"schedule {plan.schedule} epochs (lr / 10 per stage), batch {plan.batch_size}; run directory "
            f"{self.out}"
        )
        for note in self.notes:
            self.console.line(note)

    def _train_epoch(self, epoch) -> bool:
        """One pass over the training set; False when a stop was requested."""
        model, stats, loader = self.model, self.partial, self.train_loader
        model.train()
        if loader.batch == 0:
            _reset_usage(model)
        sums = DeviceSums(default_xp(), stats.sums())
        self._figures = "loss ..."  # until the first read of this epoch
        read_at = step = loader.batch  # the sums up to this step are in ``stats``
        tick = time.perf_counter()
        batches = iter(loader)
        with contextlib.closing(batches):  # closed here, not by the garbage collector (a clean Ctrl-C)
            for x, y in batches:
                step, b = loader.batch, len(y)  # 1-based index of this batch in the epoch
                logits, loss, balance = forward_objective(model, x, y)
                update(self.optimizer, loss)
                sums.add(loss, logits, y, balance)
                del x, y, logits, loss, balance
                release_graph(model)

                now = time.perf_counter()
                seconds, tick = now - tick, now
                stats.seconds += seconds
                stats.images += b
                stats.steps += 1
                self._clock.train_seconds += seconds
                self._clock.train_steps += 1
                for callback in self.callbacks:
                    callback(self, epoch, step)
                read_now = step % self.config.log_every == 0 or self._stop_requested
                if read_now:
                    self._read(sums, epoch, read_at, step)
                    read_at = step
                self._show_progress(epoch, step, fresh_figures=read_now)
                if self._stop_requested:
                    return False
        if step > read_at:
            self._read(sums, epoch, read_at, step)
        return True

    def _read(self, sums, epoch, after_step, step) -> None:
        """Read the epoch's sums from the device (one sync) and check them: the NaN guard."""
        values = sums.read()
        if not all_finite(values):
            raise NonFiniteLossError(self._divergence(epoch, after_step + 1, step, values))
        for name, value in values.items():
            setattr(self.partial, name, value)
        stats = self.partial
        self._figures = f"loss {stats.mean('loss_sum'):.3f} err {stats.mean('top1_sum'):.3f}"
        if stats.balance_sum:
            self._figures += f" bal {stats.mean('balance_sum'):.3g}"

    def _divergence(self, epoch, first, last, values) -> str:
        """The NaN guard's message: where (as exactly as the reads allow), what, what was kept, what to try."""
        n = self.config.log_every
        where = (
            f"at epoch {epoch + 1}, step {last}"
            if first == last
            else f"in epoch {epoch + 1}, steps {first}-{last} ({last - first + 1} steps since the last read: "
            f"the loss is read every {n} steps, --log-every {n}; --log-every 1 finds the exact step)"
        )
        what = f"the training loss became {_nonfinite(values['loss_sum'])}"
        if not math.isfinite(values["balance_sum"]):
            what += f" (balance loss {_nonfinite(values['balance_sum'])})"
        return f"{what} {where}. {self._stopped_without_saving()}"

    def _stopped_without_saving(self) -> str:
        kept = (
            f"the last good checkpoint {self.run_dir.last} (saved at {self._saved_at}) is kept"
            if self.run_dir.holds_a_run()
            else "no checkpoint had been written yet"
        )
        return (
            f"The diverged weights were not saved; {kept}. Start again with a smaller --lr "
            f"(this run: {self.plan.lr:g}) or --dtype float64."
        )

    def _show_progress(self, epoch, step, fresh_figures) -> None:
        """The progress line (a terminal only): redrawn at most ten times a second, and after each read."""
        if not self.console.live:
            return
        n, n_val, stats = len(self.train_loader), len(self.val_loader), self.partial
        epoch_left = self._clock.left(n - step, n_val)
        run_left = epoch_left + (self.epochs - epoch - 1) * self._clock.left(n, n_val)
        ips = stats.images / max(stats.seconds, 1e-9)
        # most important first: an 80-column terminal cuts the end
        self.console.show(
            f"epoch {epoch + 1}/{self.epochs} {progress_bar(step, n, 8)} {step}/{n} {self._figures} | ETA "
            f"{format_duration(epoch_left)}, run {format_duration(run_left)} | {ips:.0f} img/s",
            force=fresh_figures,
        )

    def _end_epoch(self, epoch):
        stats = self.partial
        lr = self.optimizer.lr
        val = evaluate(self.model, self.val_loader, self.console, f"validating epoch {epoch + 1}/{self.epochs}")
        self._clock.val_seconds += val["seconds"]
        self._clock.val_batches += len(self.val_loader)
        if not math.isfinite(val["loss"]):
            raise NonFiniteLossError(
                f"the validation loss after epoch {epoch + 1} is {_nonfinite(val['loss'])} (training loss "
                f"{stats.mean('loss_sum'):.4g}): the weights diverged. {self._stopped_without_saving()}"
            )
        counts = _usage_counts(self.model)
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": stats.mean("loss_sum"),
            "train_top1": stats.mean("top1_sum"),
            "train_top5": stats.mean("top5_sum"),
            "balance_loss": stats.mean("balance_sum"),
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
        self.console.line(self._epoch_line(row))

    def _epoch_line(self, row) -> str:
        """One epoch's summary. Top-5 is left out with five classes or fewer (it is not defined there)."""
        top5 = f" top-5 {row['val_top5']:.3f}" if self.num_classes > 5 else ""
        epochs_left = self.epochs - row["epoch"]
        per_epoch = self._clock.left(len(self.train_loader), len(self.val_loader))
        eta = f"  ETA {format_duration(epochs_left * per_epoch)}" if epochs_left > 0 else ""
        return (
            f"epoch {row['epoch']}/{self.epochs}  lr {row['lr']:.3g}  train loss {row['train_loss']:.4f} "
            f"err {row['train_top1']:.3f}  val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.3f}{top5}  "
            f"bal {row['balance_loss']:.3g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s{eta}"
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

    def _finish(self, status) -> dict:
        """The summary: printed (stdout, train.log) and returned."""
        s = self.summary(status)
        if s["val_top1"] is None:
            self.console.line(f"{status}: no epoch finished yet; run directory {s['out']}")
            return s
        top5 = f", top-5 {s['val_top5']:.3f}" if self.num_classes > 5 else ""
        self.console.line(
            f"{status}: {s['epochs_done']}/{s['epochs']} epochs in {s['seconds']:.0f} s of training; validation "
            f"top-1 error {s['val_top1']:.3f} (best {s['best_val_top1']:.3f}, chance {s['chance_top1']:.3f}){top5}. "
            f"Files in {s['out']}"
        )
        return s


def _nonfinite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+inf" if value > 0 else "-inf")


def _quiet_floating_point(quiet: bool):
    """NumPy's overflow / invalid-value warnings off while training (the NaN guard reports a
    divergence, once); on in debug mode, where the value checks stop at the first bad operation."""
    return np.errstate(all="ignore") if quiet else contextlib.nullcontext()


def _usage_counts(model):
    """The head's per-component sample counts as host int64 (None without a mixture): one read per epoch."""
    counts = getattr(model.head, "usage_counts", None)
    return None if counts is None else to_cpu(counts).astype("int64")


def _reset_usage(model) -> None:
    if hasattr(model.head, "reset_usage"):
        model.head.reset_usage()


class _InterruptHandler:
    """During ``fit``: the first Ctrl-C asks the trainer to stop after the current step
    (it then saves ``last.npz``); a second Ctrl-C interrupts at once (``KeyboardInterrupt``)."""

    def __init__(self, trainer):
        self.trainer, self.previous = trainer, None

    def _handle(self, signum, frame):
        if self.trainer._stop_requested:
            raise KeyboardInterrupt
        self.trainer.console.note("Ctrl-C: finishing this step, then saving a checkpoint (press again to abort)")
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
