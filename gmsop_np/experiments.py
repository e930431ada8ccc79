"""Small-scale reproductions of the paper's Table 2 and Figure 2 (``gmsop experiment``).

The paper's qualitative claims, and the built-in data on which each has something to show
(``gmsop_np/data``; the real datasets, e.g. ``cifar10``, test all of them):

1. second-order pooling beats first-order pooling: on second-order data (``textures``,
   ``multimodal``) every SOP head (SR-SOP, parametric SR-SOP, Ave-SOP-16, GM-SOP-16-8)
   has a lower error than every GAP head (GAP, GAP-512d, Ave-GAP-16, GM-GAP-16-8);
2. a gated mixture of SOPs beats a single SOP and a plain average: GM-SOP-16-8 at or
   below Ave-SOP-16 and SR-SOP on data whose classes are multi-modal (``multimodal``);
3. a gated mixture of GAPs beats GAP: GM-GAP-16-8 below GAP where first-order
   statistics carry the label (``hues``);
4. (Figure 2) the balance loss: without it (alpha = 0) about K components receive most
   samples; with alpha = 100 the usage is near uniform -- on models that learn.

* ``table2`` trains the heads of Table 2 on each dataset, ``seeds`` times, and writes
  ``table2.md`` (mean +- std over seeds, the per-seed errors, how much the error still
  moved in the last quarter of the epochs, parameters, representation size, images/s),
  ``table2.png`` (error bars) and ``table2.json``, and prints claims 1-3 as checks.
* ``figure2`` trains GM-GAP-16-4 with alpha = 0 and alpha = 100, ``seeds`` times, and
  writes ``figure2.md``, ``figure2.png`` (share of the selections per component, ranked,
  mean +- std over seeds, the validation error beside each histogram) and
  ``figure2.json``, and prints claim 4's checks.

A check that fails says so: the outcome is measured, not assumed.

The defaults (``TABLE2_DATASETS``, ``FIGURE2_DATASET``: dataset sizes, image side and
epochs) were chosen by measurement so that the validation error has stopped falling
(README, "Reproducing the paper at small scale"); ``epochs`` and the size options
override them.

Runs. Every model is an ordinary run directory (so ``gmsop plot`` works on it):
``out/<dataset>/<head>/seed<k>`` and ``out/alpha<a>/seed<k>``. Started again, an
experiment reuses the runs that finished, resumes the unfinished ones, and refuses a
folder that holds a run with other options (it names the folder and the options).
Independent runs train in ``workers`` processes (default: one per CPU), each with one
thread (BLAS's and gmsop_np's own); ``workers=1`` -- and the ``cupy`` backend, one model at a time on the GPU --
trains them one after the other in this process.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import multiprocessing
import os
import platform
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from ._checks import check_choice, check_int, check_number
from .backend import BACKENDS
from .data import DATASETS, dataset_defaults
from .nn.heads import get_head
from .nn.mixture import usage_cv
from .train import TrainConfig, Trainer
from .train.rundir import RunDirectory

__all__ = [
    "table2",
    "figure2",
    "TABLE2_HEADS",
    "TABLE2_DATASETS",
    "FIGURE2_DATASET",
    "Budget",
    "Check",
    "train_runs",
    "run_or_resume",
    "OPTION_NAMES",
]

#: Table 2's heads, in the paper's order (each at its default options: Ave-*-16, GM-*-16-8).
TABLE2_HEADS = ("gap", "gap512", "avegap", "gmgap", "srsop", "psrsop", "avesop", "gmsop")
GAP_HEADS = tuple(h for h in TABLE2_HEADS if not get_head(h).second_order)


@dataclass(frozen=True)
class Budget:
    """How the experiments train on a built-in dataset: sizes, image side, epochs."""

    train_size: int
    val_size: int
    image_size: int
    epochs: int

    def options(self) -> dict:
        return dict(train_size=self.train_size, val_size=self.val_size, image_size=self.image_size, epochs=self.epochs)


#: table2's built-in datasets: the budget chosen by measurement, and the heads compared on each
#: (``hues`` carries no second-order signal worth a SOP head's time: the GAP family only).
TABLE2_DATASETS = {
    "multimodal": (Budget(2000, 500, 24, 20), TABLE2_HEADS),
    "hues": (Budget(2000, 500, 16, 20), GAP_HEADS),
}
#: figure2's default dataset and budget (first-order data, so that GM-GAP learns).
FIGURE2_DATASET = ("hues", Budget(2000, 500, 16, 20))

#: The built-in datasets on which each claim can show (the real datasets test every claim).
CLAIM_DATA = {
    "sop_below_gap": ("textures", "multimodal"),
    "gmsop_best_sop": ("multimodal",),
    "gmgap_below_gap": ("hues",),
}

#: The options of the experiments that are not training options (errors name them; the CLI maps them to flags).
OPTION_NAMES = ("seeds", "workers", "datasets", "heads", "alphas", "noise")

# Options a run folder may have been trained with differently and still be reused (how, not what, it trains).
_NOT_COMPARED = ("out", "progress", "backend", "debug", "log_every", "data_dir")
# One thread per worker process, BLAS's and gmsop_np's own (functions/parallel.py): on these small
# models, processes scale and threads do not, and more threads than cores would only compete.
_ONE_THREAD = {
    name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GMSOP_NP_NUM_THREADS")
}


# ----- one run --------------------------------------------------------------------------------------
def run_or_resume(config: TrainConfig, callbacks=()):
    """Train ``config`` into ``config.out``; continue it if a previous attempt stopped early.

    A Ctrl-C (the run saved its checkpoint) ends with ``KeyboardInterrupt``; the same call
    again resumes it.
    """
    if RunDirectory(config.out).holds_a_run():
        changes = {"backend": config.backend, "progress": config.progress}
        trainer = Trainer.resume(config.out, changes, callbacks=callbacks)
    else:
        trainer = Trainer(config, callbacks=callbacks)
    summary = trainer.fit()
    if summary["status"] == "interrupted":
        raise KeyboardInterrupt(f"{config.out} was interrupted; run the experiment again to resume it")
    return trainer, summary


@dataclass
class RunResult:
    """What an experiment reads back from a finished run directory."""

    config: TrainConfig
    val_top1: list  # per epoch
    usage: list | None  # samples per component in the last epoch (mixture heads)
    num_parameters: int
    representation_dim: int | None
    num_classes: int
    images_per_s: float  # mean over the epochs
    seconds: float  # training time, all epochs

    @property
    def error(self) -> float:
        """The final epoch's validation top-1 error (as the paper reports: not the best epoch)."""
        return self.val_top1[-1]

    @property
    def chance(self) -> float:
        return 1.0 - 1.0 / self.num_classes


