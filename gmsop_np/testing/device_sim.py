"""A strict CPU stand-in for CuPy: NumPy underneath, CuPy's rules on top, and a counter.

Without a GPU, the "cupy" backend of gmsop_np can run on this module instead of
CuPy (``gmsop_np.testing.simulated_gpu()`` or ``GMSOP_NP_SIMULATE_GPU=1``). It looks
like ``cupy`` to our code: its own array type ``ndarray`` (which wraps a NumPy array
and never lets it out), the functions, methods and keyword arguments that CuPy 14
offers -- a subset of them, each checked against CuPy's signatures by
``tests/test_device_sim.py`` -- plus ``random``, ``linalg``, ``cuda`` and
``lib.stride_tricks``.

What it checks (device discipline)
----------------------------------
* No implicit transfer. ``numpy.asarray(device_array)`` and every other implicit
  conversion raise CuPy's ``TypeError`` ("use ``.get()``"). Device -> host happens
  only through ``.get()``, ``asnumpy``, ``item``, ``tolist``, ``float``/``int``/``bool``
  and printing; host -> device only through ``asarray``/``array``/``ndarray.set``
  (and host index arrays, which CuPy copies to the device as well).
* No mixing. A host (NumPy) array and a device array in one operation raise
  ``TypeError``, as in CuPy: ``dev + host``, ``host + dev``, ``concatenate([dev, host])``,
  ``where(cond, dev, host)``, ``dev[...] = host``, ``add.at(dev, i, host)``. Python
  and NumPy *scalars* are fine (they are kernel arguments, as in CuPy).
* No NumPy function on device data: ``numpy.exp(dev)``, ``numpy.sum(dev)`` raise
  ``TypeError``. This is stricter than CuPy (which dispatches them to itself) on
  purpose: a bare ``np.`` call in GPU code is a bug in this project.
* Only CuPy's API: a name, method or keyword that CuPy does not have is an
  ``AttributeError``/``TypeError`` here too (``random.Generator`` has no ``normal``
  or ``permutation``; ``argsort`` accepts ``kind=None`` or ``"stable"`` only; a
  scatter-add into an int64 array is refused, as ``cupy.add.at`` refuses it; arrays
  have no ``__index__``; ``sort`` refuses non-contiguous arrays).
* CuPy behaviours that differ from NumPy: full reductions and ``a[i, j]`` return 0-d
  device arrays, not scalars; ``linalg.eigh``/``eigvalsh`` of a *stack* of n x n
  matrices with n > 32 warns (``SimulationWarning``): CuPy sends it to cuSOLVER's
  batched Jacobi solver, documented for n <= 32, and does not check its status.
* Counts, each with its call site (``file:line`` of the first frame outside this
  module): kernel launches, device -> host synchronisations and host -> device
  copies. See ``counting()``. Counts are deterministic.

What it cannot check
--------------------
Numerics (the results are NumPy's; float32 reductions, ``eigh`` and the random
streams differ from CuPy's), kernels (nothing is compiled), speed, memory use and
asynchronous execution. A *launch* here is one array operation: CuPy may run
several kernels for one operation (scans, sorts, variance); synchronisations are
counted where CuPy's sources perform them.

Deliberate differences from CuPy (stricter)
-------------------------------------------
NumPy functions refuse device arrays (see above); module functions refuse host
arrays and lists where CuPy would sometimes accept them; a host array assigned
into a device array is a ``TypeError`` (CuPy raises ``ValueError`` for a slice and
copies silently for an integer or boolean index); comparisons with 0-d NumPy
arrays are refused (CuPy unwraps them).
"""

# Careful: this module defines CuPy's ``sum``, ``max``, ``min``, ``abs``, ``round``,
# ``all``, ``any`` and ``bool`` at module level, so its own code calls the Python
# builtins as ``builtins.sum`` etc.

import builtins
import collections
import contextlib
import dataclasses
import os
import sys
import threading
import types
import warnings

import numpy as np

# ================================================================================================
# Counting launches, synchronisations and copies
# ================================================================================================
LAUNCH, SYNC, COPY_TO_DEVICE = "launch", "sync", "copy_to_device"
_KINDS = (LAUNCH, SYNC, COPY_TO_DEVICE)
_THIS_FILES = {__file__, os.path.abspath(__file__)}  # how frames of this module name their file
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing the device was asked to do.

    kind : "launch", "sync" or "copy_to_device"
    name : the operation (``multiply``, ``getitem[bool mask]``, ``item``, ...)
    site : ``file:line`` of the first frame outside the stand-in (paths relative to the repository)
    stack : that frame and up to three of its callers, innermost first
    """

    kind: str
    name: str
    site: str
    stack: tuple


class Counts:
    """What happened inside one ``counting()`` block (see there)."""

    def __init__(self):
        self.events: list[Event] = []

    def _total(self, kind):
        return builtins.sum(1 for e in self.events if e.kind == kind)

    @property
    def launches(self) -> int:
        return self._total(LAUNCH)

    @property
    def syncs(self) -> int:
        return self._total(SYNC)

    @property
    def copies_to_device(self) -> int:
        return self._total(COPY_TO_DEVICE)

    def sites(self, kind: str | None = None, depth: int = 1) -> list[tuple[str, int]]:
        """[(site, count)] most frequent first (ties by site), for one kind or all.

        ``depth > 1`` names each site by its caller chain (``inner <- caller <- ...``),
        useful when the first frame is a helper such as ``backend.to_cpu``.
        """
        chosen = [e for e in self.events if kind is None or e.kind == kind]
        counter = collections.Counter(" <- ".join(e.stack[:depth]) for e in chosen)
        return sorted(counter.items(), key=lambda item: (-item[1], item[0]))

    def operations(self, kind: str | None = None) -> list[tuple[str, int]]:
        """[(operation name, count)] most frequent first, for one kind or all."""
        counter = collections.Counter(e.name for e in self.events if kind is None or e.kind == kind)
        return sorted(counter.items(), key=lambda item: (-item[1], item[0]))

    def summary(self, top: int = 10) -> str:
        """A readable report: the totals, then the ``top`` sites of each kind."""
        lines = [f"{self.launches} launches, {self.syncs} syncs, {self.copies_to_device} host->device copies"]
        for kind in _KINDS:
            sites = self.sites(kind)
            if sites:
                lines.append(f"  {kind} sites ({len(sites)}):")
                lines += [f"    {count:6d}  {site}" for site, count in sites[:top]]
                if len(sites) > top:
                    lines.append(f"       ...  {len(sites) - top} more")
        return "\n".join(lines)

    def __repr__(self):
        return f"Counts(launches={self.launches}, syncs={self.syncs}, copies_to_device={self.copies_to_device})"


_active = threading.local()  # .counters: the Counts of the open counting() blocks of this thread


@contextlib.contextmanager
def counting():
    """``with device_sim.counting() as c: ...`` records what the device is asked to do.

    ``c.launches`` (array operations that run work on the device), ``c.syncs``
    (device -> host synchronisations) and ``c.copies_to_device`` (host -> device
    copies); ``c.sites(kind)``, ``c.operations(kind)`` and ``c.summary()`` say where
    and what. Blocks may nest; each sees the events issued inside it by this thread.
    """
    counts = Counts()
    stack = _active.__dict__.setdefault("counters", [])
    stack.append(counts)
    try:
        yield counts
    finally:
        stack.remove(counts)


def _frame_name(frame) -> str:
    path = os.path.abspath(frame.f_code.co_filename)
    if path.startswith(_REPO_ROOT + os.sep):
        path = os.path.relpath(path, _REPO_ROOT)
    return f"{path}:{frame.f_lineno}"


def _record(kind: str, name: str) -> None:
    counters = getattr(_active, "counters", None)
    if not counters:
        return
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _THIS_FILES:
        frame = frame.f_back
    stack = []
    while frame is not None and len(stack) < 4:
        stack.append(_frame_name(frame))
        frame = frame.f_back
    event = Event(kind, name, stack[0] if stack else "?", tuple(stack))
    for counts in counters:
        counts.events.append(event)


def _launch(name: str) -> None:
    _record(LAUNCH, name)


def _sync(name: str) -> None:
    _record(SYNC, name)


def _copy_to_device(name: str) -> None:
    _record(COPY_TO_DEVICE, name)


class SimulationWarning(UserWarning):
    """A call that CuPy accepts but that behaves badly on a real GPU (see the message)."""


# ================================================================================================
# Refusals
# ================================================================================================
_IMPLICIT_CONVERSION = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
)


def _mixing_error(what: str) -> TypeError:
    return TypeError(
        f"{what}: a host (NumPy) array cannot be used together with a device (CuPy) array "
        "(CuPy: \"Unsupported type <class 'numpy.ndarray'>\"). Move the data explicitly: "
        "xp.asarray(host) copies it to the device, device.get() copies it back."
    )


def _unsupported(value, what: str) -> TypeError:
    return TypeError(f"{what}: unsupported type {type(value)}; expected a device array or a Python/NumPy scalar")


_SCALAR_TYPES = (bool, int, float, complex, np.generic)


def _is_scalar(value) -> bool:
    return isinstance(value, _SCALAR_TYPES)


def _operand(value, what: str):
    """The NumPy data behind a kernel argument: a device array or a scalar (never host data)."""
    if isinstance(value, ndarray):
        return value._a
    if _is_scalar(value):
        return value
    if isinstance(value, np.ndarray):
        raise _mixing_error(what)
    raise _unsupported(value, what)


def _device_data(value, what: str):
    """The NumPy data behind a device array argument (scalars, host arrays, lists refused)."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        raise _mixing_error(what)
    raise TypeError(f"{what}: expected a device (cupy) array, got {type(value).__name__}")


