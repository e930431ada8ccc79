"""What one training step asks of a GPU: array operations, device->host syncs, host->device copies.

Counted on the CPU stand-in for CuPy (``gmsop_np/testing/device_sim.py``), which records every
operation the "cupy" backend is asked for, with its call site: each array operation is a kernel
launch on a GPU, each sync stalls the pipeline, each copy is a transfer. Counts are deterministic
(unlike times), so they are also asserted, against ``STEP_BUDGETS``, by tests/test_step_budget.py.

One steady-state step of ResNet-18 at 64x64 (batch 8, 10 classes), as the trainer runs it without
metric reads: forward, ``F.objective``, zero_grad + backward, SGD (momentum, weight decay); after
two warm-up steps, the batch already on the device (``gmsop_np.testing.step_budget``).

    python benchmarks/count_step.py                       # GAP and GM-SOP-16-8, a table and the top sites
    python benchmarks/count_step.py --head gmsop --top 20 --json benchmarks/results/step_counts.json

The "kernel files" column counts the operations issued from the backbone's Functions (convolution,
batch norm, pooling, activations): how they are written (im2col slices, batch-norm passes) decides
most of a step's operations.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import time

import numpy as np

from gmsop_np.testing.step_budget import KERNEL_FILES, STEP_BUDGETS, count_training_step

PHASES = ("forward", "objective", "backward", "sgd")


def _file(event):
    return event.site.split(":")[0]


def _triple(counts):
    return [counts.launches, counts.syncs, counts.copies_to_device]


def summarise(head, counts_by_phase, top):
    step = counts_by_phase["step"]
    kernel = [e for e in step.events if _file(e).startswith(KERNEL_FILES)]
    budget = STEP_BUDGETS.get(head)
    row = {
        "head": head,
        "launches": step.launches,
        "syncs": step.syncs,
        "copies_to_device": step.copies_to_device,
        "phases": {
            p: [counts_by_phase[p].launches, counts_by_phase[p].syncs, counts_by_phase[p].copies_to_device]
            for p in PHASES
        },
        "kernel_files": {
            "launches": sum(e.kind == "launch" for e in kernel),
            "syncs": sum(e.kind == "sync" for e in kernel),
            "copies_to_device": sum(e.kind == "copy_to_device" for e in kernel),
        },
        "launches_by_file": dict(
            collections.Counter(_file(e) for e in step.events if e.kind == "launch").most_common()
        ),
        "sync_sites": step.sites("sync", depth=3),
        "copy_sites": step.sites("copy_to_device", depth=3),
        "budget": None if budget is None else vars(budget),
    }
    print(f"\n== ResNet-18 + {head}: {step!r}")
    for p in PHASES:
        print(f"   {p:9s} {counts_by_phase[p]!r}")
    k = row["kernel_files"]
    print(
        f"   of which in the kernel files: {k['launches']} launches, {k['syncs']} syncs, {k['copies_to_device']} copies"
    )
    if budget is not None:
        print(f"   budget: {budget.launches} launches, {budget.syncs} syncs, {budget.copies_to_device} copies")
    by_file = sorted(row["launches_by_file"].items(), key=lambda item: -item[1])
    print("   launches by file:", ", ".join(f"{f.split('/')[-1]} {n}" for f, n in by_file))
    print(step.summary(top))
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", action="append", help="head(s) to count (default: gap and gmsop)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--top", type=int, default=10, help="call sites shown per kind")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)
    rows = []
    for head in args.head or ["gap", "gmsop"]:
        phases = count_training_step(head, batch_size=args.batch_size, image_size=args.image_size)
        rows.append(summarise(head, phases, args.top))
    print("\n| head | launches | syncs | copies | in the kernel files (launches / copies) | budget |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        b, k = r["budget"], r["kernel_files"]
        budget = "—" if b is None else f"{b['launches']} / {b['syncs']} / {b['copies_to_device']}"
        totals = f"{r['launches']} | {r['syncs']} | {r['copies_to_device']}"
        print(f"| {r['head']} | {totals} | {k['launches']} / {k['copies_to_device']} | {budget} |")
    if args.json:
        meta = {
            "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "batch_size": args.batch_size,
            "image_size": args.image_size,
        }
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
