"""Shared timing method for the gmsop_np vs PyTorch benchmarks.

Why this method: the benchmarks run on shared machines whose load changes from
second to second. Timing all of A and then all of B lets a burst of load land on
one side only. Here the two implementations run **alternately, step by step**
(A B, B A, A B, ...: the order flips every pair, so neither side always runs
first after the other's cache footprint), and each pair gives one ratio
``t_A / t_B`` measured seconds apart under nearly the same load. We report the
median of those per-pair ratios with their min and max, next to the load
average, the thread settings and the BLAS libraries actually loaded
(``threadpoolctl``).

    from harness import set_threads, compare, environment
    set_threads(2)
    row = compare("ResNet-18 GAP", gmsop_step, torch_step, pairs=9, warmup=2)

PyTorch is only ever imported by the benchmark scripts (never by the package or
its tests); install it with ``pip install torch==2.13.0``.
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import statistics
import time

import numpy as np

# ----- threads ------------------------------------------------------------------------------------
_limits = None  # the active threadpoolctl limit (kept so that it is not garbage collected)


def set_threads(n):
    """Run every library of this process with ``n`` threads (None: the libraries' defaults).

    gmsop_np: its own threads (``functions/parallel.py``), with NumPy's BLAS at one
    thread per call (its policy); PyTorch: its intra-op threads. With ``n = 1`` every
    BLAS/OpenMP pool is limited to one thread, and for a gmsop_np without
    ``functions/parallel.py`` NumPy's BLAS gets ``n`` threads.
    """
    global _limits
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    if _limits is not None:
        _limits.restore_original_limits()
        _limits = None
    parallel = _gmsop_parallel()
    if parallel is not None:
        parallel.set_num_threads(n)
    if n == 1 or (parallel is None and n is not None):
        _limits = threadpool_limits(limits=int(n))
    torch = _loaded_torch()
    if torch is not None:
        torch.set_num_threads(int(n) if n is not None else os.cpu_count())


def _gmsop_parallel():
    """gmsop_np's thread module, or None in checkouts that predate it."""
    try:
        from gmsop_np.functions import parallel  # noqa: PLC0415
    except ImportError:
        return None
    return parallel


def _loaded_torch():
    import sys  # noqa: PLC0415

    return sys.modules.get("torch")


def thread_settings():
    """What each library will actually use: BLAS pools (threadpoolctl), PyTorch, gmsop_np."""
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    pools = [
        {k: info.get(k) for k in ("internal_api", "num_threads", "version", "architecture", "filepath")}
        for info in threadpool_info()
    ]
    for pool in pools:
        pool["filepath"] = os.path.basename(pool["filepath"] or "")
    settings = {"pools": pools}
    torch = _loaded_torch()
    if torch is not None:
        settings["torch_threads"] = torch.get_num_threads()
    parallel = _gmsop_parallel()
    if parallel is not None:
        settings["gmsop_np_threads"] = parallel.get_num_threads()
    return settings


# ----- the machine ------------------------------------------------------------------------------------
def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def environment():
    """Date, machine, versions and load: everything a row of RESULTS.md must carry."""
    torch = _loaded_torch()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }


def busy_fraction(seconds=2.0):
    """Share of the machine's CPU time spent busy (not idle) over the next ``seconds`` (Linux)."""

    def idle_and_total():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, all

    idle0, total0 = idle_and_total()
    time.sleep(seconds)
    idle1, total1 = idle_and_total()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_until_quiet(max_busy=0.1, max_wait=1800, poll=5.0):
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs idle; return (seconds waited, busy)."""
    start = time.perf_counter()
    busy = busy_fraction(poll)
    while busy > max_busy and time.perf_counter() - start < max_wait:
        busy = busy_fraction(poll)
    return time.perf_counter() - start, busy


# ----- alternating timing --------------------------------------------------------------------------------
def _timed(step):
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def alternate(step_a, step_b, pairs, warmup=1):
    """Run ``step_a`` and ``step_b`` alternately; return their per-pair times (lists of seconds).

    ``warmup`` pairs come first and are not recorded (first calls allocate memory
    and fill caches). The order flips every pair (A B, B A, ...). The garbage
    collector runs before each timed step, so neither side pays for the other's
    garbage.
    """
    for _ in range(warmup):
        step_a()
        step_b()
    times_a, times_b = [], []
    for i in range(pairs):
        order = ((step_a, times_a), (step_b, times_b))
        for step, times in order if i % 2 == 0 else order[::-1]:
            gc.collect()
            times.append(_timed(step))
    return times_a, times_b


def summarize(times_a, times_b):
    """Median of the per-pair ratios t_a / t_b, their min and max, and each side's median time."""
    ratios = [a / b for a, b in zip(times_a, times_b)]
    return {
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "a_median_s": statistics.median(times_a),
        "b_median_s": statistics.median(times_b),
        "ratios": ratios,
        "a_s": times_a,
        "b_s": times_b,
    }


def compare(name, gmsop_step, torch_step, pairs, warmup=1, threads=None, **extra):
    """One row: ``gmsop_step`` vs ``torch_step`` alternated, with the conditions of the run.

    ``threads`` is applied with :func:`set_threads` first. The ratio is gmsop_np / PyTorch
    time (below 1: gmsop_np is faster).
    """
    set_threads(threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    times_g, times_t = alternate(gmsop_step, torch_step, pairs, warmup)
    row = {"name": name, "threads_requested": threads, "pairs": pairs, "warmup": warmup}
    row.update(summarize(times_g, times_t))
    row["gmsop_np_median_s"] = row.pop("a_median_s")
    row["torch_median_s"] = row.pop("b_median_s")
    row["gmsop_np_s"] = row.pop("a_s")
    row["torch_s"] = row.pop("b_s")
    row.update(
        load_average_before=load_before,
        load_average_after=[round(v, 2) for v in os.getloadavg()],
        threads=thread_settings(),
        **extra,
    )
    return row


def format_row(row):
    """One line of text: name, threads, median ratio [min, max], the two median times, load."""
    return (
        f"{row['name']:<44} threads={row['threads_requested'] or 'default':<7} "
        f"ratio {row['ratio_median']:.2f} [{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]  "
        f"gmsop_np {row['gmsop_np_median_s'] * 1e3:8.1f} ms  torch {row['torch_median_s'] * 1e3:8.1f} ms  "
        f"load {row['load_average_before'][0]:.1f}->{row['load_average_after'][0]:.1f}"
    )


def markdown_table(rows):
    """The rows as a Markdown table for RESULTS.md."""
    lines = [
        "| benchmark | threads | gmsop_np / PyTorch: median [min, max] | gmsop_np | PyTorch | pairs | load (1 min) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['threads_requested'] or 'default'} | **{r['ratio_median']:.2f}×** "
            f"[{r['ratio_min']:.2f}, {r['ratio_max']:.2f}] | {r['gmsop_np_median_s'] * 1e3:.0f} ms | "
            f"{r['torch_median_s'] * 1e3:.0f} ms | {r['pairs']} | "
            f"{r['load_average_before'][0]:.1f} → {r['load_average_after'][0]:.1f} |"
        )
    return "\n".join(lines)
