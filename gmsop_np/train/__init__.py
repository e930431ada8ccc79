"""The training application: options, building a run, the loop, the run directory.

    from gmsop_np.train import TrainConfig, Trainer
    trainer = Trainer(TrainConfig(head="gmsop", epochs=6, out="runs/demo"))
    summary = trainer.fit()
    trainer = Trainer.resume("runs/demo", {"epochs": 8})   # continue, two epochs more

``gmsop train`` (``gmsop_np/cli.py``) is a thin layer over this package, which is
split by concern:

* ``options``    -- ``TrainConfig`` (every option, with its flag and help text) and
  ``resolve`` (the paper's recipe for the head, scaled to the budget);
* ``build``      -- ``build_run``: datasets and the network from a config, for training
  and for evaluation alike;
* ``loop``       -- ``Trainer``: steps, epochs, checkpoints, resume, the NaN guard;
* ``meters``     -- ``DeviceSums``: a pass's loss and errors summed on the device, read rarely;
* ``console``    -- what a run prints: stdout, ``train.log``, a progress line on a terminal;
* ``evaluation`` -- ``evaluate`` and ``evaluate_checkpoint``;
* ``rundir``     -- the files of a run directory.
"""

from .build import Run, build_network, build_run, make_dataset, make_run_loader
from .evaluation import evaluate, evaluate_checkpoint
from .loop import NonFiniteLossError, Trainer
from .options import RESUMABLE, Plan, TrainConfig, flag, head_options, in_flags, model_label, resolve, scale_schedule
from .rundir import METRIC_COLUMNS, TIMING_COLUMNS, RunDirectory

__all__ = [
    "TrainConfig",
    "Plan",
    "resolve",
    "scale_schedule",
    "head_options",
    "model_label",
    "RESUMABLE",
    "flag",
    "in_flags",
    "Run",
    "build_run",
    "build_network",
    "make_dataset",
    "make_run_loader",
    "Trainer",
    "NonFiniteLossError",
    "evaluate",
    "evaluate_checkpoint",
    "RunDirectory",
    "METRIC_COLUMNS",
    "TIMING_COLUMNS",
]
