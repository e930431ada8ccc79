"""Split batch work over CPU threads (NumPy); one piece, one kernel, on the GPU (CuPy).

Why threads help on the CPU: NumPy releases the GIL inside BLAS calls, array
copies and ufunc loops, so Python threads that each work on their own slice of
a batch run on different cores at the same time. Two things are gained:

* the copies and element-wise passes around the matrix products (im2col, col2im,
  padding) run on every core, not only on one;
* a slice of a few images is small enough to stay in the CPU caches between the
  copy that builds it and the product that reads it.

Stacked small matrices are the other case: ``numpy.matmul`` on a (B, d, d) stack
makes one BLAS call per matrix, and OpenBLAS spreads each 128×128 product over
its threads, paying a synchronisation per product; :func:`matmul` instead gives
each thread its own part of the stack.

**BLAS runs one thread per call; the threads are ours.** gmsop_np's threads do
the parallel work, and BLAS's own threads would only compete with them: two of
our threads each starting BLAS's threads oversubscribe the cores, and after every
multi-threaded BLAS call, even a small one, OpenBLAS keeps its idle threads
spinning for a while (about 0.1 s) on the cores our threads need. So the first use
of this module sets the BLAS library to one thread per call for the whole process
(``threadpoolctl``); this affects every NumPy matrix product in the process, not
only gmsop_np's. It also makes results independent of the number of threads:
multi-threaded BLAS does not round like single-threaded BLAS, while the parts
(:func:`pieces`) never depend on the thread count, so 1 or n threads give the same
numbers bit for bit. Without ``threadpoolctl`` (the only way to reach OpenBLAS's
or MKL's setting from Python) this module runs everything in the calling thread
and leaves BLAS alone.

On CuPy nothing is split: :func:`pieces` returns the whole batch as one piece and
:func:`run` calls the function once, so the GPU sees the same few large kernels
as without this module.

The number of threads defaults to the cores this process may use; set it with
:func:`set_num_threads` or the environment variable ``GMSOP_NP_NUM_THREADS``.
"""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..backend import get_array_module

__all__ = ["get_num_threads", "set_num_threads", "pieces", "per_thread", "run", "matmul"]

NUM_THREADS_ENV = "GMSOP_NP_NUM_THREADS"
MIN_PARTS = 8  # a batch of at least 8 items is split into at least 8 parts (work for up to 8 threads)

_blas = None  # threadpoolctl's controller of the BLAS libraries; False without threadpoolctl; None: not looked yet
_blas_hold = None  # the "one BLAS thread per call" limit, held from the first use on
_num_threads = None  # decided on first use
_pool = None  # created on first use, re-created when the thread count changes
_pool_lock = threading.Lock()
_inside = threading.local()  # set in worker threads: nested calls run serially


# ----- how many threads ----------------------------------------------------------------------------
def get_num_threads() -> int:
    """Threads used for the CPU work split by this module."""
    if _num_threads is None:
        set_num_threads(None)
    return _num_threads


def set_num_threads(n) -> None:
    """Use ``n`` threads (``None``: the default, all cores this process may use).

    From the first call on, the BLAS library runs one thread per call (see the module docstring).
    """
    global _num_threads, _pool
    n = _default_num_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"set_num_threads needs n >= 1, got {n}")
    if n > 1 and _blas_limiter() is None:
        raise ImportError(
            f"set_num_threads({n}) needs threadpoolctl to hold the BLAS library to one thread per "
            "call while gmsop_np's threads run: pip install threadpoolctl"
        )
    with _pool_lock:
        if _pool is not None and n != _num_threads:
            _pool.shutdown(wait=True)
            _pool = None
        _num_threads = n
        _hold_blas_to_one_thread()


