"""Figures from a run directory (``gmsop plot RUN``), written as PNG files.

* ``loss.png``  -- training and validation loss per epoch;
* ``error.png`` -- training and validation top-1 / top-5 error per epoch;
* ``usage.png`` -- samples received by each mixture component in the last
  epoch (the paper's Fig. 2, left), for runs with a mixture head.

Needs matplotlib (the ``app`` extra). The figures use the non-interactive
"Agg" backend, so they work without a display.
"""

from __future__ import annotations

import csv
import os

import numpy as np

__all__ = ["plot_run", "read_metrics", "read_usage", "plot_usage_bars"]


def _pyplot():
    try:
        import matplotlib  # noqa: PLC0415  (optional: the `app` extra)
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'gmsop_np[app]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def read_metrics(run_dir):
    """metrics.csv as a dict of column name -> float array."""
    path = os.path.join(run_dir, "metrics.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: is {run_dir!r} a run directory with a finished epoch?")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} has no epochs yet")
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def read_usage(run_dir):
    """usage.csv as (epochs (E,), counts (E, N)), or None when the run has no mixture head."""
    path = os.path.join(run_dir, "usage.csv")
    if not os.path.isfile(path):
        return None
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return table[:, 0].astype(int), table[:, 1:]


def plot_usage_bars(ax, counts, title):
    """Bars of per-component sample counts on a matplotlib axis (paper Fig. 2, left)."""
    counts = np.asarray(counts, dtype=float)
    ax.bar(np.arange(1, len(counts) + 1), counts, color="tab:blue")
    ax.set_xlabel("component")
    ax.set_ylabel("samples received")
    ax.set_xticks(np.arange(1, len(counts) + 1))
    cv = counts.std() / counts.mean() if counts.sum() > 0 else float("nan")
    ax.set_title(f"{title}  (CV {cv:.2f})")


def plot_run(run_dir, out_dir=None):
    """Write loss.png, error.png (and usage.png) for ``run_dir``; returns their paths."""
    plt = _pyplot()
    out_dir = out_dir or run_dir
    os.makedirs(out_dir, exist_ok=True)
    m = read_metrics(run_dir)
    epochs, paths = m["epoch"], []

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, m["train_loss"], "o-", label="train (CE + L_B / B)")
    ax.plot(epochs, m["val_loss"], "s-", label="validation (CE)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    paths.append(_save(fig, plt, os.path.join(out_dir, "loss.png")))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, style, label in [
        ("train_top1", "o-", "train top-1"),
        ("val_top1", "s-", "val top-1"),
        ("train_top5", "o--", "train top-5"),
        ("val_top5", "s--", "val top-5"),
    ]:
        ax.plot(epochs, 100 * m[key], style, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    paths.append(_save(fig, plt, os.path.join(out_dir, "error.png")))

    usage = read_usage(run_dir)
    if usage is not None:
        usage_epochs, counts = usage
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_usage_bars(ax, counts[-1], f"component usage, epoch {usage_epochs[-1]}")
        paths.append(_save(fig, plt, os.path.join(out_dir, "usage.png")))
    return paths


def _save(fig, plt, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
