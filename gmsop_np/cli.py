"""The ``gmsop`` command line (console script ``gmsop = gmsop_np.cli:main``).

    gmsop train                          # small GM-SOP on the built-in textures, NumPy, about a minute
    gmsop train --arch resnet18 --head gmsop -N 16 -K 8 --dataset imagenet64 --data-dir DIR
    gmsop train --out runs/x --resume    # continue exactly where a run stopped
    gmsop heads                          # every head and its options (for -N, -K, --alpha, --head-arg)
    gmsop eval runs/x                    # top-1 / top-5 error of runs/x/best.npz
    gmsop plot runs/x                    # loss / error curves and component usage (PNGs)
    gmsop experiment figure2             # paper Fig. 2: component usage with alpha = 0 vs 100
    gmsop experiment table2              # paper Table 2: the heads side by side

Every ``train`` option is a field of ``gmsop_np.train.TrainConfig``, from which
this parser is built: flags, help texts and defaults live there, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from . import __version__

__all__ = ["main", "build_parser"]

EXAMPLES = __doc__.split("\n\n")[1]


class CommandError(Exception):
    """A user error found by the command line: printed as one line, exit code 2."""


# ----- train options, derived from TrainConfig -----------------------------------------------------
def _key_value(text):
    from .train.options import parse_value  # noqa: PLC0415

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), parse_value(value)


def _parser_of(f: dataclasses.Field):
    """How the text of a flag becomes the field's value (from its metadata or annotation)."""
    kind = f.metadata.get("kind")
    if kind is not None:

        def parse(text):
            try:
                return kind(text)
            except ValueError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        return parse
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return int if annotation.startswith("int") else float if annotation.startswith("float") else str


def _add_train_options(p) -> None:
    """One argparse option per ``TrainConfig`` field. Options not given stay absent
    (``argparse.SUPPRESS``), so the config's own defaults apply and a resume knows what was asked."""
    from .train import TrainConfig  # noqa: PLC0415

    groups = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        group = groups.setdefault(meta["group"], p.add_argument_group(meta["group"]))
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "" if default is None or isinstance(default, bool) else f" (default: {default})"
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=meta["help"] + shown)
        if isinstance(default, bool):
            kwargs["action"] = "store_false" if default else "store_true"
        elif f.name == "head_options":
            kwargs.update(action="append", type=_key_value, metavar=meta["metavar"])
        else:
            choices = meta["choices"]
            kwargs.update(type=_parser_of(f), metavar=meta["metavar"])
            if choices is not None:
                kwargs["choices"] = choices() if callable(choices) else choices
        group.add_argument(*flags, **kwargs)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.npz")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmsop",
        description="GM-SOP (NeurIPS 2018) from scratch on NumPy/CuPy: train, evaluate, plot.",
        epilog="examples:\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gmsop_np {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a network (no arguments: a small GM-SOP on textures)",
        description="Train a network; writes config.json, metrics.csv, usage.csv, last.npz and best.npz "
        "into the run directory.",
    )
    _add_train_options(p)

    sub.add_parser("heads", help="every head: its name in the paper, description and options")

    p = sub.add_parser("eval", help="top-1 / top-5 error of a checkpoint")
    p.add_argument("run", help="run directory (or a checkpoint .npz inside one)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="default: best")
    p.add_argument("--data-dir", default=None, help="override the run's data folder")
    p.add_argument("--batch-size", type=int, default=None, help="default: the run's")
    p.add_argument("--backend", default=None, choices=["numpy", "cupy"], help="default: the run's")

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


# ----- commands ------------------------------------------------------------------------------------
def _train(args):
    from .train import NonFiniteLossError, TrainConfig, Trainer  # noqa: PLC0415

    given = {k: v for k, v in vars(args).items() if k not in ("command", "resume")}
    if "head_options" in given:
        given["head_options"] = dict(given["head_options"])
    try:
        if args.resume:
            if "out" not in given:
                raise CommandError("--resume needs the run directory: --out DIR")
            trainer = Trainer.resume(given["out"], given)
        else:
            trainer = Trainer(TrainConfig(**given))
    except (FileExistsError, FileNotFoundError, ValueError, TypeError, ImportError, RuntimeError, KeyError) as exc:
        raise CommandError(exc) from None
    _print_header(trainer, args.resume)
    try:
        summary = trainer.fit()
    except NonFiniteLossError as exc:
        print(f"gmsop train: {exc}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 130 if summary["status"] == "interrupted" else 0


def _print_header(trainer, resume):
    from .train import model_label  # noqa: PLC0415

    c, plan = trainer.config, trainer.plan
    print(
        f"{'resuming' if resume else 'training'} {model_label(c)} on {c.dataset} ({len(trainer.train_set)} train / "
        f"{len(trainer.val_set)} val images, {trainer.num_classes} classes), "
        f"{trainer.model.num_parameters():,} parameters, {c.backend}/{c.dtype}",
        flush=True,
    )
    print(
        f"SGD lr {plan.lr:g} (momentum {c.momentum}, weight decay {plan.weight_decay:g}), "
        f"schedule {plan.schedule} epochs (lr / 10 per stage), batch {plan.batch_size}; run directory "
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


def _heads(args):
    from .nn.heads import HEADS  # noqa: PLC0415

    for name, spec in sorted(HEADS.items()):
        print(f"{name:8} {spec.display_name()}: {spec.description}")
        options = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
        print(f"         options: {options or 'none'}")
    return 0


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
    except (FileNotFoundError, ValueError, TypeError, ImportError, RuntimeError) as exc:
        raise CommandError(exc) from None
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
        raise CommandError(exc) from None
    for path in paths:
        print(path)
    return 0


def _experiment(args):
    from . import experiments  # noqa: PLC0415

    if args.experiment is None:
        raise CommandError("choose figure2 or table2 (gmsop experiment --help)")
    options = {k: v for k, v in vars(args).items() if k not in ("command", "experiment")}
    if args.experiment == "table2" and options.get("heads"):
        options["heads"] = [h.strip() for h in options["heads"].split(",") if h.strip()]
    elif "heads" in options and options["heads"] is None:
        options.pop("heads")
    runner = experiments.figure2 if args.experiment == "figure2" else experiments.table2
    try:
        result = runner(**options)
    except (FileNotFoundError, ValueError, TypeError, ImportError, RuntimeError) as exc:
        raise CommandError(exc) from None
    for path in result["files"]:
        print(path)
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {"train": _train, "heads": _heads, "eval": _eval, "plot": _plot, "experiment": _experiment}
    handler = handlers[args.command]
    try:
        return handler(args)
    except CommandError as exc:
        print(f"gmsop {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m gmsop_np.cli
    sys.exit(main())