def _read_run(config: TrainConfig) -> RunResult:
    from .plots import read_metrics, read_usage  # noqa: PLC0415  (plots imports matplotlib only to draw)

    run_dir = RunDirectory(config.out)
    derived = run_dir.read_config()["derived"]
    metrics, usage = read_metrics(config.out), read_usage(config.out)
    return RunResult(
        config=config,
        val_top1=[float(v) for v in metrics["val_top1"]],
        usage=None if usage is None else [int(c) for c in usage[1][-1]],
        num_parameters=int(derived["num_parameters"]),
        representation_dim=derived.get("representation_dim"),
        num_classes=int(derived["num_classes"]),
        images_per_s=float(np.mean(metrics["images_per_s"])),
        seconds=float(np.sum(metrics["seconds"])),
    )


def _epochs_done(run_dir: RunDirectory) -> int:
    path = run_dir.file("metrics.csv")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return max(sum(1 for line in handle if line.strip()) - 1, 0)


def _state_of(config: TrainConfig) -> str:
    """ "new", "resume" or "done" for the folder of ``config``.

    A folder holding a run with other options is a ValueError naming it and the options:
    results are never read from, nor training continued in, a run of another experiment.
    """
    run_dir = RunDirectory(config.out)
    if not run_dir.holds_a_run():
        return "new"
    stored = run_dir.read_config()
    wanted = json.loads(json.dumps(config.to_dict()))  # as config.json spells it (lists, floats)
    differ = [
        f"{name} {stored['options'].get(name)!r} there, {value!r} here"
        for name, value in wanted.items()
        if name not in _NOT_COMPARED and stored["options"].get(name) != value
    ]
    if differ:
        raise ValueError(
            f"{config.out} holds a run with other options ({'; '.join(differ)}), so it is not reused: "
            "give the experiment another `out`, or remove that folder"
        )
    epochs = stored["derived"].get("epochs")
    return "done" if epochs is not None and _epochs_done(run_dir) >= epochs else "resume"


