"""The run directory: every file a training run writes and reads back.

A run directory holds

* ``config.json`` -- every option, plus what was derived from them (lr, schedule,
  weight decay, parameter count, dataset sizes);
* ``metrics.csv`` -- one row per epoch (``METRIC_COLUMNS``);
* ``usage.csv`` -- per epoch, the samples each mixture component received (paper Fig. 2);
* ``last.npz`` (every epoch, and on Ctrl-C) and ``best.npz`` (lowest validation top-1 error);
* ``train.log`` -- what the run printed: the header, one line per epoch, the final
  summary and any stop (appended to by every start and resume);
* ``eval_<checkpoint>.json`` -- written by ``gmsop eval``.

Every file but the log is written atomically (a crash leaves the previous version
intact), with the user's umask.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

from ..checkpoint import atomic_write

__all__ = ["RunDirectory", "METRIC_COLUMNS", "TIMING_COLUMNS", "fresh_run_path"]

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


def fresh_run_path(dataset: str, arch: str, head: str) -> tuple[str, str | None]:
    """``(path, taken)``: runs/<dataset>-<arch>-<head>, or with -2, -3, ... appended when
    that folder exists already; ``taken`` is then the default folder, else None."""
    base = os.path.join("runs", f"{dataset}-{arch}-{head}")
    path, i = base, 1
    while os.path.exists(path):
        i += 1
        path = f"{base}-{i}"
    return path, (base if path != base else None)


class RunDirectory:
    """The files of one run, under ``path``."""

    def __init__(self, path: str):
        self.path = os.fspath(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def last(self) -> str:
        return self.file("last.npz")

    @property
    def best(self) -> str:
        return self.file("best.npz")

    @property
    def log(self) -> str:
        return self.file("train.log")

    def holds_a_run(self) -> bool:
        return os.path.isfile(self.file("config.json")) and os.path.isfile(self.last)

    def create(self) -> None:
        os.makedirs(self.path, exist_ok=True)

    # ----- config.json -------------------------------------------------------------------------
    def write_config(self, options: dict, derived: dict) -> None:
        self._write_text("config.json", json.dumps({"options": options, "derived": derived}, indent=2) + "\n")

    def read_config(self) -> dict:
        """``{"options": ..., "derived": ...}`` from config.json; errors name the file."""
        path = self.file("config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.path} has no config.json: is it a run directory written by gmsop train?")
        try:
            with open(path, encoding="utf-8") as handle:
                info = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); the run's configuration cannot be read") from None
        if not isinstance(info, dict) or not isinstance(info.get("options"), dict):
            raise ValueError(f"{path} has no 'options' table: it was not written by gmsop train")
        info.setdefault("derived", {})
        return info

    # ----- tables --------------------------------------------------------------------------------
    def write_metrics(self, history: list) -> None:
        self._write_csv("metrics.csv", METRIC_COLUMNS, [[row[c] for c in METRIC_COLUMNS] for row in history])

    def write_usage(self, usage_history: list) -> None:
        """usage.csv: one row per epoch, the samples each component (numbered from 0) received."""
        if usage_history:
            n = len(usage_history[0]) - 1
            self._write_csv("usage.csv", ["epoch"] + [f"component_{i}" for i in range(n)], usage_history)

    def write_json(self, name: str, value) -> None:
        self._write_text(name, json.dumps(value, indent=2) + "\n")

    def copy_last_to_best(self) -> None:
        with open(self.last, "rb") as source:
            atomic_write(self.best, lambda f: shutil.copyfileobj(source, f))

    # ----- helpers -------------------------------------------------------------------------------
    def _write_text(self, name: str, text: str) -> None:
        atomic_write(self.file(name), lambda f: f.write(text), text=True)

    def _write_csv(self, name: str, header: list, rows: list) -> None:
        def write(handle):
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows:
                writer.writerow([repr(v) if isinstance(v, float) else v for v in row])

        atomic_write(self.file(name), write, text=True)