def _out_data(out, what: str):
    if out is None:
        return None
    if not isinstance(out, ndarray):
        raise TypeError(f"{what}: out must be a device (cupy) array, got {type(out).__name__}")
    return out._a


def _wrap(result):
    """NumPy results -> device arrays (a NumPy scalar becomes a 0-d array, as CuPy returns)."""
    if isinstance(result, np.ndarray):
        return ndarray._from_data(result)
    if isinstance(result, np.generic):
        return ndarray._from_data(np.asarray(result))
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    return result


def _run(name: str, function, *args, out=None, **kwargs):
    """One launch: call the NumPy ``function`` and wrap its result (or return ``out``)."""
    _launch(name)
    if out is not None:
        function(*args, out=_out_data(out, name), **kwargs)
        return out
    return _wrap(function(*args, **kwargs))


def _view(data: np.ndarray):
    """A view of existing device memory: no launch."""
    return ndarray._from_data(data)


def _shares(result: np.ndarray, base: np.ndarray) -> bool:
    """Whether NumPy returned a view of ``base`` (reshape/ravel either view it or copy it)."""
    return result.size == 0 or np.may_share_memory(result, base)


# ================================================================================================
# Indexing keys
# ================================================================================================
def _index_key(key, shape, what: str):
    """(NumPy key, kind) with kind "basic", "advanced" (integer arrays) or "mask" (a boolean array).

    Device arrays are unwrapped; host arrays and lists are copied to the device (as CuPy does).
    Integer index arrays wrap around like CuPy's gather/scatter kernels (``i % n``): an
    out-of-range index is no IndexError on a GPU but silently reads or writes another row.
    """
    parts = list(key) if isinstance(key, tuple) else [key]
    kind = "basic"
    for i, part in enumerate(parts):
        if isinstance(part, ndarray):
            array = part._a
        elif isinstance(part, (np.ndarray, list)):
            _copy_to_device(f"{what}[host index]")
            array = np.asarray(part)
            if isinstance(part, list) and array.size == 0:
                array = array.astype(np.intp)  # an empty list means no indices, not an empty mask
        else:
            continue  # int, slice, None, Ellipsis
        if array.dtype.kind == "b":
            if array.size:
                _sync(f"{what}[bool mask]")  # CuPy reads the number of True entries
            kind = "mask"
        elif array.dtype.kind in "iu":
            kind = "advanced" if kind == "basic" else kind
        else:
            raise IndexError(f"arrays used as indices must be of integer or boolean type (actual: {array.dtype})")
        parts[i] = array
    if kind != "basic":
        _wrap_integer_indices(parts, shape)
    elif not builtins.any(p is Ellipsis for p in parts):
        parts.append(Ellipsis)  # a[1, 2, ...] is a 0-d view where a[1, 2] would be a NumPy scalar
    return tuple(parts), kind


def _warn_if_indices_repeat(shape, key):
    """CuPy stores an undefined one of the values written to a repeated position (NumPy: the last)."""
    hits = np.zeros(shape, dtype=np.intp)
    np.add.at(hits, key, 1)
    if hits.size and hits.max() > 1:
        warnings.warn(
            "setitem writes several values to the same position; on CuPy the value stored there is undefined "
            "(NumPy keeps the last). Use unique indices, or add.at to accumulate.",
            SimulationWarning,
            stacklevel=3,
        )


def _wrap_integer_indices(parts, shape):
    """Reduce every integer index array modulo the length of the axis it indexes (in place)."""

    def width(part):  # axes of the array that ``part`` consumes
        if part is None or part is Ellipsis:
            return 0
        return part.ndim if isinstance(part, np.ndarray) and part.dtype.kind == "b" else 1

    axis = 0
    for i, part in enumerate(parts):
        if part is Ellipsis:
            axis += len(shape) - builtins.sum(width(p) for p in parts)
        elif isinstance(part, np.ndarray) and part.dtype.kind in "iu" and axis < len(shape) and shape[axis]:
            n = shape[axis]
            if part.size and (part.max() >= n or part.min() < -n):
                parts[i] = np.mod(part, n)
        axis += width(part)