def _default_num_threads():
    if _blas_limiter() is None:
        return 1
    if os.environ.get(NUM_THREADS_ENV):
        return max(1, int(os.environ[NUM_THREADS_ENV]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _blas_limiter():
    """threadpoolctl's controller of the loaded BLAS libraries (cached), or None without threadpoolctl."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415  (optional dependency)
        except ImportError:
            _blas = False
        else:
            _blas = ThreadpoolController().select(user_api="blas")
    return _blas or None


def _hold_blas_to_one_thread():
    """Set the BLAS library to one thread per call, for the rest of the process (once)."""
    global _blas_hold
    if _blas_hold is None and _blas_limiter() is not None:
        _blas_hold = _blas_limiter().limit(limits=1)


def _get_pool():
    global _pool
    workers = get_num_threads() - 1  # the calling thread is the other one
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gmsop-np")
        return _pool


# ----- splitting a batch -------------------------------------------------------------------------
def _is_numpy(array) -> bool:
    return get_array_module(array) is np


def pieces(x, item_bytes, target_bytes=1 << 21):
    """Slices that cover axis 0 of ``x``: the whole axis on CuPy, cache-sized parts on NumPy.

    A NumPy part holds at most about ``target_bytes`` of working memory
    (``item_bytes`` per batch item), and there are at least ``MIN_PARTS`` parts when
    the batch allows, so that the threads have work. The parts do NOT depend on the
    number of threads: sums over parts are then added in the same order on 1 or n
    threads, and results are the same bit for bit.
    """
    n = x.shape[0]
    if not _is_numpy(x):
        return [slice(0, n)]
    per_part = max(1, min(target_bytes // max(1, item_bytes), -(-n // MIN_PARTS)))
    return [slice(start, min(start + per_part, n)) for start in range(0, n, per_part)]


def per_thread(x):
    """Slices that cover axis 0 of ``x``, one per thread on NumPy (the whole axis on CuPy).

    Only for work whose results do not depend on where the axis is cut (per-channel
    statistics, say): unlike :func:`pieces`, these parts change with the thread count.
    """
    n = x.shape[0]
    parts = get_num_threads() if _is_numpy(x) else 1
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def run(fn, parts, like):
    """``[fn(part) for part in parts]``, the parts spread over the threads when ``like`` is a NumPy array.

    Every thread, the calling one included, takes the next part not yet taken until
    none is left, so a thread slowed down by other work on its core simply does
    fewer parts. ``fn`` must only write to memory that belongs to its own part.
    Calls made from inside ``fn`` (nested parallel work) run serially in their thread.
    """
    threads = get_num_threads()
    if len(parts) == 1 or threads == 1 or not _is_numpy(like) or getattr(_inside, "active", False):
        return [fn(part) for part in parts]
    results = [None] * len(parts)
    next_part = itertools.count()  # next() on a count is atomic: no part is taken twice
    floating_point_errors = np.geterr()  # NumPy's error handling is per thread: the caller's applies

    def work():
        _inside.active = True
        try:
            with np.errstate(**floating_point_errors):
                while (i := next(next_part)) < len(parts):
                    results[i] = fn(parts[i])
        finally:
            _inside.active = False

    helpers = [_get_pool().submit(work) for _ in range(min(threads, len(parts)) - 1)]
    try:
        work()
    finally:
        for helper in helpers:  # wait for every part (and re-raise a helper's error)
            helper.result()
    return results


def matmul(a, b):
    """``a @ b`` for stacks of matrices (..., n, k) @ (..., k, m), the stack split over threads.

    Same result as ``xp.matmul(a, b)`` (each matrix product is computed by the same
    BLAS routine); on CuPy, and for unstacked (2-D) operands, it *is* ``xp.matmul``.
    """
    threads = get_num_threads()
    if max(a.ndim, b.ndim) < 3 or not _is_numpy(a) or threads == 1:
        return a @ b
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    a = np.broadcast_to(a, shape[:-2] + a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b = np.broadcast_to(b, shape[:-2] + b.shape[-2:]).reshape(-1, *b.shape[-2:])
    out = np.empty((a.shape[0],) + shape[-2:], dtype=np.result_type(a, b))
    step = -(-a.shape[0] // (4 * threads))  # a few parts per thread: a thread slowed down by other
    parts = [slice(i, i + step) for i in range(0, a.shape[0], step)]  # work leaves its parts to the others
    run(lambda p: np.matmul(a[p], b[p], out=out[p]), parts, out)
    return out.reshape(shape)
