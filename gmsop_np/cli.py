"""The ``gmsop`` command line (console script ``gmsop = gmsop_np.cli:main``).

    gmsop train                          # a small GM-SOP on the built-in textures, on the CPU
    gmsop train --head gap --lr 0.02 --epochs 8 --out runs/gap
    gmsop train --arch resnet18 --head gmsop -N 16 -K 8 --dataset imagenet64 --data-dir DIR
    gmsop train --out runs/x --resume    # continue exactly where a run stopped (Ctrl-C, a crash)
    gmsop train --out runs/x --resume --epochs 8   # extend a run: the new epochs at its last learning rate
    gmsop train --out runs/x --resume --backend cupy   # continue a CPU run on the GPU (or the reverse)
    gmsop heads                          # every head and its options (for -N, -K, --alpha, --head-arg)
    gmsop eval runs/x                    # top-1 / top-5 error of runs/x/best.npz
    gmsop plot runs/x                    # loss / error curves and component usage (PNGs)
    gmsop experiment figure2             # paper Fig. 2: component usage with alpha = 0 vs 100
    gmsop experiment table2              # paper Table 2: the heads side by side

Output: the header, one line per epoch and the summary on stdout and in the run's
train.log; a progress line on stderr when stderr is a terminal (--no-progress: none).
Exit status: 0 done (or stopped at the requested epoch), 1 the run diverged (a NaN
or Inf loss: nothing saved, last.npz keeps the last good weights) or a file could
not be written, 2 a usage error (the message names the option), 130 interrupted by
Ctrl-C (once: the step finishes and last.npz is saved; continue with --resume).

Every ``train`` option is a field of ``gmsop_np.train.TrainConfig``, from which
this parser is built: flags, help texts and defaults live there, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from . import __version__

__all__ = ["main", "build_parser"]

EXAMPLES = __doc__.split("\n\n")[1]
OUTPUT_AND_EXIT_STATUS = __doc__.split("\n\n")[2]
TRAIN_EXAMPLES = "\n".join(line for line in EXAMPLES.splitlines() if line.strip().startswith("gmsop train"))


class CommandError(Exception):
    """A user error found by the command line: printed as one line, exit code 2."""


# ----- train options, derived from TrainConfig -----------------------------------------------------
def _key_value(text):
    from .train.options import parse_value  # noqa: PLC0415

    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. noise=independent), got {text!r}")
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
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last.npz; only --epochs (larger: extends the run), --backend, "
        "--data-dir, --log-every, --no-progress and --debug may differ from the run's options",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmsop",
        description="GM-SOP (NeurIPS 2018) from scratch on NumPy/CuPy: train, evaluate, plot.",
        epilog="examples:\n" + EXAMPLES + "\n\n" + OUTPUT_AND_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gmsop_np {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a network (no arguments: a small GM-SOP on textures)",
        description="Train a network; writes config.json, metrics.csv, usage.csv, train.log, last.npz and "
        "best.npz into the run directory. Options left out take the paper's recipe for the head, scaled to the "
        "dataset's budget (the header says what was chosen).",
        epilog="examples:\n" + TRAIN_EXAMPLES + "\n\n" + OUTPUT_AND_EXIT_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_options(p)

    sub.add_parser("heads", help="every head: its name in the paper, description and options")

    p = sub.add_parser(
        "eval",
        help="top-1 / top-5 error of a checkpoint",
        description="Evaluate a checkpoint of a run on its validation set; writes eval_<checkpoint>.json next to it.",
    )
    p.add_argument("run", help="run directory (or a checkpoint .npz inside one)")
    p.add_argument(
        "--checkpoint", default="best", choices=["best", "last"], help="which checkpoint of the run (default: best)"
    )
    p.add_argument("--data-dir", default=None, metavar="DIR", help="the dataset's folder (default: the run's)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: the run's)")
    p.add_argument(
        "--backend", default=None, choices=["numpy", "cupy"], help="where to evaluate (default: the run's backend)"
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress line on the terminal (stderr)"
    )

    p = sub.add_parser("plot", help="figures from a run directory (PNG)")
    p.add_argument("run", help="run directory (written by gmsop train)")
    p.add_argument("--out", default=None, help="where to write the PNGs (default: the run directory)")

    p = sub.add_parser(
        "experiment",
        help="reproduce Table 2 or Figure 2 of the paper at small scale (several seeds, the claims checked)",
    )
    exp = p.add_subparsers(dest="experiment", metavar="NAME")
    e = exp.add_parser(
        "table2",
        help="the heads of Table 2 on multimodal and hues: error mean +- std over seeds, claims 1-3",
        description="Train the heads of Table 2 on each dataset, --seeds times each; write table2.md, table2.png "
        "and table2.json into --out and print each of the paper's claims as a check with its outcome. Every "
        "model is a run directory (--out/<dataset>/<head>/seed<k>: gmsop plot works on it); started again, the "
        "experiment reuses finished runs and resumes unfinished ones.",
    )
    _add_experiment_options(e, default_out="runs/table2")
    e.add_argument(
        "--datasets",
        default=None,
        metavar="NAMES",
        help="comma-separated datasets (default: multimodal,hues -- the SOP claims on multimodal, the GAP claim "
        "on hues; a real dataset needs --data-dir)",
    )
    e.add_argument(
        "--heads",
        default=None,
        metavar="NAMES",
        help="comma-separated heads (default: gap,gap512,avegap,gmgap,srsop,psrsop,avesop,gmsop on "
        "second-order data, the GAP heads on hues)",
    )
    e = exp.add_parser(
        "figure2",
        help="GM-GAP-16-4 with alpha = 0 and 100 on hues: samples per component, claim 4",
        description="Train GM-GAP-16-4 with each balance-loss weight, --seeds times each; write figure2.md, "
        "figure2.png and figure2.json into --out (--out/alpha<a>/seed<k> are run directories) and print the "
        "checks of the paper's Figure 2 with the validation error beside them.",
    )
    _add_experiment_options(e, default_out="runs/figure2")
    e.add_argument("--dataset", default=None, help="dataset (default: hues, first-order: GM-GAP learns there)")
    e.add_argument("--alphas", default="0,100", metavar="A1,A2", help="balance-loss weights (default: 0,100)")
    e.add_argument(
        "--noise",
        choices=["independent", "shared"],
        default="independent",
        help="gating noise (default: independent; 'shared' is the official release's, with which "
        "GM-GAP's routing can collapse onto K components whatever alpha -- see README)",
    )
    return parser


def _add_experiment_options(p, default_out):
    p.add_argument("--out", default=default_out, help=f"output folder (default: {default_out})")
    p.add_argument(
        "--seeds", type=int, default=3, metavar="N", help="seeds per model: --seed, --seed + 1, ... (default: 3)"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed (default: 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="W",
        help=f"models trained at once, each in its own process with one thread (default: the CPU count, "
        f"{os.cpu_count()}; 1 with --backend cupy)",
    )
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="array backend (default: numpy)")
    p.add_argument("--arch", default="tiny", help="backbone (default: tiny; resnet18 for the paper's scale)")
    p.add_argument("--data-dir", default=None, metavar="DIR", help="the dataset's folder (the real datasets)")
    p.add_argument(
        "--epochs", type=int, default=None, help="epochs per model (default: 20 on the built-in datasets, see README)"
    )
    for name, what, default in (("train-size", "training", 2000), ("val-size", "validation", 500)):
        p.add_argument(
            f"--{name}",
            type=int,
            default=None,
            metavar="N",
            help=f"built-in datasets: {what} images (default: {default})",
        )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="PX",
        help="built-in datasets: image side (default: 24 on multimodal, 16 on hues)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: the dataset's)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: each head's recipe)")
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress line on the terminal (stderr)"
    )


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
    except (ValueError, TypeError, ImportError, RuntimeError, KeyError, OSError, MemoryError) as exc:
        raise CommandError(_message(exc)) from None
    try:
        summary = trainer.fit()
    except NonFiniteLossError as exc:
        print(f"gmsop train: stopped: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except (OSError, MemoryError) as exc:  # a full disk, a folder removed under the run, a batch too large
        print(f"gmsop train: stopped: {_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: the trainer has said what was kept
        return 130
    return 130 if summary["status"] == "interrupted" else 0


def _message(exc, own_flags=()) -> str:
    """An exception as one line for the terminal: options as flags, an OS error as 'file: reason'.

    ``own_flags``: the command's options that are not training options (see ``train.in_flags``).
    """
    from .train import in_flags  # noqa: PLC0415

    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc}); try a smaller --batch-size, --image-size or --train-size"
    return in_flags(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc, own_flags)


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
            progress=args.progress,
        )
    except (ValueError, TypeError, ImportError, RuntimeError, OSError, MemoryError) as exc:
        raise CommandError(_message(exc)) from None
    top5 = f", top-5 error {result['top5']:.4f}" if result["num_classes"] > 5 else ""
    print(
        f"{result['checkpoint']}: top-1 error {result['top1']:.4f}{top5}, loss {result['loss']:.4f} on "
        f"{result['images']} {result['split']} images"
    )
    return 0


def _plot(args):
    from .plots import plot_run  # noqa: PLC0415

    try:
        paths = plot_run(args.run, args.out)
    except (ValueError, ImportError, OSError) as exc:
        raise CommandError(_message(exc)) from None
    for path in paths:
        print(path)
    return 0


def _experiment(args):
    from . import experiments  # noqa: PLC0415
    from .train import NonFiniteLossError  # noqa: PLC0415

    if args.experiment is None:
        raise CommandError("choose table2 or figure2 (gmsop experiment --help)")
    options = {k: v for k, v in vars(args).items() if k not in ("command", "experiment")}
    runner = experiments.figure2 if args.experiment == "figure2" else experiments.table2
    try:
        result = runner(**options)
    except NonFiniteLossError as exc:
        print(f"gmsop experiment: stopped: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, ImportError, RuntimeError, OSError) as exc:
        raise CommandError(_message(exc, experiments.OPTION_NAMES)) from None
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
    except KeyboardInterrupt as exc:  # Ctrl-C outside a training loop (building the data, evaluating, ...)
        print(f"\ngmsop {args.command}: interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gmsop ... | head`: the reader left; stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":  # python -m gmsop_np.cli
    sys.exit(main())
