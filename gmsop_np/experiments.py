"""Small-scale reproductions of the paper's Figure 2 and Table 2 (``gmsop experiment``).

* ``figure2``: GM-GAP-16-4 trained with the balance loss off (alpha = 0) and on
  (alpha = 100); bars of the samples each component received in the last epoch,
  side by side (``figure2.png``), plus ``figure2.md`` with the numbers. The paper:
  without the balance loss about K components receive almost every sample;
  with alpha = 100 the counts are near uniform.
* ``table2``: the heads of Table 2 (GAP, GAP-512d, Ave-GAP-16, GM-GAP-16-8,
  SR-SOP, parametric SR-SOP, Ave-SOP-16, GM-SOP-16-8) on one backbone and one
  dataset: validation error, parameters, representation size, training
  images/s (``table2.md``).

Defaults finish on a laptop CPU (the ``tiny`` backbone on ``textures``); pass
``arch="resnet18", dataset="imagenet64", data_dir=..., epochs=None`` (the
paper's schedules) for the real scale. Each model is an ordinary run directory
under ``out`` (so ``gmsop plot`` works on it); an interrupted experiment
resumes the unfinished runs when started again.
"""

from __future__ import annotations

import os

from .nn.heads import get_head
from .nn.mixture import usage_cv
from .train import TrainConfig, Trainer

__all__ = ["figure2", "table2", "TABLE2_HEADS", "run_or_resume"]

#: Table 2's heads, in the paper's order (each at its default options: Ave-*-16, GM-*-16-8).
TABLE2_HEADS = ("gap", "gap512", "avegap", "gmgap", "srsop", "psrsop", "avesop", "gmsop")

# Small defaults for the built-in data set (a laptop CPU finishes in minutes).
_SMALL = {"textures": dict(train_size=1500, val_size=500)}


def run_or_resume(config: TrainConfig):
    """Train ``config`` into ``config.out``; continue it if a previous attempt stopped early.

    A Ctrl-C (the run saved its checkpoint) ends the whole experiment with ``KeyboardInterrupt``;
    the same call again resumes it.
    """
    resuming = os.path.isfile(os.path.join(config.out, "last.npz"))
    trainer = Trainer.resume(config.out) if resuming else Trainer(config)
    summary = trainer.fit()
    if summary["status"] == "interrupted":
        raise KeyboardInterrupt(f"{config.out} was interrupted; run the experiment again to resume it")
    return trainer, summary


def _base_options(arch, dataset, data_dir, epochs, train_size, val_size, batch_size, lr, backend, seed, progress):
    options = dict(
        arch=arch,
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        backend=backend,
        seed=seed,
        progress=progress,
    )
    options.update(_SMALL.get(dataset, {}))
    if train_size is not None:
        options["train_size"] = train_size
    if val_size is not None:
        options["val_size"] = val_size
    return options


def figure2(
    out="runs/figure2",
    arch="tiny",
    dataset="textures",
    data_dir=None,
    epochs=3,
    train_size=None,
    val_size=None,
    batch_size=None,
    lr=None,
    backend="numpy",
    seed=0,
    progress=True,
    alphas=(0.0, 100.0),
    noise="independent",
):
    """Train GM-GAP-16-4 with each alpha and draw the usage bars side by side (paper Fig. 2, left).

    ``noise`` defaults to per-(image, component) gating noise. With the official
    release's shared noise, GM-GAP's gating features (GAPs of ReLU maps: positive and
    strongly correlated across images) move every image's logits together, and once
    all images pick the same K components the importance-only balance loss (Eq. 4)
    has no gradient left (constant over the selected set, zero off it): on this small
    scale the routing then collapses whatever alpha. Measured on the defaults (2026-11-24):
    independent noise, usage CV 0.41 (alpha 0) vs 0.08 (alpha 100); shared, 1.26 vs 1.49.
    """
    from .plots import _pyplot, plot_usage_bars  # noqa: PLC0415

    plt = _pyplot()  # before the runs: without matplotlib, fail at once, not after training
    os.makedirs(out, exist_ok=True)
    base = _base_options(arch, dataset, data_dir, epochs, train_size, val_size, batch_size, lr, backend, seed, progress)
    results = []
    for alpha in alphas:
        config = TrainConfig(
            head="gmgap",
            num_components=16,
            k=4,
            alpha=float(alpha),
            head_options={"noise": noise},
            out=os.path.join(out, f"alpha{alpha:g}"),
            **base,
        )
        trainer, summary = run_or_resume(config)
        counts = trainer.usage_history[-1][1:] if trainer.usage_history else []
        results.append((alpha, counts, summary))

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.6), sharey=True)
    for ax, (alpha, counts, summary) in zip(list(axes) if len(results) > 1 else [axes], results):
        plot_usage_bars(ax, counts, f"alpha = {alpha:g}, val top-1 {100 * summary['val_top1']:.1f}%")
    fig.suptitle(f"GM-GAP-16-4 ({arch}, {dataset}, {noise} noise): samples per component in the last epoch")
    fig.tight_layout()
    png = os.path.join(out, "figure2.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)

    lines = ["| alpha | samples per component (last epoch) | CV | val top-1 error |", "|---|---|---|---|"]
    for alpha, counts, summary in results:
        lines.append(
            f"| {alpha:g} | {' '.join(str(int(c)) for c in counts)} | {usage_cv(counts):.2f} | "
            f"{100 * summary['val_top1']:.1f}% |"
        )
    md = os.path.join(out, "figure2.md")
    with open(md, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return {"files": [png, md], "results": results}


def table2(
    out="runs/table2",
    arch="tiny",
    dataset="textures",
    data_dir=None,
    epochs=2,
    train_size=None,
    val_size=None,
    batch_size=None,
    lr=None,
    backend="numpy",
    seed=0,
    progress=True,
    heads=None,
):
    """Train each head of Table 2 on the same backbone and data; write a Markdown table."""
    heads = list(TABLE2_HEADS) if heads is None else list(heads)
    unknown = [h for h in heads if h not in TABLE2_HEADS]
    if unknown:
        raise ValueError(f"table2 knows the heads {list(TABLE2_HEADS)}, not {unknown}")
    os.makedirs(out, exist_ok=True)
    base = _base_options(arch, dataset, data_dir, epochs, train_size, val_size, batch_size, lr, backend, seed, progress)
    rows = []
    for head in heads:
        label = get_head(head).display_name()
        config = TrainConfig(head=head, out=os.path.join(out, head), **base)
        trainer, summary = run_or_resume(config)
        history = trainer.history
        rows.append(
            {
                "head": label,
                "top1": summary["val_top1"],
                "top5": summary["val_top5"],
                "params": trainer.model.num_parameters(),
                "dim": getattr(trainer.model.head, "representation_dim", None),
                "ips": sum(r["images_per_s"] for r in history) / max(len(history), 1),
            }
        )
    header = (
        f"Table 2 at small scale: {arch} backbone on {dataset}, {trainer.epochs} epoch(s) per model, "
        f"{len(trainer.train_set)} training images, {backend}.\n\n"
    )
    lines = [
        "| head | val top-1 error | val top-5 error | parameters | representation | train images/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['head']} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% | {r['params']:,} | "
            f"{r['dim']} | {r['ips']:.0f} |"
        )
    md = os.path.join(out, "table2.md")
    with open(md, "w", encoding="utf-8") as handle:
        handle.write(header + "\n".join(lines) + "\n")
    print(header + "\n".join(lines))
    return {"files": [md], "rows": rows}
