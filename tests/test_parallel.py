"""functions/parallel.py: batch splitting over CPU threads and the threaded stacked matmul.

What must hold: the parts cover the batch exactly once, in order; results come back
in the order of the parts; nested parallel calls run serially (no deadlock); the
threaded matmul equals ``xp.matmul`` (same BLAS routine per matrix, so exactly);
on a GPU array nothing is split.
"""

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gmsop_np as gs
from gmsop_np.functions import parallel


@pytest.fixture
def threads():
    """Run with 2 threads (whatever the machine has), restoring the setting afterwards."""
    before = parallel.get_num_threads()
    parallel.set_num_threads(2)
    yield 2
    parallel.set_num_threads(before)


def covered(parts, n):
    return [i for p in parts for i in range(n)[p]]


@given(n=st.integers(1, 40), item_bytes=st.integers(1, 5000), target=st.integers(1, 20000))
def test_pieces_cover_the_batch_once_in_order(n, item_bytes, target):
    parts = parallel.pieces(np.empty((n, 1)), item_bytes, target_bytes=target)
    assert covered(parts, n) == list(range(n))
    assert max(len(range(n)[p]) for p in parts) <= max(1, target // item_bytes)  # a part fits the target


def test_pieces_do_not_depend_on_the_number_of_threads():
    """Same parts on 1 or n threads: sums over parts then round the same way (identical results)."""
    before = parallel.get_num_threads()
    try:
        found = []
        for n in (1, 2, 5):
            parallel.set_num_threads(n)
            found.append(parallel.pieces(np.empty((37, 3)), item_bytes=1000, target_bytes=4000))
    finally:
        parallel.set_num_threads(before)
    assert found[0] == found[1] == found[2]
    assert [len(range(37)[p]) for p in found[0]] == [4] * 9 + [1]  # 4 items of 1000 bytes fit 4000


def test_pieces_give_the_threads_work_in_small_batches():
    parts = parallel.pieces(np.empty((16, 3)), item_bytes=1, target_bytes=1 << 20)
    assert len(parts) == parallel.MIN_PARTS and covered(parts, 16) == list(range(16))


@pytest.mark.parametrize("n", [1, 2, 7])
def test_per_thread_gives_one_part_per_thread(n, threads):
    parts = parallel.per_thread(np.empty((n, 2)))
    assert covered(parts, n) == list(range(n)) and len(parts) == min(n, threads)


def test_run_returns_results_in_part_order(threads):
    parts = [slice(i, i + 1) for i in range(7)]
    assert parallel.run(lambda part: part.start, parts, np.empty(7)) == list(range(7))


def test_run_runs_parts_at_the_same_time(threads):
    """Two parts that wait for each other finish only if two threads run them concurrently."""
    both_started = threading.Barrier(2, timeout=10)
    assert parallel.run(lambda part: both_started.wait() is not None, [slice(0, 1), slice(1, 2)], np.empty(2)) == [
        True,
        True,
    ]


def test_run_on_one_thread_stays_in_the_calling_thread():
    before = parallel.get_num_threads()
    parallel.set_num_threads(1)
    try:
        names = parallel.run(lambda part: threading.current_thread().name, [slice(0, 1), slice(1, 2)], np.empty(2))
    finally:
        parallel.set_num_threads(before)
    assert names == [threading.current_thread().name] * 2


def test_nested_run_runs_serially_without_deadlock(threads):
    def inner(part):
        return part.start

    def outer(part):
        return sum(parallel.run(inner, [slice(0, 1), slice(1, 2), slice(2, 3)], np.empty(3))) + part.start

    assert parallel.run(outer, [slice(10, 11), slice(20, 21), slice(30, 31)], np.empty(3)) == [13, 23, 33]


def test_run_reraises_errors_from_worker_threads(threads):
    def fail_on_second(part):
        if part.start == 1:
            raise ArithmeticError("part 1 failed")
        return part.start

    with pytest.raises(ArithmeticError, match="part 1 failed"):
        parallel.run(fail_on_second, [slice(0, 1), slice(1, 2)], np.empty(2))


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [
        ((7, 5, 4), (7, 4, 3)),
        ((2, 3, 5, 4), (3, 4, 6)),
        ((5, 4), (9, 4, 2)),
        ((9, 3, 4), (4, 2)),
        ((1, 4, 4), (6, 4, 4)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_matmul_equals_matmul(a_shape, b_shape, dtype, threads, rng):
    a, b = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
    got = parallel.matmul(a, b)
    assert got.dtype == dtype and got.shape == np.matmul(a, b).shape
    np.testing.assert_array_equal(got, np.matmul(a, b))  # the same BLAS call per matrix: bit for bit


def test_threaded_matmul_accepts_transposed_views(threads, rng):
    a = rng.standard_normal((6, 8, 8))
    np.testing.assert_array_equal(parallel.matmul(a, a.swapaxes(-1, -2)), np.matmul(a, a.swapaxes(-1, -2)))


def test_without_threadpoolctl_everything_runs_in_the_calling_thread(monkeypatch):
    """Without a way to hold BLAS to one thread, splitting would oversubscribe the cores."""
    monkeypatch.setattr(parallel, "_blas", False)  # what a missing threadpoolctl leaves behind
    monkeypatch.setattr(parallel, "_num_threads", None)
    assert parallel.get_num_threads() == 1
    with pytest.raises(ImportError, match="pip install threadpoolctl"):
        parallel.set_num_threads(2)


def test_blas_runs_one_thread_per_call():
    """Our threads do the parallel work; BLAS threads would only compete with them."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    parallel.set_num_threads(parallel.get_num_threads())
    blas = [pool for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_set_num_threads_validates_and_restores_default():
    before = parallel.get_num_threads()
    with pytest.raises(ValueError, match="n >= 1"):
        parallel.set_num_threads(0)
    parallel.set_num_threads(1)
    assert parallel.get_num_threads() == 1
    parallel.set_num_threads(None)
    assert parallel.get_num_threads() >= 1
    parallel.set_num_threads(before)


def test_only_host_arrays_are_split(xp):
    """On the GPU one part = one kernel per step; on the CPU the parts feed the threads."""
    parts = parallel.pieces(xp.zeros((64, 3)), item_bytes=10**9)
    assert parts == ([slice(i, i + 1) for i in range(64)] if xp is np else [slice(0, 64)])
    threads = parallel.get_num_threads()
    assert len(parallel.per_thread(xp.zeros((64, 3)))) == (threads if xp is np else 1)
    a = xp.asarray(np.random.default_rng(0).standard_normal((4, 3, 3)))
    np.testing.assert_allclose(gs.to_cpu(parallel.matmul(a, a)), gs.to_cpu(xp.matmul(a, a)), rtol=1e-12)


def test_newton_schulz_and_covariance_give_the_same_numbers_on_one_or_two_threads(rng):
    """SR-SOP's stacked products go through parallel.matmul: the thread count never changes a bit."""
    import gmsop_np.functional as F

    x = rng.standard_normal((12, 6, 4, 4)).astype(np.float32)
    upstream = rng.standard_normal((12, 21)).astype(np.float32)
    results = []
    before = parallel.get_num_threads()
    try:
        for n in (1, 2):
            parallel.set_num_threads(n)
            t = gs.Tensor(x.copy(), requires_grad=True)
            y = F.triu_vec(F.sqrtm_newton_schulz(F.cov_pool(t), 5))
            y.backward(upstream)
            results.append((y.data, t.grad.data))
    finally:
        parallel.set_num_threads(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