# ----- many runs: in parallel processes, or one after the other --------------------------------------
_STOP = None  # in a worker process: the Event the parent sets on Ctrl-C


def _start_worker(stop) -> None:
    """Worker initialiser: Ctrl-C is the parent's to handle (it sets ``stop``; see ``_train_in_parallel``)."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_when_asked(trainer, epoch, step) -> None:
    if _STOP is not None and _STOP.is_set():
        trainer.request_stop()  # finishes this step, saves last.npz, returns: resumable


def _train_quietly(config: TrainConfig) -> RunResult:
    """Train one run; its header and epoch lines go to its train.log only (the experiment prints one line)."""
    if _STOP is not None and _STOP.is_set():
        raise KeyboardInterrupt("stopped before it started")
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        run_or_resume(config, callbacks=[_stop_when_asked])
    return _read_run(config)


@contextlib.contextmanager
def _environment(values: dict):
    """``os.environ`` updated inside the block (spawned processes inherit it), restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _train_in_parallel(configs, workers: int, report) -> None:
    """Train ``configs`` in ``workers`` fresh processes with one thread each (BLAS and gmsop_np).

    At most ``workers`` runs are handed out at a time, so a Ctrl-C leaves nothing queued:
    the parent sets the stop event, each running model finishes its step and saves
    ``last.npz``, and the experiment ends (run it again to resume). A run that fails
    (e.g. diverges) stops the others the same way, then its error is raised.
    """
    context = multiprocessing.get_context("spawn")  # fresh interpreters: they read the BLAS thread count
    stop = context.Event()
    waiting, running = list(configs), {}
    with (
        _environment(_ONE_THREAD),
        ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(stop,)) as pool,
    ):
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    config = waiting.pop(0)
                    running[pool.submit(_train_quietly, config)] = config
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    report(running.pop(future), future.result())
        except BaseException:
            stop.set()
            if running:
                print(
                    f"stopping: the {len(running)} running model(s) finish their step and save last.npz ...",
                    file=sys.stderr,
                    flush=True,
                )
                wait(running)
            raise


def _train_in_order(configs, report) -> None:
    for config in configs:
        report(config, _train_quietly(config))


def train_runs(configs, workers: int, label=lambda config: config.out) -> tuple[list, int]:
    """Train (or resume, or reuse) every config; their ``RunResult`` in the same order, and
    how many of them were reused (finished earlier).

    Each folder is checked before anything trains (``_state_of``). One line per run is
    printed as it finishes, ``label(config)`` naming it.
    """
    states = [_state_of(c) for c in configs]
    todo = [c for c, s in zip(configs, states) if s != "done"]
    resumed = sum(s == "resume" for s in states)
    print(
        f"{len(configs)} runs: {len(configs) - len(todo)} finished earlier (reused), {resumed} to resume, "
        f"{len(todo) - resumed} to start; "
        + (f"{workers} worker processes, one thread each" if workers > 1 else "one at a time"),
        flush=True,
    )
    results = {c.out: _read_run(c) for c, s in zip(configs, states) if s == "done"}
    reused, start = len(results), time.perf_counter()

    def report(config, result):
        results[config.out] = result
        print(
            f"[{len(results) - reused}/{len(todo)}] {label(config)}: validation top-1 error "
            f"{100 * result.error:.1f}% after {len(result.val_top1)} epochs ({result.seconds:.0f} s of training; "
            f"{_elapsed(start)} elapsed) -> {config.out}",
            flush=True,
        )

    if workers > 1 and len(todo) > 1:
        _train_in_parallel(todo, min(workers, len(todo)), report)
    else:
        _train_in_order(todo, report)
    return [results[c.out] for c in configs], reused


def _train_and_describe(configs, workers: int, label) -> tuple[list, dict]:
    """``train_runs``, and the provenance of the whole experiment (date, machine, load, wall time)."""
    start, load_start = time.perf_counter(), _load()
    results, reused = train_runs(configs, workers, label)
    return results, _provenance(start, load_start, reused, len(configs))


def _elapsed(start) -> str:
    seconds = int(time.perf_counter() - start)
    return f"{seconds // 60}:{seconds % 60:02d}"


