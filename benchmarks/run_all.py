"""Every row of the CPU speed table (issue "CPU speed") in one command.

    python benchmarks/run_all.py                       # all rows, JSON to benchmarks/results/
    python benchmarks/run_all.py --quick               # fewer pairs (a smoke run)
    python benchmarks/run_all.py --only head           # the SR-SOP head rows

Rows (each: gmsop_np vs PyTorch, alternated step by step, see harness.py):

* ResNet-18 + GAP training step, batch 32, 64×64 -- default threads and 1 thread;
* ResNet-18 + GM-SOP-16-8 end to end (loader included), batch 32 -- default threads;
* SR-SOP head alone, B = 256, forward + backward -- default threads and 1 thread.

Run against an older checkout (``PYTHONPATH=<checkout> python benchmarks/run_all.py``) it
measures the "before" of a change with the same method.

Prints one line per row as it finishes, then the Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib

import bench_end_to_end
import bench_resnet_cpu
import bench_sop_head
from harness import environment, format_row, markdown_table, wait_until_quiet

HERE = pathlib.Path(__file__).resolve().parent

# (key, threads, run function, pairs, warmup, options); "default" threads = the libraries' own choice.
ROWS = [
    ("gap", None, bench_resnet_cpu.run, 10, 2, {}),
    ("gap", 1, bench_resnet_cpu.run, 6, 1, {}),
    ("gmsop", None, bench_end_to_end.run, 8, 2, {}),
    ("head", None, bench_sop_head.run, 12, 2, {}),
    ("head", 1, bench_sop_head.run, 8, 1, {}),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 pairs per row after 1 warm-up pair")
    ap.add_argument("--only", help="only the rows whose key starts so: gap, gmsop, head")
    ap.add_argument("--json", help="where to write the results (default: benchmarks/results/speed_<date>.json)")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        metavar="BUSY",
        help="before each row, wait until the CPUs are busy less than this share (e.g. 0.1)",
    )
    ap.add_argument("--max-wait", type=float, default=1800, help="longest wait for a quiet machine, seconds")
    args = ap.parse_args(argv)

    import torch  # noqa: F401,PLC0415  (loaded first, so that the environment records its version)

    env = environment()
    print(f"{env['date']}  {env['cpu']} ({env['logical_cpus']} CPUs)  numpy {env['numpy']}  torch {env['torch']}")
    rows = []
    for key, threads, run, pairs, warmup, options in ROWS:
        if args.only and not key.startswith(args.only):
            continue
        if args.quick:
            pairs, warmup = 3, 1
        quiet = wait_until_quiet(args.wait_quiet, args.max_wait) if args.wait_quiet is not None else None
        try:
            row = run(threads=threads, pairs=pairs, warmup=warmup, **options)
        except ImportError as error:  # a prototype row run against a gmsop_np without functions/parallel.py
            print(f"{key}: skipped ({error})", flush=True)
            continue
        if quiet is not None:
            row["waited_for_quiet_s"], row["busy_share_before"] = round(quiet[0]), round(quiet[1], 3)
        print(format_row(row), flush=True)
        rows.append(row)
    env["load_average_end"] = environment()["load_average"]
    print()
    print(markdown_table(rows))
    blas = {p["internal_api"]: p["version"] for p in rows[0]["threads"]["pools"]} if rows else {}
    print(f"\nBLAS / thread pools: {blas}; load average at start {env['load_average']}, end {env['load_average_end']}")
    path = pathlib.Path(args.json or HERE / "results" / f"speed_{datetime.date.today().isoformat()}.json")
    path.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
