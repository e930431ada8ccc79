"""Figures from a run directory (``gmsop plot RUN``), written as PNG files.

* ``loss.png``  -- training and validation loss per epoch;
* ``error.png`` -- training and validation top-1 / top-5 error per epoch (top-5 only
  when the data set has more than 5 classes: with 5 or fewer it is no measurement);
* ``usage.png`` -- samples received by each mixture component in the last
  epoch (the paper's Fig. 2, left), for runs with a mixture head.

Every figure's title names what it shows, the run (its folder's name), the model and
the data set (read from the run's ``config.json`` when there is one). Epochs are
whole numbers on the axis. Components are numbered 0..N-1 everywhere a user sees
them -- the bars here, the ``component_i`` columns of ``usage.csv``, and
``usage_counts[i]`` in the code -- so a bar can be looked up in the CSV or the
model by its label, with no shift by one.

Needs matplotlib (the ``app`` extra). ``plot_run`` builds its figures with
matplotlib's object-oriented ``Figure`` (no pyplot): nothing is shown, no backend is
chosen or changed, and no figure outlives the call -- so it works without a display
and leaves an interactive session (a notebook) as it found it. (``_pyplot`` is only
for code that draws with pyplot, such as ``experiments.figure2``.)
"""

from __future__ import annotations

import csv
import math
import os
from typing import NamedTuple

import numpy as np

__all__ = ["plot_run", "run_figures", "read_metrics", "read_usage", "read_run_info", "RunInfo", "plot_usage_bars"]

#: The columns a metrics.csv must have to be plotted.
REQUIRED_COLUMNS = ("epoch", "train_loss", "val_loss", "train_top1", "val_top1")


def _pyplot():
    """pyplot on the non-interactive Agg backend (for scripts that draw with pyplot, e.g. experiments)."""
    try:
        import matplotlib  # noqa: PLC0415  (optional: the `app` extra)
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'gmsop_np[app]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _new_figure(width, height):
    """A matplotlib ``Figure`` with one axis, outside pyplot (so it needs no backend and is never shown)."""
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415  (optional: the `app` extra)
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'gmsop_np[app]'") from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


# ----- reading a run directory ----------------------------------------------------------------------
def _number(text, path):
    """A CSV cell as a float; an empty cell is NaN (a metric that is not defined for this run)."""
    try:
        return float(text) if text.strip() else math.nan
    except ValueError:
        raise ValueError(f"{path} holds {text!r} where a number belongs: is the file damaged?") from None


def read_metrics(run_dir):
    """metrics.csv as a dict of column name -> float array (empty cells read as NaN)."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: is {run_dir!r} a run directory with a finished epoch?")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}: was it written by gmsop train?")
    return {key: np.array([_number(r[key] or "", path) for r in rows]) for key in rows[0]}


def read_usage(run_dir):
    """usage.csv as (epochs (E,), counts (E, N)), or None when the run has no mixture head.

    Column ``component_i`` of the CSV is ``counts[:, i]``: component i, numbered from 0.
    """
    path = os.path.join(run_dir, "usage.csv")
    if not os.path.isfile(path):
        return None
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path} is not a table of numbers ({exc}): is the file damaged?") from None
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise ValueError(f"{path} has no usage rows (expected: epoch, component_0, ..., component_N-1)")
    return table[:, 0].astype(int), table[:, 1:]


class RunInfo(NamedTuple):
    """What the figure titles say about a run."""

    name: str  # the run folder's name
    model: str  # e.g. "tiny + gmsop-16-8"
    dataset: str
    num_classes: int | None  # None when unknown

    def context(self):
        return f"{self.name}: {self.model} on {self.dataset}"


def read_run_info(run_dir):
    """The run's ``RunInfo`` for figure titles.

    The run name is the folder's name; the rest comes from ``config.json`` (written by
    ``gmsop train``), or is "unknown" without one.
    """
    from .train.rundir import RunDirectory  # noqa: PLC0415

    name = os.path.basename(os.path.normpath(run_dir))
    directory = RunDirectory(run_dir)
    if not os.path.isfile(directory.file("config.json")):
        return RunInfo(name, "unknown model", "unknown data", None)
    stored = directory.read_config()
    options, derived = stored["options"], stored["derived"]
    model = derived.get("model") or f"{options.get('arch', '?')} + {options.get('head', '?')}"
    return RunInfo(name, model, options.get("dataset", "unknown data"), derived.get("num_classes"))


# ----- the figures ------------------------------------------------------------------------------------
def _epoch_axis(ax, epochs):
    """Whole-number epoch ticks (at most ~10), the axis spanning the epochs with half an epoch to spare."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
    ax.set_xlabel("epoch")