# ----- options ----------------------------------------------------------------------------------------
def _check_execution(out, seeds, seed, workers, backend) -> int:
    """Validate the options of how an experiment runs; the number of worker processes."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out {out!r} is a file, not a folder: give the experiment a folder for its runs")
    check_int(seeds, "seeds", 1)
    check_int(seed, "seed", 0)
    check_choice(backend, "backend", BACKENDS)
    if workers is None:
        return 1 if backend == "cupy" else (os.cpu_count() or 1)
    workers = check_int(workers, "workers", 1)
    if backend == "cupy" and workers > 1:
        raise ValueError(f"workers must be 1 with the cupy backend (one GPU trains one model at a time), got {workers}")
    return workers


def _names(values, name: str, known, what: str) -> list:
    """A list of names (a comma-separated string is split), each one of ``known``."""
    if isinstance(values, str):
        values = [v.strip() for v in values.split(",") if v.strip()]
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty; give at least one of: {', '.join(known)}")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"{name}: {', '.join(map(repr, unknown))} not {what}; choose from: {', '.join(known)}")
    return values


def _run_options(dataset: str, budget: Budget | None, overrides: dict) -> dict:
    """The training options of one dataset: its measured budget (built-in data), then what the user set."""
    options = {"dataset": dataset, **(budget.options() if budget is not None else {})}
    options.update({k: v for k, v in overrides.items() if v is not None})
    if not dataset_defaults(dataset)["generated"]:  # real data: fixed splits and image size
        options = {k: v for k, v in options.items() if k not in ("train_size", "val_size") or k in overrides}
    return options


def _validated(configs) -> list:
    """Every config checked before anything trains (a bad option is one error, not a crash mid-way)."""
    for config in configs:
        config.validate()
    return configs


# ----- statistics -------------------------------------------------------------------------------------
@dataclass
class Row:
    """One model over its seeds: the errors (fractions) and what the table shows beside them."""

    head: str
    label: str
    results: list = field(default_factory=list)

    @property
    def errors(self) -> np.ndarray:
        return np.array([r.error for r in self.results])

    @property
    def mean(self) -> float:
        return float(self.errors.mean())

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (ddof = 1; NaN for one seed)."""
        return float(self.errors.std(ddof=1)) if len(self.errors) > 1 else math.nan

    @property
    def late_change(self) -> float:
        """Mean change of the validation error over the last quarter of the epochs (negative: still falling)."""
        return float(np.mean([_late_change(r.val_top1) for r in self.results]))

    def text(self) -> str:
        """``"12.3 ± 1.4"`` (percent)."""
        spread = "" if math.isnan(self.std) else f" ± {100 * self.std:.1f}"
        return f"{100 * self.mean:.1f}{spread}"


def _late_change(curve) -> float:
    """Error at the end minus the error a quarter of the epochs earlier."""
    back = max(1, round(len(curve) / 4))
    return curve[-1] - curve[max(len(curve) - 1 - back, 0)]


# ----- the claims -------------------------------------------------------------------------------------
@dataclass
class Check:
    """One of the paper's claims, measured: ``holds`` is True, False, or None (not checked here)."""

    claim: str
    where: str
    holds: bool | None
    detail: str

    def __post_init__(self):
        if self.holds is not None:
            self.holds = bool(self.holds)  # a NumPy bool would not go into table2.json / figure2.json

    def line(self) -> str:
        verdict = {True: "REPRODUCED", False: "NOT REPRODUCED", None: "NOT CHECKED"}[self.holds]
        return f"[{verdict}] {self.claim} ({self.where}): {self.detail}"


def _claim_applies(claim: str, dataset: str) -> bool:
    return dataset in CLAIM_DATA[claim] or dataset_defaults(dataset)["needs_root"]


def _sop_below_gap(rows: dict, dataset: str) -> Check:
    claim = "SOP family below GAP family"
    sop = [r for h, r in rows.items() if get_head(h).second_order]
    gap = [r for h, r in rows.items() if not get_head(h).second_order]
    if not sop or not gap:
        return Check(claim, dataset, None, "needs at least one SOP and one GAP head")
    worst_sop, best_gap = max(sop, key=lambda r: r.mean), min(gap, key=lambda r: r.mean)
    holds = worst_sop.mean < best_gap.mean
    return Check(
        claim,
        dataset,
        holds,
        f"worst SOP head {worst_sop.label} {worst_sop.text()}% {'<' if holds else '>='} best GAP head "
        f"{best_gap.label} {best_gap.text()}%",
    )


