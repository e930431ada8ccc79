"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every forward/backward in gmsop_np starts with ``xp = get_array_module(...)``
and then calls ``xp.matmul``, ``xp.exp``, ... so the same code runs on both.

CuPy is optional: it is imported lazily, the first time something asks for it,
and the package works without it. Arrays never move between host and device
behind the user's back: mixing a NumPy and a CuPy array in one operation is a
``TypeError`` that says how to move the data (``to_gpu`` / ``to_cpu``).

The backend for *new* data (parameters of a model being built, batches of a
loader) is chosen with the context manager ``using_backend("cupy")``; leaving
the block restores the previous choice, so nothing leaks into the rest of the
process.

Without a GPU, ``GMSOP_NP_SIMULATE_GPU=1`` (or ``gmsop_np.testing.simulated_gpu()``)
puts a strict CPU stand-in for CuPy (``gmsop_np/testing/device_sim.py``) in
CuPy's place: the "cupy" backend then runs on the CPU with CuPy's rules
(no implicit host/device conversion) and counts every kernel launch,
device->host synchronisation and host->device copy. It checks device
discipline, not numerics or speed.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

__all__ = [
    "BACKENDS",
    "cupy_available",
    "get_cupy",
    "get_array_module",
    "is_array",
    "is_device_array",
    "backend_of",
    "get_backend",
    "check_backend",
    "using_backend",
    "array_module",
    "default_xp",
    "to_gpu",
    "to_cpu",
]

BACKENDS = ("numpy", "cupy")

#: Environment variable that selects the CPU stand-in for CuPy (tests, CI, notebooks).
SIMULATE_GPU_ENV = "GMSOP_NP_SIMULATE_GPU"

_device = None  # the device array module once loaded: cupy, or the CPU stand-in
_device_error = None  # why loading it failed (kept for the error message)
_state = threading.local()


def _load_device_module():
    """Import the device module once: the stand-in when asked for by the environment, else CuPy."""
    global _device, _device_error
    if _device is None and _device_error is None:
        try:
            if os.environ.get(SIMULATE_GPU_ENV, "") not in ("", "0"):
                from .testing import device_sim  # noqa: PLC0415

                _device = device_sim
            else:
                import cupy  # noqa: PLC0415  (lazy on purpose: CuPy is optional)

                cupy.cuda.runtime.getDeviceCount()  # raises when there is no GPU
                _device = cupy
        except Exception as exc:  # ImportError, CUDARuntimeError, ...
            _device_error = exc
    return _device


def _use_device_module(module):
    """Put ``module`` (CuPy or the stand-in; None: load again on demand) in the device slot.

    Returns the previous module. Used by ``gmsop_np.testing.simulated_gpu``.
    """
    global _device, _device_error
    previous, _device, _device_error = _device, module, None
    return previous


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device (or the stand-in is active)."""
    return _load_device_module() is not None


def get_cupy() -> object:
    """Return the cupy module, or raise a RuntimeError that says how to get it."""
    cp = _load_device_module()
    if cp is None:
        raise RuntimeError(
            "the 'cupy' backend needs CuPy and a CUDA GPU, which are not available here "
            f"({type(_device_error).__name__}: {_device_error}). On a machine with an NVIDIA GPU "
            "install CuPy for its CUDA version (README, section 'GPU'), or use the 'numpy' backend."
        )
    return cp


def is_device_array(a: object) -> bool:
    """True for a CuPy array (or an array of the CPU stand-in for CuPy)."""
    if _device is not None and isinstance(a, _device.ndarray):
        return True
    # An array of a CuPy the user imported before we loaded ours: recognised by its type's module.
    return type(a).__module__.startswith("cupy")


def is_array(a: object) -> bool:
    """True for a NumPy or CuPy array (not for Tensors, scalars or lists)."""
    return isinstance(a, np.ndarray) or is_device_array(a)


def backend_of(a: object) -> str:
    """'cupy' for a CuPy array or a Tensor holding one, 'numpy' for anything else."""
    return "cupy" if is_device_array(getattr(a, "data", a) if _is_tensor(a) else a) else "numpy"


def _is_tensor(a) -> bool:
    return hasattr(a, "_is_gmsop_tensor")


def get_array_module(*args) -> object:
    """The array module (numpy or cupy) that the arguments live on.

    Tensors are unwrapped; Python and NumPy scalars and ``None`` are neutral (CuPy
    takes scalars as kernel arguments). Raises a ``TypeError`` when NumPy and CuPy
    arrays are mixed, instead of copying.
    """
    names = {backend_of(a) for a in args if a is not None and not isinstance(a, (int, float, bool, np.generic))}
    if names == {"numpy", "cupy"}:
        raise TypeError(
            "cannot mix a NumPy (host) array and a CuPy (GPU) array in one operation. "
            "Move the data first: gmsop_np.to_gpu(x) / module.to_gpu() for the GPU, "
            "or gmsop_np.to_cpu(x) / module.to_cpu() for the host."
        )
    if "cupy" in names:
        return get_cupy()
    return np


def get_backend() -> str:
    """Name of the backend used for newly created data ('numpy' unless inside ``using_backend``)."""
    return getattr(_state, "backend", "numpy")


def check_backend(name: str) -> str:
    """``name`` if it is a known backend, else a ValueError listing the choices."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def using_backend(name: str):
    """``with using_backend("cupy"): ...``: new data goes to that backend inside the block.

    Fails at once, with the install hint, when CuPy or a GPU is missing.

    >>> with using_backend("numpy"):
    ...     get_backend()
    'numpy'
    """
    check_backend(name)
    if name == "cupy":
        get_cupy()
    previous = get_backend()
    _state.backend = name
    try:
        yield
    finally:
        _state.backend = previous


def array_module(name: str) -> object:
    """The array module of backend ``name``: numpy, or cupy (which must be available)."""
    return get_cupy() if check_backend(name) == "cupy" else np


def default_xp() -> object:
    """The array module of the current backend (``using_backend``)."""
    return array_module(get_backend())


def to_gpu(x: object) -> object:
    """Copy an array or Tensor to the GPU (returns CuPy data / a new Tensor)."""
    if _is_tensor(x):
        return x.to_gpu()
    if is_device_array(x):
        return x
    return get_cupy().asarray(x)


def to_cpu(x: object) -> object:
    """Copy an array or Tensor to host memory (returns NumPy data / a new Tensor)."""
    if _is_tensor(x):
        return x.to_cpu()
    if is_device_array(x):
        return x.get()
    return np.asarray(x)