# ================================================================================================
# The array type
# ================================================================================================
class _Flags:
    def __init__(self, data):
        self.c_contiguous = data.flags.c_contiguous
        self.f_contiguous = data.flags.f_contiguous
        self.owndata = data.flags.owndata

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous, "OWNDATA": self.owndata}[name]

    def __repr__(self):
        return f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n  OWNDATA : {self.owndata}"


def _binary_operator(name, ufunc_name, reflected=False):
    def op(self, other):
        if _defers_to(self, other):
            return NotImplemented
        ufunc_ = globals()[ufunc_name]
        return ufunc_(other, self) if reflected else ufunc_(self, other)

    op.__name__ = name
    return op


def _inplace_operator(name, ufunc_name):
    def op(self, other):
        globals()[ufunc_name](self, other, out=self)
        return self

    op.__name__ = name
    return op


def _defers_to(array, other) -> bool:
    """CuPy returns NotImplemented (so ``other``'s reflected operator runs) for objects of higher priority."""
    if isinstance(other, (ndarray, np.ndarray)) or _is_scalar(other):
        return False
    return getattr(other, "__array_priority__", 0) > array.__array_priority__


class ndarray:  # noqa: N801  (CuPy's name)
    """A device array: a NumPy array that can only be reached through CuPy's API.

    ``ndarray(shape, dtype=float)`` allocates uninitialised memory, as CuPy does.
    """

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100  # CuPy's: objects of higher priority (gmsop_np's Tensor) win binary operators
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CPU stand-in cannot wrap raw device memory (memptr/strides)")
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _from_data(cls, data: np.ndarray):
        array = object.__new__(cls)
        array._a = data
        return array

    # ----- refusals --------------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT_CONVERSION)

    def __array_ufunc__(self, numpy_ufunc, method, *inputs, **kwargs):
        name = numpy_ufunc.__name__
        if builtins.any(isinstance(x, np.ndarray) for x in inputs):
            raise _mixing_error(f"numpy.{name}")
        ours = globals().get(name)
        if method == "__call__" and not kwargs and isinstance(ours, ufunc):
            if builtins.any(isinstance(x, np.generic) for x in inputs):
                # ``numpy_scalar * device_array`` arrives here (NumPy's scalar operator calls the ufunc);
                # CuPy computes it on the device, and so do we. A bare ``np.exp(device_array)`` does not.
                return ours(*inputs)
        raise TypeError(
            f"numpy.{name} was called on a device array; in code that runs on both backends "
            f"use xp = gmsop_np.get_array_module(...) and xp.{name}(...)"
        )

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(
            f"numpy.{func.__name__} was called on a device array; in code that runs on both backends "
            f"use xp = gmsop_np.get_array_module(...) and xp.{func.__name__}(...)"
        )

    # ----- attributes ------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: _Flags(self._a))
    T = property(lambda self: _view(self._a.T))
    mT = property(lambda self: _view(np.swapaxes(self._a, -1, -2)))
    device = property(lambda self: cuda.Device(0))

    @property
    def base(self):
        return None if self._a.base is None else _view(self._a.base)

    @property
    def real(self):
        return _view(self._a.real) if self.dtype.kind == "c" else self

    @property
    def imag(self):
        return _view(self._a.imag) if self.dtype.kind == "c" else _run("imag", np.zeros_like, self._a)

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    # ----- device -> host (each a synchronisation) -------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        """A NumPy copy of the array (synchronises)."""
        _sync("get")
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"get: out must be a numpy.ndarray, got {type(out).__name__}")
            out[...] = self._a
            return out
        return np.array(self._a, order=order, copy=True)

    def item(self):
        _sync("item")
        return self._a.item()

    def tolist(self):
        _sync("tolist")
        return self._a.tolist()

    def __bool__(self):
        if self.size == 1:
            _sync("bool")
        return builtins.bool(self._a)

    def __int__(self):
        _sync("int")
        return int(self._a)

    def __float__(self):
        _sync("float")
        return float(self._a)

    def __complex__(self):
        _sync("complex")
        return complex(self._a)

    def __repr__(self):
        _sync("repr")
        return repr(self._a)

    def __str__(self):
        _sync("str")
        return str(self._a)

    def __format__(self, format_spec):
        _sync("format")
        return format(self._a.item() if self.ndim == 0 else self._a, format_spec)

    def __reduce__(self):
        return array, (self.get(),)

    # ----- host -> device -------------------------------------------------------------------
    def set(self, arr, stream=None):
        """Copy the host array ``arr`` (same shape) into this device array."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"set: arr must be a numpy.ndarray, got {type(arr).__name__}")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        _copy_to_device("set")
        self._a[...] = arr

    # ----- indexing --------------------------------------------------------------------------
    def __getitem__(self, key):
        raw_key, kind = _index_key(key, self.shape, "getitem")
        result = self._a[raw_key]
        if kind == "basic":
            return _view(result)
        _launch(f"getitem[{'bool mask' if kind == 'mask' else 'int array'}]")
        return _wrap(result)

    def __setitem__(self, key, value):
        if isinstance(value, ndarray):
            raw_value = value._a
        elif _is_scalar(value):
            raw_value = value
        elif isinstance(value, np.ndarray):
            raise _mixing_error("setitem")
        else:
            raise _unsupported(value, "setitem")
        raw_key, kind = _index_key(key, self.shape, "setitem")
        if kind == "advanced" and isinstance(value, ndarray) and value.size > 1:
            _warn_if_indices_repeat(self.shape, raw_key)
        _launch("fill" if kind == "basic" and _is_scalar(value) else f"setitem[{kind}]")
        self._a[raw_key] = raw_value

    def fill(self, value):
        if isinstance(value, ndarray) and value.ndim == 0:
            value = value._a
        elif not _is_scalar(value):
            raise _unsupported(value, "fill")
        _launch("fill")
        self._a.fill(value)

    # ----- shape (views: no launch) -----------------------------------------------------------
    def reshape(self, *shape, order="C", copy=None):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape, order=order, copy=copy)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return _view(self._a.transpose(axes or None))

    def swapaxes(self, axis1, axis2):
        return _view(self._a.swapaxes(axis1, axis2))

    def squeeze(self, axis=None):
        return _view(self._a.squeeze(axis))

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return _view(self._a.diagonal(offset, axis1, axis2))

    def view(self, dtype=None, type=None):
        if type is not None:
            raise NotImplementedError("view(type=...) is not supported by the stand-in")
        return _view(self._a.view() if dtype is None else self._a.view(dtype))

    def ravel(self, order="C"):
        return ravel(self, order)

    def flatten(self, order="C"):
        return _run("copy", self._a.flatten, order)

    # ----- copies ----------------------------------------------------------------------------
    def copy(self, order="C"):
        return _run("copy", self._a.copy, order)

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        dtype = np.dtype(dtype)
        if not copy and dtype == self.dtype and (order in "KA" or self._a.flags[f"{order}_CONTIGUOUS"]):
            return self
        return _run("astype", self._a.astype, dtype, order=order, casting=casting or "unsafe")

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    # ----- reductions ------------------------------------------------------------------------
    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return sum(self, axis, dtype, out, keepdims)

    def prod(self, axis=None, dtype=None, out=None, keepdims=None):
        return prod(self, axis, dtype, out, builtins.bool(keepdims))

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return mean(self, axis, dtype, out, keepdims)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return var(self, axis, dtype, out, ddof, keepdims)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return std(self, axis, dtype, out, ddof, keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return amax(self, axis, out, keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return amin(self, axis, out, keepdims)

    def argmax(self, axis=None, out=None, dtype=None, keepdims=False):
        return argmax(self, axis, dtype, out, keepdims)

    def argmin(self, axis=None, out=None, dtype=None, keepdims=False):
        return argmin(self, axis, dtype, out, keepdims)

    def all(self, axis=None, out=None, keepdims=False):
        return all(self, axis, out, keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return any(self, axis, out, keepdims)

    def cumsum(self, axis=None, dtype=None, out=None):
        return cumsum(self, axis, dtype, out)

    def trace(self, offset=0, axis1=0, axis2=1, dtype=None, out=None):
        return trace(self, offset, axis1, axis2, dtype, out)

    # ----- other methods ---------------------------------------------------------------------
    def clip(self, min=None, max=None, out=None):
        return clip(self, min, max, out)

    def dot(self, b, out=None):
        return dot(self, b, out)

    def take(self, indices, axis=None, out=None):
        return take(self, indices, axis, out)

    def repeat(self, repeats, axis=None):
        return repeat(self, repeats, axis)

    def nonzero(self):
        return nonzero(self)

    def argsort(self, axis=-1, kind=None):
        return argsort(self, axis, kind)

    def sort(self, axis=-1, kind=None):
        """In-place stable sort (CuPy sorts only arrays that own contiguous data)."""
        _check_sort_kind(kind)
        if not self._a.flags.c_contiguous:
            raise NotImplementedError("Sorting non-contiguous array is not supported.")
        _launch("sort")
        self._a.sort(axis=axis, kind="stable")

    def conj(self):
        return conj(self)

    def conjugate(self):
        return conj(self)

    def round(self, decimals=0, out=None):
        return round(self, decimals, out)

    # ----- operators -------------------------------------------------------------------------
    __add__ = _binary_operator("__add__", "add")
    __radd__ = _binary_operator("__radd__", "add", reflected=True)
    __sub__ = _binary_operator("__sub__", "subtract")
    __rsub__ = _binary_operator("__rsub__", "subtract", reflected=True)
    __mul__ = _binary_operator("__mul__", "multiply")
    __rmul__ = _binary_operator("__rmul__", "multiply", reflected=True)
    __truediv__ = _binary_operator("__truediv__", "true_divide")
    __rtruediv__ = _binary_operator("__rtruediv__", "true_divide", reflected=True)
    __floordiv__ = _binary_operator("__floordiv__", "floor_divide")
    __rfloordiv__ = _binary_operator("__rfloordiv__", "floor_divide", reflected=True)
    __mod__ = _binary_operator("__mod__", "remainder")
    __rmod__ = _binary_operator("__rmod__", "remainder", reflected=True)
    __pow__ = _binary_operator("__pow__", "power")
    __rpow__ = _binary_operator("__rpow__", "power", reflected=True)
    __matmul__ = _binary_operator("__matmul__", "matmul")
    __rmatmul__ = _binary_operator("__rmatmul__", "matmul", reflected=True)
    __and__ = _binary_operator("__and__", "bitwise_and")
    __rand__ = _binary_operator("__rand__", "bitwise_and", reflected=True)
    __or__ = _binary_operator("__or__", "bitwise_or")
    __ror__ = _binary_operator("__ror__", "bitwise_or", reflected=True)
    __xor__ = _binary_operator("__xor__", "bitwise_xor")
    __rxor__ = _binary_operator("__rxor__", "bitwise_xor", reflected=True)
    __lshift__ = _binary_operator("__lshift__", "left_shift")
    __rlshift__ = _binary_operator("__rlshift__", "left_shift", reflected=True)
    __rshift__ = _binary_operator("__rshift__", "right_shift")
    __rrshift__ = _binary_operator("__rrshift__", "right_shift", reflected=True)
    __lt__ = _binary_operator("__lt__", "less")
    __le__ = _binary_operator("__le__", "less_equal")
    __eq__ = _binary_operator("__eq__", "equal")
    __ne__ = _binary_operator("__ne__", "not_equal")
    __gt__ = _binary_operator("__gt__", "greater")
    __ge__ = _binary_operator("__ge__", "greater_equal")
    __iadd__ = _inplace_operator("__iadd__", "add")
    __isub__ = _inplace_operator("__isub__", "subtract")
    __imul__ = _inplace_operator("__imul__", "multiply")
    __itruediv__ = _inplace_operator("__itruediv__", "true_divide")
    __ifloordiv__ = _inplace_operator("__ifloordiv__", "floor_divide")
    __imod__ = _inplace_operator("__imod__", "remainder")
    __ipow__ = _inplace_operator("__ipow__", "power")
    __iand__ = _inplace_operator("__iand__", "bitwise_and")
    __ior__ = _inplace_operator("__ior__", "bitwise_or")
    __ixor__ = _inplace_operator("__ixor__", "bitwise_xor")
    __ilshift__ = _inplace_operator("__ilshift__", "left_shift")
    __irshift__ = _inplace_operator("__irshift__", "right_shift")

    def __neg__(self):
        return negative(self)

    def __pos__(self):
        return positive(self)

    def __abs__(self):
        return absolute(self)

    def __invert__(self):
        return invert(self)


# ================================================================================================
# Universal functions
# ================================================================================================
class ufunc:  # noqa: N801  (CuPy's name)
    """An elementwise operation: ``f(x1[, x2], out=None, casting='same_kind', dtype=None)``; one launch."""

    def __init__(self, numpy_ufunc, scatter_dtypes=None):
        self._numpy = numpy_ufunc
        self._scatter_dtypes = scatter_dtypes  # dtypes ``at`` accepts (None: CuPy has no ``at`` for it)
        self.name = f"cupy_{numpy_ufunc.__name__}"
        self.nin, self.nout, self.nargs = numpy_ufunc.nin, numpy_ufunc.nout, numpy_ufunc.nargs

    def __repr__(self):
        return f"<ufunc '{self.name}'>"

    def __call__(self, *args, out=None, casting="same_kind", dtype=None):
        if len(args) == self.nin + 1 and out is None:
            *args, out = args
        if len(args) != self.nin:
            raise TypeError(f"Wrong number of arguments for {self.name}: expected {self.nin}, got {len(args)}")
        raw = [_operand(a, self._numpy.__name__) for a in args]
        return _run(self._numpy.__name__, self._numpy, *raw, out=out, casting=casting, dtype=dtype)

    def at(self, a, indices, b=None):
        """Unbuffered in-place ``a[indices] op= b``: repeated indices accumulate."""
        if self._scatter_dtypes is None:
            raise NotImplementedError(f"`{self.name}.at` is not supported yet")
        data = _device_data(a, f"{self._numpy.__name__}.at")
        if data.dtype.name not in self._scatter_dtypes:
            raise TypeError(
                f"{self._numpy.__name__}.at only supports {', '.join(self._scatter_dtypes)} as data type "
                f"(CuPy's atomic scatter), got {data.dtype}"
            )
        key, _ = _index_key(indices, data.shape, f"{self._numpy.__name__}.at")
        value = None if b is None else _operand(b, f"{self._numpy.__name__}.at")
        _launch(f"{self._numpy.__name__}.at")
        self._numpy.at(data, key[:-1] if key[-1] is Ellipsis else key, value)


_SCATTER_DTYPES = ("int32", "float16", "float32", "float64", "uint32", "uint64")  # CuPy's atomicAdd types
_SCATTER_MINMAX_DTYPES = ("int32", "float32", "float64", "uint32", "uint64")

# fmt: off
absolute = abs = ufunc(np.absolute)
add = ufunc(np.add, scatter_dtypes=_SCATTER_DTYPES)
subtract, multiply, divide = ufunc(np.subtract), ufunc(np.multiply), ufunc(np.true_divide)
true_divide, floor_divide, remainder = divide, ufunc(np.floor_divide), ufunc(np.remainder)
mod, power = remainder, ufunc(np.power)
negative, positive, sign, reciprocal = ufunc(np.negative), ufunc(np.positive), ufunc(np.sign), ufunc(np.reciprocal)
maximum = ufunc(np.maximum, scatter_dtypes=_SCATTER_MINMAX_DTYPES)
minimum = ufunc(np.minimum, scatter_dtypes=_SCATTER_MINMAX_DTYPES)
fmax, fmin = ufunc(np.fmax), ufunc(np.fmin)
exp, expm1, exp2, log, log1p, log2, log10 = (ufunc(f) for f in (np.exp, np.expm1, np.exp2, np.log, np.log1p,
                                                                np.log2, np.log10))
logaddexp, sqrt, square = ufunc(np.logaddexp), ufunc(np.sqrt), ufunc(np.square)
sin, cos, tan, tanh, sinh, cosh = (ufunc(f) for f in (np.sin, np.cos, np.tan, np.tanh, np.sinh, np.cosh))
floor, ceil, trunc, rint = ufunc(np.floor), ufunc(np.ceil), ufunc(np.trunc), ufunc(np.rint)
isfinite, isinf, isnan, signbit = ufunc(np.isfinite), ufunc(np.isinf), ufunc(np.isnan), ufunc(np.signbit)
equal, not_equal, less, less_equal = ufunc(np.equal), ufunc(np.not_equal), ufunc(np.less), ufunc(np.less_equal)
greater, greater_equal = ufunc(np.greater), ufunc(np.greater_equal)
logical_and, logical_or, logical_not = ufunc(np.logical_and), ufunc(np.logical_or), ufunc(np.logical_not)
logical_xor = ufunc(np.logical_xor)
bitwise_and, bitwise_or, bitwise_xor = ufunc(np.bitwise_and), ufunc(np.bitwise_or), ufunc(np.bitwise_xor)
invert, left_shift, right_shift = ufunc(np.invert), ufunc(np.left_shift), ufunc(np.right_shift)
conj = conjugate = ufunc(np.conjugate)
# fmt: on


def matmul(x1, x2, /, *, out=None, casting="same_kind", dtype=None):
    """Matrix product (batched over leading axes); one launch (cuBLAS)."""
    return _run("matmul", np.matmul, _device_data(x1, "matmul"), _device_data(x2, "matmul"), out=out, dtype=dtype)


# ================================================================================================
# Host <-> device
# ================================================================================================
def _nested_device_data(obj):
    """The NumPy data of a (nested) list/tuple whose every leaf is a device array, else None."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, (list, tuple)) and obj:
        items = [_nested_device_data(item) for item in obj]
        if builtins.all(item is not None for item in items):
            return items
    return None


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A device array from device data (a copy, also of a nested list of device arrays)
    or from host data (a host -> device copy)."""
    if isinstance(obj, ndarray):
        if not copy and (dtype is None or np.dtype(dtype) == obj.dtype) and obj.ndim >= ndmin:
            return obj
        return _run("copy", np.array, obj._a, dtype=dtype, order=order, ndmin=ndmin)
    nested = _nested_device_data(obj) if isinstance(obj, (list, tuple)) else None
    if nested is not None:  # CuPy concatenates them on the device
        return _run("array[device sequence]", np.array, nested, dtype=dtype, order=order, ndmin=ndmin)
    host = np.array(obj, dtype=dtype, order=order, ndmin=ndmin)
    if host.dtype == object:
        raise ValueError(f"Unsupported dtype {host.dtype}")
    # A scalar is copied too (CuPy allocates device memory and copies it from the host).
    _copy_to_device("array[scalar]" if _is_scalar(obj) else "array[host data]")
    return ndarray._from_data(host)


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """``a`` itself when it is a device array of that dtype, else a device copy of it."""
    if isinstance(a, ndarray):
        if copy or (dtype is not None and np.dtype(dtype) != a.dtype):
            return _run("astype", a._a.astype, dtype or a.dtype)
        return a
    return array(a, dtype=dtype, order=order or "K")


def ascontiguousarray(a, dtype=None):
    data = _device_data(a, "ascontiguousarray")
    if data.flags.c_contiguous and (dtype is None or np.dtype(dtype) == data.dtype):
        return a
    return _run("ascontiguousarray", np.ascontiguousarray, data, dtype=dtype)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """A NumPy array: device data is copied back (synchronises), host data passes through."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    """This module if any argument is a device array, else numpy."""
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else np


def is_available():
    return True


def copy(a, order="K"):
    return _run("copy", np.copy, _device_data(a, "copy"), order=order)


# ================================================================================================
# Creation
# ================================================================================================
def empty(shape, dtype=float, order="C"):
    return ndarray._from_data(np.empty(shape, dtype=dtype, order=order))  # allocation only: no launch


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    return ndarray._from_data(np.empty_like(_device_data(prototype, "empty_like"), dtype, order, shape=shape))


def zeros(shape, dtype=float, order="C"):
    return _run("zeros", np.zeros, shape, dtype=dtype, order=order)


def ones(shape, dtype=float, order="C"):
    return _run("ones", np.ones, shape, dtype=dtype, order=order)


def full(shape, fill_value, dtype=None, order="C"):
    return _run("full", np.full, shape, _operand(fill_value, "full"), dtype=dtype, order=order)


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    return _run("zeros_like", np.zeros_like, _device_data(a, "zeros_like"), dtype, order, shape=shape)


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    return _run("ones_like", np.ones_like, _device_data(a, "ones_like"), dtype, order, shape=shape)


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    data = _device_data(a, "full_like")
    return _run("full_like", np.full_like, data, _operand(fill_value, "full_like"), dtype, order, shape=shape)


def arange(start, stop=None, step=1, dtype=None):
    return _run("arange", np.arange, start, stop, step, dtype=dtype)


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    _launch("linspace")
    result = np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
    return (_wrap(result[0]), result[1]) if retstep else _wrap(result)


def eye(N, M=None, k=0, dtype=float, order="C"):  # noqa: N803  (CuPy's names)
    return _run("eye", np.eye, N, M, k, dtype=dtype, order=order)


def identity(n, dtype=float):
    return _run("identity", np.identity, n, dtype=dtype)


def tri(N, M=None, k=0, dtype=float):  # noqa: N803
    return _run("tri", np.tri, N, M, k, dtype=dtype)


def triu(m, k=0):
    return _run("triu", np.triu, _device_data(m, "triu"), k)


def tril(m, k=0):
    return _run("tril", np.tril, _device_data(m, "tril"), k)


def _triangle_indices(name, numpy_function, n, k, m):
    # CuPy builds them as two boolean-mask selections of cupy.indices: two synchronisations.
    _launch(name)
    _sync(f"{name}[bool mask]")
    _sync(f"{name}[bool mask]")
    return _wrap(numpy_function(n, k, m))


def triu_indices(n, k=0, m=None):
    return _triangle_indices("triu_indices", np.triu_indices, n, k, m)


def tril_indices(n, k=0, m=None):
    return _triangle_indices("tril_indices", np.tril_indices, n, k, m)


def diag(v, k=0):
    return _run("diag", np.diag, _device_data(v, "diag"), k)


# ================================================================================================
# Shape manipulation (views unless the data must move)
# ================================================================================================
def reshape(a, newshape, order="C", *, copy=None):
    """A view when the layout allows one (no launch), else a copy (one launch)."""
    data = _device_data(a, "reshape")
    result = np.reshape(data, newshape, order=order)
    is_view = _shares(result, data)
    if is_view and not copy:
        return _view(result)
    _launch("reshape[copy]")
    return ndarray._from_data(result.copy() if is_view else result)


def ravel(a, order="C"):
    data = _device_data(a, "ravel")
    result = np.ravel(data, order=order)
    if _shares(result, data):
        return _view(result)
    _launch("ravel[copy]")
    return ndarray._from_data(result)


def transpose(a, axes=None):
    return _view(np.transpose(_device_data(a, "transpose"), axes))


def swapaxes(a, axis1, axis2):
    return _view(np.swapaxes(_device_data(a, "swapaxes"), axis1, axis2))


def moveaxis(a, source, destination):
    return _view(np.moveaxis(_device_data(a, "moveaxis"), source, destination))


def expand_dims(a, axis):
    return _view(np.expand_dims(_device_data(a, "expand_dims"), axis))


def squeeze(a, axis=None):
    return _view(np.squeeze(_device_data(a, "squeeze"), axis))


def broadcast_to(array, shape):
    return _view(np.broadcast_to(_device_data(array, "broadcast_to"), shape))


def diagonal(a, offset=0, axis1=0, axis2=1):
    return _view(np.diagonal(_device_data(a, "diagonal"), offset, axis1, axis2))


def flip(a, axis=None):
    return _view(np.flip(_device_data(a, "flip"), axis))


def split(ary, indices_or_sections, axis=0):
    return [_view(part) for part in np.split(_device_data(ary, "split"), indices_or_sections, axis)]


def _arrays(tup, what):
    if isinstance(tup, (ndarray, np.ndarray)):
        raise TypeError(f"{what}: expected a sequence of device arrays, got a single array")
    return [_device_data(a, what) for a in tup]


def concatenate(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    return _run("concatenate", np.concatenate, _arrays(tup, "concatenate"), axis, out=out, dtype=dtype, casting=casting)


def stack(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    return _run("stack", np.stack, _arrays(tup, "stack"), axis, out=out, dtype=dtype, casting=casting)


def tile(A, reps):  # noqa: N803
    return _run("tile", np.tile, _device_data(A, "tile"), reps)


def repeat(a, repeats, axis=None):
    if not isinstance(repeats, (int, np.integer, list, tuple)):
        raise ValueError("repeats must be an int or a sequence of ints (CuPy does not take an array)")
    return _run("repeat", np.repeat, _device_data(a, "repeat"), repeats, axis)


def pad(array, pad_width, mode="constant", **kwargs):
    return _run("pad", np.pad, _device_data(array, "pad"), pad_width, mode, **kwargs)


# ================================================================================================
# Selection and sorting
# ================================================================================================
def where(condition, x=None, y=None):
    """``where(cond, x, y)``: one launch. ``where(cond)`` is ``nonzero(cond)`` (synchronises)."""
    if (x is None) != (y is None):
        raise ValueError("Must provide both 'x' and 'y' or neither.")
    if x is None:
        return nonzero(condition)
    raw = [_operand(v, "where") for v in (condition, x, y)]
    return _run("where", np.where, *raw)


def nonzero(a):
    """Indices of the non-zero entries: CuPy reads their number back (one synchronisation)."""
    data = _device_data(a, "nonzero")
    if data.size:
        _sync("nonzero")
    return _run("nonzero", np.nonzero, data)


def flatnonzero(a):
    data = _device_data(a, "flatnonzero")
    if data.size:
        _sync("flatnonzero")
    return _run("flatnonzero", np.flatnonzero, data)


def argwhere(a):
    data = _device_data(a, "argwhere")
    if data.size:
        _sync("argwhere")
    return _run("argwhere", np.argwhere, data)


def count_nonzero(a, axis=None):
    return _run("count_nonzero", np.count_nonzero, _device_data(a, "count_nonzero"), axis)


def unique(ar, return_index=False, return_inverse=False, return_counts=False, axis=None, *, equal_nan=True):
    """Sorted unique values: one synchronisation for the mask, one more per index or count output."""
    if axis is not None:
        raise NotImplementedError("unique(axis=...) is not supported by the stand-in")
    data = _device_data(ar, "unique")
    for _ in range(1 + builtins.bool(return_index) + builtins.bool(return_counts)):
        _sync("unique")
    return _run("unique", np.unique, data, return_index, return_inverse, return_counts, equal_nan=equal_nan)


def bincount(x, weights=None, minlength=None):
    """Counts of each non-negative int: CuPy checks ``(x < 0).any()`` and reads ``x.max()`` (two synchronisations)."""
    data = _device_data(x, "bincount")
    if data.dtype.kind == "f":
        raise TypeError("x must be int array")
    w = None if weights is None else _device_data(weights, "bincount")
    if data.size:
        _sync("bincount[(x < 0).any()]")
        if (data < 0).any():
            raise ValueError("The first argument of bincount must be non-negative")
        _sync("bincount[x.max()]")
    return _run("bincount", np.bincount, data, w, minlength or 0)


def _check_sort_kind(kind):
    if kind is not None and kind != "stable":
        raise ValueError("kind can only be None or 'stable'")


def sort(a, axis=-1, kind=None):
    _check_sort_kind(kind)
    return _run("sort", np.sort, _device_data(a, "sort"), axis, kind="stable")


def argsort(a, axis=-1, kind=None):
    """Indices that sort ``a``; always stable on CuPy (``kind`` may only be None or 'stable')."""
    _check_sort_kind(kind)
    return _run("argsort", np.argsort, _device_data(a, "argsort"), axis, kind="stable")


def argpartition(a, kth, axis=-1):
    # CuPy fully sorts (stably) instead of partitioning.
    return _run("argpartition", np.argsort, _device_data(a, "argpartition"), axis, kind="stable")


def searchsorted(a, v, side="left", sorter=None):
    raw_sorter = None if sorter is None else _device_data(sorter, "searchsorted")
    return _run(
        "searchsorted", np.searchsorted, _device_data(a, "searchsorted"), _operand(v, "searchsorted"), side, raw_sorter
    )


def take(a, indices, axis=None, out=None):
    """Gather along ``axis``; indices wrap around (CuPy's take has no ``mode``: it always wraps)."""
    data = _device_data(a, "take")
    raw = indices if isinstance(indices, (int, np.integer)) else _index_key(indices, (), "take")[0][0]
    return _run("take", np.take, data, raw, axis, out=out, mode="wrap")


def take_along_axis(a, indices, axis):
    return _run(
        "take_along_axis",
        np.take_along_axis,
        _device_data(a, "take_along_axis"),
        _device_data(indices, "take_along_axis"),
        axis,
    )


def put_along_axis(arr, indices, values, axis):
    _launch("put_along_axis")
    np.put_along_axis(
        _device_data(arr, "put_along_axis"),
        _device_data(indices, "put_along_axis"),
        _operand(values, "put_along_axis"),
        axis,
    )


def clip(a, a_min, a_max, out=None):
    raw = [_operand(v, "clip") if v is not None else None for v in (a, a_min, a_max)]
    return _run("clip", np.clip, *raw, out=out)


# ================================================================================================
# Reductions (one launch each; a full reduction returns a 0-d device array)
# ================================================================================================
def sum(a, axis=None, dtype=None, out=None, keepdims=False):
    return _run("sum", np.sum, _device_data(a, "sum"), axis, dtype, out=out, keepdims=keepdims)


def prod(a, axis=None, dtype=None, out=None, keepdims=False):
    return _run("prod", np.prod, _device_data(a, "prod"), axis, dtype, out=out, keepdims=keepdims)


def mean(a, axis=None, dtype=None, out=None, keepdims=False):
    return _run("mean", np.mean, _device_data(a, "mean"), axis, dtype, out=out, keepdims=keepdims)


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return _run("var", np.var, _device_data(a, "var"), axis, dtype, out=out, ddof=ddof, keepdims=keepdims)


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return _run("std", np.std, _device_data(a, "std"), axis, dtype, out=out, ddof=ddof, keepdims=keepdims)


def amax(a, axis=None, out=None, keepdims=False):
    return _run("max", np.amax, _device_data(a, "max"), axis, out=out, keepdims=keepdims)


def amin(a, axis=None, out=None, keepdims=False):
    return _run("min", np.amin, _device_data(a, "min"), axis, out=out, keepdims=keepdims)


max, min = amax, amin  # noqa: A001  (CuPy's names)


def _arg_reduction(name, numpy_function, a, axis, dtype, out, keepdims):
    result = _run(name, numpy_function, _device_data(a, name), axis, out=out, keepdims=keepdims)
    return result if dtype is None or out is not None else result.astype(dtype, copy=False)


def argmax(a, axis=None, dtype=None, out=None, keepdims=False):
    return _arg_reduction("argmax", np.argmax, a, axis, dtype, out, keepdims)


def argmin(a, axis=None, dtype=None, out=None, keepdims=False):
    return _arg_reduction("argmin", np.argmin, a, axis, dtype, out, keepdims)


def all(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return _run("all", np.all, _device_data(a, "all"), axis, out=out, keepdims=keepdims)


def any(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return _run("any", np.any, _device_data(a, "any"), axis, out=out, keepdims=keepdims)


def cumsum(a, axis=None, dtype=None, out=None):
    return _run("cumsum", np.cumsum, _device_data(a, "cumsum"), axis, dtype, out=out)


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    return _run("trace", np.trace, _device_data(a, "trace"), offset, axis1, axis2, dtype, out=out)


def round(a, decimals=0, out=None):  # noqa: A001
    return _run("round", np.round, _device_data(a, "round"), decimals, out=out)


around = round


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """A 0-d boolean device array (CuPy does not read it back)."""
    raw = [_operand(v, "allclose") for v in (a, b)]
    return _run("allclose", lambda x, y: np.asarray(np.allclose(x, y, rtol, atol, equal_nan)), *raw)


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return _run("isclose", np.isclose, _operand(a, "isclose"), _operand(b, "isclose"), rtol, atol, equal_nan)


def array_equal(a1, a2, equal_nan=False):
    raw = [_device_data(v, "array_equal") for v in (a1, a2)]
    return _run("array_equal", lambda x, y: np.asarray(np.array_equal(x, y, equal_nan)), *raw)


# ================================================================================================
# Products
# ================================================================================================
def dot(a, b, out=None):
    return _run("dot", np.dot, _device_data(a, "dot"), _device_data(b, "dot"), out=out)


def vdot(a, b):
    return _run("vdot", np.vdot, _device_data(a, "vdot"), _device_data(b, "vdot"))


def outer(a, b, out=None):
    return _run("outer", np.outer, _device_data(a, "outer"), _device_data(b, "outer"), out=out)


def tensordot(a, b, axes=2):
    return _run("tensordot", np.tensordot, _device_data(a, "tensordot"), _device_data(b, "tensordot"), axes)


def einsum(*operands, **kwargs):
    """``einsum(subscripts, *arrays, out=None, dtype=None, casting='safe', optimize=False)``."""
    unknown = set(kwargs) - {"out", "dtype", "casting", "optimize"}
    if unknown:
        raise TypeError(f"Wrong arguments {sorted(unknown)}")
    subscripts, *arrays = operands
    out = kwargs.pop("out", None)
    return _run("einsum", np.einsum, subscripts, *[_device_data(a, "einsum") for a in arrays], out=out, **kwargs)


# ================================================================================================
# Submodules: linalg, random, cuda, lib.stride_tricks
# ================================================================================================
class _Namespace(types.SimpleNamespace):
    """A submodule of the stand-in (``linalg``, ``random``, ...)."""


def _warn_if_batched_jacobi_beyond_its_limit(data, name):
    """CuPy 14 sends every *stacked* symmetric eigenproblem (ndim > 2) to cuSOLVER's batched
    Jacobi solver ``syevjBatched``, which NVIDIA documents for n <= 32, and by default does
    not read its status array back (``cupyx`` linalg config ``'ignore'``): beyond n = 32 a
    failure or non-convergence would pass unnoticed. The stand-in warns instead of computing silently.
    """
    if data.ndim > 2 and data.shape[-1] > 32:
        n = data.shape[-1]
        warnings.warn(
            f"cupy.linalg.{name} on a stack of {n}x{n} matrices runs cuSOLVER's batched Jacobi solver "
            "(syevjBatched), which NVIDIA documents for n <= 32, and CuPy does not check its status. "
            "Loop over 2-D matrices (syevd) or use an iterative method for larger n.",
            SimulationWarning,
            stacklevel=3,
        )


def _eigh(a, UPLO="L"):  # noqa: N803
    """Eigenvalues (ascending) and eigenvectors of symmetric matrices (..., n, n); one launch."""
    data = _device_data(a, "linalg.eigh")
    _warn_if_batched_jacobi_beyond_its_limit(data, "eigh")
    return _run("linalg.eigh", np.linalg.eigh, data, UPLO)


def _linalg_function(name, numpy_function):
    def function(a):
        return _run(f"linalg.{name}", numpy_function, _device_data(a, f"linalg.{name}"))

    function.__name__ = function.__qualname__ = name
    return function


def _norm(x, ord=None, axis=None, keepdims=False):
    return _run("linalg.norm", np.linalg.norm, _device_data(x, "linalg.norm"), ord, axis, keepdims)


def _solve(a, b):
    return _run("linalg.solve", np.linalg.solve, _device_data(a, "linalg.solve"), _device_data(b, "linalg.solve"))


def _eigvalsh(a, UPLO="L"):  # noqa: N803
    data = _device_data(a, "linalg.eigvalsh")
    _warn_if_batched_jacobi_beyond_its_limit(data, "eigvalsh")
    return _run("linalg.eigvalsh", np.linalg.eigvalsh, data, UPLO)


linalg = _Namespace(
    eigh=_eigh,
    eigvalsh=_eigvalsh,
    norm=_norm,
    solve=_solve,
    inv=_linalg_function("inv", np.linalg.inv),
    cholesky=_linalg_function("cholesky", np.linalg.cholesky),
    det=_linalg_function("det", np.linalg.det),
    LinAlgError=np.linalg.LinAlgError,
)


class _Generator:
    """CuPy's ``random.Generator`` subset (no ``normal``, ``permutation``, ``choice`` ...).

    Make one with ``random.default_rng(seed)``. The numbers come from NumPy's PCG64,
    so they differ from CuPy's XORWOW stream; each draw is one launch.
    """

    def __init__(self, bit_generator):
        if not isinstance(bit_generator, np.random.BitGenerator):
            raise TypeError("use random.default_rng(seed) to make a Generator")
        self._numpy = np.random.Generator(bit_generator)

    def random(self, size=None, dtype=np.float64, out=None):
        return _run("random.random", self._numpy.random, size, dtype, out=out)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return _run("random.standard_normal", self._numpy.standard_normal, size, dtype, out=out)

    def standard_exponential(self, size=None, dtype=np.float64, method="inv", out=None):
        return _run("random.standard_exponential", self._numpy.standard_exponential, size, dtype, "inv", out=out)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        # CuPy moves the bounds with cupy.asarray: two host -> device copies for Python numbers.
        low, high = asarray(low), asarray(high)
        return _run("random.uniform", lambda lo, hi: self._numpy.uniform(lo, hi, size).astype(dtype), low._a, high._a)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        # CuPy reads the bounds with int(): a synchronisation each if they are device arrays.
        low, high = int(low), None if high is None else int(high)
        return _run("random.integers", self._numpy.integers, low, high, size, dtype, endpoint)


def _default_rng(seed=None):
    if isinstance(seed, _Generator):
        return seed
    return _Generator(np.random.PCG64(seed))


_Generator.__name__ = _Generator.__qualname__ = "Generator"
random = _Namespace(Generator=_Generator, default_rng=_default_rng)


class _Stream:
    """A CUDA stream; ``synchronize()`` waits for the device (one synchronisation)."""

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        pass

    def synchronize(self):
        _sync("Stream.synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_Stream.null = _Stream(null=True)
_Stream.__name__ = _Stream.__qualname__ = "Stream"


class _Device:
    """The (single) simulated CUDA device."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(getattr(device, "id", device))
        if self.id != 0:
            raise ValueError(f"the CPU stand-in has one device (id 0), not {self.id}")

    compute_capability = "90"

    def synchronize(self):
        _sync("Device.synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


_Device.__name__ = _Device.__qualname__ = "Device"


def _get_current_stream(device_id=-1):
    return _Stream.null


def _get_device_count():
    return 1


def _get_device():
    return 0


def _device_synchronize():
    _sync("runtime.deviceSynchronize")


cuda = _Namespace(
    Device=_Device,
    Stream=_Stream,
    get_current_stream=_get_current_stream,
    is_available=is_available,
    runtime=_Namespace(getDeviceCount=_get_device_count, getDevice=_get_device, deviceSynchronize=_device_synchronize),
)


def _as_strided(x, shape=None, strides=None):
    """A strided view of ``x`` (no launch); CuPy does not check the bounds either."""
    return _view(np.lib.stride_tricks.as_strided(_device_data(x, "as_strided"), shape, strides))


lib = _Namespace(stride_tricks=_Namespace(as_strided=_as_strided))

# ================================================================================================
# Types and constants (NumPy's own objects, as in CuPy)
# ================================================================================================
bool_, int8, int16, int32, int64 = np.bool_, np.int8, np.int16, np.int32, np.int64
uint8, uint16, uint32, uint64 = np.uint8, np.uint16, np.uint32, np.uint64
float16, float32, float64, complex64, complex128 = np.float16, np.float32, np.float64, np.complex64, np.complex128
intp, dtype, finfo, iinfo = np.intp, np.dtype, np.finfo, np.iinfo
promote_types, issubdtype = np.promote_types, np.issubdtype


def result_type(*arrays_and_dtypes):
    return np.result_type(*[a.dtype if isinstance(a, ndarray) else a for a in arrays_and_dtypes])


def can_cast(from_, to, casting="safe"):
    return np.can_cast(from_.dtype if isinstance(from_, ndarray) else from_, to, casting)


newaxis, pi, e, inf, nan = None, np.pi, np.e, np.inf, np.nan
bool = np.bool_  # noqa: A001  (cupy.bool is numpy.bool)

#: Names of this module that are not CuPy's: the stand-in's own API.
STAND_IN_ONLY = (
    "counting",
    "Counts",
    "Event",
    "SimulationWarning",
    "STAND_IN_ONLY",
    "LAUNCH",
    "SYNC",
    "COPY_TO_DEVICE",
)
