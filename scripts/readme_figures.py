"""Measure the figures the README quotes, from real runs, and record them with their quotes.

    python scripts/readme_figures.py                   # about 7 minutes on 2 quiet CPU cores
    python scripts/readme_figures.py --wait-quiet 1.0  # a shared machine: time runs when it is quiet

Runs, in a temporary folder, what a README reader would run:

* ``gmsop train`` with no options (the Quickstart demo), timed from the shell's point of
  view: wall-clock seconds, the final validation top-1 error, the last epoch's usage CV;
* ``gmsop experiment figure2 --noise shared`` (the release's gating noise): the usage CV
  with alpha = 0 and alpha = 100, mean over the seeds;
* the ``textures`` claim: SR-SOP against GAP with the budget of
  ``tests/test_train.py::test_second_order_head_beats_gap_on_textures``.

and reads the record of the last full ``gmsop experiment table2`` / ``figure2`` run kept in
``docs/small_scale/`` (``table2.json``, ``figure2.json``: their wall times and the Figure 2
usage with the default noise); the README's tables of that run are checked against
``docs/small_scale/*.md`` by the same test.

It writes ``scripts/readme_figures.json``: the values, the date, the machine and its load,
and ``quotes``, the exact phrases the README must contain (made from the values by
``quotes()``). ``tests/test_readme_figures.py`` checks that the README contains every
quote, so a figure cannot go stale silently: change the code, rerun this script, and the
test says which README sentences to update.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "scripts", "readme_figures.json")
SMALL_SCALE = os.path.join(ROOT, "docs", "small_scale")  # the record of the last full experiment run


def quotes(f: dict) -> dict:
    """The README phrases for the figures ``f`` (one place: the test recomputes them from the values)."""
    demo, fig2 = f["demo"], f["figure2"]
    ind, sh = fig2["independent"], fig2["shared"]  # means over the seeds
    return {
        "demo_time": f"≈{_minutes(demo['wall_seconds'])} on 2 CPU cores",
        "demo_error": f"validation top-1 error {100 * demo['val_top1']:.1f}% (chance 75%)",
        "demo_usage_cv": f"the default `gmsop train` run ends with usage CV {demo['usage_cv']:.2f}",
        "figure2_independent": (
            f"usage CV {ind['cv_alpha0']:.2f} with α = 0 (the top four of 16 components take "
            f"{100 * ind['top4_share_alpha0']:.0f}% of the samples) vs {ind['cv_alpha100']:.2f} with α = 100"
        ),
        "figure2_shared": (
            f"usage CV {sh['cv_alpha0']:.2f} (α = 0) vs {sh['cv_alpha100']:.2f} (α = 100) with shared noise"
        ),
        "figure2_time": f"usage histograms (≈{_minutes(fig2['wall_seconds'])})",
        "table2_time": f"the paper's claims checked (≈{_minutes(f['table2']['wall_seconds'])} on 2 CPU cores",
        "textures": (
            f"SR-SOP beats GAP by ≥ 25 points in a short run: {100 * f['textures']['srsop']:.0f}% vs "
            f"{100 * f['textures']['gap']:.0f}% error"
        ),
    }


def _minutes(seconds: float) -> str:
    """'40 s' below two minutes (to 10 s), else '3 min' (to the minute)."""
    if seconds < 120:
        return f"{max(10, int(round(seconds / 10.0)) * 10)} s"
    return f"{int(round(seconds / 60.0))} min"


# ----- the runs ------------------------------------------------------------------------------------
QUIET = {"load": None, "max_wait": 0.0}  # set by --wait-quiet / --max-wait
LOADS = []  # the 1-minute load average when each timed run started


def _wait_for_quiet():
    """Times mean little on a busy machine: wait (up to --max-wait seconds) for the load to drop."""
    deadline = time.monotonic() + QUIET["max_wait"]
    while QUIET["load"] is not None and os.getloadavg()[0] > QUIET["load"] and time.monotonic() < deadline:
        time.sleep(10)
    LOADS.append(round(os.getloadavg()[0], 2))


def _gmsop(args, cwd):
    _wait_for_quiet()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gmsop_np.cli", *args], cwd=cwd, check=True, env=_env())
    return time.perf_counter() - start


def _env():
    return {**os.environ, "PYTHONPATH": ROOT}


def _last_row(run_dir):
    with open(os.path.join(run_dir, "metrics.csv"), newline="") as handle:
        return list(csv.DictReader(handle))[-1]


def demo(workdir):
    seconds = _gmsop(["train", "--no-progress"], workdir)
    row = _last_row(os.path.join(workdir, "runs", "textures-tiny-gmsop"))
    return {"wall_seconds": seconds, "val_top1": float(row["val_top1"]), "usage_cv": float(row["usage_cv"])}


def _experiment_record(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _usage_summary(figure2_record):
    """Mean over the seeds of the usage CV (alpha = 0 and 100) and of the top-4 share with alpha = 0."""
    from gmsop_np.nn.mixture import usage_cv  # noqa: PLC0415

    models = figure2_record["models"]

    def mean(values):
        return sum(values) / len(values)

    def top4(usage):
        return sum(sorted(usage, reverse=True)[:4]) / sum(usage)

    return {
        "cv_alpha0": round(mean([usage_cv(r["usage"]) for r in models["alpha0"]]), 2),
        "cv_alpha100": round(mean([usage_cv(r["usage"]) for r in models["alpha100"]]), 2),
        "top4_share_alpha0": mean([top4(r["usage"]) for r in models["alpha0"]]),
    }


def figure2(workdir):
    """Shared noise measured now; the default (independent) noise from the recorded full run."""
    out = os.path.join(workdir, "figure2-shared")
    _gmsop(["experiment", "figure2", "--noise", "shared", "--out", out, "--no-progress"], workdir)
    recorded = _experiment_record(os.path.join(SMALL_SCALE, "figure2.json"))
    return {
        "independent": _usage_summary(recorded),
        "shared": _usage_summary(_experiment_record(os.path.join(out, "figure2.json"))),
        "wall_seconds": recorded["provenance"]["wall_seconds"],
    }


def table2():
    return {"wall_seconds": _experiment_record(os.path.join(SMALL_SCALE, "table2.json"))["provenance"]["wall_seconds"]}


def textures(workdir):
    """The budget of test_second_order_head_beats_gap_on_textures (keep the two in step)."""
    from gmsop_np.train import TrainConfig, Trainer  # noqa: PLC0415

    errors = {}
    for head in ("srsop", "gap"):
        config = TrainConfig(
            head=head,
            train_size=1024,
            val_size=256,
            epochs=3,
            batch_size=32,
            image_size=16,
            preset="official",
            seed=0,
            progress=False,
            out=os.path.join(workdir, f"textures-{head}"),
        )
        trainer = Trainer(config)
        trainer.fit()
        errors[head] = trainer.history[-1]["val_top1"]
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wait-quiet", type=float, default=None, metavar="LOAD", help="before each timed run, wait for this load"
    )
    parser.add_argument("--max-wait", type=float, default=1800.0, help="seconds to wait for quiet (default 1800)")
    args = parser.parse_args(argv)
    QUIET.update(load=args.wait_quiet, max_wait=args.max_wait)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        figures = {
            "demo": demo(workdir),
            "figure2": figure2(workdir),
            "textures": textures(workdir),
            "table2": table2(),
        }
    record = {
        **figures,
        "quotes": quotes(figures),
        "measured": {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "load_average_at_each_timed_run": LOADS,
        },
    }
    with open(OUTPUT, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
    print(json.dumps(record["quotes"], indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