def _paired(a: Row, b: Row) -> str:
    """How often ``a`` is at or below ``b`` seed by seed (the seeds share data and initialisation)."""
    wins = int(np.sum(a.errors <= b.errors))
    return f"at or below in {wins} of {len(a.errors)} seeds"


def _gmsop_best_sop(rows: dict, dataset: str) -> Check:
    claim = "GM-SOP-16-8 at or below Ave-SOP-16 and SR-SOP"
    if "gmsop" not in rows or not {"avesop", "srsop"} & set(rows):
        return Check(claim, dataset, None, "needs gmsop and avesop or srsop")
    gm = rows["gmsop"]
    parts, holds = [], True
    for other in ("avesop", "srsop"):
        if other in rows:
            below = gm.mean <= rows[other].mean
            holds &= below
            parts.append(
                f"{gm.label} {gm.text()}% {'<=' if below else '>'} {rows[other].label} {rows[other].text()}% "
                f"({_paired(gm, rows[other])})"
            )
    return Check(claim, dataset, holds, "; ".join(parts))


def _gmgap_below_gap(rows: dict, dataset: str) -> Check:
    claim = "GM-GAP-16-8 below GAP"
    if not {"gmgap", "gap"} <= set(rows):
        return Check(claim, dataset, None, "needs gmgap and gap")
    gm, gap = rows["gmgap"], rows["gap"]
    holds = gm.mean < gap.mean
    return Check(
        claim,
        dataset,
        holds,
        f"{gm.label} {gm.text()}% {'<' if holds else '>='} {gap.label} {gap.text()}% ({_paired(gm, gap)})",
    )


_TABLE2_CLAIMS = {
    "sop_below_gap": _sop_below_gap,
    "gmsop_best_sop": _gmsop_best_sop,
    "gmgap_below_gap": _gmgap_below_gap,
}


def table2_checks(tables: dict) -> list:
    """Claims 1-3 on every dataset where its data allow them (``tables``: dataset -> head -> Row)."""
    return [
        check(rows, dataset)
        for dataset, rows in tables.items()
        for name, check in _TABLE2_CLAIMS.items()
        if _claim_applies(name, dataset)
    ]


def _learned(result: RunResult) -> bool:
    """Far below chance: a validation error of at most half the chance error."""
    return result.error <= 0.5 * result.chance


def _ranked_shares(results) -> np.ndarray:
    """(seeds, N): each run's share of the selections per component, sorted from the most used."""
    return np.array([sorted(np.asarray(r.usage, float) / np.sum(r.usage), reverse=True) for r in results])


def figure2_checks(rows: dict, k: int) -> list:
    """Claim 4 (``rows``: alpha -> Row of GM-GAP runs), judged on the runs that learned.

    The routing of a network that learned nothing says nothing about the balance loss, so a
    run whose error is above half the chance error is left out of the verdict (its numbers
    stay in figure2.md); with no run left, the claim is not checked.
    """
    checks = []
    for alpha, row in rows.items():
        if alpha == 0:
            claim = f"alpha = 0: about K = {k} components receive most samples"
        else:
            claim = f"alpha = {alpha:g}: usage near uniform (CV < 0.25)"
        learned = [r for r in row.results if _learned(r)]
        chance = f"validation error {row.text()}% (chance {100 * row.results[0].chance:.0f}%)"
        if not learned:
            checks.append(Check(claim, "GM-GAP-16-4", None, f"{chance}: no run learned (error <= half of chance)"))
            continue
        shares = _ranked_shares(learned)
        top_k, cv = shares[:, :k].sum(axis=1).mean(), np.mean([usage_cv(r.usage) for r in learned])
        holds = top_k > 0.5 if alpha == 0 else cv < 0.25
        checks.append(
            Check(
                claim,
                "GM-GAP-16-4",
                holds,
                f"in the {len(learned)} of {len(row.results)} runs that learned (error <= half of chance), the {k} "
                f"most used components take {100 * top_k:.0f}% of the selections (uniform: "
                f"{100 * k / shares.shape[1]:.0f}%), usage CV {cv:.2f}; {chance}",
            )
        )
    return checks