def loss_figure(metrics, info):
    """Training and validation loss per epoch (nats per image)."""
    fig, ax = _new_figure(5.5, 3.8)
    epochs = metrics["epoch"]
    balance = metrics.get("balance_loss")
    has_balance = balance is not None and np.nansum(np.abs(balance)) > 0
    ax.plot(epochs, metrics["train_loss"], "o-", label="train (CE + L_B / B)" if has_balance else "train (CE)")
    ax.plot(epochs, metrics["val_loss"], "s-", label="validation (CE)")
    _epoch_axis(ax, epochs)
    ax.set_ylabel("loss (nats per image)")
    ax.set_title(f"loss per epoch\n{info.context()}", fontsize=10)
    ax.legend()
    return fig


def top5_is_defined(metrics, num_classes):
    """Whether the top-5 columns measure anything: more than 5 classes, and the values present (not NaN)."""
    if num_classes is not None and num_classes <= 5:
        return False  # every label is among the top 5 (or the metric was recorded as top-C)
    return all(key in metrics and not np.isnan(metrics[key]).all() for key in ("train_top5", "val_top5"))


def error_figure(metrics, info):
    """Training and validation top-1 (and top-5, where defined) error per epoch, in percent."""
    fig, ax = _new_figure(5.5, 3.8)
    epochs, num_classes = metrics["epoch"], info.num_classes
    curves = [("train_top1", "o-", "train top-1"), ("val_top1", "s-", "validation top-1")]
    if top5_is_defined(metrics, num_classes):
        curves += [("train_top5", "o--", "train top-5"), ("val_top5", "s--", "validation top-5")]
    for key, style, label in curves:
        ax.plot(epochs, 100 * metrics[key], style, label=label)
    if num_classes:
        ax.axhline(100 * (1 - 1 / num_classes), color="gray", ls=":", lw=1, label="chance (top-1)")
    _epoch_axis(ax, epochs)
    ax.set_ylabel("error (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"classification error per epoch\n{info.context()}", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def plot_usage_bars(ax, counts, title, subtitle=None):
    """Bars of per-component sample counts on a matplotlib axis (paper Fig. 2, left).

    Bar i is component i (numbered from 0, as ``usage_counts[i]`` and ``component_i`` in
    usage.csv). The title is ``title`` with the counts' coefficient of variation, then
    ``subtitle`` on a second line.
    """
    from .nn.mixture import usage_cv  # noqa: PLC0415  (one definition of the CV)

    counts = np.asarray(counts, dtype=float)
    components = np.arange(len(counts))
    ax.bar(components, counts, color="tab:blue")
    ax.set_xticks(components)
    if len(counts) > 24:  # keep the labels legible: label every other bar
        ax.set_xticklabels([str(i) if i % 2 == 0 else "" for i in components])
    ax.set_xlabel("component i (column component_i of usage.csv)")
    ax.set_ylabel("training samples received")
    title = f"{title}  (CV {usage_cv(counts):.2f})"
    ax.set_title(title if subtitle is None else f"{title}\n{subtitle}", fontsize=10)


def usage_figure(usage, info):
    """Samples per mixture component in the last epoch recorded in usage.csv."""
    epochs, counts = usage
    fig, ax = _new_figure(6.5, 3.8)
    plot_usage_bars(ax, counts[-1], f"samples per component in epoch {epochs[-1]}", info.context())
    return fig


def run_figures(run_dir):
    """The figures of ``run_dir`` as ``{"loss": Figure, "error": Figure[, "usage": Figure]}``."""
    metrics, info = read_metrics(run_dir), read_run_info(run_dir)
    figures = {"loss": loss_figure(metrics, info), "error": error_figure(metrics, info)}
    usage = read_usage(run_dir)
    if usage is not None:
        figures["usage"] = usage_figure(usage, info)
    return figures


def plot_run(run_dir, out_dir=None):
    """Write loss.png, error.png (and usage.png) for ``run_dir`` into ``out_dir``; returns their paths."""
    out_dir = out_dir or run_dir
    figures = run_figures(run_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        paths.append(os.path.join(out_dir, f"{name}.png"))
        fig.savefig(paths[-1], dpi=110)
    return paths
