"""The CPU stand-in for CuPy (gmsop_np/testing/device_sim.py): its refusals, its counts, its API.

* Refusals: implicit conversion, host/device mixing and NumPy functions on device
  data raise ``TypeError``; CuPy's missing names and keywords are missing here too.
* Counts: every kernel launch, synchronisation and host -> device copy is counted
  once, at the line of the caller (checked against this file's own line numbers).
* API: when CuPy is importable (``pip install cupy-cuda13x cuda-pathfinder`` works
  without a GPU), every public name of the stand-in exists in CuPy, and every call
  the stand-in accepts, CuPy's signature accepts too. Skipped otherwise.
"""

import inspect
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np import backend
from gmsop_np.testing import device_sim as ds
from gmsop_np.testing import simulated_gpu

HERE = "tests/test_device_sim.py"


def _next_line():
    """The line number after the caller's line (where the operation under test sits)."""
    return inspect.currentframe().f_back.f_lineno + 1


@pytest.fixture
def dev():
    """A (2, 3) float64 device array 0..5 (made outside any counting block)."""
    return ds.asarray(np.arange(6.0).reshape(2, 3))


# ----- refusals --------------------------------------------------------------------------------
def test_implicit_conversion_to_numpy_is_refused(dev):
    for convert in (np.asarray, np.array, lambda a: np.concatenate([a])):
        with pytest.raises(TypeError, match=r"\.get\(\)|numpy\.concatenate was called on a device array"):
            convert(dev)
    np.testing.assert_array_equal(dev.get(), np.arange(6.0).reshape(2, 3))  # the explicit way works


@pytest.mark.parametrize(
    "operation",
    [
        lambda d, h: d + h,
        lambda d, h: h + d,
        lambda d, h: h * d,
        lambda d, h: d < h,
        lambda d, h: h == d,
        lambda d, h: ds.concatenate([d, h]),
        lambda d, h: ds.stack([h, d]),
        lambda d, h: ds.where(d > 1, d, h),
        lambda d, h: ds.matmul(d, h.T),
        lambda d, h: ds.maximum(d, h),
        lambda d, h: d.__setitem__(slice(None), h),
        lambda d, h: d.__setitem__(ds.asarray(np.array([1])), h[1]),
        lambda d, h: ds.add.at(d, ds.asarray(np.array([0, 0])), h),
    ],
    ids=[
        "dev+host",
        "host+dev",
        "host*dev",
        "dev<host",
        "host==dev",
        "concatenate",
        "stack",
        "where",
        "matmul",
        "maximum",
        "setitem-slice",
        "setitem-index",
        "add.at",
    ],
)
def test_host_and_device_arrays_in_one_operation_are_refused(dev, operation):
    with pytest.raises(TypeError, match="host \\(NumPy\\) array cannot be used together with a device"):
        operation(dev, np.ones((2, 3)))


def test_numpy_functions_refuse_device_arrays(dev):
    for call in (lambda: np.exp(dev), lambda: np.sum(dev), lambda: np.matmul(dev, dev.T), lambda: np.where(dev > 1)):
        with pytest.raises(TypeError, match="was called on a device array.*xp = gmsop_np.get_array_module"):
            call()