# ----- output -----------------------------------------------------------------------------------------
def _provenance(start_wall, load_start, reused: int, total: int) -> dict:
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average_start_end": [round(load_start, 2), round(_load(), 2)],
        "wall_seconds": round(time.perf_counter() - start_wall, 1),
        "runs_reused": reused,
        "runs": total,
        "command": " ".join(["gmsop", *sys.argv[1:]]) if sys.argv and "gmsop" in sys.argv[0] else None,
    }


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def _provenance_line(p: dict) -> str:
    reused = f"; {p['runs_reused']} of {p['runs']} runs reused from an earlier start" if p["runs_reused"] else ""
    return (
        f"Measured {p['date']} on {p['machine']} (load average {p['load_average_start_end'][0]} at the start, "
        f"{p['load_average_start_end'][1]} at the end), wall time {p['wall_seconds'] / 60:.1f} min{reused}."
    )


def _write(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _dataset_line(dataset: str, result: RunResult, seeds: int) -> str:
    c = result.config
    sizes = f"{c.train_size:,} training / {c.val_size:,} validation images" if c.train_size else "the published splits"
    side = f", {c.image_size}×{c.image_size}" if c.image_size else ""
    return (
        f"**{dataset}** ({sizes}{side}; {c.arch} backbone, {len(result.val_top1)} epochs, {seeds} seed(s); "
        f"chance {100 * result.chance:.0f}% error)"
    )


def _table2_markdown(tables: dict, checks: list, seeds: int) -> str:
    lines = ["# Table 2 at small scale", ""]
    for dataset, rows in tables.items():
        first = next(iter(rows.values())).results[0]
        lines += [
            _dataset_line(dataset, first, seeds),
            "",
            "| head | val top-1 error (%) | per seed (%) | change, last quarter of epochs (points) | parameters "
            "| representation | train images/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows.values():
            r = row.results[0]
            per_seed = " / ".join(f"{100 * e:.1f}" for e in row.errors)
            lines.append(
                f"| {row.label} | {row.text()} | {per_seed} | {100 * row.late_change:+.1f} | {r.num_parameters:,} | "
                f"{r.representation_dim} | {np.mean([x.images_per_s for x in row.results]):.0f} |"
            )
        lines.append("")
    lines += ["Errors: the final epoch's, mean ± standard deviation over the seeds (ddof = 1).", "", "## Claims", ""]
    lines += [f"* {c.line()}" for c in checks] or ["* (no claim applies to these datasets and heads)"]
    return "\n".join(lines) + "\n"


def _figure2_markdown(rows: dict, checks: list, k: int, dataset_line: str) -> str:
    lines = [
        "# Figure 2 at small scale: samples per component, GM-GAP-16-4",
        "",
        dataset_line,
        "",
        f"| alpha | seed | val top-1 error (%) | usage CV | top-{k} share | samples per component (last epoch) |",
        "|---|---|---|---|---|---|",
    ]
    for alpha, row in rows.items():
        for r in row.results:
            top = sorted(r.usage, reverse=True)[:k]
            lines.append(
                f"| {alpha:g} | {r.config.seed} | {100 * r.error:.1f} | {usage_cv(r.usage):.2f} | "
                f"{100 * sum(top) / sum(r.usage):.0f}% | {' '.join(str(c) for c in r.usage)} |"
            )
    lines += ["", "## Claims", ""] + [f"* {c.line()}" for c in checks]
    return "\n".join(lines) + "\n"


def _family_colour(head: str) -> str:
    return "tab:orange" if get_head(head).second_order else "tab:blue"


def _table2_figure(tables: dict, path: str) -> str:
    from .plots import _pyplot  # noqa: PLC0415

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.2 * len(tables), 0.45 * max(map(len, tables.values())) + 1.6))
    for ax, (dataset, rows) in zip(np.atleast_1d(axes), tables.items()):
        ys = np.arange(len(rows))[::-1]
        for y, (head, row) in zip(ys, rows.items()):
            std = 0.0 if math.isnan(row.std) else 100 * row.std
            ax.barh(y, 100 * row.mean, xerr=std, color=_family_colour(head), alpha=0.8, capsize=3)
            ax.plot(100 * row.errors, [y] * len(row.errors), "k.", ms=4)
        chance = 100 * next(iter(rows.values())).results[0].chance
        ax.axvline(chance, color="gray", ls="--", lw=0.8, label=f"chance ({chance:.0f}%)")
        ax.set_yticks(ys)
        ax.set_yticklabels([row.label for row in rows.values()])
        ax.set_xlabel("validation top-1 error (%): mean ± std, dots = seeds")
        ax.set_title(f"{dataset}: GAP family (blue), SOP family (orange)", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _figure2_figure(rows: dict, k: int, path: str) -> str:
    from .plots import _pyplot  # noqa: PLC0415

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(rows), figsize=(5.5 * len(rows), 3.8), sharey=True)
    for ax, (alpha, row) in zip(np.atleast_1d(axes), rows.items()):
        shares = 100 * _ranked_shares(row.results)
        ranks = np.arange(shares.shape[1])
        std = shares.std(axis=0, ddof=1) if len(shares) > 1 else None
        ax.bar(ranks, shares.mean(axis=0), yerr=std, color="tab:blue", alpha=0.8, capsize=2)
        for seed_shares in shares:
            ax.plot(ranks, seed_shares, "k.", ms=3)
        ax.axhline(100 / shares.shape[1], color="gray", ls="--", lw=0.8, label="uniform")
        ax.axvline(k - 0.5, color="tab:red", ls=":", lw=0.8, label=f"first K = {k}")
        cv = np.mean([usage_cv(r.usage) for r in row.results])
        ax.set_title(
            f"alpha = {alpha:g}: usage CV {cv:.2f}\nvalidation error {row.text()}% "
            f"(chance {100 * row.results[0].chance:.0f}%)",
            fontsize=10,
        )
        ax.set_xlabel("component, ranked by the samples it received (last epoch)")
        ax.legend(fontsize=8)
    np.atleast_1d(axes)[0].set_ylabel("share of the selections (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _record(path: str, provenance: dict, groups: dict, checks: list) -> str:
    """The numbers behind the tables, per run, as JSON."""
    record = {
        "provenance": provenance,
        "models": {
            key: [
                {"seed": r.config.seed, "out": r.config.out, "val_top1": r.val_top1, "usage": r.usage}
                for r in row.results
            ]
            for key, row in groups.items()
        },
        "checks": [{"claim": c.claim, "where": c.where, "holds": c.holds, "detail": c.detail} for c in checks],
    }
    return _write(path, json.dumps(record, indent=1) + "\n")


# ----- the experiments --------------------------------------------------------------------------------
def table2(
    out="runs/table2",
    *,
    datasets=None,
    heads=None,
    arch="tiny",
    data_dir=None,
    seeds=3,
    seed=0,
    workers=None,
    backend="numpy",
    epochs=None,
    train_size=None,
    val_size=None,
    image_size=None,
    batch_size=None,
    lr=None,
    progress=True,
):
    """Train Table 2's heads on each dataset ``seeds`` times; write table2.md / .png / .json, print the checks.

    ``datasets``: names (default: ``TABLE2_DATASETS``; a real one needs ``data_dir``);
    ``heads``: names among ``TABLE2_HEADS`` (default: each dataset's). The other options
    are ``gmsop train``'s and override the measured budget of the built-in datasets.
    Returns ``{"files", "tables", "checks"}``.
    """
    from .plots import _pyplot  # noqa: PLC0415

    _pyplot()  # before training: without matplotlib, fail at once
    workers = _check_execution(out, seeds, seed, workers, backend)
    datasets = _names(
        tuple(TABLE2_DATASETS) if datasets is None else datasets, "datasets", tuple(DATASETS), "a dataset"
    )
    if heads is not None:
        heads = _names(heads, "heads", TABLE2_HEADS, "a head of Table 2")
    overrides = dict(
        epochs=epochs, train_size=train_size, val_size=val_size, image_size=image_size, batch_size=batch_size, lr=lr
    )
    configs = []
    for dataset in datasets:
        budget, default_heads = TABLE2_DATASETS.get(dataset, (None, TABLE2_HEADS))
        options = _run_options(dataset, budget, overrides)
        for head in heads or default_heads:
            for s in range(seed, seed + seeds):
                folder = os.path.join(out, dataset, head, f"seed{s}")
                configs.append(
                    TrainConfig(
                        head=head,
                        arch=arch,
                        data_dir=data_dir,
                        backend=backend,
                        seed=s,
                        progress=progress and workers == 1,
                        out=folder,
                        **options,
                    )
                )
    return _run_table2(out, _validated(configs), workers, seeds)


def _run_table2(out, configs, workers, seeds):
    results, provenance = _train_and_describe(
        configs, workers, label=lambda c: f"{c.dataset} {_label(c.head)} seed {c.seed}"
    )
    tables = {}
    for r in results:
        rows = tables.setdefault(r.config.dataset, {})
        rows.setdefault(r.config.head, Row(r.config.head, _label(r.config.head))).results.append(r)
    checks = table2_checks(tables)
    markdown = _table2_markdown(tables, checks, seeds) + "\n" + _provenance_line(provenance) + "\n"
    files = [
        _write(os.path.join(out, "table2.md"), markdown),
        _table2_figure(tables, os.path.join(out, "table2.png")),
        _record(
            os.path.join(out, "table2.json"),
            provenance,
            {f"{d}/{h}": row for d, rows in tables.items() for h, row in rows.items()},
            checks,
        ),
    ]
    print("\n" + markdown, flush=True)
    return {"files": files, "tables": tables, "checks": checks}


def _label(head: str) -> str:
    return get_head(head).display_name()


def figure2(
    out="runs/figure2",
    *,
    dataset=None,
    alphas=(0.0, 100.0),
    noise="independent",
    arch="tiny",
    data_dir=None,
    seeds=3,
    seed=0,
    workers=None,
    backend="numpy",
    epochs=None,
    train_size=None,
    val_size=None,
    image_size=None,
    batch_size=None,
    lr=None,
    progress=True,
):
    """Train GM-GAP-16-4 with each alpha ``seeds`` times; write figure2.md / .png / .json, print the checks.

    ``noise`` is the gating noise (default per-(image, component) noise; ``"shared"`` is the
    official release's one draw per image, with which GM-GAP's routing can collapse whatever
    alpha: README, "The gated mixture"). Returns ``{"files", "rows", "checks"}``.
    """
    from .plots import _pyplot  # noqa: PLC0415

    _pyplot()
    workers = _check_execution(out, seeds, seed, workers, backend)
    default_dataset, budget = FIGURE2_DATASET
    dataset = default_dataset if dataset is None else _names([dataset], "dataset", tuple(DATASETS), "a dataset")[0]
    alphas = [
        check_number(a, "alphas (each)", 0.0) for a in (alphas if not isinstance(alphas, str) else _floats(alphas))
    ]
    if not alphas:
        raise ValueError("alphas is empty; give at least one balance-loss weight, e.g. 0,100")
    check_choice(noise, "noise", ("independent", "shared"))
    options = _run_options(
        dataset,
        budget if dataset == default_dataset else None,
        dict(
            epochs=epochs, train_size=train_size, val_size=val_size, image_size=image_size, batch_size=batch_size, lr=lr
        ),
    )
    k = 4
    configs = [
        TrainConfig(
            head="gmgap",
            num_components=16,
            k=k,
            alpha=alpha,
            head_options={"noise": noise},
            arch=arch,
            data_dir=data_dir,
            backend=backend,
            seed=s,
            progress=progress and workers == 1,
            out=os.path.join(out, f"alpha{alpha:g}", f"seed{s}"),
            **options,
        )
        for alpha in alphas
        for s in range(seed, seed + seeds)
    ]
    _validated(configs)
    results, provenance = _train_and_describe(
        configs, workers, label=lambda c: f"{c.dataset} GM-GAP-16-{k} alpha {c.alpha:g} seed {c.seed}"
    )
    rows = {}
    for r in results:
        rows.setdefault(r.config.alpha, Row("gmgap", f"alpha = {r.config.alpha:g}")).results.append(r)
    checks = figure2_checks(rows, k)
    line = _dataset_line(dataset, results[0], seeds)
    markdown = (
        _figure2_markdown(rows, checks, k, line + f", {noise} gating noise")
        + "\n"
        + _provenance_line(provenance)
        + "\n"
    )
    files = [
        _write(os.path.join(out, "figure2.md"), markdown),
        _figure2_figure(rows, k, os.path.join(out, "figure2.png")),
        _record(os.path.join(out, "figure2.json"), provenance, {f"alpha{a:g}": row for a, row in rows.items()}, checks),
    ]
    print("\n" + markdown, flush=True)
    return {"files": files, "rows": rows, "checks": checks}


def _floats(text: str) -> list:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"alphas must be comma-separated numbers like 0,100, got {text!r}") from None
