"""The options of a training run, their defaults, and how the paper's recipe fills in the rest.

``TrainConfig`` holds every option of ``gmsop train``. Each field carries its
command-line flag, help text and group (``option(...)`` below), so the command
line is derived from this one class (``gmsop_np/cli.py``) and every default
lives here, once.

Options left at ``None`` are filled in by ``resolve(config)`` from

* the head's paper recipe (``HEADS[head].recipe``: initial learning rate and
  epochs per stage, lr / 10 after each stage), scaled to ``--epochs``;
* the dataset's training defaults (``DATASETS[name]``: on the small built-in
  sets a short demo budget, batch 32 and half the paper's learning rate --
  the paper's rates were tuned for batch 256);
* the preset (``paper`` / ``official``: weight decay).

Errors name the option as the Python API spells it (``batch_size``); ``in_flags``
rewrites such a message for the command line (``--batch-size``), from the same
declarations, so the mapping exists once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np

from .._checks import check_choice, check_int, check_number
from ..backend import BACKENDS, get_cupy
from ..data import DATASETS, dataset_defaults
from ..models import ARCHS
from ..nn.heads import HEADS, get_head
from ..presets import PRESETS, get_preset

__all__ = [
    "TrainConfig",
    "Plan",
    "resolve",
    "scale_schedule",
    "head_options",
    "model_label",
    "RESUMABLE",
    "DTYPES",
    "option",
    "flag",
    "in_flags",
]

DTYPES = ("float32", "float64")

#: Options that may change when a run is resumed (everything else is fixed by the run).
RESUMABLE = ("epochs", "backend", "progress", "debug", "data_dir", "out", "log_every")

#: The head options that are also ``TrainConfig`` fields (flags ``-N``, ``-K``, ``--alpha``).
HEAD_OPTION_FIELDS = ("num_components", "k", "alpha")


def option(default, help: str, group: str, *, flags=None, choices=None, metavar=None, kind=None):
    """A ``TrainConfig`` field with what the command line needs to offer it.

    flags : the flag names (default ``--<field-name-with-dashes>``)
    choices : allowed values, or a function returning them (read when the parser is built)
    kind : how to parse the text of the flag when the annotation does not say (e.g. a list)
    """
    meta = dict(help=help, group=group, flags=flags, choices=choices, metavar=metavar, kind=kind)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _int_list(text: str) -> list:
    """'40,10,5,5' -> [40, 10, 5, 5]."""
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"expected comma-separated integers like 40,10,5,5, got {text!r}") from None


@dataclass
class TrainConfig:
    """Every option of a training run (``gmsop train --help`` lists the same, from this class).

    >>> TrainConfig(head="gmsop", k=4).head
    'gmsop'
    """

    # ----- model
    arch: str = option(
        "tiny", "backbone: 'tiny' (a small CPU network) or a paper network", "model", choices=tuple(ARCHS)
    )
    head: str = option("gmsop", "pooling head", "model", choices=lambda: sorted(HEADS))
    num_components: int | None = option(
        None, "N: mixture components (gmsop, gmgap; default 16)", "model", flags=("-N", "--components"), metavar="N"
    )
    k: int | None = option(
        None,
        "K: components per image (gmsop, gmgap; default 8) or averaged (avesop, avegap; default 16)",
        "model",
        flags=("-K", "--k"),
        metavar="K",
    )
    alpha: float | None = option(None, "balance-loss weight, Eq. 4 (gmsop, gmgap; default 100)", "model")
    preset: str = option("paper", "follow the paper's text or the official release", "model", choices=tuple(PRESETS))
    head_options: dict = option(
        {},
        "another head option, e.g. --head-arg noise=independent (repeatable; `gmsop heads` lists them)",
        "model",
        flags=("--head-arg",),
        metavar="KEY=VALUE",
    )
    # ----- data
    dataset: str = option("textures", "dataset (textures is built in: no download)", "data", choices=tuple(DATASETS))
    data_dir: str | None = option(
        None, "folder with the dataset's files (imagenet64, places365: required)", "data", metavar="DIR"
    )
    train_size: int | None = option(
        None, "generated datasets (textures): number of training images (default: 3000)", "data", metavar="N"
    )
    val_size: int | None = option(
        None, "generated datasets (textures): number of validation images (default: 1000)", "data", metavar="N"
    )
    image_size: int | None = option(
        None, "built-in datasets (textures, digits): image side in pixels (default: 32)", "data", metavar="PX"
    )
    # ----- optimisation
    epochs: int | None = option(
        None,
        "epoch budget; the paper's schedule is scaled to it (default: per dataset, 5 on textures, the paper's "
        "on the real ones). With --resume: a larger number extends the run at its final learning rate",
        "optimisation",
    )
    schedule: list | None = option(
        None,
        "epochs per learning-rate stage, lr / 10 after each (default: the paper's, scaled to --epochs)",
        "optimisation",
        metavar="E1,E2,...",
        kind=_int_list,
    )
    lr: float | None = option(
        None,
        "initial learning rate (default: the paper's for the head, e.g. 0.1 for GM-SOP and 0.075 for GAP, "
        "halved on the small built-in datasets)",
        "optimisation",
    )
    batch_size: int | None = option(
        None, "images per step (default: per dataset, 32 on the built-in ones, 256 on the real ones)", "optimisation"
    )
    momentum: float = option(0.9, "SGD momentum", "optimisation")
    weight_decay: float | None = option(
        None, "L2 weight decay (default: the preset's, 5e-4 paper / 1e-4 official)", "optimisation"
    )
    # ----- run
    backend: str = option("numpy", "array backend: numpy (CPU) or cupy (NVIDIA GPU)", "run", choices=BACKENDS)
    dtype: str = option("float32", "floating-point precision of the model and data", "run", choices=DTYPES)
    seed: int = option(0, "seed of the weights, the data order and every random draw", "run")
    out: str | None = option(None, "run directory (default: runs/<dataset>-<arch>-<head>)", "run", metavar="DIR")
    progress: bool = option(
        True,
        "no live progress line (it is drawn on stderr only when stderr is a terminal; epoch summaries always go "
        "to stdout and train.log)",
        "run",
        flags=("--no-progress",),
    )
    log_every: int = option(
        10,
        "read the loss and errors back from the device every N steps (and at each epoch's end): the progress "
        "line's figures and the NaN guard; 1 finds a divergence at its exact step, more syncs a GPU less often",
        "run",
        metavar="N",
    )
    debug: bool = option(False, "check values too: NaN/Inf, label and index ranges (slower on a GPU)", "run")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "options") -> TrainConfig:
        """A config from a dict (e.g. a run's config.json); unknown keys are a ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def validate(self) -> None:
        """Check every option before anything is built: the right exception and the option's name."""
        check_choice(self.arch, "arch", tuple(ARCHS))
        spec = get_head(self.head)
        check_choice(self.preset, "preset", tuple(PRESETS))
        check_choice(self.backend, "backend", BACKENDS)
        if self.backend == "cupy":
            get_cupy()  # fails here, with the install hint, when CuPy or a GPU is missing
        check_choice(self.dtype, "dtype", DTYPES)
        check_int(self.seed, "seed", 0)
        check_int(self.log_every, "log_every", 1)
        for name in ("train_size", "val_size", "epochs", "batch_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, 1)
        if self.image_size is not None:
            check_int(self.image_size, "image_size", 8)
        self._check_dataset_options()
        if self.schedule is not None:
            if not isinstance(self.schedule, (list, tuple)) or not self.schedule:
                raise TypeError(f"schedule must be a non-empty list of epochs per stage, got {self.schedule!r}")
            for e in self.schedule:
                check_int(e, "schedule (each stage)", 1)
        if self.lr is not None:
            check_number(self.lr, "lr", 0.0, above=True)
        check_number(self.momentum, "momentum", 0.0, 1.0)
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be below 1, got {self.momentum}")
        if self.weight_decay is not None:
            check_number(self.weight_decay, "weight_decay", 0.0)
        for name in ("out", "data_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a folder path (a str), got {value!r}")
        for name in ("progress", "debug"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.head_options, dict):
            raise TypeError(f"head_options must be a dict of head options, got {self.head_options!r}")
        unknown = sorted(set(self.head_options) - set(spec.options))
        if unknown:
            raise TypeError(
                f"head_options: the head {self.head!r} has no option {', '.join(unknown)}; its options: "
                f"{', '.join(sorted(spec.options)) or 'none'} (gmsop heads lists them with their defaults)"
            )
        spec.check_options(head_options(self))
        _ = resolve(self)  # the schedule and the epochs must agree

    def _check_dataset_options(self) -> None:
        """The data options that apply to this dataset, and only those."""
        data = dataset_defaults(self.dataset)
        if data["needs_root"] and self.data_dir is None:
            raise ValueError(
                f"dataset {self.dataset!r} is read from files: give `data_dir`, the folder that holds them "
                "(README, section 'Datasets', shows the layout)"
            )
        if not data["needs_root"] and self.data_dir is not None:
            raise ValueError(f"data_dir does not apply to the dataset {self.dataset!r}: it is built in (no files)")
        if not data["generated"]:
            for name in ("train_size", "val_size"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} applies only to a generated dataset (textures); {self.dataset!r} has a fixed split"
                    )
        if data["needs_root"] and self.image_size is not None:
            raise ValueError(
                f"image_size applies only to the built-in datasets; {self.dataset!r} images are "
                f"{data['size']}x{data['size']} (as in the paper)"
            )


def head_options(config: TrainConfig) -> dict:
    """The options passed to the head: -N, -K, --alpha (when given) and --head-arg values.

    An option the head does not take is a TypeError naming it.
    """
    spec = get_head(config.head)
    options = {}
    for name in HEAD_OPTION_FIELDS:
        value = getattr(config, name)
        if value is None:
            continue
        if name not in spec.options:
            raise TypeError(
                f"{name} does not apply to the head {config.head!r} (its options: "
                f"{', '.join(sorted(spec.options)) or 'none'})"
            )
        options[name] = value
    clash = sorted(set(options) & set(config.head_options))
    if clash:
        raise ValueError(f"{', '.join(clash)} given twice: as `{clash[0]}` and in `head_options`; give it once")
    return {**options, **config.head_options}


def flag(name: str) -> str | None:
    """The command-line spelling of option ``name``, or None when it has none.

    A ``TrainConfig`` field has its declared flag (``batch_size`` -> ``--batch-size``,
    ``k`` -> ``-K``); a head option without a field of its own is given with
    ``--head-arg`` (``noise`` -> ``--head-arg noise``); the model's ``input_size``
    is set by ``--image-size``.

    >>> flag("batch_size"), flag("k"), flag("noise"), flag("nothing")
    ('--batch-size', '-K', '--head-arg noise', None)
    """
    name = _SET_BY_OPTION.get(name, name)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if name in fields:
        return (fields[name].metadata["flags"] or ("--" + name.replace("_", "-"),))[0]
    if any(name in spec.options for spec in HEADS.values()):
        return f"--head-arg {name}"
    return None


# Library arguments that an option sets: the network's input size is the image size (or the crop).
_SET_BY_OPTION = {"input_size": "image_size"}

# An option named in a message: `name` anywhere, or the message's first word.
_OPTION_IN_MESSAGE = re.compile(r"`(\w+)`|^(\w+)(?=[ (:,]|$)")


def in_flags(message: str, own_flags=()) -> str:
    """A message about options, as the command line spells them.

    Messages name an option by its API name as their first word (``"batch_size must
    be >= 1"``, the convention of ``_checks``) or in backquotes elsewhere; both become
    flags. Other words are left alone. ``own_flags``: names of a command's own options
    that are not training options (``gmsop experiment``'s ``seeds``), spelled ``--name``.

    >>> in_flags("batch_size must be >= 1, got 0")
    '--batch-size must be >= 1, got 0'
    >>> in_flags("k (components per sample) must be between 2 and 16; see `num_components`")
    '-K (components per sample) must be between 2 and 16; see -N'
    >>> in_flags("seeds must be >= 1, got 0", own_flags=("seeds",))
    '--seeds must be >= 1, got 0'
    """

    def swap(match):
        name = match.group(1) or match.group(2)
        if name in own_flags:
            return "--" + name.replace("_", "-")
        return flag(name) or match.group(0)

    return _OPTION_IN_MESSAGE.sub(swap, str(message))


def model_label(config: TrainConfig) -> str:
    """The network in the paper's words: ``"tiny + GM-SOP-16-8"`` (backbone + the head's label)."""
    return f"{config.arch} + {get_head(config.head).display_name(head_options(config))}"


def scale_schedule(stages, epochs: int) -> list:
    """Scale a stage list to a budget of ``epochs``, keeping its proportions.

    Trailing stages that would get less than about half an epoch are dropped
    first; then the stage boundaries are rounded, so the stages sum to
    ``epochs``, each at least 1.

    >>> scale_schedule((40, 10, 5, 5), 12)
    [8, 2, 1, 1]
    >>> scale_schedule((40, 10, 5, 5), 3)
    [2, 1]
    """
    epochs = check_int(epochs, "epochs", 1)
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


@dataclass(frozen=True)
class Plan:
    """What ``resolve`` derives from a config: the numbers the run actually uses."""

    lr: float
    schedule: list
    weight_decay: float
    batch_size: int

    @property
    def epochs(self) -> int:
        return sum(self.schedule)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "epochs": self.epochs}


def resolve(config: TrainConfig) -> Plan:
    """Fill the options left at ``None`` from the head's recipe, the dataset and the preset."""
    recipe = get_head(config.head).recipe
    data = dataset_defaults(config.dataset)
    epochs = config.epochs if config.epochs is not None else data["epochs"]
    if config.schedule is not None:
        schedule = [int(s) for s in config.schedule]
        if config.epochs is not None and sum(schedule) != config.epochs:
            raise ValueError(
                f"schedule {','.join(map(str, schedule))} sums to {sum(schedule)} epochs but `epochs` is "
                f"{config.epochs}; give one of them"
            )
    else:
        schedule = scale_schedule(recipe.stages, epochs) if epochs is not None else list(recipe.stages)
    lr = config.lr if config.lr is not None else recipe.lr * data["lr_scale"]
    weight_decay = config.weight_decay if config.weight_decay is not None else get_preset(config.preset).weight_decay
    batch_size = config.batch_size if config.batch_size is not None else data["batch_size"]
    return Plan(float(lr), schedule, float(weight_decay), int(batch_size))


def parse_value(text: str):
    """A --head-arg value: JSON when it parses (numbers, true/false, null), else the string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return value if not (isinstance(value, float) and not math.isfinite(value)) else text