def test_python_and_numpy_scalars_are_kernel_arguments(dev):
    """Scalars mix with device arrays on both sides, as in CuPy, with NumPy 2 (NEP 50) dtype rules."""
    f32 = ds.asarray(np.ones(3, np.float32))
    for result, dtype in [
        (f32 * 2.0, np.float32),  # a Python float is "weak": float32 stays float32
        (2 + f32, np.float32),
        (np.float32(2) * f32, np.float32),  # a NumPy scalar on the left reaches the stand-in through NumPy
        (f32 - np.float64(1), np.float64),  # a NumPy scalar is "strong"
        (ds.where(f32 > 0, f32, 0.0), np.float32),
    ]:
        assert isinstance(result, ds.ndarray) and result.dtype == dtype
    np.testing.assert_array_equal((np.float32(2) * f32).get(), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal((dev * 2 - 1).get(), np.arange(6.0).reshape(2, 3) * 2 - 1)


def test_only_cupy_api_is_offered(dev):
    rng = ds.random.default_rng(0)
    for missing in ("normal", "permutation", "choice", "shuffle"):  # not in cupy.random.Generator
        assert not hasattr(rng, missing)
    with pytest.raises(ValueError, match="kind can only be None or 'stable'"):
        ds.argsort(dev, kind="quicksort")
    with pytest.raises(TypeError, match="add.at only supports int32"):  # no 64-bit integer atomicAdd
        ds.add.at(ds.zeros(3, dtype=np.int64), ds.asarray(np.array([0, 0])), 1)
    with pytest.raises(NotImplementedError, match="cupy_multiply.at"):
        ds.multiply.at(dev, ds.asarray(np.array([0])), 2.0)
    with pytest.raises(TypeError):  # CuPy arrays have no __index__
        range(ds.asarray(np.array(3)))
    with pytest.raises(NotImplementedError, match="non-contiguous"):
        dev.T.sort()
    with pytest.raises(TypeError, match="unsupported type <class 'list'>"):
        dev + [1.0, 2.0, 3.0]


def test_batched_eigh_above_32_warns_like_the_cusolver_limit():
    """CuPy sends every stacked eigh to syevjBatched, documented for n <= 32 (see ds.linalg.eigh)."""
    small = ds.asarray(np.stack([np.eye(32)] * 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.linalg.eigh(small)
        ds.linalg.eigh(ds.asarray(np.eye(64)))  # one 2-D matrix goes to syevd: no limit
    with pytest.warns(ds.SimulationWarning, match="syevjBatched.*n <= 32"):
        w, v = ds.linalg.eigh(ds.asarray(np.stack([np.diag(np.arange(1.0, 34.0))] * 2)))
    np.testing.assert_allclose(w.get()[1], np.arange(1.0, 34.0))  # the values are still NumPy's


def test_integer_indices_wrap_around_as_in_cupy_kernels(dev):
    """CuPy's gather/scatter kernels take i % n: an out-of-range index is no IndexError on a GPU."""
    row = ds.asarray(np.array([10.0, 11.0, 12.0]))
    np.testing.assert_array_equal(row[ds.asarray(np.array([3, -4, 1]))].get(), [10.0, 12.0, 11.0])
    np.testing.assert_array_equal(dev[:, ds.asarray(np.array([4]))].get(), [[1.0], [4.0]])
    np.testing.assert_array_equal(ds.take(row, ds.asarray(np.array([5]))).get(), [12.0])
    counts = ds.zeros(3)
    ds.add.at(counts, ds.asarray(np.array([3, 3, 0])), 1.0)
    np.testing.assert_array_equal(counts.get(), [3.0, 0.0, 0.0])
    with pytest.raises(IndexError):  # a Python int out of range still raises, as in CuPy
        row[3]


def test_repeated_setitem_positions_warn(dev):
    """CuPy stores an undefined one of several values written to one position (NumPy: the last)."""
    index = ds.asarray(np.array([0, 0]))
    with pytest.warns(ds.SimulationWarning, match="undefined"):
        dev[index] = ds.asarray(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dev[index] = 7.0  # one value: no ambiguity
        dev[ds.asarray(np.array([1, 0]))] = ds.asarray(np.ones((2, 3)))


def test_results_are_device_arrays_and_views_share_memory(dev):
    total = dev.sum()
    assert isinstance(total, ds.ndarray) and total.shape == ()  # a 0-d device array, as CuPy returns
    assert isinstance(dev[1, 2], ds.ndarray) and dev[1, 2].shape == ()
    view = dev.T
    view[0, 1] = 100.0
    assert float(dev[1, 0]) == 100.0
    assert [row.shape for row in dev] == [(3,), (3,)]


# ----- counting --------------------------------------------------------------------------------
def test_each_operation_is_counted_once_at_its_call_site(dev):
    with ds.counting() as c:
        line = _next_line()
        y = ds.exp(dev) * 2.0 + dev.sum(axis=0, keepdims=True)  # exp, multiply, sum, add
        _ = dev @ dev.T  # matmul
        y[0] = 1.0  # a fill
        y[:, 1] = dev[:, 0]  # a copy
    assert (c.launches, c.syncs, c.copies_to_device) == (7, 0, 0)
    assert c.sites() == [
        (f"{HERE}:{line}", 4),
        (f"{HERE}:{line + 1}", 1),
        (f"{HERE}:{line + 2}", 1),
        (f"{HERE}:{line + 3}", 1),
    ]
    assert dict(c.operations()) == {
        "exp": 1,
        "multiply": 1,
        "sum": 1,
        "add": 1,
        "matmul": 1,
        "fill": 1,
        "setitem[basic]": 1,
    }


def test_views_are_not_launches_but_copies_are(dev):
    with ds.counting() as c:
        views = [
            dev.T,
            dev.reshape(3, 2),
            dev[1:, ::2],
            dev[0],
            ds.broadcast_to(dev, (4, 2, 3)),
            dev.swapaxes(0, 1),
            ds.expand_dims(dev, 0),
            dev.ravel(),
            ds.asarray(dev),
            dev.astype(np.float64, copy=False),
        ]
    assert c.launches == 0 and all(isinstance(v, ds.ndarray) for v in views)
    with ds.counting() as c:
        dev.T.reshape(6)  # not expressible as a view: a copy
        dev.T.ravel()
        dev.copy()
        dev.astype(np.float32)
        ds.ascontiguousarray(dev.T)
        dev[ds.asarray(np.array([1, 0]))]  # an integer-array gather
    assert c.launches == 6 and c.syncs == 0


def test_device_to_host_reads_are_syncs(dev):
    one = ds.asarray(np.array(1.0))
    with ds.counting() as c:
        line = _next_line()
        dev.get(), ds.asnumpy(dev), dev[0, 0].item(), dev.tolist()
        float(one), int(one), bool(one), repr(dev), str(dev), f"{dev[0, 0]:.2f}"
        ds.cuda.Stream.null.synchronize(), ds.cuda.Device().synchronize()
    assert c.syncs == 12 and c.launches == 0
    assert c.sites("sync") == [(f"{HERE}:{line + 1}", 6), (f"{HERE}:{line}", 4), (f"{HERE}:{line + 2}", 2)]
    with ds.counting() as c:
        ds.asnumpy(np.ones(2))  # host data passes through
    assert c.syncs == 0


def test_functions_that_synchronise_inside_cupy(dev):
    """CuPy reads a count back in these (see its sources): the stand-in counts where it does."""
    labels = ds.asarray(np.array([0, 2, 2, 1]))
    cases = [
        (lambda: dev[dev > 2], 1),  # boolean mask: the number of True entries
        (lambda: dev.__setitem__(dev > 2, 0.0), 1),
        (lambda: ds.nonzero(dev), 1),
        (lambda: ds.flatnonzero(dev), 1),
        (lambda: ds.argwhere(dev), 1),
        (lambda: ds.where(dev > 2), 1),  # the one-argument form is nonzero
        (lambda: ds.unique(labels), 1),
        (lambda: ds.unique(labels, return_counts=True), 2),
        (lambda: ds.bincount(labels, minlength=3), 2),  # (x < 0).any() and x.max()
        (lambda: ds.triu_indices(4), 2),  # two boolean-mask selections
        (lambda: ds.where(dev > 2, dev, 0.0), 0),
        (lambda: ds.argsort(dev), 0),
        (lambda: ds.count_nonzero(dev), 0),
        (lambda: ds.linalg.eigh(ds.asarray(np.eye(3))), 0),  # CuPy ignores cuSOLVER's info by default
    ]
    for run, syncs in cases:
        with ds.counting() as c:
            run()
        assert c.syncs == syncs, (inspect.getsource(run).strip(), c.summary())


def test_host_to_device_copies(dev):
    with ds.counting() as c:
        ds.asarray(np.ones(3)), ds.asarray([1.0, 2.0]), ds.array(np.ones(2)), ds.asarray(0.5, dtype=np.float32)
        dev.set(np.zeros((2, 3)))
        dev[np.array([1, 0])]  # CuPy copies a host index array to the device
    assert c.copies_to_device == 6
    assert dict(c.operations("copy_to_device")) == {
        "array[host data]": 3,
        "array[scalar]": 1,
        "set": 1,
        "getitem[host index]": 1,
    }
    np.testing.assert_array_equal(dev.get(), np.zeros((2, 3)))
    with ds.counting() as c:
        ds.asarray(dev), ds.zeros(3), ds.arange(4), dev * np.float32(3)  # device-side creation, scalar arguments
        stacked = ds.asarray([dev[0], dev[1]])  # CuPy stacks a list of device arrays on the device
    assert c.copies_to_device == 0 and stacked.shape == (2, 3)
    with pytest.raises(TypeError, match=r"\.get\(\)"):
        ds.asarray([dev[0], np.ones(3)])


def test_counts_nest_are_deterministic_and_name_callers(dev):
    def work():
        return gs.to_cpu((dev * 2).sum())  # the sync happens inside gmsop_np/backend.py

    work_line = work.__code__.co_firstlineno + 1
    with simulated_gpu(), ds.counting() as outer:
        with ds.counting() as inner:
            work()
        work()
    assert (inner.launches, inner.syncs) == (2, 1) and (outer.launches, outer.syncs) == (4, 2)
    assert inner.sites("sync")[0][0].startswith("gmsop_np/backend.py:")
    (chain, count), *_ = inner.sites("sync", depth=2)
    assert chain.endswith(f" <- {HERE}:{work_line}") and count == 1
    assert [e.name for e in outer.events] == [e.name for e in outer.events[:3]] * 2 and "2 syncs" in outer.summary()
    with ds.counting() as c:
        pass
    assert c.summary() == "0 launches, 0 syncs, 0 host->device copies"


def test_a_training_step_on_the_stand_in_counts_deterministically():
    def step():
        with simulated_gpu(), gs.using_backend("cupy"):
            model = gs.nn.Sequential(
                gs.nn.Linear(4, 3, rng=np.random.default_rng(0)),
                gs.nn.ReLU(),
                gs.nn.Linear(3, 2, rng=np.random.default_rng(1)),
            )
            x = gs.Tensor(ds.asarray(np.ones((5, 4), np.float32)))
            with ds.counting() as c:
                loss = F.softmax_cross_entropy(model(x), ds.asarray(np.array([0, 1, 0, 1, 1])))
                loss.backward()
            return c, float(loss.item())

    (first, loss1), (second, loss2) = step(), step()
    assert first.launches > 10 and [e.site for e in first.events] == [e.site for e in second.events]
    assert loss1 == loss2


# ----- wiring into the backend --------------------------------------------------------------------
def test_simulated_gpu_fills_the_device_slot_and_restores_it():
    before = backend._device
    with simulated_gpu() as module, gs.using_backend("cupy"):
        assert module is ds and backend.get_cupy() is ds
        t = gs.Tensor([1.0, 2.0])
        assert isinstance(t.data, ds.ndarray) and t.backend == "cupy" and gs.get_array_module(t) is ds
        assert isinstance(gs.to_cpu(t).data, np.ndarray)
    assert backend._device is before


def test_environment_variable_selects_the_stand_in_in_a_subprocess():
    code = "import gmsop_np as gs\nwith gs.using_backend('cupy'):\n    print(type(gs.Tensor([1.0]).data).__module__)\n"
    root = str(Path(__file__).resolve().parents[1])
    env = dict(
        os.environ, GMSOP_NP_SIMULATE_GPU="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "gmsop_np.testing.device_sim"


# ----- the API against real CuPy (skipped where CuPy is not installed) -----------------------------
def _cupy():
    return pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda13x cuda-pathfinder)")


# Names whose CuPy object *is* NumPy's (dtypes, finfo, constants): compared by identity.
_NUMPY_OBJECTS = set(
    "bool_ bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 complex64 complex128 "
    "intp dtype finfo iinfo promote_types issubdtype newaxis pi e inf nan LinAlgError".split()
)


def _public(namespace):
    return {
        name: value
        for name, value in vars(namespace).items()
        if not name.startswith("_") and name not in ds.STAND_IN_ONLY and not inspect.ismodule(value)
    }


def _cupy_signature(obj):
    """CuPy's signature; Cython methods only state it in their docstring's first line."""
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        pass
    first = (obj.__doc__ or "").strip().splitlines()[0]
    params = re.match(r"[\w.]*\((.*)\)", first).group(1).replace("\\*", "*")
    params = re.sub(r"\b(?:int|Py_ssize_t|_ndarray_base|str|bint)\s+(?=\w)", "", params)  # Cython types
    namespace = {}
    exec(f"def f({params}): pass", {}, namespace)
    return inspect.signature(namespace["f"])


def _calls(signature):
    """(args, kwargs) of three calls the stand-in's ``signature`` accepts: all positional, all by keyword, minimal."""
    positional, keyword, minimal_args, minimal_kwargs = [], {}, [], {}
    for p in signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            positional += [0, 0]
        elif p.kind is p.VAR_KEYWORD:
            continue
        elif p.kind is p.KEYWORD_ONLY:
            keyword[p.name] = 0
        else:
            positional.append(0)
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            minimal_args.append(0)
        elif p.default is p.empty and p.kind is p.KEYWORD_ONLY:
            minimal_kwargs[p.name] = 0
    by_name = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    leading = [0 for p in signature.parameters.values() if p.kind is p.POSITIONAL_ONLY]
    return [(positional, keyword), (leading, {p.name: 0 for p in by_name}), (minimal_args, minimal_kwargs)]


def _assert_compatible(name, ours, theirs):
    """Every call our signature accepts binds to CuPy's, and shared parameters have the same defaults."""
    ours, theirs = inspect.signature(ours), _cupy_signature(theirs)
    for args, kwargs in _calls(ours):
        try:
            theirs.bind(*args, **kwargs)
        except TypeError as error:
            raise AssertionError(f"{name}{ours} accepts a call that cupy's {name}{theirs} refuses: {error}") from None
    for p in ours.parameters.values():
        q = theirs.parameters.get(p.name)
        if q is not None and p.default is not p.empty:
            assert q.default is not q.empty and q.default == p.default, f"{name}: default of {p.name} differs"


def _compare_namespace(path, ours, theirs):
    for name, value in _public(ours).items():
        assert hasattr(theirs, name), f"cupy{path}.{name} does not exist"
        cupy_value = getattr(theirs, name)
        if name in _NUMPY_OBJECTS:
            assert value is cupy_value, f"cupy{path}.{name} is not the same object as the stand-in's"
        elif isinstance(value, ds.ufunc):
            assert type(cupy_value).__name__ == "ufunc" and (value.nin, value.nout) == (cupy_value.nin, cupy_value.nout)
            keywords = _cupy_signature(cupy_value).parameters
            assert {"out", "casting", "dtype"} <= set(keywords), f"cupy{path}.{name}"
        elif isinstance(value, ds._Namespace):
            _compare_namespace(f"{path}.{name}", value, cupy_value)
        elif inspect.isclass(value):
            _compare_class(f"{path}.{name}", value, cupy_value)
        elif callable(value):
            _assert_compatible(f"cupy{path}.{name}", value, cupy_value)


_PROTOCOL = ("__getitem__", "__setitem__", "__iter__", "__len__", "__format__", "__enter__", "__exit__")


def _compare_class(path, ours, theirs):
    for name, value in vars(ours).items():
        if name.startswith("_") and name not in _PROTOCOL:
            continue
        assert hasattr(theirs, name), f"cupy{path}.{name} does not exist"
        if inspect.isfunction(value) and not name.startswith("_"):
            _assert_compatible(f"cupy{path}.{name}", value, getattr(theirs, name))


def test_every_public_name_and_signature_matches_cupy():
    cupy = _cupy()
    assert not [name for name in ds.STAND_IN_ONLY if hasattr(cupy, name)], "exempted names must not be CuPy's"
    _compare_namespace("", ds, cupy)


def test_the_signature_check_catches_an_invented_keyword():
    cupy = _cupy()

    def sum(a, axis=None, dtype=None, out=None, keepdims=False, where=None):  # noqa: A001  (NumPy has where=)
        pass

    def argsort(a, axis=-1, kind="quicksort"):  # a different default
        pass

    with pytest.raises(AssertionError, match="refuses"):
        _assert_compatible("cupy.sum", sum, cupy.sum)
    with pytest.raises(AssertionError, match="default of kind differs"):
        _assert_compatible("cupy.argsort", argsort, cupy.argsort)
    _assert_compatible("cupy.sum", ds.sum, cupy.sum)
