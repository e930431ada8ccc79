"""The ``gmsop`` command line (console script ``gmsop = gmsop_np.cli:main``).

    gmsop train                          # small GM-SOP on the built-in textures, NumPy, minutes
    gmsop train --arch resnet18 --head gmsop -N 16 -K 8 --dataset imagenet64 --data-dir DIR
    gmsop train --out runs/x --resume    # continue exactly where a run stopped
    gmsop eval runs/x                    # top-1 / top-5 error of runs/x/best.npz
    gmsop plot runs/x                    # loss / error curves and component usage (PNGs)
    gmsop experiment figure2             # paper Fig. 2: component usage with alpha = 0 vs 100
    gmsop experiment table2              # paper Table 2: the heads side by side

Every ``train`` option is a field of ``gmsop_np.train.TrainConfig``; the
defaults follow the paper's recipe for the chosen head (SGD momentum 0.9, the
preset's weight decay, the multi-step schedule scaled to ``--epochs``).
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]


def _int_list(text):
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 40,10,5,5, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _key_value(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        value = json.loads(value)
    except json.JSONDecodeError:
        pass  # keep it as a string
    return key, value


def _add_train_options(p):
    from .models import list_heads  # noqa: PLC0415
    from .train import ARCH_CHOICES  # noqa: PLC0415

    model = p.add_argument_group("model")
    model.add_argument(
        "--arch",
        default="tiny",
        choices=ARCH_CHOICES,
        help="backbone: 'tiny' (CPU demo) or a paper network (default: tiny)",
    )
    model.add_argument("--head", default="gmsop", choices=list_heads(), help="pooling head (default: gmsop)")
    model.add_argument(
        "-N",
        "--components",
        dest="num_components",
        type=int,
        default=None,
        help="N: mixture components (gmsop, gmgap; default 16)",
    )
    model.add_argument(
        "-K",
        "--k",
        dest="k",
        type=int,
        default=None,
        help="K: components selected per image (gmsop, gmgap; default 8) or averaged (avesop, avegap; default 16)",
    )
    model.add_argument("--alpha", type=float, default=100.0, help="balance-loss weight, Eq. 4 (default 100)")
    model.add_argument(
        "--preset",
        default="paper",
        choices=["paper", "official"],
        help="follow the paper's text or the official release (default: paper)",
    )
    model.add_argument(
        "--head-arg",
        dest="head_kwargs",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="extra head argument, e.g. --head-arg noise=independent",
    )

    data = p.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="textures",
        choices=["textures", "digits", "imagenet64", "places365"],
        help="default: textures (built in, no download)",
    )
    data.add_argument("--data-dir", default=None, help="folder with the imagenet64 / places365 files")
    data.add_argument("--train-size", type=int, default=None, help="textures: training images to generate")
    data.add_argument("--val-size", type=int, default=None, help="textures: validation images to generate")
    data.add_argument("--image-size", type=int, default=None, help="textures / digits: image side")

    opt = p.add_argument_group("optimisation")
    opt.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epoch budget; the paper's schedule is scaled to it (default: per dataset)",
    )
    opt.add_argument(
        "--schedule",
        type=_int_list,
        default=None,
        metavar="E1,E2,...",
        help="epochs per learning-rate stage, lr / 10 after each (default: the paper's, scaled)",
    )
    opt.add_argument(
        "--lr",
        type=float,
        default=None,
        help="initial learning rate (default: the paper's for the head, e.g. 0.1 for GM-SOP, 0.075 "
        "for GAP; halved on textures/digits, where the batch is 32)",
    )
    opt.add_argument("--batch-size", type=int, default=None, help="default: 32 on textures/digits, 256 otherwise")
    opt.add_argument("--momentum", type=float, default=0.9)
    opt.add_argument("--weight-decay", type=float, default=None, help="default: from the preset")

    run = p.add_argument_group("run")
    run.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    run.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default=None, help="run directory (default: runs/<dataset>-<arch>-<head>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from last.npz")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gmsop", description="GM-SOP (NeurIPS 2018) from scratch on NumPy/CuPy: train, evaluate, plot."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a network (no arguments: a small GM-SOP on textures)",
        description="Train a network; writes config.json, metrics.csv, usage.csv, "
        "last.npz and best.npz into the run directory.",
    )
    _add_train_options(p)

    p = sub.add_parser("eval", help="top-1 / top-5 error of a checkpoint")
    p.add_argument("run", help="run directory (or a checkpoint .npz inside one)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="default: best")
    p.add_argument("--data-dir", default=None, help="override the run's data folder")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--backend", default=None, choices=["numpy", "cupy"])

    p = sub.add_parser("plot", help="figures from a run directory (PNG)")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: the run directory)")

    p = sub.add_parser("experiment", help="reproduce a figure or table of the paper at small scale")
    exp = p.add_subparsers(dest="experiment", metavar="NAME")
    e = exp.add_parser("figure2", help="GM-GAP-16-4 usage per component with alpha = 0 and 100 (Fig. 2)")
    _add_experiment_options(e, default_out="runs/figure2", epochs=3)
    e.add_argument(
        "--noise",
        choices=["independent", "shared"],
        default="independent",
        help="gating noise (default: independent; 'shared' is the official release's, with which "
        "GM-GAP's routing collapses onto K components at this small scale -- see README)",
    )
    e = exp.add_parser("table2", help="ResNet-18 heads side by side (Table 2): error, params, size, images/s")
    _add_experiment_options(e, default_out="runs/table2", epochs=2)
    e.add_argument(
        "--heads",
        default=None,
        help="comma-separated heads (default: gap,gap512,avegap,gmgap,srsop,psrsop,avesop,gmsop)",
    )
    return parser


def _add_experiment_options(p, default_out, epochs):
    p.add_argument("--out", default=default_out, help=f"output folder (default: {default_out})")
    p.add_argument("--arch", default="tiny", help="backbone (default: tiny; resnet18 for the paper's scale)")
    p.add_argument("--dataset", default="textures")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=epochs, help=f"epochs per model (default {epochs})")
    p.add_argument("--train-size", type=int, default=None, help="textures: training images (default: small)")
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")


def _train(args):
    from .train import NonFiniteLossError, TrainConfig, Trainer, default_batch_size  # noqa: PLC0415

    options = vars(args).copy()
    resume = options.pop("resume")
    options.pop("command")
    options["head_kwargs"] = dict(options["head_kwargs"])
    if options["batch_size"] is None:
        options["batch_size"] = default_batch_size(options["dataset"])
    try:
        trainer = Trainer(TrainConfig(**options), resume=resume)
    except (FileExistsError, FileNotFoundError, ValueError, ImportError, RuntimeError, KeyError) as exc:
        print(f"gmsop train: error: {exc}", file=sys.stderr)
        return 2
    _print_header(trainer, resume)
    try:
        summary = trainer.fit()
    except NonFiniteLossError as exc:
        print(f"gmsop train: {exc}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 130 if summary["status"] == "interrupted" else 0


def _print_header(trainer, resume):
    c = trainer.config
    what = f"{c.arch} + {c.head}"
    if c.head in ("gmsop", "gmgap"):
        what += f"-{c.num_components or 16}-{c.k or 8}"
    print(
        f"{'resuming' if resume else 'training'} {what} on {c.dataset} ({len(trainer.train_set)} train / "
        f"{len(trainer.val_set)} val images, {trainer.num_classes} classes), "
        f"{trainer.model.num_parameters():,} parameters, {c.backend}/{c.dtype}",
        flush=True,
    )
    print(
        f"SGD lr {trainer.lr:g} (momentum {c.momentum}, weight decay {trainer.weight_decay:g}), "
        f"schedule {trainer.schedule} epochs (lr / 10 per stage), batch {c.batch_size}; run directory "
        f"{trainer.out}",
        flush=True,
    )


def _print_summary(summary):
    if summary["val_top1"] is None:
        print(f"no epoch finished; run directory {summary['out']}")
        return
    print(
        f"{summary['status']}: {summary['epochs_done']}/{summary['epochs']} epochs in {summary['seconds']:.0f} s "
        f"of training; validation top-1 error {summary['val_top1']:.3f} (best {summary['best_val_top1']:.3f}, "
        f"chance {summary['chance_top1']:.3f}), top-5 {summary['val_top5']:.3f}. Files in {summary['out']}",
        flush=True,
    )


def _eval(args):
    from .train import evaluate_checkpoint  # noqa: PLC0415

    try:
        result = evaluate_checkpoint(
            args.run,
            checkpoint=args.checkpoint,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            backend=args.backend,
        )
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as exc:
        print(f"gmsop eval: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{result['checkpoint']}: top-1 error {result['top1']:.4f}, top-5 error {result['top5']:.4f}, "
        f"loss {result['loss']:.4f} on {result['images']} {result['split']} images"
    )
    return 0


def _plot(args):
    from .plots import plot_run  # noqa: PLC0415

    try:
        paths = plot_run(args.run, args.out)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"gmsop plot: error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def _experiment(args):
    from . import experiments  # noqa: PLC0415

    if args.experiment is None:
        print("gmsop experiment: choose figure2 or table2 (gmsop experiment --help)", file=sys.stderr)
        return 2
    options = {k: v for k, v in vars(args).items() if k not in ("command", "experiment")}
    if args.experiment == "table2" and options.get("heads"):
        options["heads"] = [h.strip() for h in options["heads"].split(",") if h.strip()]
    elif "heads" in options and options["heads"] is None:
        options.pop("heads")
    runner = experiments.figure2 if args.experiment == "figure2" else experiments.table2
    result = runner(**options)
    for path in result["files"]:
        print(path)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"train": _train, "eval": _eval, "plot": _plot, "experiment": _experiment}[args.command]
    return handler(args)


if __name__ == "__main__":  # python -m gmsop_np.cli
    sys.exit(main())
