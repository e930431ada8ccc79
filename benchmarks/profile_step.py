"""Where a gmsop_np step spends its time: per-Function timing and a cProfile listing.

Per-Function timing wraps ``Function.__call__`` (forward) and ``Function._run_backward``
(backward) and charges each call its *exclusive* time (time spent in Functions it
calls itself, e.g. a differentiable backward built from matmuls, is charged to
those). What no Function accounts for -- the optimizer, the engine's bookkeeping,
the data loader -- is reported as "outside Functions".

Used by the benchmark scripts' ``--profile`` flag:

    python benchmarks/bench_resnet_cpu.py --profile --threads 1
    python benchmarks/bench_resnet_cpu.py --profile --threads 1 --cpu-clock   # on a busy machine

``--cpu-clock`` measures the process's CPU time instead of wall time. With one
thread that is the time the step needed, whatever else the machine is running
(waiting for a core is not counted), so single-thread profiles taken on a busy
shared machine stay comparable; with several threads it adds up the threads.
"""

from __future__ import annotations

import collections
import contextlib
import cProfile
import io
import pstats
import time

from harness import set_threads

from gmsop_np.core import Function


@contextlib.contextmanager
def function_timer(clock=time.perf_counter):
    """Collect {(Function name, 'forward'|'backward'): [calls, exclusive seconds]} while active."""
    totals = collections.defaultdict(lambda: [0, 0.0])
    stack = []  # child time accumulated for each open call
    original_call, original_backward = Function.__call__, Function._run_backward

    def timed(kind, method):
        def wrapper(self, *args, **kwargs):
            stack.append(0.0)
            start = clock()
            try:
                return method(self, *args, **kwargs)
            finally:
                elapsed = clock() - start
                children = stack.pop()
                entry = totals[(type(self).__name__, kind)]
                entry[0] += 1
                entry[1] += elapsed - children
                if stack:
                    stack[-1] += elapsed

        return wrapper

    Function.__call__ = timed("forward", original_call)
    Function._run_backward = timed("backward", original_backward)
    try:
        yield totals
    finally:
        Function.__call__, Function._run_backward = original_call, original_backward


def function_table(step, repeats=3, clock=time.perf_counter):
    """Per-Function exclusive time of ``step`` (averaged over ``repeats`` calls), as text."""
    step()  # warm-up: first calls allocate
    with function_timer(clock) as totals:
        start = clock()
        for _ in range(repeats):
            step()
        wall = (clock() - start) / repeats
    rows = sorted(totals.items(), key=lambda kv: -kv[1][1])
    inside = sum(seconds for _, seconds in totals.values()) / repeats
    lines = [
        f"step: {wall * 1e3:.1f} ms (mean of {repeats})",
        f"{'Function':<28}{'pass':<10}{'calls':>7}{'ms':>9}{'%':>7}",
    ]
    for (name, kind), (calls, seconds) in rows:
        ms = seconds / repeats * 1e3
        lines.append(f"{name:<28}{kind:<10}{calls // repeats:>7}{ms:>9.1f}{100 * ms / (wall * 1e3):>7.1f}")
    lines.append(f"{'outside Functions':<38}{'':>7}{(wall - inside) * 1e3:>9.1f}{100 * (wall - inside) / wall:>7.1f}")
    return "\n".join(lines)


def cprofile_table(step, top=25, clock=time.perf_counter):
    """cProfile of one call of ``step``, the ``top`` entries by own time."""
    step()
    prof = cProfile.Profile(clock)
    prof.enable()
    step()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def profile_report(step, threads=None, repeats=3, top=25, cpu_clock=False):
    """Both views of ``step`` with ``threads`` threads (see harness.set_threads).

    ``cpu_clock``: time with the process's CPU time instead of the wall clock.
    """
    set_threads(threads)
    clock = time.process_time if cpu_clock else time.perf_counter
    header = f"clock: {'process CPU time' if cpu_clock else 'wall time'}, threads: {threads or 'default'}\n"
    return header + function_table(step, repeats, clock) + "\n\n" + cprofile_table(step, top, clock)
